//! Python classes for the launcher and the handle of a launched backend.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::os::fd::IntoRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::values::{
    pyrepr, returncode, PyBackendKey, PyDaemonProcess, PyEndpoint, PyServiceDefinition,
    PyTraceContext,
};
use crate::contract::clock;
use crate::contract::identity::DaemonProcess;
use crate::contract::keys::BackendKey;
use crate::launch::{
    BackendHandle, BackendLauncher, CommandBackendLauncher, LaunchOptions, LaunchRequest,
    DEFAULT_ENV_SCRUB, DEFAULT_MAX_BACKENDS, DEFAULT_MAX_LOG_BYTES,
};
use crate::sys::host;
use crate::sys::identity_file::read_identity_file;

/// How long a wait runs without the GIL before checking for signals.
const WAIT_SLICE: Duration = Duration::from_millis(100);

fn duration(name: &str, secs: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(secs).map_err(|_| {
        PyValueError::new_err(format!(
            "{name} must be a non-negative number of seconds, got {secs}"
        ))
    })
}

/// Launches backends as children of this process and verifies their identity.
#[pyclass(
    name = "CommandBackendLauncher",
    module = "running_process._native",
    frozen
)]
pub struct PyCommandBackendLauncher {
    inner: Arc<CommandBackendLauncher>,
}

#[allow(clippy::too_many_arguments)]
fn build_launcher(
    user_sid_hash: Option<&str>,
    idle_timeout_secs: Option<u32>,
    ready_timeout: f64,
    log_dir: Option<PathBuf>,
    socket_dir: Option<PathBuf>,
    env_scrub: Option<Vec<String>>,
    full_probe_interval: f64,
    max_backends: Option<u32>,
    max_log_bytes: Option<u64>,
) -> PyResult<PyCommandBackendLauncher> {
    let idle_timeout_secs = match idle_timeout_secs {
        None => None,
        Some(secs) => Some(NonZeroU32::new(secs).ok_or_else(|| {
            PyValueError::new_err("idle_timeout_secs must be at least 1 (None: never idle out)")
        })?),
    };
    let options = LaunchOptions {
        idle_timeout_secs,
        ready_timeout: duration("ready_timeout", ready_timeout)?,
        log_dir,
        socket_dir,
        env_scrub: env_scrub
            .unwrap_or_else(|| DEFAULT_ENV_SCRUB.iter().map(|s| (*s).to_owned()).collect()),
        full_probe_interval: duration("full_probe_interval", full_probe_interval)?,
        max_backends,
        max_log_bytes,
    };
    let inner = match user_sid_hash {
        Some(hash) => CommandBackendLauncher::new(hash, options)?,
        None => CommandBackendLauncher::new(&host::user_sid_hash()?, options)?,
    };
    Ok(PyCommandBackendLauncher {
        inner: Arc::new(inner),
    })
}

impl PyCommandBackendLauncher {
    /// The command launcher itself (the pool needs its adoption).
    pub(crate) fn command(&self) -> &Arc<CommandBackendLauncher> {
        &self.inner
    }

    /// The launcher, for Rust code that takes any launcher.
    pub(crate) fn shared(&self) -> Arc<dyn BackendLauncher> {
        Arc::clone(&self.inner) as Arc<dyn BackendLauncher>
    }
}

#[pymethods]
impl PyCommandBackendLauncher {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (user_sid_hash, idle_timeout_secs = Some(30), ready_timeout = 10.0, log_dir = None, socket_dir = None, env_scrub = None, full_probe_interval = 5.0, max_backends = Some(DEFAULT_MAX_BACKENDS), max_log_bytes = Some(DEFAULT_MAX_LOG_BYTES)))]
    fn new(
        user_sid_hash: &str,
        idle_timeout_secs: Option<u32>,
        ready_timeout: f64,
        log_dir: Option<PathBuf>,
        socket_dir: Option<PathBuf>,
        env_scrub: Option<Vec<String>>,
        full_probe_interval: f64,
        max_backends: Option<u32>,
        max_log_bytes: Option<u64>,
    ) -> PyResult<Self> {
        super::logbridge::connect_here();
        build_launcher(
            Some(user_sid_hash),
            idle_timeout_secs,
            ready_timeout,
            log_dir,
            socket_dir,
            env_scrub,
            full_probe_interval,
            max_backends,
            max_log_bytes,
        )
    }

    /// A launcher for the calling user (its per-user hash from this machine).
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (idle_timeout_secs = Some(30), ready_timeout = 10.0, log_dir = None, socket_dir = None, env_scrub = None, full_probe_interval = 5.0, max_backends = Some(DEFAULT_MAX_BACKENDS), max_log_bytes = Some(DEFAULT_MAX_LOG_BYTES)))]
    fn for_current_user(
        idle_timeout_secs: Option<u32>,
        ready_timeout: f64,
        log_dir: Option<PathBuf>,
        socket_dir: Option<PathBuf>,
        env_scrub: Option<Vec<String>>,
        full_probe_interval: f64,
        max_backends: Option<u32>,
        max_log_bytes: Option<u64>,
    ) -> PyResult<Self> {
        super::logbridge::connect_here();
        build_launcher(
            None,
            idle_timeout_secs,
            ready_timeout,
            log_dir,
            socket_dir,
            env_scrub,
            full_probe_interval,
            max_backends,
            max_log_bytes,
        )
    }

    /// Launches and verifies a backend (the GIL is released throughout).
    /// ``endpoint`` serves it at a fixed endpoint instead of an allocated
    /// one (a verified backend of the definition already serving it is
    /// handed out instead of a second launch); ``arg_values`` fills the
    /// definition's own argument placeholders.
    #[pyo3(signature = (key, service_definition, trace_context = None, *, endpoint = None, arg_values = None))]
    fn launch(
        &self,
        py: Python<'_>,
        key: &PyBackendKey,
        service_definition: &PyServiceDefinition,
        trace_context: Option<&PyTraceContext>,
        endpoint: Option<&PyEndpoint>,
        arg_values: Option<BTreeMap<String, String>>,
    ) -> PyResult<PyBackendHandle> {
        let trace = trace_context.map(|t| t.inner.clone()).unwrap_or_default();
        let (key, sd) = (key.inner.clone(), service_definition.inner.clone());
        let request = LaunchRequest {
            endpoint: endpoint.map(|e| e.inner.clone()),
            arg_values: arg_values.unwrap_or_default(),
        };
        let handle = py.detach(|| self.inner.launch_with(&key, &sd, &trace, &request))?;
        Ok(PyBackendHandle { inner: handle })
    }

    /// A handle on a daemon some other process started, described by
    /// ``daemon`` (from an identity file, say), after the whole verification
    /// of a launch; ``StaleIdentityError`` if it has ended or ran in another
    /// boot. The daemon is not our child: ``shutdown`` signals it through
    /// its pidfd.
    #[pyo3(signature = (key, service_definition, daemon, trace_context = None, timeout = 5.0))]
    fn adopt(
        &self,
        py: Python<'_>,
        key: &PyBackendKey,
        service_definition: &PyServiceDefinition,
        daemon: &PyDaemonProcess,
        trace_context: Option<&PyTraceContext>,
        timeout: f64,
    ) -> PyResult<PyBackendHandle> {
        let trace = trace_context.map(|t| t.inner.clone()).unwrap_or_default();
        let timeout = duration("timeout", timeout)?;
        let (key, sd, daemon) = (
            key.inner.clone(),
            service_definition.inner.clone(),
            daemon.inner.clone(),
        );
        let handle = py.detach(|| self.inner.adopt(&key, &sd, &daemon, &trace, timeout))?;
        Ok(PyBackendHandle { inner: handle })
    }

    /// ``adopt`` of the daemon an identity file describes (read strictly:
    /// an absent or malformed file raises).
    #[pyo3(signature = (key, service_definition, path, trace_context = None, timeout = 5.0))]
    fn adopt_identity_file(
        &self,
        py: Python<'_>,
        key: &PyBackendKey,
        service_definition: &PyServiceDefinition,
        path: PathBuf,
        trace_context: Option<&PyTraceContext>,
        timeout: f64,
    ) -> PyResult<PyBackendHandle> {
        let daemon = PyDaemonProcess {
            inner: py.detach(|| read_identity_file(&path))?,
        };
        self.adopt(py, key, service_definition, &daemon, trace_context, timeout)
    }

    /// ``launch`` as a coroutine (see ``running_process.aio``).
    #[pyo3(signature = (key, service_definition, trace_context = None, *, endpoint = None, arg_values = None))]
    fn launch_async<'py>(
        slf: &Bound<'py, Self>,
        key: Bound<'py, PyBackendKey>,
        service_definition: Bound<'py, PyServiceDefinition>,
        trace_context: Option<Bound<'py, PyTraceContext>>,
        endpoint: Option<Bound<'py, PyEndpoint>>,
        arg_values: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let kwargs = PyDict::new(py);
        kwargs.set_item("endpoint", endpoint)?;
        kwargs.set_item("arg_values", arg_values)?;
        py.import("running_process.aio")?
            .getattr("launch_async")?
            .call((slf, key, service_definition, trace_context), Some(&kwargs))
    }

    #[getter]
    fn user_sid_hash(&self) -> &str {
        self.inner.user_sid_hash()
    }

    #[getter]
    fn idle_timeout_secs(&self) -> Option<u32> {
        self.inner.options().idle_timeout_secs.map(NonZeroU32::get)
    }

    #[getter]
    fn ready_timeout(&self) -> f64 {
        self.inner.options().ready_timeout.as_secs_f64()
    }

    /// Seconds a backend this process fully verified may be adopted again on
    /// the kernel's word alone (0: every adoption probes).
    #[getter]
    fn full_probe_interval(&self) -> f64 {
        self.inner.options().full_probe_interval.as_secs_f64()
    }

    #[getter]
    fn log_dir(&self) -> String {
        self.inner.log_dir().to_string_lossy().into_owned()
    }

    #[getter]
    fn socket_dir(&self) -> String {
        self.inner.socket_dir().to_string_lossy().into_owned()
    }

    #[getter]
    fn env_scrub(&self) -> Vec<String> {
        self.inner.options().env_scrub.clone()
    }

    /// The backends this launcher started that are still running (not yet
    /// reaped), whoever holds their handles.
    fn live_children(&self) -> Vec<(PyBackendKey, PyDaemonProcess)> {
        pairs(self.inner.live_children())
    }

    /// Kills (through the pidfd, then reaped) every backend this launcher
    /// started that still runs; returns their identities.
    fn kill_children(&self, py: Python<'_>) -> Vec<(PyBackendKey, PyDaemonProcess)> {
        pairs(py.detach(|| self.inner.kill_children()))
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "CommandBackendLauncher(user_sid_hash={}, idle_timeout_secs={}, ready_timeout={}, log_dir={}, socket_dir={})",
            pyrepr(py, self.inner.user_sid_hash()),
            self.idle_timeout_secs().map_or_else(|| "None".to_owned(), |s| s.to_string()),
            self.ready_timeout(),
            pyrepr(py, &self.log_dir()),
            pyrepr(py, &self.socket_dir()),
        )
    }
}

/// A verified, running backend. A context manager that shuts it down on exit.
#[pyclass(name = "BackendHandle", module = "running_process._native", frozen)]
pub struct PyBackendHandle {
    pub(crate) inner: BackendHandle,
}

#[pymethods]
impl PyBackendHandle {
    /// The verified identity.
    #[getter]
    fn daemon(&self) -> PyDaemonProcess {
        PyDaemonProcess {
            inner: self.inner.daemon().clone(),
        }
    }

    #[getter]
    fn endpoint(&self) -> PyEndpoint {
        PyEndpoint {
            inner: self.inner.endpoint().clone(),
        }
    }

    #[getter]
    fn key(&self) -> PyBackendKey {
        PyBackendKey {
            inner: self.inner.key().clone(),
        }
    }

    #[getter]
    fn service_name(&self) -> &str {
        self.inner.key().service_name()
    }

    #[getter]
    fn service_version(&self) -> &str {
        self.inner.key().service_version()
    }

    #[getter]
    fn pid(&self) -> u32 {
        self.inner.pid()
    }

    /// The backend's stdout/stderr log file.
    #[getter]
    fn log_path(&self) -> String {
        self.inner.log_path().to_string_lossy().into_owned()
    }

    /// The exit status once the backend has ended (negative: the signal),
    /// else None.
    #[getter]
    fn returncode(&self) -> Option<i32> {
        self.inner.exit().and_then(returncode)
    }

    /// Whether the backend process is running (checked through its pidfd).
    fn is_alive(&self) -> bool {
        self.inner.is_alive()
    }

    /// Re-runs the full verification (alive, peer credentials, executable,
    /// nonce probe, identity); raises a ``BackendLaunchError`` subclass.
    #[pyo3(signature = (trace_context = None, timeout = 5.0))]
    fn verify(
        &self,
        py: Python<'_>,
        trace_context: Option<&PyTraceContext>,
        timeout: f64,
    ) -> PyResult<()> {
        let trace = trace_context.map(|t| t.inner.clone()).unwrap_or_default();
        if timeout.is_nan() || timeout <= 0.0 {
            return Err(PyValueError::new_err(format!(
                "timeout must be a positive number of seconds, got {timeout}"
            )));
        }
        let timeout = duration("timeout", timeout)?;
        Ok(py.detach(|| self.inner.verify(&trace, timeout))?)
    }

    /// A new connection to the backend as a ``socket.socket``.
    fn connect<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let stream = py.detach(|| self.inner.connect())?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("fileno", stream.into_raw_fd())?;
        py.import("socket")?
            .getattr("socket")?
            .call((), Some(&kwargs))
    }

    /// Waits up to ``timeout`` seconds (forever if None) for the backend to
    /// exit; returns its return code, or None on timeout.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<i32>> {
        let deadline = match timeout {
            Some(t) => Some(clock::deadline_after(duration("timeout", t)?)),
            None => None,
        };
        // In slices, so that Ctrl-C (and other signals) reach Python.
        loop {
            let slice = match deadline {
                Some(d) => d
                    .saturating_duration_since(std::time::Instant::now())
                    .min(WAIT_SLICE),
                None => WAIT_SLICE,
            };
            if let Some(exit) = py.detach(|| self.inner.wait(slice)) {
                return Ok(returncode(exit));
            }
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Ok(None);
            }
            py.check_signals()?;
        }
    }

    /// SIGTERM, up to ``timeout`` seconds to exit, then SIGKILL; returns the
    /// return code. The socket file is removed if the backend left it.
    #[pyo3(signature = (timeout = 5.0))]
    fn shutdown(&self, py: Python<'_>, timeout: f64) -> PyResult<Option<i32>> {
        let grace = duration("timeout", timeout)?;
        Ok(returncode(py.detach(|| self.inner.shutdown(grace))))
    }

    /// SIGKILL; returns the return code once reaped.
    fn kill(&self, py: Python<'_>) -> Option<i32> {
        returncode(py.detach(|| self.inner.kill()))
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        py.detach(|| self.inner.shutdown(Duration::from_secs(5)));
        false
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "<BackendHandle {} pid={} endpoint={}>",
            self.inner.key(),
            self.inner.pid(),
            pyrepr(py, &self.inner.endpoint().path)
        )
    }
}

fn pairs(children: Vec<(BackendKey, DaemonProcess)>) -> Vec<(PyBackendKey, PyDaemonProcess)> {
    children
        .into_iter()
        .map(|(key, daemon)| {
            (
                PyBackendKey { inner: key },
                PyDaemonProcess { inner: daemon },
            )
        })
        .collect()
}
