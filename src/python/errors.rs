//! Maps the core's error enums onto the exception classes of
//! `running_process.errors`, one class per variant family, with the variant's
//! data as attributes.

use std::path::Path;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;
use pyo3::IntoPyObjectExt;

use super::values::returncode;
use crate::contract::error::{
    AllocError, DecodeError, FsError, HostError, StoreError, ValidationError,
};
use crate::launch::LaunchError;
use crate::reuse::router::ErrorCode;
use crate::sdk::ServerError;
use crate::sys::exe::BinaryError;
use crate::sys::identity_file::IdentityFileError;

static ERRORS_MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// Every exception class of `running_process.errors` that carries data, with
/// its attributes in order: the one list of them. The Python classes take
/// their `_fields` from it (exported as `_native.EXCEPTION_FIELDS`), and
/// [`build`] names the values it is given from it.
pub(crate) const EXCEPTION_FIELDS: &[(&str, &[&str])] = &[
    ("BackendLaunchError", &["reason"]),
    ("InvalidNameError", &["kind", "value", "reason"]),
    ("InvalidVersionError", &["value", "reason"]),
    (
        "VersionRefusedError",
        &["service_name", "version", "rule", "reason"],
    ),
    (
        "InvalidServiceDefinitionError",
        &["field", "value", "reason"],
    ),
    (
        "ServiceDefinitionStemMismatchError",
        &["field", "value", "reason", "path", "stem"],
    ),
    ("ServiceDefinitionNotFoundError", &["service_name", "path"]),
    ("InvalidTraceContextError", &["field", "value", "reason"]),
    ("InvalidIdentityError", &["field", "value", "reason"]),
    ("DecodeError", &["what", "reason"]),
    ("InsecureDirectoryError", &["path", "reason"]),
    ("InsecureFileError", &["path", "reason"]),
    ("FilesystemError", &["path", "operation", "os_errno"]),
    ("HostIdentityError", &["what", "path", "reason"]),
    ("PathTooLongError", &["path", "length", "limit"]),
    ("AllocationExhaustedError", &["attempts", "dir"]),
    ("BinaryPolicyError", &["reason", "variant", "path"]),
    ("EndpointError", &["reason"]),
    ("SpawnError", &["reason", "path", "os_errno"]),
    (
        "BackendExitedError",
        &["reason", "pid", "returncode", "log_tail"],
    ),
    ("NotReadyError", &["reason", "pid", "timeout", "log_tail"]),
    (
        "VerificationError",
        &["reason", "field", "expected", "actual"],
    ),
    ("ProbeError", &["reason"]),
    ("StaleIdentityError", &["reason", "field"]),
    ("LauncherError", &["reason"]),
    (
        "KeyBusyError",
        &["reason", "path", "waited", "holder_pid", "holder_state"],
    ),
    ("BackendLimitError", &["reason", "limit", "running", "dir"]),
    ("BackendServerError", &["variable", "reason"]),
    ("RefusedError", &["code", "reason", "retry_after_ms"]),
];

/// The attribute values of one exception, in [`EXCEPTION_FIELDS`] order.
type Field<'py> = Bound<'py, PyAny>;

fn value<'py>(py: Python<'py>, v: impl IntoPyObject<'py>) -> Bound<'py, PyAny> {
    // Strings, integers and None never fail to convert.
    v.into_bound_py_any(py)
        .unwrap_or_else(|_| py.None().into_bound(py))
}

fn path_value<'py>(py: Python<'py>, p: &Path) -> Bound<'py, PyAny> {
    value(py, p.to_string_lossy().into_owned())
}

/// Builds `running_process.errors.<class>(message, **fields)` as a `PyErr`,
/// naming `values` after the class's entry in [`EXCEPTION_FIELDS`].
fn build(py: Python<'_>, class: &str, message: String, values: Vec<Field<'_>>) -> PyErr {
    let made = (|| -> PyResult<PyErr> {
        let names = EXCEPTION_FIELDS
            .iter()
            .find(|(name, _)| *name == class)
            .map(|(_, fields)| *fields)
            .unwrap_or_default();
        if names.len() != values.len() {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                "{class} takes {} attributes, {} given",
                names.len(),
                values.len()
            )));
        }
        let module = ERRORS_MODULE.get_or_try_init(py, || {
            py.import("running_process.errors").map(Bound::unbind)
        })?;
        let cls = module.bind(py).getattr(class)?;
        let kwargs = PyDict::new(py);
        for (name, v) in names.iter().zip(values) {
            kwargs.set_item(name, v)?;
        }
        Ok(PyErr::from_value(cls.call((message,), Some(&kwargs))?))
    })();
    made.unwrap_or_else(|e| e)
}

pub(crate) fn validation_error(py: Python<'_>, err: ValidationError) -> PyErr {
    let message = err.to_string();
    match err {
        ValidationError::Name {
            kind,
            value: v,
            reason,
        } => build(
            py,
            "InvalidNameError",
            message,
            vec![value(py, kind.as_str()), value(py, v), value(py, reason)],
        ),
        ValidationError::Version { value: v, reason } => build(
            py,
            "InvalidVersionError",
            message,
            vec![value(py, v), value(py, reason)],
        ),
        ValidationError::VersionRefused {
            service_name,
            version,
            rule,
            reason,
        } => build(
            py,
            "VersionRefusedError",
            message,
            vec![
                value(py, service_name),
                value(py, version),
                value(py, rule.field()),
                value(py, reason),
            ],
        ),
        ValidationError::ServiceDefinition {
            field,
            value: v,
            reason,
        } => field_error(
            py,
            "InvalidServiceDefinitionError",
            message,
            field,
            v,
            reason,
        ),
        ValidationError::TraceContext {
            field,
            value: v,
            reason,
        } => field_error(py, "InvalidTraceContextError", message, field, v, reason),
        ValidationError::Identity {
            field,
            value: v,
            reason,
        } => field_error(py, "InvalidIdentityError", message, field, v, reason),
    }
}

fn field_error(
    py: Python<'_>,
    class: &str,
    message: String,
    field: &str,
    v: String,
    reason: String,
) -> PyErr {
    build(
        py,
        class,
        message,
        vec![value(py, field), value(py, v), value(py, reason)],
    )
}

pub(crate) fn fs_error(py: Python<'_>, err: FsError) -> PyErr {
    let message = err.to_string();
    match err {
        FsError::InsecureDirectory { path, reason } => build(
            py,
            "InsecureDirectoryError",
            message,
            vec![path_value(py, &path), value(py, reason)],
        ),
        FsError::Io {
            operation,
            path,
            source,
        } => build(
            py,
            "FilesystemError",
            message,
            vec![
                path_value(py, &path),
                value(py, operation),
                value(py, source.raw_os_error()),
            ],
        ),
    }
}

pub(crate) fn host_error(py: Python<'_>, err: HostError) -> PyErr {
    let message = err.to_string();
    let (what, path, reason) = match err {
        HostError::MachineId { paths, reason } => (
            "machine id",
            paths.first().map(|p| p.to_string_lossy().into_owned()),
            reason,
        ),
        HostError::BootId { path, reason } => {
            ("boot id", Some(path.to_string_lossy().into_owned()), reason)
        }
        HostError::Entropy { reason } => ("random source", None, reason),
    };
    build(
        py,
        "HostIdentityError",
        message,
        vec![value(py, what), value(py, path), value(py, reason)],
    )
}

pub(crate) fn decode_error(py: Python<'_>, err: DecodeError) -> PyErr {
    let message = err.to_string();
    let (what, reason) = match err {
        DecodeError::Invalid(v) => return validation_error(py, v),
        DecodeError::Malformed { what, reason } => (what, reason),
        DecodeError::Frame { reason } => ("Frame", reason),
        DecodeError::FrameTooLarge { .. } => ("Frame", message.clone()),
    };
    build(
        py,
        "DecodeError",
        message,
        vec![value(py, what), value(py, reason)],
    )
}

pub(crate) fn alloc_error(py: Python<'_>, err: AllocError) -> PyErr {
    let message = err.to_string();
    match err {
        AllocError::PathTooLong {
            path,
            length,
            limit,
        } => build(
            py,
            "PathTooLongError",
            message,
            vec![path_value(py, &path), value(py, length), value(py, limit)],
        ),
        AllocError::Exhausted { attempts, dir } => build(
            py,
            "AllocationExhaustedError",
            message,
            vec![value(py, attempts), path_value(py, &dir)],
        ),
        AllocError::Invalid(v) => validation_error(py, v),
        AllocError::Fs(e) => fs_error(py, e),
        AllocError::Host(e) => host_error(py, e),
    }
}

pub(crate) fn store_error(py: Python<'_>, err: StoreError) -> PyErr {
    let message = err.to_string();
    match err {
        StoreError::NotFound { service_name, path } => build(
            py,
            "ServiceDefinitionNotFoundError",
            message,
            vec![value(py, service_name), path_value(py, &path)],
        ),
        StoreError::StemMismatch {
            path,
            stem,
            service_name,
        } => build(
            py,
            "ServiceDefinitionStemMismatchError",
            message,
            vec![
                value(py, "service_name"),
                value(py, service_name),
                value(
                    py,
                    format!("the file stem is {stem:?}; it must equal the service name"),
                ),
                path_value(py, &path),
                value(py, stem),
            ],
        ),
        StoreError::Untrusted { path, reason } => build(
            py,
            "InsecureFileError",
            message,
            vec![path_value(py, &path), value(py, reason)],
        ),
        StoreError::TooLarge { path, .. } => build(
            py,
            "DecodeError",
            message.clone(),
            vec![
                value(py, format!("ServiceDefinition file {}", path.display())),
                value(py, message),
            ],
        ),
        StoreError::Invalid(v) => validation_error(py, v),
        StoreError::Decode { source, .. } => match source {
            DecodeError::Invalid(v) => validation_error(py, v),
            other => build(
                py,
                "DecodeError",
                message,
                vec![value(py, "ServiceDefinition"), value(py, other.to_string())],
            ),
        },
        StoreError::Fs(e) => fs_error(py, e),
        StoreError::Host(e) => host_error(py, e),
    }
}

macro_rules! into_pyerr {
    ($($ty:ty => $f:ident),* $(,)?) => {$(
        impl From<$ty> for PyErr {
            fn from(err: $ty) -> PyErr {
                Python::attach(|py| $f(py, err))
            }
        }
    )*};
}

into_pyerr! {
    ValidationError => validation_error,
    FsError => fs_error,
    HostError => host_error,
    DecodeError => decode_error,
    AllocError => alloc_error,
    StoreError => store_error,
}

fn launch_class<'py>(
    py: Python<'py>,
    class: &str,
    message: String,
    mut fields: Vec<Field<'py>>,
) -> PyErr {
    fields.insert(0, value(py, message.clone()));
    build(py, class, message, fields)
}

pub(crate) fn launch_error(py: Python<'_>, err: LaunchError) -> PyErr {
    let message = err.to_string();
    match err {
        LaunchError::Invalid(v) => validation_error(py, v),
        LaunchError::Binary(b) => {
            let (variant, path) = binary_variant(&b);
            launch_class(
                py,
                "BinaryPolicyError",
                message,
                vec![value(py, variant), value(py, path)],
            )
        }
        LaunchError::Endpoint(alloc) => {
            let cause = alloc_error(py, alloc);
            let err = launch_class(py, "EndpointError", message, vec![]);
            err.set_cause(py, Some(cause));
            err
        }
        LaunchError::LogFile(fs) => {
            let cause = fs_error(py, fs);
            let err = launch_class(py, "EndpointError", message, vec![]);
            err.set_cause(py, Some(cause));
            err
        }
        LaunchError::Spawn { path, errno, .. } => launch_class(
            py,
            "SpawnError",
            message,
            vec![path_value(py, &path), value(py, errno)],
        ),
        LaunchError::Exited {
            pid,
            exit,
            log_tail,
        } => launch_class(
            py,
            "BackendExitedError",
            message,
            vec![
                value(py, pid),
                value(py, returncode(exit).unwrap_or(-1)),
                value(py, log_tail),
            ],
        ),
        LaunchError::NotReady {
            pid,
            timeout,
            log_tail,
        } => launch_class(
            py,
            "NotReadyError",
            message,
            vec![
                value(py, pid),
                value(py, timeout.as_secs_f64()),
                value(py, log_tail),
            ],
        ),
        LaunchError::Mismatch {
            field,
            expected,
            actual,
        } => launch_class(
            py,
            "VerificationError",
            message,
            vec![value(py, field), value(py, expected), value(py, actual)],
        ),
        LaunchError::Probe(_) => launch_class(py, "ProbeError", message, vec![]),
        LaunchError::Host(h) => host_error(py, h),
        LaunchError::Launcher { .. } => launch_class(py, "LauncherError", message, vec![]),
        LaunchError::KeyBusy {
            path,
            waited,
            holder,
        } => launch_class(
            py,
            "KeyBusyError",
            message,
            vec![
                path_value(py, &path),
                value(py, waited.as_secs_f64()),
                value(py, holder.pid),
                value(py, holder.state.map(String::from)),
            ],
        ),
        LaunchError::TooManyBackends {
            limit,
            running,
            dir,
        } => launch_class(
            py,
            "BackendLimitError",
            message,
            vec![value(py, limit), value(py, running), path_value(py, &dir)],
        ),
        LaunchError::FixedEndpoint { .. } => launch_class(py, "EndpointError", message, vec![]),
        LaunchError::Stale { field, .. } => {
            launch_class(py, "StaleIdentityError", message, vec![value(py, field)])
        }
    }
}

fn binary_variant(err: &BinaryError) -> (&'static str, Option<String>) {
    let p = |p: &Path| Some(p.to_string_lossy().into_owned());
    match err {
        BinaryError::EmptyBinaryPath => ("EmptyBinaryPath", None),
        BinaryError::EmptyPerVersionBinaryDir => ("EmptyPerVersionBinaryDir", None),
        BinaryError::CanonicalizeBinary { path, .. } => ("CanonicalizeBinary", p(path)),
        BinaryError::CanonicalizeBinaryRoot { path, .. } => ("CanonicalizeBinaryRoot", p(path)),
        BinaryError::BinaryOutsideAllowRoot { binary, .. } => ("BinaryOutsideAllowRoot", p(binary)),
        BinaryError::NotExecutable { path, .. } => ("NotExecutable", p(path)),
        BinaryError::InsecurePermissions { path, .. } => ("InsecurePermissions", p(path)),
        BinaryError::BadInterpreter { path, .. } => ("BadInterpreter", p(path)),
        BinaryError::Io { path, .. } => ("Io", p(path)),
    }
}

pub(crate) fn identity_file_error(py: Python<'_>, err: IdentityFileError) -> PyErr {
    match err {
        IdentityFileError::Fs(e) => fs_error(py, e),
        IdentityFileError::Form(e) => validation_error(py, e),
        IdentityFileError::Decode { source, .. } => decode_error(py, source),
    }
}

impl From<IdentityFileError> for PyErr {
    fn from(err: IdentityFileError) -> PyErr {
        Python::attach(|py| identity_file_error(py, err))
    }
}

impl From<LaunchError> for PyErr {
    fn from(err: LaunchError) -> PyErr {
        Python::attach(|py| launch_error(py, err))
    }
}

pub(crate) fn server_error(py: Python<'_>, err: ServerError) -> PyErr {
    let message = err.to_string();
    match err {
        ServerError::Fs(e) => fs_error(py, e),
        ServerError::Host(e) => host_error(py, e),
        ServerError::Validation(v) => validation_error(py, v),
        ServerError::MissingEnv { name } => build(
            py,
            "BackendServerError",
            message.clone(),
            vec![value(py, name), value(py, message)],
        ),
        ServerError::InvalidEnv { name, reason, .. } => build(
            py,
            "BackendServerError",
            message,
            vec![value(py, name), value(py, reason)],
        ),
        other => {
            let message = other.to_string();
            build(
                py,
                "BackendServerError",
                message.clone(),
                vec![py.None().into_bound(py), value(py, message)],
            )
        }
    }
}

/// `RefusedError(code, reason, retry_after_ms)` for a refused request.
pub(crate) fn refused_error(
    py: Python<'_>,
    code: ErrorCode,
    reason: String,
    retry_after_ms: u64,
) -> PyErr {
    let message = format!("refused with {}: {reason}", code.name());
    let code_obj = match pyo3::Py::new(py, super::values::PyErrorCode::from(code)) {
        Ok(c) => c.into_any().into_bound(py),
        Err(e) => return e,
    };
    build(
        py,
        "RefusedError",
        message,
        vec![code_obj, value(py, reason), value(py, retry_after_ms)],
    )
}
