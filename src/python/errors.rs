//! Maps the core's error enums onto the exception classes of
//! `running_process.errors`, one class per variant family, with the variant's
//! data as attributes.

use std::path::Path;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;
use pyo3::IntoPyObjectExt;

use crate::contract::error::{
    AllocError, DecodeError, FsError, HostError, StoreError, ValidationError,
};
use crate::launch::LaunchError;
use crate::reuse::router::ErrorCode;
use crate::sdk::ServerError;
use crate::sys::exe::BinaryError;
use crate::sys::reaper::Exit;

static ERRORS_MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// One attribute of an exception.
type Field<'py> = (&'static str, Bound<'py, PyAny>);

fn value<'py>(py: Python<'py>, v: impl IntoPyObject<'py>) -> Bound<'py, PyAny> {
    // Strings, integers and None never fail to convert.
    v.into_bound_py_any(py)
        .unwrap_or_else(|_| py.None().into_bound(py))
}

fn path_value<'py>(py: Python<'py>, p: &Path) -> Bound<'py, PyAny> {
    value(py, p.to_string_lossy().into_owned())
}

/// Builds `running_process.errors.<class>(message, **fields)` as a `PyErr`.
fn build(py: Python<'_>, class: &str, message: String, fields: Vec<Field<'_>>) -> PyErr {
    let made = (|| -> PyResult<PyErr> {
        let module = ERRORS_MODULE.get_or_try_init(py, || {
            py.import("running_process.errors").map(Bound::unbind)
        })?;
        let cls = module.bind(py).getattr(class)?;
        let kwargs = PyDict::new(py);
        for (name, v) in fields {
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
            vec![
                ("kind", value(py, kind.as_str())),
                ("value", value(py, v)),
                ("reason", value(py, reason)),
            ],
        ),
        ValidationError::Version { value: v, reason } => build(
            py,
            "InvalidVersionError",
            message,
            vec![("value", value(py, v)), ("reason", value(py, reason))],
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
                ("service_name", value(py, service_name)),
                ("version", value(py, version)),
                ("rule", value(py, rule.field())),
                ("reason", value(py, reason)),
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
        vec![
            ("field", value(py, field)),
            ("value", value(py, v)),
            ("reason", value(py, reason)),
        ],
    )
}

pub(crate) fn fs_error(py: Python<'_>, err: FsError) -> PyErr {
    let message = err.to_string();
    match err {
        FsError::InsecureDirectory { path, reason } => build(
            py,
            "InsecureDirectoryError",
            message,
            vec![
                ("path", path_value(py, &path)),
                ("reason", value(py, reason)),
            ],
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
                ("path", path_value(py, &path)),
                ("operation", value(py, operation)),
                ("os_errno", value(py, source.raw_os_error())),
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
        vec![
            ("what", value(py, what)),
            ("path", value(py, path)),
            ("reason", value(py, reason)),
        ],
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
        vec![("what", value(py, what)), ("reason", value(py, reason))],
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
            vec![
                ("path", path_value(py, &path)),
                ("length", value(py, length)),
                ("limit", value(py, limit)),
            ],
        ),
        AllocError::Exhausted { attempts, dir } => build(
            py,
            "AllocationExhaustedError",
            message,
            vec![
                ("attempts", value(py, attempts)),
                ("dir", path_value(py, &dir)),
            ],
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
            vec![
                ("service_name", value(py, service_name)),
                ("path", path_value(py, &path)),
            ],
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
                ("field", value(py, "service_name")),
                ("value", value(py, service_name)),
                (
                    "reason",
                    value(
                        py,
                        format!("the file stem is {stem:?}; it must equal the service name"),
                    ),
                ),
                ("path", path_value(py, &path)),
                ("stem", value(py, stem)),
            ],
        ),
        StoreError::TooLarge { path, .. } => build(
            py,
            "DecodeError",
            message.clone(),
            vec![
                (
                    "what",
                    value(py, format!("ServiceDefinition file {}", path.display())),
                ),
                ("reason", value(py, message)),
            ],
        ),
        StoreError::Invalid(v) => validation_error(py, v),
        StoreError::Decode { source, .. } => match source {
            DecodeError::Invalid(v) => validation_error(py, v),
            other => build(
                py,
                "DecodeError",
                message,
                vec![
                    ("what", value(py, "ServiceDefinition")),
                    ("reason", value(py, other.to_string())),
                ],
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
    fields.insert(0, ("reason", value(py, message.clone())));
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
                vec![("variant", value(py, variant)), ("path", value(py, path))],
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
            vec![
                ("path", path_value(py, &path)),
                ("os_errno", value(py, errno)),
            ],
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
                ("pid", value(py, pid)),
                ("returncode", value(py, returncode(exit).unwrap_or(-1))),
                ("log_tail", value(py, log_tail)),
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
                ("pid", value(py, pid)),
                ("timeout", value(py, timeout.as_secs_f64())),
                ("log_tail", value(py, log_tail)),
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
            vec![
                ("field", value(py, field)),
                ("expected", value(py, expected)),
                ("actual", value(py, actual)),
            ],
        ),
        LaunchError::Probe(_) => launch_class(py, "ProbeError", message, vec![]),
        LaunchError::Host(h) => host_error(py, h),
        LaunchError::Launcher { .. } => launch_class(py, "LauncherError", message, vec![]),
    }
}

/// `subprocess`-style return code: the exit status, or minus the signal;
/// None when the status belongs to another parent.
pub(crate) fn returncode(exit: Exit) -> Option<i32> {
    match exit {
        Exit::Code(c) => Some(c),
        Exit::Signal(s) => Some(-s),
        Exit::Unknown => None,
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
            vec![
                ("variable", value(py, name)),
                ("reason", value(py, message)),
            ],
        ),
        ServerError::InvalidEnv { name, reason, .. } => build(
            py,
            "BackendServerError",
            message,
            vec![("variable", value(py, name)), ("reason", value(py, reason))],
        ),
        other => {
            let message = other.to_string();
            build(
                py,
                "BackendServerError",
                message.clone(),
                vec![
                    ("variable", py.None().into_bound(py)),
                    ("reason", value(py, message)),
                ],
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
    let code_obj = match pyo3::Py::new(py, super::router::PyErrorCode::from(code)) {
        Ok(c) => c.into_any().into_bound(py),
        Err(e) => return e,
    };
    build(
        py,
        "RefusedError",
        message,
        vec![
            ("code", code_obj),
            ("reason", value(py, reason)),
            ("retry_after_ms", value(py, retry_after_ms)),
        ],
    )
}
