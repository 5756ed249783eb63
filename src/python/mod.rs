//! PyO3 bindings: the `running_process._native` extension module.
//!
//! Conversions and exception mapping only; every behaviour lives in the core
//! and is reachable from Rust too. The modules do not depend on each other
//! in a cycle: `values` (the value classes) depends on none of the others.

mod allocator;
mod errors;
mod functions;
mod launcher;
pub(crate) mod logbridge;
mod pool;
mod router;
mod server;
mod values;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::contract::env;

/// Calls `running_process.aio.<name>(*args)`, returning its coroutine.
pub(crate) fn aio_call<'py>(
    py: Python<'py>,
    name: &str,
    args: impl pyo3::call::PyCallArgs<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    py.import("running_process.aio")?.getattr(name)?.call1(args)
}

/// Makes Rust log records see logging configuration changed since they were
/// last emitted (levels are cached so disabled records cost no GIL).
#[pyfunction]
fn refresh_logging(py: Python<'_>) {
    logbridge::refresh(py);
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    logbridge::install(py);

    m.add_class::<values::PyIsolation>()?;
    m.add_class::<values::PyListener>()?;
    m.add_class::<values::PyEnvPolicy>()?;
    m.add_class::<values::PyServiceDefinition>()?;
    m.add_class::<values::PyEndpoint>()?;
    m.add_class::<values::PyBrokerInstanceKey>()?;
    m.add_class::<values::PyBackendKey>()?;
    m.add_class::<values::PyTraceContext>()?;
    m.add_class::<values::PyDaemonProcess>()?;
    m.add_class::<allocator::PyBackendEndpointAllocator>()?;
    m.add_class::<launcher::PyCommandBackendLauncher>()?;
    m.add_class::<launcher::PyBackendHandle>()?;
    m.add_class::<server::PyBackendServer>()?;
    m.add_class::<values::PyErrorCode>()?;
    m.add_class::<router::PyNegotiated>()?;
    m.add_class::<router::PyRefused>()?;
    m.add_class::<router::PyBackendRegistry>()?;
    m.add_class::<router::PyHelloRouter>()?;
    m.add_class::<pool::PyPoolEntry>()?;
    m.add_class::<pool::PyBackendPool>()?;

    m.add_function(wrap_pyfunction!(refresh_logging, m)?)?;
    m.add_function(wrap_pyfunction!(functions::user_sid_hash, m)?)?;
    m.add_function(wrap_pyfunction!(functions::boot_id, m)?)?;
    m.add_function(wrap_pyfunction!(functions::socket_dir, m)?)?;
    m.add_function(wrap_pyfunction!(functions::service_def_dir, m)?)?;
    m.add_function(wrap_pyfunction!(functions::socket_dir_base, m)?)?;
    m.add_function(wrap_pyfunction!(functions::check_private_dir, m)?)?;
    m.add_function(wrap_pyfunction!(functions::check_service_def_dir, m)?)?;
    m.add_function(wrap_pyfunction!(functions::sha256_file, m)?)?;
    m.add_function(wrap_pyfunction!(functions::blake3_file, m)?)?;
    m.add_function(wrap_pyfunction!(functions::write_identity_file, m)?)?;
    m.add_function(wrap_pyfunction!(functions::read_identity_file, m)?)?;
    m.add_function(wrap_pyfunction!(functions::try_read_identity_file, m)?)?;
    m.add_function(wrap_pyfunction!(functions::validate_service_name, m)?)?;
    m.add_function(wrap_pyfunction!(functions::validate_instance_name, m)?)?;
    m.add_function(wrap_pyfunction!(functions::validate_version, m)?)?;
    m.add_function(wrap_pyfunction!(functions::backend_socket_name, m)?)?;
    m.add_function(wrap_pyfunction!(functions::shared_broker_socket_name, m)?)?;
    m.add_function(wrap_pyfunction!(functions::service_broker_socket_name, m)?)?;
    m.add_function(wrap_pyfunction!(functions::instance_broker_socket_name, m)?)?;

    m.add("ENV_SERVICE_NAME", env::ENV_SERVICE_NAME)?;
    m.add("ENV_SERVICE_VERSION", env::ENV_SERVICE_VERSION)?;
    m.add("ENV_BACKEND_PIPE", env::ENV_BACKEND_PIPE)?;
    m.add("ENV_BACKEND_NAMESPACE", env::ENV_BACKEND_NAMESPACE)?;
    m.add("ENV_INSTANCE", env::ENV_INSTANCE)?;
    m.add("ENV_TRACEPARENT", env::ENV_TRACEPARENT)?;
    m.add("ENV_TRACESTATE", env::ENV_TRACESTATE)?;
    m.add("ENV_IDLE_TIMEOUT_SECS", env::ENV_IDLE_TIMEOUT_SECS)?;
    m.add("ENV_SERVICE_DEF_DIR", env::ENV_SERVICE_DEF_DIR)?;
    m.add("ENV_EXE_DIGEST", env::ENV_EXE_DIGEST)?;
    m.add("ENV_SETTLE_MS", env::ENV_SETTLE_MS)?;
    m.add("ENV_LISTENER_FD", env::ENV_LISTENER_FD)?;
    m.add("ENV_OWNED_BIND", env::ENV_OWNED_BIND)?;
    m.add("ENV_IS_DAEMON", env::ENV_IS_DAEMON)?;
    m.add("ENV_MAX_BACKENDS", crate::launch::ENV_MAX_BACKENDS)?;
    m.add("DEFAULT_MAX_BACKENDS", crate::launch::DEFAULT_MAX_BACKENDS)?;
    m.add(
        "DEFAULT_MAX_LOG_BYTES",
        crate::launch::DEFAULT_MAX_LOG_BYTES,
    )?;
    m.add("ENV_LOG_FILE", env::ENV_LOG_FILE)?;
    m.add("ENV_LOG_MAX_BYTES", env::ENV_LOG_MAX_BYTES)?;
    m.add(
        "DEFAULT_ENV_SCRUB",
        crate::launch::DEFAULT_ENV_SCRUB.to_vec(),
    )?;
    m.add("V1_ENV_NAMES", PyTuple::new(py, env::V1_ENV_NAMES)?)?;
    m.add("SUN_PATH_MAX", crate::contract::names::SUN_PATH_MAX)?;
    m.add(
        "BACKEND_SOCKET_NAME_LEN",
        crate::contract::names::BACKEND_SOCKET_NAME_LEN,
    )?;
    m.add(
        "COMPACT_BACKEND_SOCKET_NAME_LEN",
        crate::contract::names::COMPACT_BACKEND_SOCKET_NAME_LEN,
    )?;
    // Module attributes, not part of `__all__`.
    m.setattr("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add(
        "MACHINE_ID_PATHS",
        PyTuple::new(py, crate::sys::host::MACHINE_ID_PATHS)?,
    )?;
    let fields = PyDict::new(py);
    for (class, names) in errors::EXCEPTION_FIELDS {
        fields.set_item(class, PyTuple::new(py, *names)?)?;
    }
    m.setattr("EXCEPTION_FIELDS", fields)?;
    Ok(())
}
