//! `DaemonProcess`, the verified identity of a backend.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use super::{pyrepr, PyEndpoint};
use crate::contract::error::DecodeError;
use crate::contract::identity::{digest_from_slice, DaemonProcess, JsonForm};

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
    #[pyo3(signature = (pid, exe_path, exe_sha256, boot_id, ipc_endpoint, started_at_unix_ms, idle_timeout_secs = None, *, exe_blake3 = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        pid: u32,
        exe_path: String,
        exe_sha256: Option<&[u8]>,
        boot_id: String,
        ipc_endpoint: PyEndpoint,
        started_at_unix_ms: u64,
        idle_timeout_secs: Option<u32>,
        exe_blake3: Option<&[u8]>,
    ) -> PyResult<Self> {
        let inner = DaemonProcess {
            pid,
            exe_path,
            exe_sha256: match exe_sha256 {
                Some(bytes) => digest_from_slice("exe_sha256", bytes)?,
                None => [0; 32],
            },
            exe_blake3: exe_blake3
                .map(|bytes| digest_from_slice("exe_blake3", bytes))
                .transpose()?,
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

    /// The executable's SHA-256 digest (32 bytes; zeros for a BLAKE3-only
    /// identity).
    #[getter]
    fn exe_sha256<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.exe_sha256)
    }

    /// The executable's BLAKE3 digest (32 bytes), or ``None`` for a
    /// first-generation identity.
    #[getter]
    fn exe_blake3<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.inner.exe_blake3.map(|d| PyBytes::new(py, &d))
    }

    /// ``"blake3"`` (current generation) or ``"sha256"`` (first).
    #[getter]
    fn exe_hash_algorithm(&self) -> &'static str {
        self.inner.exe_hash_algorithm().as_str()
    }

    /// The executable hash of :attr:`exe_hash_algorithm` (32 bytes).
    #[getter]
    fn exe_hash<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.exe_hash())
    }

    /// :attr:`exe_hash` as 64 lowercase hex digits.
    #[getter]
    fn exe_hash_hex(&self) -> String {
        hex::encode(self.inner.exe_hash())
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

    /// JSON encoding: ``form=None`` writes the identity's own generation,
    /// ``"current"`` the 4.10 form (needs a BLAKE3 hash), ``"legacy"`` the
    /// 4.5 form (needs a real SHA-256); ``pretty`` indents as identity files
    /// are written.
    #[pyo3(signature = (form = None, *, pretty = false))]
    fn to_json(&self, form: Option<&str>, pretty: bool) -> PyResult<String> {
        let form = match form {
            None => match self.inner.exe_blake3 {
                Some(_) => JsonForm::Current,
                None => JsonForm::Legacy,
            },
            Some(name) => json_form(name)?,
        };
        Ok(self.inner.to_json_form(form, pretty)?)
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
             ipc_endpoint={}, started_at_unix_ms={}, idle_timeout_secs={}{})",
            d.pid,
            pyrepr(py, &d.exe_path),
            d.exe_sha256_hex(),
            pyrepr(py, &d.boot_id),
            self.ipc_endpoint().__repr__(py),
            d.started_at_unix_ms,
            d.idle_timeout_secs
                .map_or_else(|| "None".to_owned(), |s| s.to_string()),
            d.exe_blake3.map_or_else(String::new, |b| format!(
                ", exe_blake3=bytes.fromhex('{}')",
                hex::encode(b)
            )),
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

/// A JSON form by its Python name.
pub(crate) fn json_form(name: &str) -> PyResult<JsonForm> {
    match name {
        "current" => Ok(JsonForm::Current),
        "legacy" => Ok(JsonForm::Legacy),
        other => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "form must be \"current\" or \"legacy\", not {other:?}"
        ))),
    }
}
