//! Rust `log` records into Python `logging`, connected on first need.
//!
//! Importing `logging` costs a Python process more than everything else
//! `import running_process` does, so the module does not import it. The
//! bridge (pyo3-log, levels cached so disabled records cost no GIL) is built
//! as soon as a record could be seen by anyone:
//!
//! - at import, when the application has already imported `logging`;
//! - when a launcher, pool, router, allocator or backend server is created,
//!   or `refresh_logging()` is called, once `logging` has been imported;
//! - at the first WARNING or ERROR, which Python's last-resort handler would
//!   print even with `logging` unconfigured.
//!
//! A DEBUG or INFO record emitted before then is dropped, which is what
//! Python would do with it too: nothing can have configured a handler or a
//! level below WARNING without importing `logging`. Such records never wait
//! for the GIL, so a backend's accept thread is never held up by them.
//!
//! The logger is built outside any lock: importing `logging` releases the
//! GIL, and a thread blocked on a lock while holding the GIL would deadlock
//! with the importing one.

use std::sync::OnceLock;

use log::{Level, LevelFilter, Log, Metadata, Record};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The process-wide bridge; `log` holds a `'static` reference to it.
static BRIDGE: LazyBridge = LazyBridge {
    inner: OnceLock::new(),
};

struct LazyBridge {
    inner: OnceLock<Option<pyo3_log::Logger>>,
}

impl LazyBridge {
    /// The pyo3-log logger, built now for a WARNING or ERROR. Records below
    /// WARNING never wait for the GIL before the bridge is connected: they
    /// are dropped (see the module docs for when it connects).
    fn ready(&self, level: Level) -> Option<&pyo3_log::Logger> {
        if let Some(built) = self.inner.get() {
            return built.as_ref();
        }
        if level > Level::Warn {
            return None;
        }
        // `try_attach` refuses during interpreter finalization instead of
        // panicking; records emitted then are dropped.
        Python::try_attach(|py| self.build(py)).flatten()
    }

    fn build(&self, py: Python<'_>) -> Option<&pyo3_log::Logger> {
        if let Some(built) = self.inner.get() {
            return built.as_ref();
        }
        // Built outside the cell: importing `logging` releases the GIL, and
        // a thread that blocked on a cell being initialized while holding
        // the GIL would deadlock with it. Two threads may race to build; the
        // first to store wins and the other logger is dropped.
        let logger = pyo3_log::Logger::new(py, pyo3_log::Caching::LoggersAndLevels).ok();
        let _ = self.inner.set(logger);
        self.inner.get().and_then(Option::as_ref)
    }
}

impl Log for LazyBridge {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.ready(metadata.level())
            .is_some_and(|logger| logger.enabled(metadata))
    }

    fn log(&self, record: &Record<'_>) {
        if let Some(logger) = self.ready(record.level()) {
            logger.log(record);
        }
    }

    fn flush(&self) {}
}

/// Whether `logging` is in `sys.modules`.
fn logging_imported(py: Python<'_>) -> bool {
    py.import("sys")
        .and_then(|sys| sys.getattr("modules"))
        .ok()
        .and_then(|modules| {
            modules
                .cast::<PyDict>()
                .ok()
                .and_then(|d| d.contains("logging").ok())
        })
        .unwrap_or(false)
}

/// Installs the bridge as the global logger (once per process; when another
/// copy of the module owns the global logger, its bridge serves us too), and
/// connects it at once if the application already imported `logging`.
pub(crate) fn install(py: Python<'_>) {
    if log::set_logger(&BRIDGE).is_ok() {
        log::set_max_level(LevelFilter::Debug);
    }
    connect_if_imported(py);
}

/// Connects the bridge if `logging` has been imported since. Called where a
/// Python thread enters the library with the GIL held (creating a launcher,
/// pool, router, allocator or backend server, and `refresh_logging`).
pub(crate) fn connect_if_imported(py: Python<'_>) {
    if BRIDGE.inner.get().is_none() && logging_imported(py) {
        BRIDGE.build(py);
    }
}

/// [`connect_if_imported`] from a Python thread that holds the GIL.
pub(crate) fn connect_here() {
    Python::attach(connect_if_imported);
}

/// Makes records see `logging` levels changed since they were cached.
pub(crate) fn refresh(py: Python<'_>) {
    connect_if_imported(py);
    if let Some(Some(logger)) = BRIDGE.inner.get() {
        logger.reset_handle().reset();
    }
}
