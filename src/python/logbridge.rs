//! Rust `log` records into Python `logging`, connected on first need.
//!
//! Importing `logging` costs a Python process more than everything else
//! `import running_process` does, so the module does not import it. The
//! bridge (pyo3-log, levels cached so disabled records cost no GIL) is built
//! the first time a record could be seen by anyone:
//!
//! - at import, when the application has already imported `logging`;
//! - at any later record, once `logging` has been imported;
//! - at the first WARNING or ERROR, which Python's last-resort handler would
//!   print even with `logging` unconfigured.
//!
//! A DEBUG or INFO record emitted while `logging` has never been imported is
//! dropped, which is what Python would do with it too: nothing can have
//! configured a handler or a level below WARNING without importing `logging`.

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
    /// The pyo3-log logger, built now if `level` may reach a handler.
    fn ready(&self, level: Level) -> Option<&pyo3_log::Logger> {
        if let Some(built) = self.inner.get() {
            return built.as_ref();
        }
        let needed = level <= Level::Warn;
        // `try_attach` refuses during interpreter finalization instead of
        // panicking; records emitted then are dropped.
        Python::try_attach(|py| {
            if needed || logging_imported(py) {
                self.build(py)
            } else {
                None
            }
        })
        .flatten()
    }

    fn build(&self, py: Python<'_>) -> Option<&pyo3_log::Logger> {
        self.inner
            .get_or_init(|| pyo3_log::Logger::new(py, pyo3_log::Caching::LoggersAndLevels).ok())
            .as_ref()
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
    if logging_imported(py) {
        BRIDGE.build(py);
    }
}

/// Makes records see `logging` levels changed since they were cached.
pub(crate) fn refresh() {
    if let Some(Some(logger)) = BRIDGE.inner.get() {
        logger.reset_handle().reset();
    }
}
