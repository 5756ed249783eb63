//! `TraceContext`.

use pyo3::prelude::*;
use pyo3::types::PyType;

use super::pyrepr;
use crate::contract::trace::TraceContext;

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
