//! Python class for the backend endpoint allocator.

use std::num::NonZeroU32;
use std::path::PathBuf;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::values::{pyrepr, PyEndpoint};
use crate::launch::endpoint::BackendEndpointAllocator;

/// Hands out unguessable backend socket paths in one namespace. Thread-safe.
#[pyclass(
    name = "BackendEndpointAllocator",
    module = "running_process._native",
    frozen
)]
pub struct PyBackendEndpointAllocator {
    inner: BackendEndpointAllocator,
}

#[pymethods]
impl PyBackendEndpointAllocator {
    #[new]
    #[pyo3(signature = (user_sid_hash, namespace_id, max_attempts = 16, socket_dir = None))]
    fn new(
        user_sid_hash: &str,
        namespace_id: &str,
        max_attempts: u32,
        socket_dir: Option<PathBuf>,
    ) -> PyResult<Self> {
        super::logbridge::connect_here();
        let max_attempts = NonZeroU32::new(max_attempts)
            .ok_or_else(|| PyValueError::new_err("max_attempts must be at least 1"))?;
        let inner = match socket_dir {
            Some(dir) => BackendEndpointAllocator::with_socket_dir(
                user_sid_hash,
                namespace_id,
                &dir,
                max_attempts,
            )?,
            None => BackendEndpointAllocator::new(user_sid_hash, namespace_id, max_attempts)?,
        };
        Ok(PyBackendEndpointAllocator { inner })
    }

    /// Draws 128 bits from the OS and returns a free endpoint, creating the
    /// socket directory 0700 if it is missing.
    fn allocate(&self, py: Python<'_>) -> PyResult<PyEndpoint> {
        let inner = py.detach(|| self.inner.allocate())?;
        Ok(PyEndpoint { inner })
    }

    /// Like ``allocate`` but each attempt calls ``random_source()`` for its
    /// 16 random bytes (for deterministic tests).
    fn allocate_with(&self, random_source: Bound<'_, PyAny>) -> PyResult<PyEndpoint> {
        let inner = self.inner.allocate_with(|| -> PyResult<[u8; 16]> {
            let drawn = random_source.call0()?;
            let bytes: Vec<u8> = drawn
                .extract::<&[u8]>()
                .map(<[u8]>::to_vec)
                .map_err(|_| PyValueError::new_err("random_source must return bytes"))?;
            bytes.as_slice().try_into().map_err(|_| {
                PyValueError::new_err(format!(
                    "random_source returned {} bytes; 16 are needed",
                    bytes.len()
                ))
            })
        })?;
        Ok(PyEndpoint { inner })
    }

    /// Marks ``path`` as taken; returns whether it was newly reserved.
    fn reserve_path(&self, path: PathBuf) -> bool {
        self.inner.reserve_path(&path)
    }

    /// Forgets a reserved path; returns whether it was reserved.
    fn release(&self, path: PathBuf) -> bool {
        self.inner.release(&path)
    }

    /// Whether ``path`` is reserved.
    fn is_reserved(&self, path: PathBuf) -> bool {
        self.inner.is_reserved(&path)
    }

    /// How many paths are reserved.
    #[getter]
    fn reserved_count(&self) -> usize {
        self.inner.reserved_count()
    }

    #[getter]
    fn user_sid_hash(&self) -> &str {
        self.inner.user_sid_hash()
    }

    #[getter]
    fn namespace_id(&self) -> &str {
        self.inner.namespace_id()
    }

    #[getter]
    fn socket_dir(&self) -> String {
        self.inner.socket_dir().to_string_lossy().into_owned()
    }

    #[getter]
    fn max_attempts(&self) -> u32 {
        self.inner.max_attempts()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "BackendEndpointAllocator(user_sid_hash={}, namespace_id={}, max_attempts={}, socket_dir={})",
            pyrepr(py, self.inner.user_sid_hash()),
            pyrepr(py, self.inner.namespace_id()),
            self.inner.max_attempts(),
            pyrepr(py, &self.socket_dir()),
        )
    }
}
