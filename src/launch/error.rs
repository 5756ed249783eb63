//! Why a launch failed: one enum, each variant with what a caller needs to
//! act (the path, the pid, the field and both values, the log tail).

use std::io::{self};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::contract::error::{AllocError, FsError, HostError, ValidationError};
use crate::launch::verify::ProbeError;
use crate::sys::exe::BinaryError;
use crate::sys::reaper::Exit;

/// Why a launch failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The key, definition or version breaks a rule; nothing was spawned.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The binary or its allow-list root was refused; nothing was spawned.
    #[error(transparent)]
    Binary(#[from] BinaryError),
    /// No endpoint could be allocated; nothing was spawned.
    #[error("endpoint allocation failed: {0}")]
    Endpoint(#[source] AllocError),
    /// The private log file could not be created; nothing was spawned.
    #[error("log file: {0}")]
    LogFile(#[source] FsError),
    /// The process could not be started: an exec failure, or a launch step
    /// that ran out of descriptors, memory or processes (`EMFILE`, `ENFILE`,
    /// `ENOMEM`, `EAGAIN`); `errno` is the kernel's answer and the message
    /// names the step.
    #[error("spawning {path} failed: {source}")]
    Spawn {
        path: PathBuf,
        errno: Option<i32>,
        #[source]
        source: io::Error,
    },
    /// The backend ended before it was ready.
    #[error("backend pid {pid} ended with {exit} before it was ready; log tail:\n{log_tail}")]
    Exited {
        pid: u32,
        exit: Exit,
        log_tail: String,
    },
    /// The backend did not accept and answer in time.
    #[error("backend pid {pid} was not ready within {timeout:?}; log tail:\n{log_tail}")]
    NotReady {
        pid: u32,
        timeout: Duration,
        log_tail: String,
    },
    /// Something about the running backend differs from what was launched.
    #[error("verification failed: {field} expected {expected}, got {actual}")]
    Mismatch {
        field: &'static str,
        expected: String,
        actual: String,
    },
    /// The identity probe failed (garbage, wrong nonce, closed connection...).
    #[error("identity probe failed: {0}")]
    Probe(#[source] ProbeError),
    #[error(transparent)]
    Host(#[from] HostError),
    /// A launcher implemented outside this crate failed.
    #[error("launcher failed: {message}")]
    Launcher { message: String },
    /// A fixed endpoint cannot be used: its directory is not private to
    /// this user, its path is not a socket, another user owns the socket,
    /// or something other than a verified backend of the definition serves
    /// it. Nothing was spawned.
    #[error("fixed endpoint {path}: {reason}")]
    FixedEndpoint { path: PathBuf, reason: String },
    /// The key's lock was still held when the wait's limit ran out, by a
    /// process that is not stopped (a stopped holder loses the key
    /// instead). Nothing was spawned.
    #[error("{path} is still locked after {waited:?} by {holder}")]
    KeyBusy {
        path: PathBuf,
        waited: Duration,
        holder: crate::sys::keylock::Holder,
    },
    /// The user already runs `running` backends in the socket directory
    /// (`limit` or more): nothing was spawned. See
    /// [`crate::launch::LaunchOptions::max_backends`].
    #[error(
        "{running} backends already run in {dir} (the limit is {limit}); stop some \
         (running-process stop --all, or let them idle out) or raise the limit"
    )]
    TooManyBackends {
        limit: u32,
        running: usize,
        dir: PathBuf,
    },
    /// An identity read from a file or manifest describes a process that is
    /// gone: its pid has ended, or it ran in another boot. It was not
    /// trusted, and nothing was signalled.
    #[error("stale identity: {field} {reason}")]
    Stale { field: &'static str, reason: String },
}

pub(super) fn mismatch(
    field: &'static str,
    expected: impl ToString,
    actual: impl ToString,
) -> LaunchError {
    LaunchError::Mismatch {
        field,
        expected: expected.to_string(),
        actual: actual.to_string(),
    }
}

/// Whether `err` says the launching process or the system ran out of
/// descriptors, memory or processes: nothing about the backend is wrong, and
/// the same launch may succeed once the shortage is over.
pub(super) fn exhausted(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN | libc::ENOBUFS)
    )
}

/// A shortage during launch step `step`, as a spawn failure that names the
/// step and keeps the errno.
pub(super) fn shortage(binary: &Path, step: &str, source: &io::Error) -> LaunchError {
    LaunchError::Spawn {
        path: binary.to_path_buf(),
        errno: source.raw_os_error(),
        source: io::Error::new(source.kind(), format!("{step}: {source}")),
    }
}

impl LaunchError {
    /// The same failure, reported as a shortage (see [`exhausted`]) when that
    /// is what it is, whichever launch step met it.
    pub(super) fn or_shortage(self, binary: &Path) -> LaunchError {
        let step = |operation: &str, path: &Path| format!("{operation} {}", path.display());
        let found = match &self {
            LaunchError::Binary(BinaryError::Io {
                operation,
                path,
                source,
            }) => Some((step(operation, path), source)),
            LaunchError::Binary(
                BinaryError::CanonicalizeBinary { path, source }
                | BinaryError::CanonicalizeBinaryRoot { path, source },
            ) => Some((step("canonicalize", path), source)),
            LaunchError::Endpoint(AllocError::Fs(FsError::Io {
                operation,
                path,
                source,
            }))
            | LaunchError::LogFile(FsError::Io {
                operation,
                path,
                source,
            }) => Some((step(operation, path), source)),
            LaunchError::Probe(ProbeError::Io { operation, source }) => {
                Some((format!("probe {operation}"), source))
            }
            _ => None,
        };
        match found {
            Some((step, source)) if exhausted(source) => shortage(binary, &step, source),
            _ => self,
        }
    }
}

impl From<ProbeError> for LaunchError {
    fn from(e: ProbeError) -> Self {
        match e {
            ProbeError::Mismatch {
                field,
                expected,
                actual,
            } => LaunchError::Mismatch {
                field,
                expected,
                actual,
            },
            other => LaunchError::Probe(other),
        }
    }
}

impl LaunchError {
    /// A key's lock that could not be had: a busy holder is
    /// [`LaunchError::KeyBusy`]; a failure of the lock file itself is what
    /// `fs` makes of it.
    pub(crate) fn from_lock(
        err: crate::sys::keylock::LockError,
        fs: impl FnOnce(FsError) -> LaunchError,
    ) -> LaunchError {
        use crate::sys::keylock::LockError;
        match err {
            LockError::Fs(e) => fs(e),
            LockError::Busy {
                path,
                waited,
                holder,
            } => LaunchError::KeyBusy {
                path,
                waited,
                holder,
            },
        }
    }
}
