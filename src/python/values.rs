//! Python classes for the v1 value types. Each wraps one Rust type of
//! `crate::broker` and adds only what Python needs: keyword constructors that
//! validate, read-only properties, `__eq__`/`__hash__`, `__repr__`, pickling.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyMapping, PyString, PyType};

use crate::contract::error::{DecodeError, ValidationError};
use crate::contract::identity::{hash_from_slice, DaemonProcess, Endpoint};
use crate::contract::keys::{BackendKey, BrokerInstanceKey};
use crate::contract::service::{Isolation, ServiceDefinition};
use crate::contract::trace::TraceContext;

/// Python's `repr()` of a string (falls back to Rust quoting if Python fails).
pub(crate) fn pyrepr(py: Python<'_>, s: &str) -> String {
    PyString::new(py, s)
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| format!("{s:?}"))
}

/// A path argument (str or os.PathLike) as UTF-8 text, which the wire format
/// requires.
pub(crate) fn path_text(field: &'static str, path: PathBuf) -> Result<String, ValidationError> {
    path.into_os_string()
        .into_string()
        .map_err(|raw| ValidationError::ServiceDefinition {
            field,
            value: raw.to_string_lossy().into_owned(),
            reason: "is not valid UTF-8".to_owned(),
        })
}

/// What `__reduce__` returns: a callable and its arguments.
type Reduce<'py, Args> = (Bound<'py, PyAny>, Args);

/// `__reduce__` of an enum member: `getattr(cls, name)`, as Python's own
/// `enum` pickles members by name.
pub(crate) type ByName<'py> = Reduce<'py, (Bound<'py, PyType>, &'static str)>;

pub(crate) fn reduce_by_name<'py, T: pyo3::PyTypeInfo>(
    py: Python<'py>,
    name: &'static str,
) -> PyResult<ByName<'py>> {
    Ok((
        py.import("builtins")?.getattr("getattr")?,
        (py.get_type::<T>(), name),
    ))
}

/// Labels from any mapping of str to str (dict, MappingProxyType, ...).
fn labels_from_mapping(mapping: &Bound<'_, PyAny>) -> PyResult<BTreeMap<String, String>> {
    if let Ok(dict) = mapping.cast::<PyDict>() {
        return dict.extract();
    }
    let copy = PyDict::new(mapping.py());
    copy.update(mapping.cast::<PyMapping>()?)?;
    copy.extract()
}

/// Which broker instance serves a service.
#[pyclass(
    name = "Isolation",
    module = "running_process._native",
    eq,
    eq_int,
    frozen,
    from_py_object
)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum PyIsolation {
    PRIVATE = 0,
    SHARED = 1,
    EXPLICIT = 2,
}

impl From<Isolation> for PyIsolation {
    fn from(i: Isolation) -> Self {
        match i {
            Isolation::Private => PyIsolation::PRIVATE,
            Isolation::Shared => PyIsolation::SHARED,
            Isolation::Explicit => PyIsolation::EXPLICIT,
        }
    }
}

impl From<PyIsolation> for Isolation {
    fn from(i: PyIsolation) -> Self {
        match i {
            PyIsolation::PRIVATE => Isolation::Private,
            PyIsolation::SHARED => Isolation::Shared,
            PyIsolation::EXPLICIT => Isolation::Explicit,
        }
    }
}

#[pymethods]
impl PyIsolation {
    /// The member with wire value ``value``.
    #[staticmethod]
    fn from_value(value: i32) -> PyResult<Self> {
        Isolation::from_i32(value).map(Into::into).ok_or_else(|| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "{value} is not an Isolation value (0, 1 or 2)"
            ))
        })
    }

    /// The member's name (``"PRIVATE"``, ``"SHARED"``, ``"EXPLICIT"``).
    #[getter]
    fn name(&self) -> &'static str {
        Isolation::from(*self).name()
    }

    /// The wire value (0, 1, 2).
    #[getter]
    fn value(&self) -> i32 {
        Isolation::from(*self) as i32
    }

    /// Hashes as the wire value, because members compare equal to it.
    fn __hash__(&self) -> isize {
        self.value() as isize
    }

    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<ByName<'py>> {
        reduce_by_name::<PyIsolation>(py, self.name())
    }
}

/// A backend service (the v1 ``ServiceDefinition`` message).
#[pyclass(
    name = "ServiceDefinition",
    module = "running_process._native",
    frozen,
    eq,
    hash
)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PyServiceDefinition {
    pub(crate) inner: ServiceDefinition,
}

#[pymethods]
impl PyServiceDefinition {
    #[new]
    #[pyo3(signature = (
        service_name,
        binary_path,
        per_version_binary_dir,
        isolation = PyIsolation::PRIVATE,
        explicit_instance = String::new(),
        min_version = String::new(),
        version_allow_list = Vec::new(),
        labels = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        service_name: String,
        binary_path: PathBuf,
        per_version_binary_dir: PathBuf,
        isolation: PyIsolation,
        explicit_instance: String,
        min_version: String,
        version_allow_list: Vec<String>,
        labels: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let labels = match labels {
            None => BTreeMap::new(),
            Some(mapping) => labels_from_mapping(&mapping)?,
        };
        let inner = ServiceDefinition {
            service_name,
            binary_path: path_text("binary_path", binary_path)?,
            per_version_binary_dir: path_text("per_version_binary_dir", per_version_binary_dir)?,
            isolation: isolation.into(),
            explicit_instance,
            min_version,
            version_allow_list,
            labels,
        };
        inner.validate()?;
        Ok(PyServiceDefinition { inner })
    }

    #[getter]
    fn service_name(&self) -> &str {
        &self.inner.service_name
    }

    #[getter]
    fn binary_path(&self) -> &str {
        &self.inner.binary_path
    }

    #[getter]
    fn per_version_binary_dir(&self) -> &str {
        &self.inner.per_version_binary_dir
    }

    #[getter]
    fn isolation(&self) -> PyIsolation {
        self.inner.isolation.into()
    }

    #[getter]
    fn explicit_instance(&self) -> &str {
        &self.inner.explicit_instance
    }

    #[getter]
    fn min_version(&self) -> &str {
        &self.inner.min_version
    }

    /// A copy of the allow-list (changing it does not change the definition).
    #[getter]
    fn version_allow_list(&self) -> Vec<String> {
        self.inner.version_allow_list.clone()
    }

    /// A copy of the labels (changing it does not change the definition).
    #[getter]
    fn labels(&self) -> BTreeMap<String, String> {
        self.inner.labels.clone()
    }

    /// Re-applies every rule of the contract; raises on the first broken one.
    fn validate(&self) -> PyResult<()> {
        Ok(self.inner.validate()?)
    }

    /// Raises ``InvalidVersionError`` or ``VersionRefusedError`` unless this
    /// definition admits ``version``.
    fn check_version(&self, version: &str) -> PyResult<()> {
        Ok(self.inner.check_version(version)?)
    }

    /// Protobuf encoding.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.to_bytes())
    }

    /// Decodes and validates a protobuf encoding.
    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<Self> {
        Ok(PyServiceDefinition {
            inner: ServiceDefinition::from_bytes(data)?,
        })
    }

    /// Saves as ``{service_name}.servicedef`` (atomically, mode 0600) in
    /// ``dir`` or the default directory; returns the file path.
    #[pyo3(signature = (dir = None))]
    fn save(&self, py: Python<'_>, dir: Option<PathBuf>) -> PyResult<String> {
        let path = py.detach(|| self.inner.save(dir.as_deref()))?;
        Ok(path.to_string_lossy().into_owned())
    }

    /// Loads ``{service_name}.servicedef`` from ``dir`` or the default directory.
    #[staticmethod]
    #[pyo3(signature = (service_name, dir = None))]
    fn load(py: Python<'_>, service_name: &str, dir: Option<PathBuf>) -> PyResult<Self> {
        let inner = py.detach(|| ServiceDefinition::load(service_name, dir.as_deref()))?;
        Ok(PyServiceDefinition { inner })
    }

    /// Loads a definition from a ``.servicedef`` file path.
    #[staticmethod]
    fn load_file(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = py.detach(|| ServiceDefinition::load_file(&path))?;
        Ok(PyServiceDefinition { inner })
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let sd = &self.inner;
        let list: Vec<String> = sd
            .version_allow_list
            .iter()
            .map(|v| pyrepr(py, v))
            .collect();
        let labels: Vec<String> = sd
            .labels
            .iter()
            .map(|(k, v)| format!("{}: {}", pyrepr(py, k), pyrepr(py, v)))
            .collect();
        format!(
            "ServiceDefinition(service_name={}, binary_path={}, per_version_binary_dir={}, \
             isolation=Isolation.{}, explicit_instance={}, min_version={}, \
             version_allow_list=[{}], labels={{{}}})",
            pyrepr(py, &sd.service_name),
            pyrepr(py, &sd.binary_path),
            pyrepr(py, &sd.per_version_binary_dir),
            sd.isolation.name(),
            pyrepr(py, &sd.explicit_instance),
            pyrepr(py, &sd.min_version),
            list.join(", "),
            labels.join(", "),
        )
    }

    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyBytes>,))> {
        Ok((
            py.get_type::<PyServiceDefinition>().getattr("from_bytes")?,
            (self.to_bytes(py),),
        ))
    }
}

/// Where a backend listens: a namespace id and a Unix socket path.
#[pyclass(
    name = "Endpoint",
    module = "running_process._native",
    frozen,
    eq,
    hash,
    from_py_object
)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PyEndpoint {
    pub(crate) inner: Endpoint,
}

#[pymethods]
impl PyEndpoint {
    #[new]
    fn new(namespace_id: &str, path: PathBuf) -> PyResult<Self> {
        let path =
            path.into_os_string()
                .into_string()
                .map_err(|raw| ValidationError::Identity {
                    field: "path",
                    value: raw.to_string_lossy().into_owned(),
                    reason: "is not valid UTF-8".to_owned(),
                })?;
        Ok(PyEndpoint {
            inner: Endpoint::new(namespace_id, &path)?,
        })
    }

    #[getter]
    fn namespace_id(&self) -> &str {
        &self.inner.namespace_id
    }

    #[getter]
    fn path(&self) -> &str {
        &self.inner.path
    }

    fn __fspath__(&self) -> &str {
        &self.inner.path
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Endpoint(namespace_id={}, path={})",
            pyrepr(py, &self.inner.namespace_id),
            pyrepr(py, &self.inner.path)
        )
    }

    fn __reduce__<'py>(&self, py: Python<'py>) -> (Bound<'py, PyType>, (String, String)) {
        (
            py.get_type::<PyEndpoint>(),
            (self.inner.namespace_id.clone(), self.inner.path.clone()),
        )
    }
}

/// A broker instance: ``shared``, ``private:<service>`` or ``explicit:<name>``.
#[pyclass(
    name = "BrokerInstanceKey",
    module = "running_process._native",
    frozen,
    eq,
    hash,
    from_py_object
)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PyBrokerInstanceKey {
    pub(crate) inner: BrokerInstanceKey,
}

#[pymethods]
impl PyBrokerInstanceKey {
    /// The user's shared broker.
    #[staticmethod]
    fn shared() -> Self {
        PyBrokerInstanceKey {
            inner: BrokerInstanceKey::shared(),
        }
    }

    /// The private broker of ``service_name``.
    #[staticmethod]
    fn private(service_name: &str) -> PyResult<Self> {
        Ok(PyBrokerInstanceKey {
            inner: BrokerInstanceKey::private(service_name)?,
        })
    }

    /// The broker instance named ``name``.
    #[staticmethod]
    fn explicit(name: &str) -> PyResult<Self> {
        Ok(PyBrokerInstanceKey {
            inner: BrokerInstanceKey::explicit(name)?,
        })
    }

    /// The instance a service definition asks for (by its isolation).
    #[staticmethod]
    fn from_service_definition(sd: &PyServiceDefinition) -> PyResult<Self> {
        Ok(PyBrokerInstanceKey {
            inner: BrokerInstanceKey::from_service_definition(&sd.inner)?,
        })
    }

    /// Parses an instance id such as ``"private:zccache"``.
    #[staticmethod]
    fn from_id(id: &str) -> PyResult<Self> {
        Ok(PyBrokerInstanceKey {
            inner: BrokerInstanceKey::from_id(id)?,
        })
    }

    /// The instance id of the contract.
    fn id(&self) -> String {
        self.inner.id()
    }

    #[getter]
    fn isolation(&self) -> PyIsolation {
        self.inner.isolation().into()
    }

    /// The service (PRIVATE) or instance (EXPLICIT) name; None for SHARED.
    #[getter]
    fn name(&self) -> Option<&str> {
        self.inner.name()
    }

    /// Path of this instance's broker socket in ``socket_dir`` (default: the
    /// user's socket directory). Raises ``PathTooLongError`` if it would not
    /// fit ``sun_path``.
    #[pyo3(signature = (user_sid_hash, socket_dir = None))]
    fn socket_path(&self, user_sid_hash: &str, socket_dir: Option<PathBuf>) -> PyResult<String> {
        let dir = socket_dir.unwrap_or_else(crate::sys::host::socket_dir);
        let path = self.inner.socket_path(user_sid_hash, &dir)?;
        Ok(path.to_string_lossy().into_owned())
    }

    fn __str__(&self) -> String {
        self.inner.id()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        match &self.inner {
            BrokerInstanceKey::Shared => "BrokerInstanceKey.shared()".to_owned(),
            BrokerInstanceKey::Private(s) => {
                format!("BrokerInstanceKey.private({})", pyrepr(py, s))
            }
            BrokerInstanceKey::Explicit(n) => {
                format!("BrokerInstanceKey.explicit({})", pyrepr(py, n))
            }
        }
    }

    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, (String,))> {
        Ok((
            py.get_type::<PyBrokerInstanceKey>().getattr("from_id")?,
            (self.inner.id(),),
        ))
    }
}

/// One backend: a service at a version, served by a broker instance.
#[pyclass(
    name = "BackendKey",
    module = "running_process._native",
    frozen,
    eq,
    hash,
    from_py_object
)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PyBackendKey {
    pub(crate) inner: BackendKey,
}

#[pymethods]
impl PyBackendKey {
    #[new]
    fn new(
        instance: PyBrokerInstanceKey,
        service_name: &str,
        service_version: &str,
    ) -> PyResult<Self> {
        Ok(PyBackendKey {
            inner: BackendKey::new(instance.inner, service_name, service_version)?,
        })
    }

    /// The key of ``service_definition`` at ``version``.
    #[staticmethod]
    fn for_service(service_definition: &PyServiceDefinition, version: &str) -> PyResult<Self> {
        Ok(PyBackendKey {
            inner: BackendKey::for_service(&service_definition.inner, version)?,
        })
    }

    #[getter]
    fn instance(&self) -> PyBrokerInstanceKey {
        PyBrokerInstanceKey {
            inner: self.inner.instance().clone(),
        }
    }

    #[getter]
    fn service_name(&self) -> &str {
        self.inner.service_name()
    }

    #[getter]
    fn service_version(&self) -> &str {
        self.inner.service_version()
    }

    fn __str__(&self) -> String {
        self.inner.to_string()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "BackendKey(instance={}, service_name={}, service_version={})",
            self.instance().__repr__(py),
            pyrepr(py, self.inner.service_name()),
            pyrepr(py, self.inner.service_version())
        )
    }

    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> (Bound<'py, PyType>, (PyBrokerInstanceKey, String, String)) {
        (
            py.get_type::<PyBackendKey>(),
            (
                self.instance(),
                self.inner.service_name().to_owned(),
                self.inner.service_version().to_owned(),
            ),
        )
    }
}

/// A W3C trace context (validated) and the request id it travels with.
#[pyclass(
    name = "TraceContext",
    module = "running_process._native",
    frozen,
    eq,
    hash,
    from_py_object
)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PyTraceContext {
    pub(crate) inner: TraceContext,
}

#[pymethods]
impl PyTraceContext {
    #[new]
    #[pyo3(signature = (request_id = 0, traceparent = String::new(), tracestate = String::new()))]
    fn new(request_id: u64, traceparent: String, tracestate: String) -> PyResult<Self> {
        Ok(PyTraceContext {
            inner: TraceContext::new(request_id, traceparent, tracestate)?,
        })
    }

    /// A fresh root context: random trace and parent ids, sampled.
    #[staticmethod]
    #[pyo3(signature = (request_id = 0))]
    fn new_root(request_id: u64) -> PyResult<Self> {
        Ok(PyTraceContext {
            inner: TraceContext::new_root(request_id)?,
        })
    }

    /// The context a launcher passed to this backend through its environment.
    #[staticmethod]
    fn from_env() -> PyResult<Self> {
        Ok(PyTraceContext {
            inner: TraceContext::from_env()?,
        })
    }

    #[getter]
    fn request_id(&self) -> u64 {
        self.inner.request_id()
    }

    #[getter]
    fn traceparent(&self) -> &str {
        self.inner.traceparent()
    }

    #[getter]
    fn tracestate(&self) -> &str {
        self.inner.tracestate()
    }

    /// The 32-hex-digit trace id, or None without a traceparent.
    #[getter]
    fn trace_id(&self) -> Option<&str> {
        self.inner.trace_id()
    }

    /// The 16-hex-digit parent id, or None without a traceparent.
    #[getter]
    fn parent_id(&self) -> Option<&str> {
        self.inner.parent_id()
    }

    /// The trace flags byte, or None without a traceparent.
    #[getter]
    fn trace_flags(&self) -> Option<u8> {
        self.inner.trace_flags()
    }

    /// Whether the sampled flag is set.
    #[getter]
    fn sampled(&self) -> bool {
        self.inner.sampled()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "TraceContext(request_id={}, traceparent={}, tracestate={})",
            self.inner.request_id(),
            pyrepr(py, self.inner.traceparent()),
            pyrepr(py, self.inner.tracestate())
        )
    }

    fn __reduce__<'py>(&self, py: Python<'py>) -> (Bound<'py, PyType>, (u64, String, String)) {
        (
            py.get_type::<PyTraceContext>(),
            (
                self.inner.request_id(),
                self.inner.traceparent().to_owned(),
                self.inner.tracestate().to_owned(),
            ),
        )
    }
}

/// The verified identity of a running backend (the v1 ``DaemonProcess``).
#[pyclass(
    name = "DaemonProcess",
    module = "running_process._native",
    frozen,
    eq,
    hash,
    from_py_object
)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PyDaemonProcess {
    pub(crate) inner: DaemonProcess,
}

#[pymethods]
impl PyDaemonProcess {
    #[new]
    #[pyo3(signature = (pid, exe_path, exe_sha256, boot_id, ipc_endpoint, started_at_unix_ms, idle_timeout_secs = None))]
    fn new(
        pid: u32,
        exe_path: String,
        exe_sha256: &[u8],
        boot_id: String,
        ipc_endpoint: PyEndpoint,
        started_at_unix_ms: u64,
        idle_timeout_secs: Option<u32>,
    ) -> PyResult<Self> {
        let inner = DaemonProcess {
            pid,
            exe_path,
            exe_sha256: hash_from_slice(exe_sha256)?,
            boot_id,
            ipc_endpoint: ipc_endpoint.inner,
            started_at_unix_ms,
            idle_timeout_secs,
        };
        inner.validate()?;
        Ok(PyDaemonProcess { inner })
    }

    #[getter]
    fn pid(&self) -> u32 {
        self.inner.pid
    }

    #[getter]
    fn exe_path(&self) -> &str {
        &self.inner.exe_path
    }

    /// The executable's SHA-256 digest (32 bytes).
    #[getter]
    fn exe_sha256<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.exe_sha256)
    }

    /// The executable's SHA-256 digest as 64 lowercase hex digits.
    #[getter]
    fn exe_sha256_hex(&self) -> String {
        self.inner.exe_sha256_hex()
    }

    #[getter]
    fn boot_id(&self) -> &str {
        &self.inner.boot_id
    }

    #[getter]
    fn ipc_endpoint(&self) -> PyEndpoint {
        PyEndpoint {
            inner: self.inner.ipc_endpoint.clone(),
        }
    }

    #[getter]
    fn started_at_unix_ms(&self) -> u64 {
        self.inner.started_at_unix_ms
    }

    #[getter]
    fn idle_timeout_secs(&self) -> Option<u32> {
        self.inner.idle_timeout_secs
    }

    /// Protobuf encoding.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.to_bytes())
    }

    /// Decodes and validates a protobuf encoding.
    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<Self> {
        Ok(PyDaemonProcess {
            inner: DaemonProcess::from_bytes(data)?,
        })
    }

    /// JSON encoding, with the hash as hex.
    fn to_json(&self) -> String {
        self.inner.to_json()
    }

    /// Decodes and validates the JSON encoding. A str that has no UTF-8
    /// form (a lone surrogate) is not JSON text: ``DecodeError``.
    #[staticmethod]
    fn from_json(text: &Bound<'_, PyString>) -> PyResult<Self> {
        let text = text.to_cow().map_err(|err| DecodeError::Malformed {
            what: "DaemonProcess JSON",
            reason: format!("is not Unicode text: {err}"),
        })?;
        Ok(PyDaemonProcess {
            inner: DaemonProcess::from_json(&text)?,
        })
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let d = &self.inner;
        format!(
            "DaemonProcess(pid={}, exe_path={}, exe_sha256=bytes.fromhex('{}'), boot_id={}, \
             ipc_endpoint={}, started_at_unix_ms={}, idle_timeout_secs={})",
            d.pid,
            pyrepr(py, &d.exe_path),
            d.exe_sha256_hex(),
            pyrepr(py, &d.boot_id),
            self.ipc_endpoint().__repr__(py),
            d.started_at_unix_ms,
            d.idle_timeout_secs
                .map_or_else(|| "None".to_owned(), |s| s.to_string()),
        )
    }

    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyBytes>,))> {
        Ok((
            py.get_type::<PyDaemonProcess>().getattr("from_bytes")?,
            (self.to_bytes(py),),
        ))
    }
}
