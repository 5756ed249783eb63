//! `DaemonProcess`, the verified identity of a backend.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use super::{pyrepr, PyEndpoint};
use crate::contract::error::DecodeError;
use crate::contract::identity::{hash_from_slice, DaemonProcess};

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
