//! Python class for the backend SDK's server.

use std::os::fd::IntoRawFd;
use std::path::PathBuf;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::values::{pyrepr, PyDaemonProcess, PyEndpoint, PyTraceContext};
use crate::sdk::{BackendServer, Connection, ServerConfig, ServerError, ShutdownReason};

/// The backend side of the contract: binds the endpoint from the
/// environment, answers identity probes on its own thread, and hands every
/// other connection to the application untouched.
#[pyclass(name = "BackendServer", module = "running_process._native", frozen)]
pub struct PyBackendServer {
    inner: BackendServer,
}

/// The file the identity should name for this Python process: the script it
/// runs (the kernel passes scripts as `/dev/fd/N`, which resolves to the
/// script), or None to use the interpreter.
fn running_script(py: Python<'_>) -> PyResult<Option<PathBuf>> {
    let argv = py.import("sys")?.getattr("argv")?;
    let Ok(first) = argv.get_item(0) else {
        return Ok(None);
    };
    let Ok(first) = first.extract::<String>() else {
        return Ok(None);
    };
    if first.is_empty() || first == "-c" || first == "-m" {
        return Ok(None);
    }
    match std::fs::canonicalize(&first) {
        Ok(path) if path.is_file() => Ok(Some(path)),
        _ => Ok(None),
    }
}

impl PyBackendServer {
    fn wrap_connection<'py>(
        &self,
        py: Python<'py>,
        conn: Connection,
        server: Py<Self>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let fd = conn.into_raw_fd();
        let made = (|| {
            let kwargs = pyo3::types::PyDict::new(py);
            kwargs.set_item("fileno", fd)?;
            kwargs.set_item("server", server)?;
            py.import("running_process.backend")?
                .getattr("BackendConnection")?
                .call((), Some(&kwargs))
        })();
        if made.is_err() {
            // Not handed over: close it and stop counting it.
            // SAFETY: `fd` came from `into_raw_fd` and nothing else owns it.
            drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
            self.inner.connection_closed();
        }
        made
    }
}

#[pymethods]
impl PyBackendServer {
    /// Reads the environment contract and binds. ``exe_path`` is the file the
    /// identity names; by default the running script (for a ``#!`` backend)
    /// or else the interpreter. With ``exit_on_sigterm`` (the default)
    /// SIGTERM and SIGINT shut the server down gracefully. With
    /// ``identity_file`` the server publishes its identity there once bound
    /// (JSON of the current generation, atomically, mode 0600) and removes
    /// it when it ends cleanly.
    #[staticmethod]
    #[pyo3(signature = (exe_path = None, exit_on_sigterm = true, identity_file = None))]
    fn from_env(
        py: Python<'_>,
        exe_path: Option<PathBuf>,
        exit_on_sigterm: bool,
        identity_file: Option<PathBuf>,
    ) -> PyResult<Py<Self>> {
        super::logbridge::connect_here();
        // Signal handling goes in before the bind, so a SIGTERM that arrives
        // right after the launcher sees the socket still ends gracefully.
        let mut config = ServerConfig::from_env()?.with_exit_on_sigterm(exit_on_sigterm);
        if let Some(exe) = exe_path.or(running_script(py)?) {
            config = config.with_identity_exe(exe);
        }
        if let Some(path) = identity_file {
            config = config.with_identity_file(path);
        }
        let inner = py.detach(|| BackendServer::bind(config))?;
        let server = Py::new(py, PyBackendServer { inner })?;
        // A program that just ends must not drop the server during
        // interpreter finalization (with the GIL held) while its threads may
        // still want the GIL: shut it down at exit, before finalization.
        py.import("atexit")?
            .getattr("register")?
            .call1((server.getattr(py, "shutdown")?,))?;
        Ok(server)
    }

    /// The next application connection as a ``socket.socket`` (nothing read
    /// from it yet), or None once the server has shut down or after
    /// ``timeout`` seconds.
    #[pyo3(signature = (timeout = None))]
    fn accept<'py>(
        slf: &Bound<'py, Self>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = slf.py();
        let this = slf.get();
        let got = match timeout {
            None => py.detach(|| this.inner.accept().map(Some)),
            Some(t) => {
                let t = Duration::try_from_secs_f64(t).map_err(|_| {
                    PyValueError::new_err(format!("timeout must be a non-negative number, got {t}"))
                })?;
                py.detach(|| this.inner.accept_timeout(t))
            }
        };
        match got {
            Ok(Some(conn)) => this
                .wrap_connection(py, conn, slf.clone().unbind())
                .map(Some),
            Ok(None) => Ok(None),
            Err(ServerError::ShuttingDown) => {
                // Finish the shutdown (join the accept thread) without the
                // GIL: that thread may need it for its last log record, and
                // a later drop with the GIL held would then wait forever.
                py.detach(|| this.inner.shutdown());
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Tells the server an accepted connection is finished (the
    /// ``BackendConnection`` returned by ``accept`` does this when closed).
    fn connection_closed(&self, py: Python<'_>) {
        py.detach(|| self.inner.connection_closed());
    }

    /// Application connections handed out and not yet closed.
    #[getter]
    fn open_connections(&self, py: Python<'_>) -> usize {
        py.detach(|| self.inner.open_connections())
    }

    /// The identity this server reports to probes.
    #[getter]
    fn identity(&self) -> PyDaemonProcess {
        PyDaemonProcess {
            inner: self.inner.identity().clone(),
        }
    }

    #[getter]
    fn endpoint(&self) -> PyEndpoint {
        PyEndpoint {
            inner: self.inner.endpoint().clone(),
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

    #[getter]
    fn trace_context(&self) -> PyTraceContext {
        PyTraceContext {
            inner: self.inner.trace_context().clone(),
        }
    }

    /// Why the server stopped (``"requested"``, ``"idle"``, ``"signal
    /// SIGTERM"``, ...), or None while it runs.
    #[getter]
    fn shutdown_reason(&self) -> Option<String> {
        self.inner.shutdown_reason().map(|r| match r {
            ShutdownReason::Requested => "requested".to_owned(),
            ShutdownReason::Idle => "idle".to_owned(),
            other => other.to_string(),
        })
    }

    /// Blocks until the server stops (idle timeout, signal, ``shutdown``);
    /// returns the reason, or None after ``timeout`` seconds.
    #[pyo3(signature = (timeout = None))]
    fn wait_for_shutdown(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<String>> {
        match timeout {
            None => {
                py.detach(|| self.inner.wait_for_shutdown());
            }
            Some(t) => {
                let t = Duration::try_from_secs_f64(t).map_err(|_| {
                    PyValueError::new_err(format!("timeout must be a non-negative number, got {t}"))
                })?;
                py.detach(|| self.inner.wait_for_shutdown_timeout(t));
            }
        }
        let reason = self.shutdown_reason();
        if reason.is_some() {
            // See `accept`: complete the shutdown without the GIL.
            py.detach(|| self.inner.shutdown());
        }
        Ok(reason)
    }

    /// Stops accepting, removes the socket file and wakes ``accept``.
    fn shutdown(&self, py: Python<'_>) {
        py.detach(|| self.inner.shutdown());
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.shutdown(py);
        false
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "<BackendServer {} {} pid={} endpoint={}>",
            self.inner.service_name(),
            self.inner.service_version(),
            self.inner.identity().pid,
            pyrepr(py, &self.inner.endpoint().path)
        )
    }
}

impl From<ServerError> for PyErr {
    fn from(err: ServerError) -> PyErr {
        Python::attach(|py| super::errors::server_error(py, err))
    }
}
