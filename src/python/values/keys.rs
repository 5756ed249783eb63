//! `Endpoint`, `BrokerInstanceKey` and `BackendKey`.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyType;

use super::{pyrepr, PyIsolation, PyServiceDefinition};
use crate::contract::error::ValidationError;
use crate::contract::identity::Endpoint;
use crate::contract::keys::{BackendKey, BrokerInstanceKey};

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

    pub(crate) fn __repr__(&self, py: Python<'_>) -> String {
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

    /// Parses ``instance/service@version``, the text ``str()`` gives.
    #[staticmethod]
    fn parse(text: &str) -> PyResult<Self> {
        Ok(PyBackendKey {
            inner: text.parse::<BackendKey>()?,
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
