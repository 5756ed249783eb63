//! Python classes for the registry and the Hello router, and the adapter that
//! lets a launcher written in Python serve the Rust router.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyMapping};

use super::launcher::{PyBackendHandle, PyCommandBackendLauncher};
use super::values::{
    pyrepr, PyBackendKey, PyEndpoint, PyErrorCode, PyServiceDefinition, PyTraceContext,
};
use crate::contract::keys::BackendKey;
use crate::contract::service::ServiceDefinition;
use crate::contract::trace::TraceContext;
use crate::launch::{BackendHandle, BackendLauncher, LaunchError};
use crate::reuse::registry::BackendRegistry;
use crate::reuse::router::{
    Catalog, ErrorCode, HelloRouter, ReverifyPolicy, RouteOutcome, RouterOptions,
};

/// A launcher implemented in Python (any object with a ``launch(key,
/// service_definition, trace_context)`` method returning a ``BackendHandle``).
struct PythonLauncher {
    obj: Py<PyAny>,
}

impl BackendLauncher for PythonLauncher {
    fn launch(
        &self,
        key: &BackendKey,
        sd: &ServiceDefinition,
        trace: &TraceContext,
    ) -> Result<BackendHandle, LaunchError> {
        Python::attach(|py| {
            let args = (
                PyBackendKey { inner: key.clone() },
                PyServiceDefinition { inner: sd.clone() },
                PyTraceContext {
                    inner: trace.clone(),
                },
            );
            let returned =
                self.obj
                    .call_method1(py, "launch", args)
                    .map_err(|e| LaunchError::Launcher {
                        message: e.to_string(),
                    })?;
            let returned = returned.bind(py);
            match returned.cast::<PyBackendHandle>() {
                Ok(handle) => Ok(handle.get().inner.clone()),
                Err(_) => Err(LaunchError::Launcher {
                    message: format!(
                        "launch() returned {}, not a BackendHandle",
                        returned
                            .get_type()
                            .name()
                            .map(|n| n.to_string())
                            .unwrap_or_default()
                    ),
                }),
            }
        })
    }
}

/// A request answered with a verified backend.
#[pyclass(name = "Negotiated", module = "running_process._native", frozen)]
pub struct PyNegotiated {
    handle: Py<PyBackendHandle>,
    endpoint: PyEndpoint,
    daemon_version: String,
}

#[pymethods]
impl PyNegotiated {
    #[getter]
    fn handle(&self, py: Python<'_>) -> Py<PyBackendHandle> {
        self.handle.clone_ref(py)
    }

    #[getter]
    fn endpoint(&self) -> PyEndpoint {
        self.endpoint.clone()
    }

    #[getter]
    fn daemon_version(&self) -> &str {
        &self.daemon_version
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Negotiated(endpoint={}, daemon_version={})",
            pyrepr(py, &self.endpoint.inner.path),
            pyrepr(py, &self.daemon_version)
        )
    }
}

/// A request refused with a v1 error code.
#[pyclass(name = "Refused", module = "running_process._native", frozen)]
pub struct PyRefused {
    code: PyErrorCode,
    reason: String,
    retry_after_ms: u64,
}

#[pymethods]
impl PyRefused {
    #[getter]
    fn code(&self) -> PyErrorCode {
        self.code
    }

    #[getter]
    fn reason(&self) -> &str {
        &self.reason
    }

    /// For RATE_LIMITED: milliseconds until a new attempt may be admitted.
    #[getter]
    fn retry_after_ms(&self) -> u64 {
        self.retry_after_ms
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Refused(code=ErrorCode.{}, reason={}, retry_after_ms={})",
            ErrorCode::from(self.code).name(),
            pyrepr(py, &self.reason),
            self.retry_after_ms
        )
    }
}

/// Live backends by key.
#[pyclass(name = "BackendRegistry", module = "running_process._native", frozen)]
pub struct PyBackendRegistry {
    inner: Arc<BackendRegistry>,
}

#[pymethods]
impl PyBackendRegistry {
    #[new]
    fn new() -> Self {
        PyBackendRegistry {
            inner: Arc::new(BackendRegistry::new()),
        }
    }

    /// Registers ``handle`` under ``key``; returns the handle it replaces.
    fn insert(&self, key: &PyBackendKey, handle: &PyBackendHandle) -> Option<PyBackendHandle> {
        self.inner
            .insert(key.inner.clone(), handle.inner.clone())
            .map(|inner| PyBackendHandle { inner })
    }

    fn get(&self, key: &PyBackendKey) -> Option<PyBackendHandle> {
        self.inner
            .get(&key.inner)
            .map(|inner| PyBackendHandle { inner })
    }

    /// Removes the entry (the backend keeps running); returns its handle.
    fn remove(&self, key: &PyBackendKey) -> Option<PyBackendHandle> {
        self.inner
            .remove(&key.inner)
            .map(|inner| PyBackendHandle { inner })
    }

    fn items(&self) -> Vec<(PyBackendKey, PyBackendHandle)> {
        self.inner
            .items()
            .into_iter()
            .map(|(k, e)| {
                (
                    PyBackendKey { inner: k },
                    PyBackendHandle { inner: e.handle },
                )
            })
            .collect()
    }

    /// Removes entries whose process has exited; returns their keys.
    fn prune_stale(&self, py: Python<'_>) -> Vec<PyBackendKey> {
        py.detach(|| self.inner.prune_stale())
            .into_iter()
            .map(|inner| PyBackendKey { inner })
            .collect()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __contains__(&self, key: &PyBackendKey) -> bool {
        self.inner.items().iter().any(|(k, _)| *k == key.inner)
    }
}

fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        PyValueError::new_err(format!(
            "{name} must be a non-negative number of seconds, got {value}"
        ))
    })
}

fn reverify_policy(value: &Bound<'_, PyAny>) -> PyResult<ReverifyPolicy> {
    if let Ok(text) = value.extract::<String>() {
        return match text.as_str() {
            "never" => Ok(ReverifyPolicy::Never),
            "always" => Ok(ReverifyPolicy::Always),
            other => Err(PyValueError::new_err(format!(
                "reverify must be 'never', 'always' or a number of seconds, got {other:?}"
            ))),
        };
    }
    let secs: f64 = value.extract().map_err(|_| {
        PyTypeError::new_err("reverify must be 'never', 'always' or a number of seconds")
    })?;
    Ok(ReverifyPolicy::OlderThan(seconds("reverify", secs)?))
}

fn catalog_from(value: &Bound<'_, PyAny>) -> PyResult<Catalog> {
    if let Ok(mapping) = value.cast::<PyMapping>() {
        if !value.is_instance_of::<pyo3::types::PyString>() {
            let copy = PyDict::new(value.py());
            copy.update(mapping)?;
            let mut definitions = Vec::new();
            for (name, sd) in copy.iter() {
                let name: String = name.extract()?;
                let sd = sd.cast::<PyServiceDefinition>().map_err(|_| {
                    PyTypeError::new_err(format!("catalog[{name:?}] is not a ServiceDefinition"))
                })?;
                definitions.push((name, sd.get().inner.clone()));
            }
            return Ok(Catalog::from_definitions(definitions)?);
        }
    }
    let dir: PathBuf = value.extract().map_err(|_| {
        PyTypeError::new_err(
            "catalog must be a .servicedef directory path or a mapping of ServiceDefinition",
        )
    })?;
    Ok(Catalog::Dir(dir))
}

/// Routes requests to verified backends: reuse, single flight, admission
/// control. See ``running_process._native.pyi`` for the full contract.
#[pyclass(name = "HelloRouter", module = "running_process._native", frozen)]
pub struct PyHelloRouter {
    inner: Arc<HelloRouter>,
    registry: Arc<BackendRegistry>,
}

#[pymethods]
impl PyHelloRouter {
    #[new]
    #[pyo3(signature = (launcher, catalog, reverify = None, spawn_budget = 3, budget_window = 30.0, max_concurrent_launches = 4, max_live_backends = None, verify_timeout = 5.0, shutdown_grace = 5.0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        launcher: Bound<'_, PyAny>,
        catalog: Bound<'_, PyAny>,
        reverify: Option<Bound<'_, PyAny>>,
        spawn_budget: u32,
        budget_window: f64,
        max_concurrent_launches: usize,
        max_live_backends: Option<usize>,
        verify_timeout: f64,
        shutdown_grace: f64,
    ) -> PyResult<Self> {
        super::logbridge::connect_here();
        let launcher: Arc<dyn BackendLauncher> = match launcher.cast::<PyCommandBackendLauncher>() {
            Ok(native) => native.get().shared(),
            Err(_) => {
                if !launcher.hasattr("launch")? {
                    return Err(PyTypeError::new_err("launcher must have a launch(key, service_definition, trace_context) method"));
                }
                Arc::new(PythonLauncher {
                    obj: launcher.unbind(),
                })
            }
        };
        let options = RouterOptions {
            reverify: match reverify {
                None => ReverifyPolicy::Never,
                Some(v) => reverify_policy(&v)?,
            },
            spawn_budget,
            budget_window: seconds("budget_window", budget_window)?,
            max_concurrent_launches: max_concurrent_launches.max(1),
            max_live_backends,
            verify_timeout: seconds("verify_timeout", verify_timeout)?
                .max(Duration::from_millis(1)),
            shutdown_grace: seconds("shutdown_grace", shutdown_grace)?,
        };
        let registry = Arc::new(BackendRegistry::new());
        let inner = HelloRouter::with_registry(
            launcher,
            catalog_from(&catalog)?,
            options,
            Arc::clone(&registry),
        );
        Ok(PyHelloRouter {
            inner: Arc::new(inner),
            registry,
        })
    }

    /// Answers a request with ``Negotiated`` or ``Refused`` (GIL released).
    #[pyo3(signature = (service_name, wanted_version, trace_context = None))]
    fn route(
        &self,
        py: Python<'_>,
        service_name: &str,
        wanted_version: &str,
        trace_context: Option<&PyTraceContext>,
    ) -> PyResult<Py<PyAny>> {
        let trace = trace_context.map(|t| t.inner.clone()).unwrap_or_default();
        let outcome = py.detach(|| self.inner.route(service_name, wanted_version, &trace));
        outcome_to_py(py, outcome)
    }

    /// The verified handle, or ``RefusedError`` carrying code, reason and
    /// retry_after_ms.
    #[pyo3(signature = (service_name, wanted_version, trace_context = None))]
    fn get_backend(
        &self,
        py: Python<'_>,
        service_name: &str,
        wanted_version: &str,
        trace_context: Option<&PyTraceContext>,
    ) -> PyResult<PyBackendHandle> {
        let trace = trace_context.map(|t| t.inner.clone()).unwrap_or_default();
        match py.detach(|| self.inner.route(service_name, wanted_version, &trace)) {
            RouteOutcome::Negotiated { handle, .. } => Ok(PyBackendHandle { inner: handle }),
            RouteOutcome::Refused {
                code,
                reason,
                retry_after_ms,
            } => Err(super::errors::refused_error(
                py,
                code,
                reason,
                retry_after_ms,
            )),
        }
    }

    /// ``route`` as a coroutine (see ``running_process.aio``).
    #[pyo3(signature = (service_name, wanted_version, trace_context = None))]
    fn route_async<'py>(
        slf: &Bound<'py, Self>,
        service_name: String,
        wanted_version: String,
        trace_context: Option<Bound<'py, PyTraceContext>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        super::aio_call(
            slf.py(),
            "route_async",
            (slf, service_name, wanted_version, trace_context),
        )
    }

    /// ``get_backend`` as a coroutine (see ``running_process.aio``).
    #[pyo3(signature = (service_name, wanted_version, trace_context = None))]
    fn get_backend_async<'py>(
        slf: &Bound<'py, Self>,
        service_name: String,
        wanted_version: String,
        trace_context: Option<Bound<'py, PyTraceContext>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        super::aio_call(
            slf.py(),
            "get_backend_async",
            (slf, service_name, wanted_version, trace_context),
        )
    }

    /// The router's registry.
    #[getter]
    fn registry(&self) -> PyBackendRegistry {
        PyBackendRegistry {
            inner: Arc::clone(&self.registry),
        }
    }

    /// How many launches the router has started.
    #[getter]
    fn launch_count(&self) -> u64 {
        self.inner.launch_count()
    }

    /// Shuts every registered backend down gracefully.
    fn shutdown_all(&self, py: Python<'_>) {
        py.detach(|| self.inner.shutdown_all());
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.shutdown_all(py);
        false
    }
}

fn outcome_to_py(py: Python<'_>, outcome: RouteOutcome) -> PyResult<Py<PyAny>> {
    Ok(match outcome {
        RouteOutcome::Negotiated {
            handle,
            endpoint,
            daemon_version,
        } => Py::new(
            py,
            PyNegotiated {
                handle: Py::new(py, PyBackendHandle { inner: handle })?,
                endpoint: PyEndpoint { inner: endpoint },
                daemon_version,
            },
        )?
        .into_any(),
        RouteOutcome::Refused {
            code,
            reason,
            retry_after_ms,
        } => Py::new(
            py,
            PyRefused {
                code: code.into(),
                reason,
                retry_after_ms,
            },
        )?
        .into_any(),
    })
}
