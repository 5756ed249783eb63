//! The v1 refusal codes, and exit statuses as Python reports them.

use pyo3::prelude::*;

use super::{reduce_by_name, ByName};
use crate::reuse::router::ErrorCode;
use crate::sys::reaper::Exit;

/// v1 error codes of a refusal.
#[pyclass(
    name = "ErrorCode",
    module = "running_process._native",
    eq,
    eq_int,
    frozen,
    from_py_object
)]
#[derive(Clone, Copy, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms, non_camel_case_types)]
pub enum PyErrorCode {
    UNSPECIFIED = 0,
    VERSION_UNSUPPORTED = 1,
    SERVICE_UNKNOWN = 2,
    BACKEND_SPAWN_FAILED = 3,
    RATE_LIMITED = 4,
    SHUTTING_DOWN = 5,
    PEER_REJECTED = 6,
    INTERNAL = 7,
    VERSION_BLOCKED = 8,
    FD_PRESSURE = 9,
}

impl From<ErrorCode> for PyErrorCode {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::Unspecified => PyErrorCode::UNSPECIFIED,
            ErrorCode::VersionUnsupported => PyErrorCode::VERSION_UNSUPPORTED,
            ErrorCode::ServiceUnknown => PyErrorCode::SERVICE_UNKNOWN,
            ErrorCode::BackendSpawnFailed => PyErrorCode::BACKEND_SPAWN_FAILED,
            ErrorCode::RateLimited => PyErrorCode::RATE_LIMITED,
            ErrorCode::ShuttingDown => PyErrorCode::SHUTTING_DOWN,
            ErrorCode::PeerRejected => PyErrorCode::PEER_REJECTED,
            ErrorCode::Internal => PyErrorCode::INTERNAL,
            ErrorCode::VersionBlocked => PyErrorCode::VERSION_BLOCKED,
            ErrorCode::FdPressure => PyErrorCode::FD_PRESSURE,
        }
    }
}

#[pymethods]
impl PyErrorCode {
    /// The code's name (``"RATE_LIMITED"``, ...).
    #[getter]
    fn name(&self) -> &'static str {
        ErrorCode::from(*self).name()
    }

    /// The wire value.
    #[getter]
    fn value(&self) -> i32 {
        *self as i32
    }

    /// Hashes as the wire value, because members compare equal to it.
    fn __hash__(&self) -> isize {
        *self as isize
    }

    /// Pickles by name, like an ``enum`` member.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<ByName<'py>> {
        reduce_by_name::<PyErrorCode>(py, ErrorCode::from(*self).name())
    }
}

/// `subprocess`-style return code: the exit status, or minus the signal;
/// None when the status belongs to another parent.
pub(crate) fn returncode(exit: Exit) -> Option<i32> {
    match exit {
        Exit::Code(c) => Some(c),
        Exit::Signal(s) => Some(-s),
        Exit::Unknown => None,
    }
}

impl From<PyErrorCode> for ErrorCode {
    fn from(code: PyErrorCode) -> Self {
        match code {
            PyErrorCode::UNSPECIFIED => ErrorCode::Unspecified,
            PyErrorCode::VERSION_UNSUPPORTED => ErrorCode::VersionUnsupported,
            PyErrorCode::SERVICE_UNKNOWN => ErrorCode::ServiceUnknown,
            PyErrorCode::BACKEND_SPAWN_FAILED => ErrorCode::BackendSpawnFailed,
            PyErrorCode::RATE_LIMITED => ErrorCode::RateLimited,
            PyErrorCode::SHUTTING_DOWN => ErrorCode::ShuttingDown,
            PyErrorCode::PEER_REJECTED => ErrorCode::PeerRejected,
            PyErrorCode::INTERNAL => ErrorCode::Internal,
            PyErrorCode::VERSION_BLOCKED => ErrorCode::VersionBlocked,
            PyErrorCode::FD_PRESSURE => ErrorCode::FdPressure,
        }
    }
}
