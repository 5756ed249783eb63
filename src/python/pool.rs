//! Python classes for the cross-process pool.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::launcher::{PyBackendHandle, PyCommandBackendLauncher};
use super::values::{pyrepr, PyBackendKey, PyDaemonProcess, PyServiceDefinition, PyTraceContext};
use crate::reuse::pool::{BackendPool, PoolEntry, PoolError};

impl From<PoolError> for PyErr {
    fn from(err: PoolError) -> PyErr {
        match err {
            PoolError::Launch(e) => e.into(),
            PoolError::Fs(e) => e.into(),
        }
    }
}

fn grace(timeout: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(timeout).map_err(|_| {
        PyValueError::new_err(format!(
            "timeout must be a non-negative number of seconds, got {timeout}"
        ))
    })
}

fn positive_secs(name: &str, secs: f64) -> PyResult<Duration> {
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(PyValueError::new_err(format!(
            "{name} must be a positive number of seconds, got {secs}"
        ))),
    }
}

/// One backend recorded in a pool.
#[pyclass(name = "PoolEntry", module = "running_process._native", frozen)]
pub struct PyPoolEntry {
    inner: PoolEntry,
}

#[pymethods]
impl PyPoolEntry {
    #[getter]
    fn key(&self) -> PyBackendKey {
        PyBackendKey {
            inner: self.inner.key.clone(),
        }
    }

    #[getter]
    fn daemon(&self) -> PyDaemonProcess {
        PyDaemonProcess {
            inner: self.inner.daemon.clone(),
        }
    }

    /// Whether the recorded process still runs (pidfd check, no probe).
    #[getter]
    fn alive(&self) -> bool {
        self.inner.alive
    }

    /// The environment policy it was started with, in one line (see
    /// ``ServiceDefinition.env_summary``); None for older records.
    #[getter]
    fn environment(&self) -> Option<String> {
        self.inner.environment.clone()
    }

    /// Whether it was set aside while busy: no longer handed out, left to
    /// finish with its clients.
    #[getter]
    fn retired(&self) -> bool {
        self.inner.retired
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "<PoolEntry {} pid={} alive={}{} endpoint={}>",
            self.inner.key,
            self.inner.daemon.pid,
            if self.inner.alive { "True" } else { "False" },
            if self.inner.retired {
                " retired=True"
            } else {
                ""
            },
            pyrepr(py, &self.inner.daemon.ipc_endpoint.path)
        )
    }
}

/// One verified backend per key for every process of the user.
#[pyclass(name = "BackendPool", module = "running_process._native", frozen)]
pub struct PyBackendPool {
    inner: BackendPool,
}

#[pymethods]
impl PyBackendPool {
    #[new]
    #[pyo3(signature = (launcher, state_dir = None, verify_timeout = 5.0))]
    fn new(
        launcher: &PyCommandBackendLauncher,
        state_dir: Option<PathBuf>,
        verify_timeout: f64,
    ) -> PyResult<Self> {
        super::logbridge::connect_here();
        let verify_timeout = positive_secs("verify_timeout", verify_timeout)?;
        Ok(PyBackendPool {
            inner: BackendPool::new(Arc::clone(launcher.command()), state_dir)
                .with_verify_timeout(verify_timeout),
        })
    }

    /// The recorded backend of ``key`` if it still verifies, else a new one
    /// launched under the key's cross-process lock (GIL released).
    #[pyo3(signature = (key, service_definition, trace_context = None))]
    fn get_or_launch(
        &self,
        py: Python<'_>,
        key: &PyBackendKey,
        service_definition: &PyServiceDefinition,
        trace_context: Option<&PyTraceContext>,
    ) -> PyResult<PyBackendHandle> {
        let trace = trace_context.map(|t| t.inner.clone()).unwrap_or_default();
        let (key, sd) = (key.inner.clone(), service_definition.inner.clone());
        let inner = py.detach(|| self.inner.get_or_launch(&key, &sd, &trace))?;
        Ok(PyBackendHandle { inner })
    }

    /// ``get_or_launch`` as a coroutine (see ``running_process.aio``).
    #[pyo3(signature = (key, service_definition, trace_context = None))]
    fn get_or_launch_async<'py>(
        slf: &Bound<'py, Self>,
        key: Bound<'py, PyBackendKey>,
        service_definition: Bound<'py, PyServiceDefinition>,
        trace_context: Option<Bound<'py, PyTraceContext>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        super::aio_call(
            slf.py(),
            "get_or_launch_async",
            (slf, key, service_definition, trace_context),
        )
    }

    /// The recorded backend of ``key`` if it passes full verification
    /// (never launches); None otherwise.
    #[pyo3(signature = (key, trace_context = None))]
    fn get(
        &self,
        py: Python<'_>,
        key: &PyBackendKey,
        trace_context: Option<&PyTraceContext>,
    ) -> Option<PyBackendHandle> {
        let trace = trace_context.map(|t| t.inner.clone()).unwrap_or_default();
        let key = key.inner.clone();
        py.detach(|| self.inner.get(&key, &trace))
            .map(|inner| PyBackendHandle { inner })
    }

    /// Every backend recorded in the pool.
    fn list(&self, py: Python<'_>) -> PyResult<Vec<PyPoolEntry>> {
        let entries = py.detach(|| self.inner.list())?;
        Ok(entries
            .into_iter()
            .map(|inner| PyPoolEntry { inner })
            .collect())
    }

    /// Stops ``key``'s backend if it verifies (SIGTERM, ``timeout``, SIGKILL)
    /// and forgets it; True if one was running. Its log file is removed when
    /// it ended within ``timeout``, unless ``keep_log``.
    #[pyo3(signature = (key, timeout = 5.0, keep_log = false))]
    fn stop(
        &self,
        py: Python<'_>,
        key: &PyBackendKey,
        timeout: f64,
        keep_log: bool,
    ) -> PyResult<bool> {
        let grace = grace(timeout)?;
        let key = key.inner.clone();
        Ok(py.detach(|| {
            if keep_log {
                self.inner.stop_keeping_log(&key, grace)
            } else {
                self.inner.stop(&key, grace)
            }
        })?)
    }

    /// Stops every backend of the pool; how many were running. Logs go as
    /// with :meth:`stop`.
    #[pyo3(signature = (timeout = 5.0, keep_log = false))]
    fn stop_all(&self, py: Python<'_>, timeout: f64, keep_log: bool) -> PyResult<usize> {
        let grace = grace(timeout)?;
        Ok(py.detach(|| self.inner.stop_all(grace, keep_log))?)
    }

    /// Removes (or with ``dry_run`` only lists) what ended backends left
    /// behind in this user's private directories: records of backends that
    /// are provably gone, unused lock files, temporary files, log files no
    /// process has open, socket files nothing listens on. Files younger than
    /// ``min_age`` seconds are left alone. Returns the paths per kind and
    /// the bytes freed. GIL released.
    #[pyo3(signature = (dry_run = false, min_age = 60.0))]
    fn gc<'py>(
        &self,
        py: Python<'py>,
        dry_run: bool,
        min_age: f64,
    ) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let min_age = Duration::try_from_secs_f64(min_age).map_err(|_| {
            PyValueError::new_err(format!(
                "min_age must be a non-negative number of seconds, got {min_age}"
            ))
        })?;
        let report = py.detach(|| self.inner.gc(dry_run, min_age))?;
        let out = pyo3::types::PyDict::new(py);
        let text = |paths: &[PathBuf]| -> Vec<String> {
            paths
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect()
        };
        out.set_item("records", text(&report.records))?;
        out.set_item("locks", text(&report.locks))?;
        out.set_item("temporary", text(&report.temporary))?;
        out.set_item("logs", text(&report.logs))?;
        out.set_item("sockets", text(&report.sockets))?;
        out.set_item("bytes", report.bytes)?;
        Ok(out)
    }

    #[getter]
    fn state_dir(&self) -> String {
        self.inner.state_dir().to_string_lossy().into_owned()
    }

    /// Seconds the verification of a recorded backend may take.
    #[getter]
    fn verify_timeout(&self) -> f64 {
        self.inner.verify_timeout().as_secs_f64()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!("BackendPool(state_dir={})", pyrepr(py, &self.state_dir()))
    }
}
