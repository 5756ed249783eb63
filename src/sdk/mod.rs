//! The backend side of the v1 contract: the SDK a backend written in Rust
//! (and, wrapped, in Python) uses to be launched, verified and reused.
//!
//! [`BackendServer`] reads the environment contract ([`ServerConfig::from_env`]),
//! computes its [`DaemonProcess`] identity once, binds the endpoint socket
//! (mode 0600, in the private 0700 directory the launcher created: the
//! server checks that directory and never creates it), and runs one accept
//! thread. Each
//! accepted connection is classified without consuming a byte: if its first
//! bytes, peeked within a short window, are a complete identity probe request,
//! the server answers it and closes the connection; anything else (other
//! bytes, a partial frame, silence) is handed to the application untouched
//! through [`BackendServer::accept`]. Probes are answered whether or not the
//! application is calling `accept`.
//!
//! The server also ends itself after an idle timeout without application
//! connections, and on SIGTERM/SIGINT when asked to
//! ([`ServerConfig::with_exit_on_sigterm`]); either way `accept` then returns
//! [`ServerError::ShuttingDown`] and the socket file is gone.
//!
//! Decisions where the contract is silent:
//!
//! - Probes are not activity: they never restart the idle clock, because a
//!   launcher's periodic health probes must not keep an unused backend alive
//!   forever. When the timeout is due, connections still being classified
//!   are waited for (at most one window each), so an application client that
//!   arrived just in time is served rather than dropped.
//! - An application connection counts from the moment it is classified
//!   (queued, not yet accepted) until its [`Connection`] is dropped or
//!   [`BackendServer::connection_closed`] is called.
//! - A connection whose peer hangs up without sending a byte is dropped,
//!   not handed to the application and not counted as activity: it carries
//!   no request (a launcher checks who listens that way, see
//!   `launch::attest`). A client that shuts down its sending side before
//!   sending anything, to wait for the server to speak, is therefore not
//!   served.
//! - A silent client reaches the application only after the classification
//!   window ([`DEFAULT_CLASSIFY_WINDOW`]); a prober that stalls longer than
//!   the window between connecting and writing is taken for a client.
//! - An existing socket file is replaced only if connecting to it is refused
//!   (stale); the check connects once, so a live owner sees one empty
//!   connection.
//! - The endpoint path must be plain: no `.` or `..` segment, no control
//!   character, no trailing `/`. A launcher never hands out anything else,
//!   and such a path could bind somewhere other than where it appears to.
//! - The socket's directory must already exist and be private (a real
//!   directory owned by this user with no group or other access). Creating
//!   it is the launcher's job; a backend that created missing directories
//!   would build whatever tree a confused or hostile environment names.
//!
//! What it deliberately does not do: it does not speak the application's
//! protocol (it never reads application bytes), does not authenticate peers
//! (the 0700 directory keeps other users out, and the launcher checks the
//! socket's peer credentials), and does not coordinate two processes binding
//! the same path at the same instant (endpoint paths carry 128 random bits,
//! so only a confused launcher would do that).

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::contract::clock;
use crate::contract::error::{FsError, HostError, ValidationError};
use crate::contract::identity::{DaemonProcess, Endpoint, JsonForm};
use crate::contract::keys::{BackendKey, BrokerInstanceKey};
use crate::contract::trace::TraceContext;
use crate::sys::fs::check_private_dir;
use crate::sys::identity_file::{write_identity_file, IdentityFileError};

mod accept;
mod bind;
mod classify;
mod config;
mod logcap;
mod signals;

use accept::{accept_loop, ListenerGuard, Shared, State};
use bind::{adopt_inherited, bind_socket, clear_stale_socket};
use config::invalid_env;
pub use config::ServerConfig;

/// How long a new connection may take to show a complete probe request
/// before it is handed to the application. A prober writes its request in
/// one go right after connecting, so this only has to cover scheduling
/// delays; it is also how long a silent client waits before the application
/// sees it.
pub const DEFAULT_CLASSIFY_WINDOW: Duration = Duration::from_millis(200);
/// Cap on the body of a frame that is peeked as a possible probe request. A
/// real request is a nonce and trace fields, well under 1 KiB; a longer
/// declared body cannot be a probe, so the connection is the application's.
pub const MAX_PROBE_REQUEST: u32 = 64 * 1024;
/// Connections classified at the same time. Each classification ends within
/// the window, so a full table delays accepting by at most one window; it
/// bounds the threads a flood of silent connections can cost.
pub const MAX_CLASSIFYING: usize = 64;

/// Failure to configure, bind or run a backend server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A required variable of the environment contract is not set.
    #[error("environment variable {name} is not set")]
    MissingEnv { name: &'static str },
    /// A variable of the environment contract has a value that breaks a rule.
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    InvalidEnv {
        name: &'static str,
        value: String,
        reason: String,
    },
    /// Another process accepts connections on the socket path; it was left
    /// alone.
    #[error("socket {path} is in use by a live listener")]
    AddressInUse { path: PathBuf },
    /// Something other than a socket is at the socket path; it was left
    /// alone.
    #[error("{path} exists and is a {found}, not a socket; refusing to replace it")]
    NotASocket { path: PathBuf, found: &'static str },
    /// An operating system call failed.
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The signal handlers could not be installed.
    #[error("cannot install SIGTERM/SIGINT handling: {source}")]
    Signals {
        #[source]
        source: io::Error,
    },
    /// The socket directory is unsafe or unusable.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// A host fact (boot id) could not be read.
    #[error(transparent)]
    Host(#[from] HostError),
    /// A configured value breaks a rule of the contract.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// The server has shut down (idle timeout, signal, or `shutdown`).
    #[error("the backend server is shutting down")]
    ShuttingDown,
}

impl ServerError {
    fn io(operation: &'static str, path: &Path, source: impl Into<io::Error>) -> Self {
        ServerError::Io {
            operation,
            path: path.to_path_buf(),
            source: source.into(),
        }
    }
}

/// Why a server stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShutdownReason {
    /// [`BackendServer::shutdown`] was called or the server was dropped.
    Requested,
    /// The idle timeout passed with no application connection open.
    Idle,
    /// SIGTERM or SIGINT (the signal number).
    Signal(i32),
    /// The accept thread could not go on (the listening socket failed).
    Failed { reason: String },
}

impl fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShutdownReason::Requested => f.write_str("shutdown requested"),
            ShutdownReason::Idle => f.write_str("idle timeout"),
            ShutdownReason::Signal(sig) => match signal_hook::low_level::signal_name(*sig) {
                Some(name) => write!(f, "signal {name}"),
                None => write!(f, "signal {sig}"),
            },
            ShutdownReason::Failed { reason } => write!(f, "listener failed: {reason}"),
        }
    }
}

/// A backend's server side of the v1 contract: a bound endpoint that answers
/// identity probes by itself and hands every other connection to the
/// application. See the module documentation.
///
/// Dropping it shuts it down (see [`BackendServer::shutdown`]).
pub struct BackendServer {
    shared: Arc<Shared>,
    config: ServerConfig,
    accept_thread: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for BackendServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendServer")
            .field("endpoint", &self.config.endpoint)
            .field("key", &self.config.key.to_string())
            .field("pid", &self.shared.identity.pid)
            .finish_non_exhaustive()
    }
}

/// Checks the directory of the socket `path` without creating anything. A
/// missing or unreachable directory is refused with an error that names the
/// endpoint's variable when the configuration came from the environment
/// ([`ServerError::InvalidEnv`]), else [`ServerError::Io`]; a directory that
/// exists but is not private (a symlink, not a directory, someone else's,
/// group or other access) is refused by [`check_private_dir`]
/// ([`FsError::InsecureDirectory`]).
fn check_socket_dir(config: &ServerConfig, path: &Path) -> Result<(), ServerError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => {
            return Err(ValidationError::Identity {
                field: "path",
                value: config.endpoint.path.clone(),
                reason: "has no parent directory".to_owned(),
            }
            .into())
        }
    };
    if let Err(err) = std::fs::symlink_metadata(dir) {
        return Err(match config.endpoint_variable {
            Some(name) => {
                let reason = if err.kind() == io::ErrorKind::NotFound {
                    format!(
                        "its directory {} does not exist; the launcher creates the socket \
                         directory (mode 0700) before it starts the backend",
                        dir.display()
                    )
                } else {
                    format!("its directory {} cannot be inspected: {err}", dir.display())
                };
                invalid_env(name, &config.endpoint.path, reason)
            }
            None => ServerError::io("inspect socket directory", dir, err),
        });
    }
    check_private_dir(dir)?;
    Ok(())
}

impl BackendServer {
    /// Reads the environment contract and binds (see [`ServerConfig::from_env`]
    /// and [`BackendServer::bind`]).
    pub fn from_env() -> Result<BackendServer, ServerError> {
        Self::bind(ServerConfig::from_env()?)
    }

    /// Checks that the socket's directory exists and is private (it is
    /// never created: see [`check_socket_dir`]), computes the identity, binds
    /// the socket (replacing a stale one), and starts accepting.
    pub fn bind(config: ServerConfig) -> Result<BackendServer, ServerError> {
        let path = PathBuf::from(&config.endpoint.path);
        check_socket_dir(&config, &path)?;
        let identity = config.daemon_identity()?;

        let (stop_rx, stop_tx) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )
        .map_err(|e| ServerError::io("create stop pipe for", &path, e))?;
        let shared = Arc::new(Shared {
            identity,
            idle_timeout: config
                .idle_timeout_secs
                .map(|s| Duration::from_secs(u64::from(s.get()))),
            classify_window: config.classify_window,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                open: 0,
                classifying: 0,
                idle_since: Instant::now(),
                stop: None,
                stopped: false,
            }),
            changed: Condvar::new(),
            stop_rx,
            stop_tx,
        });
        // Signals are routed before the socket exists: a launcher may send
        // SIGTERM as soon as it sees the backend ready, and that must end in
        // a graceful shutdown. A signal that comes during the bind is
        // recorded and acted on as soon as the accept thread starts.
        if config.exit_on_sigterm {
            signals::route_to(&shared).map_err(|source| ServerError::Signals { source })?;
        }
        let bound = match &config.inherited {
            Some(inherited) => adopt_inherited(inherited, &path),
            None => clear_stale_socket(&path).and_then(|()| bind_socket(&path)),
        };
        let (listener, file) = match bound {
            Ok(bound) => bound,
            Err(err) => {
                signals::release(&shared);
                return Err(err);
            }
        };
        let mut guard = ListenerGuard {
            shared: Arc::clone(&shared),
            listener: Some(listener),
            path: path.clone(),
            file,
            identity_file: None,
            adopted: config.inherited.is_some(),
        };
        // Published once the socket is bound; on failure the guard's drop
        // removes the socket.
        if let Some(identity_file) = &config.identity_file {
            write_identity_file(identity_file, &shared.identity, JsonForm::Current).map_err(
                |e| match e {
                    IdentityFileError::Fs(e) => ServerError::Fs(e),
                    IdentityFileError::Form(e) => ServerError::Validation(e),
                    IdentityFileError::Decode { source, .. } => {
                        ServerError::Validation(ValidationError::Identity {
                            field: "identity_file",
                            value: identity_file.display().to_string(),
                            reason: source.to_string(),
                        })
                    }
                },
            )?;
            guard.identity_file = Some(identity_file.clone());
        }
        if let Some(cap) = &config.log_cap {
            cap.clone().start();
        }
        // If the thread cannot start, the closure and the guard in it are
        // dropped, which removes the socket file.
        let accept_thread = thread::Builder::new()
            .name("rp-accept".to_owned())
            .spawn(move || {
                let guard = guard;
                accept_loop(&guard);
            })
            .map_err(|e| ServerError::io("start accept thread for", &path, e))?;
        log::info!(
            "backend {} listening on {} (pid {}, idle timeout {})",
            config.key,
            path.display(),
            shared.identity.pid,
            match config.idle_timeout_secs {
                Some(s) => format!("{s} s"),
                None => "none".to_owned(),
            }
        );
        Ok(BackendServer {
            shared,
            config,
            accept_thread: Mutex::new(Some(accept_thread)),
        })
    }

    /// The next application connection. Blocks until one arrives; returns
    /// [`ServerError::ShuttingDown`] once the server has stopped (and its
    /// socket file is gone).
    pub fn accept(&self) -> Result<Connection, ServerError> {
        let mut st = self.shared.lock();
        loop {
            if let Some(stream) = self.take_queued(&mut st) {
                return Ok(stream);
            }
            if st.stopped {
                return Err(ServerError::ShuttingDown);
            }
            st = self.shared.wait(st);
        }
    }

    /// Like [`accept`](Self::accept), but gives up after `timeout` with
    /// `Ok(None)`.
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Option<Connection>, ServerError> {
        let deadline = clock::deadline_after(timeout);
        let mut st = self.shared.lock();
        loop {
            if let Some(stream) = self.take_queued(&mut st) {
                return Ok(Some(stream));
            }
            if st.stopped {
                return Err(ServerError::ShuttingDown);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            st = self.shared.wait_timeout(st, left);
        }
    }

    fn take_queued(&self, st: &mut State) -> Option<Connection> {
        let stream = st.queue.pop_front()?;
        Some(Connection {
            stream: Some(stream),
            shared: Arc::clone(&self.shared),
        })
    }

    /// Reports that a connection taken with [`Connection::detach`] (or its
    /// raw fd) is finished, so the idle timeout can start counting.
    pub fn connection_closed(&self) {
        self.shared.connection_closed();
    }

    /// Application connections queued or handed out and not yet closed.
    pub fn open_connections(&self) -> usize {
        self.shared.lock().open
    }

    /// The identity this server reports to probes.
    pub fn identity(&self) -> &DaemonProcess {
        &self.shared.identity
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.config.endpoint
    }

    /// The backend key this server serves.
    pub fn key(&self) -> &BackendKey {
        self.config.key()
    }

    pub fn instance(&self) -> &BrokerInstanceKey {
        self.config.instance()
    }

    pub fn service_name(&self) -> &str {
        self.config.service_name()
    }

    pub fn service_version(&self) -> &str {
        self.config.service_version()
    }

    /// The trace context the launcher handed over.
    pub fn trace_context(&self) -> &TraceContext {
        &self.config.trace
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Why the server is stopping or stopped, once it is.
    pub fn shutdown_reason(&self) -> Option<ShutdownReason> {
        self.shared.lock().stop.clone()
    }

    /// Blocks until the server has stopped (idle timeout, signal, or
    /// `shutdown` from another thread) and says why. A backend whose
    /// connections are served on other threads can end `main` with this.
    pub fn wait_for_shutdown(&self) -> ShutdownReason {
        let mut st = self.shared.lock();
        loop {
            if st.stopped {
                return st.stop.clone().unwrap_or(ShutdownReason::Requested);
            }
            st = self.shared.wait(st);
        }
    }

    /// Like [`wait_for_shutdown`](Self::wait_for_shutdown), giving up after
    /// `timeout` with `None`.
    pub fn wait_for_shutdown_timeout(&self, timeout: Duration) -> Option<ShutdownReason> {
        let deadline = clock::deadline_after(timeout);
        let mut st = self.shared.lock();
        loop {
            if st.stopped {
                return Some(st.stop.clone().unwrap_or(ShutdownReason::Requested));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            st = self.shared.wait_timeout(st, left);
        }
    }

    /// Stops accepting, drops queued connections, removes the socket file
    /// (if it is still the one this server bound) and joins the accept
    /// thread. Connections already handed out stay open. Idempotent.
    pub fn shutdown(&self) {
        self.shared.request_stop(ShutdownReason::Requested);
        let handle = self
            .accept_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                log::warn!("the accept thread panicked");
            }
        }
    }

    /// Makes SIGTERM and SIGINT shut this server down gracefully: the socket
    /// file is removed and `accept` returns [`ServerError::ShuttingDown`].
    ///
    /// Signals belong to the process, so the handling is process-wide and
    /// routed to the server that called this last. A second signal while
    /// the graceful shutdown runs, and any signal after the server has
    /// stopped, gets the default action (the process terminates), so a
    /// stuck shutdown can still be interrupted.
    ///
    /// Calling this after binding leaves a short gap in which a signal gets
    /// the default action; [`ServerConfig::with_exit_on_sigterm`] closes it
    /// by installing the same handling before the socket is bound.
    pub fn exit_on_sigterm(&self) -> Result<(), ServerError> {
        if self.shared.lock().stopped {
            return Err(ServerError::ShuttingDown);
        }
        signals::route_to(&self.shared).map_err(|source| ServerError::Signals { source })
    }
}

impl Drop for BackendServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// An application connection. It derefs to [`UnixStream`] and implements
/// `Read`/`Write`; dropping it closes the stream and tells the server the
/// connection is finished, which is what the idle timeout counts.
pub struct Connection {
    stream: Option<UnixStream>,
    shared: Arc<Shared>,
}

impl Connection {
    /// Hands the stream over without closing it. The connection stays
    /// counted as open until [`BackendServer::connection_closed`] is called
    /// (for owners that cannot hold a `Connection`, such as another language
    /// runtime holding the raw descriptor).
    pub fn detach(mut self) -> UnixStream {
        match self.stream.take() {
            Some(stream) => stream,
            // The stream is only taken by `detach` or `drop`, each of which
            // consumes the connection.
            None => unreachable!("Connection without a stream"),
        }
    }
}

impl IntoRawFd for Connection {
    /// The descriptor of [`detach`](Connection::detach): still counted as
    /// open until [`BackendServer::connection_closed`].
    fn into_raw_fd(self) -> RawFd {
        self.detach().into_raw_fd()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            drop(stream);
            self.shared.connection_closed();
        }
    }
}

impl Deref for Connection {
    type Target = UnixStream;

    fn deref(&self) -> &UnixStream {
        match &self.stream {
            Some(stream) => stream,
            None => unreachable!("Connection without a stream"),
        }
    }
}

impl DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut UnixStream {
        match &mut self.stream {
            Some(stream) => stream,
            None => unreachable!("Connection without a stream"),
        }
    }
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (**self).read(buf)
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (**self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }
}

impl AsFd for Connection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        (**self).as_fd()
    }
}

impl AsRawFd for Connection {
    fn as_raw_fd(&self) -> RawFd {
        (**self).as_raw_fd()
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("stream", &self.stream)
            .finish()
    }
}
