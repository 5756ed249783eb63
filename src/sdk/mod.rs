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
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::num::NonZeroU32;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::RecvFlags;

use crate::contract::clock;
use crate::contract::env::{
    parse_exe_digest, ENV_BACKEND_NAMESPACE, ENV_BACKEND_PIPE, ENV_EXE_DIGEST,
    ENV_IDLE_TIMEOUT_SECS, ENV_INSTANCE, ENV_SERVICE_NAME, ENV_SERVICE_VERSION, ENV_TRACEPARENT,
    ENV_TRACESTATE,
};
use crate::contract::error::{FsError, HostError, ValidationError};
use crate::contract::frame::{self, FRAMING_VERSION, HEADER_LEN};
use crate::contract::identity::{validate_namespace_id, DaemonProcess, Endpoint};
use crate::contract::keys::{BackendKey, BrokerInstanceKey};
use crate::contract::names::{validate_service_name, validate_version};
use crate::contract::probe;
use crate::contract::probe::NONCE_LEN;
use crate::contract::proto::FrameMsg;
use crate::contract::stamp::FileStamp;
use crate::contract::trace::TraceContext;
use crate::sys::digest::sha256_file;
use crate::sys::fs::{check_private_dir, PRIVATE_FILE_MODE};
use crate::sys::host;
use crate::sys::proc;

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
/// Bound on consuming a probe request and writing its answer. Both are a few
/// hundred bytes already in (or fitting in) the socket buffers.
const PROBE_IO_TIMEOUT: Duration = Duration::from_secs(1);
/// Listen backlog of the endpoint socket.
const LISTEN_BACKLOG: i32 = 128;
/// Pause after an accept failure that would repeat at once (out of file
/// descriptors), so the accept thread does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

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

/// Everything a [`BackendServer`] needs to bind: the endpoint, the backend
/// key's service name and version, and the optional parts of the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    endpoint: Endpoint,
    key: BackendKey,
    trace: TraceContext,
    idle_timeout_secs: Option<NonZeroU32>,
    identity_exe: Option<PathBuf>,
    /// The launcher's digest of our executable and the stamp it hashed
    /// ([`ENV_EXE_DIGEST`]): used instead of hashing while the file still
    /// has that stamp.
    exe_digest_hint: Option<([u8; 32], FileStamp)>,
    classify_window: Duration,
    exit_on_sigterm: bool,
    /// The variable the endpoint path came from, named by errors about it.
    endpoint_variable: Option<&'static str>,
}

/// The `reason` of a validation error, without the value it repeats.
fn reason_of(err: &ValidationError) -> String {
    match err {
        ValidationError::Name { kind, reason, .. } => format!("{kind}: {reason}"),
        ValidationError::Version { reason, .. }
        | ValidationError::VersionRefused { reason, .. }
        | ValidationError::ServiceDefinition { reason, .. }
        | ValidationError::TraceContext { reason, .. }
        | ValidationError::Identity { reason, .. } => reason.clone(),
    }
}

/// Why an endpoint path is not plain, or `None`: a path is refused when it
/// has a control character (a newline would forge lines in logs and
/// listings), a `.` or `..` segment (it would bind somewhere other than
/// where it appears to), or a trailing `/` (it names no socket file).
fn endpoint_path_problem(path: &str) -> Option<String> {
    if let Some(c) = path.chars().find(|c| c.is_control()) {
        return Some(format!(
            "contains the control character {:?}; a socket path must be printable",
            c
        ));
    }
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Some("contains a '.' or '..' segment; a socket path must be plain".to_owned());
    }
    if path.ends_with('/') {
        return Some("ends with '/'; it must name the socket file".to_owned());
    }
    None
}

fn invalid_env(name: &'static str, value: &str, reason: impl Into<String>) -> ServerError {
    ServerError::InvalidEnv {
        name,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

impl ServerConfig {
    /// A configuration with validated names; no trace, no idle timeout, the
    /// running executable as identity, the default classification window.
    /// The endpoint path must be plain (see the module documentation).
    pub fn new(endpoint: Endpoint, key: BackendKey) -> Result<Self, ServerError> {
        endpoint.validate()?;
        if let Some(reason) = endpoint_path_problem(&endpoint.path) {
            return Err(ValidationError::Identity {
                field: "path",
                value: endpoint.path.clone(),
                reason,
            }
            .into());
        }
        Ok(ServerConfig {
            endpoint,
            key,
            trace: TraceContext::default(),
            idle_timeout_secs: None,
            identity_exe: None,
            exe_digest_hint: None,
            classify_window: DEFAULT_CLASSIFY_WINDOW,
            exit_on_sigterm: false,
            endpoint_variable: None,
        })
    }

    /// The configuration a launcher handed to this process through the
    /// environment contract.
    pub fn from_env() -> Result<Self, ServerError> {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    /// The configuration from any source of variables (`lookup` returns a
    /// variable's value, or `None` when it is unset). Every variable is
    /// validated; an error names the variable. Optional variables that are
    /// set but empty count as unset, as the contract sets them only when
    /// non-empty. The endpoint path must be plain (see the module
    /// documentation); whether its directory exists is checked by
    /// [`BackendServer::bind`], whose error then names the variable too.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Self, ServerError> {
        let text = |name: &'static str, raw: OsString| {
            raw.into_string()
                .map_err(|raw| invalid_env(name, &raw.to_string_lossy(), "is not valid UTF-8"))
        };
        let required = |name: &'static str| match lookup(name) {
            None => Err(ServerError::MissingEnv { name }),
            Some(raw) => text(name, raw),
        };
        let optional = |name: &'static str| match lookup(name) {
            None => Ok(None),
            Some(raw) if raw.is_empty() => Ok(None),
            Some(raw) => text(name, raw).map(Some),
        };

        let service_name = required(ENV_SERVICE_NAME)?;
        validate_service_name(&service_name)
            .map_err(|e| invalid_env(ENV_SERVICE_NAME, &service_name, reason_of(&e)))?;
        let service_version = required(ENV_SERVICE_VERSION)?;
        validate_version(&service_version)
            .map_err(|e| invalid_env(ENV_SERVICE_VERSION, &service_version, reason_of(&e)))?;
        let path = required(ENV_BACKEND_PIPE)?;
        let namespace = required(ENV_BACKEND_NAMESPACE)?;
        validate_namespace_id(&namespace)
            .map_err(|e| invalid_env(ENV_BACKEND_NAMESPACE, &namespace, reason_of(&e)))?;
        let endpoint = Endpoint::new(&namespace, &path)
            .map_err(|e| invalid_env(ENV_BACKEND_PIPE, &path, reason_of(&e)))?;
        if let Some(reason) = endpoint_path_problem(&path) {
            return Err(invalid_env(ENV_BACKEND_PIPE, &path, reason));
        }
        let instance_id = required(ENV_INSTANCE)?;
        let instance = BrokerInstanceKey::from_id(&instance_id)
            .map_err(|e| invalid_env(ENV_INSTANCE, &instance_id, reason_of(&e)))?;
        // Each part was validated above with an error naming its variable.
        let key = BackendKey::new(instance, &service_name, &service_version)?;

        let traceparent = optional(ENV_TRACEPARENT)?.unwrap_or_default();
        let tracestate = optional(ENV_TRACESTATE)?.unwrap_or_default();
        let trace =
            TraceContext::new(0, traceparent.clone(), tracestate.clone()).map_err(
                |e| match &e {
                    ValidationError::TraceContext { field, .. } if *field == "tracestate" => {
                        invalid_env(ENV_TRACESTATE, &tracestate, reason_of(&e))
                    }
                    _ => invalid_env(ENV_TRACEPARENT, &traceparent, reason_of(&e)),
                },
            )?;

        let idle_timeout_secs = match optional(ENV_IDLE_TIMEOUT_SECS)? {
            None => None,
            Some(value) => Some(value.parse::<NonZeroU32>().map_err(|_| {
                invalid_env(
                    ENV_IDLE_TIMEOUT_SECS,
                    &value,
                    "must be a whole number of seconds from 1 to 4294967295 \
                     (leave it unset for no idle exit)",
                )
            })?),
        };

        Ok(ServerConfig {
            endpoint,
            key,
            trace,
            idle_timeout_secs,
            identity_exe: None,
            // A hint, not part of the contract: a malformed value is ignored
            // and the executable hashed.
            exe_digest_hint: lookup(ENV_EXE_DIGEST)
                .and_then(|raw| raw.into_string().ok())
                .and_then(|text| parse_exe_digest(&text)),
            classify_window: DEFAULT_CLASSIFY_WINDOW,
            exit_on_sigterm: false,
            endpoint_variable: Some(ENV_BACKEND_PIPE),
        })
    }

    /// The incoming trace context.
    pub fn with_trace(mut self, trace: TraceContext) -> Self {
        self.trace = trace;
        self
    }

    /// End the server after this many seconds without an open application
    /// connection (`None`: never).
    pub fn with_idle_timeout_secs(mut self, secs: Option<NonZeroU32>) -> Self {
        self.idle_timeout_secs = secs;
        self
    }

    /// Report this file (canonicalized) as the executable in the identity
    /// instead of the running executable: a script backend reports its
    /// script, which is what its service definition names.
    pub fn with_identity_exe(mut self, path: impl Into<PathBuf>) -> Self {
        self.identity_exe = Some(path.into());
        self
    }

    /// How long a new connection may take to show a complete probe request
    /// (see [`DEFAULT_CLASSIFY_WINDOW`]).
    pub fn with_classify_window(mut self, window: Duration) -> Self {
        self.classify_window = window;
        self
    }

    /// Make SIGTERM and SIGINT shut the server down gracefully, with the
    /// handling in place before the socket is bound (see
    /// [`BackendServer::exit_on_sigterm`] for what the handling does).
    pub fn with_exit_on_sigterm(mut self, exit_on_sigterm: bool) -> Self {
        self.exit_on_sigterm = exit_on_sigterm;
        self
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The backend key this server serves.
    pub fn key(&self) -> &BackendKey {
        &self.key
    }

    pub fn instance(&self) -> &BrokerInstanceKey {
        self.key.instance()
    }

    pub fn service_name(&self) -> &str {
        self.key.service_name()
    }

    pub fn service_version(&self) -> &str {
        self.key.service_version()
    }

    pub fn trace(&self) -> &TraceContext {
        &self.trace
    }

    pub fn idle_timeout_secs(&self) -> Option<NonZeroU32> {
        self.idle_timeout_secs
    }

    pub fn identity_exe(&self) -> Option<&Path> {
        self.identity_exe.as_deref()
    }

    pub fn classify_window(&self) -> Duration {
        self.classify_window
    }

    pub fn exit_on_sigterm(&self) -> bool {
        self.exit_on_sigterm
    }

    /// The identity a server bound with this configuration reports, with
    /// `started_at_unix_ms` = now. Hashes the executable, so it costs a read
    /// of the whole file, unless the launcher passed its digest
    /// ([`ENV_EXE_DIGEST`]) with the stamp of the file it hashed and the
    /// file still has exactly that stamp (for a native executable, the
    /// running image cannot be written while it runs).
    ///
    /// Without an identity file, the hash is of the image this process runs
    /// (read through `/proc/self/exe`), not of whatever is at its path now:
    /// a binary replaced on disk after the exec must not lend its hash to
    /// the process still running the old one.
    pub fn daemon_identity(&self) -> Result<DaemonProcess, ServerError> {
        let (exe, hashed) = match &self.identity_exe {
            Some(path) => {
                let exe = std::fs::canonicalize(path)
                    .map_err(|e| ServerError::io("canonicalize", path, e))?;
                (exe.clone(), exe)
            }
            None => (running_exe_path()?, PathBuf::from(proc::SELF_EXE_LINK)),
        };
        let exe_path = exe.to_str().ok_or_else(|| ValidationError::Identity {
            field: "exe_path",
            value: exe.to_string_lossy().into_owned(),
            reason: "must be UTF-8 (the wire format carries it as a string)".to_owned(),
        })?;
        let identity = DaemonProcess {
            pid: std::process::id(),
            exe_path: exe_path.to_owned(),
            exe_sha256: self.exe_digest(&hashed)?,
            boot_id: host::boot_id()?,
            ipc_endpoint: self.endpoint.clone(),
            started_at_unix_ms: clock::unix_time_ms(),
            idle_timeout_secs: self.idle_timeout_secs.map(NonZeroU32::get),
        };
        identity.validate()?;
        Ok(identity)
    }
}

impl ServerConfig {
    /// The digest of `hashed`: the launcher's, if its stamp still holds.
    fn exe_digest(&self, hashed: &Path) -> Result<[u8; 32], ServerError> {
        if let Some((digest, stamp)) = &self.exe_digest_hint {
            let now = std::fs::metadata(hashed).map(|meta| FileStamp::of(&meta));
            if now.is_ok_and(|now| now == *stamp) {
                return Ok(*digest);
            }
        }
        Ok(sha256_file(hashed)?)
    }
}

fn running_exe_path() -> Result<PathBuf, ServerError> {
    proc::self_exe_path()
        .map_err(|e| ServerError::io("read link", Path::new(proc::SELF_EXE_LINK), e))
}

/// The socket file this server created. An `O_PATH` descriptor pins its
/// inode, so no other file can get the same inode number while the server
/// lives (ext4 hands a freed number to the next new file at once); a file at
/// the path with the same device and inode is therefore this one, and a file
/// someone else put there later is never removed.
#[derive(Debug)]
struct BoundSocketFile {
    pin: OwnedFd,
}

impl BoundSocketFile {
    fn pin(path: &Path) -> io::Result<Self> {
        use rustix::fs::{Mode, OFlags};
        let pin = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(BoundSocketFile { pin })
    }

    /// Whether `path` still names this socket file.
    fn is_at(&self, path: &Path) -> io::Result<bool> {
        let ours = rustix::fs::fstat(&self.pin)?;
        match std::fs::symlink_metadata(path) {
            Ok(meta) => Ok(meta.file_type().is_socket()
                && meta.dev() == ours.st_dev
                && meta.ino() == ours.st_ino),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn describe_file_type(meta: &std::fs::Metadata) -> &'static str {
    let ft = meta.file_type();
    if ft.is_symlink() {
        "symbolic link"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_file() {
        "regular file"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "special file"
    }
}

/// Clears the socket path for binding: nothing there is fine; a socket that
/// refuses connections is stale and is removed; a live socket or anything
/// that is not a socket is an error and is left as it is.
fn clear_stale_socket(path: &Path) -> Result<(), ServerError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ServerError::io("inspect", path, e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::NotASocket {
            path: path.to_path_buf(),
            found: describe_file_type(&meta),
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ServerError::AddressInUse {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            match std::fs::remove_file(path) {
                Ok(()) => {
                    log::info!("removed stale socket file {}", path.display());
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(ServerError::io("remove stale socket", path, e)),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ServerError::io("connect to existing socket", path, e)),
    }
}

/// Creates, binds and listens on the endpoint socket with mode 0600.
///
/// The mode is set on the socket before `bind`, so the file never exists
/// with wider permissions (Linux creates the file from the socket inode's
/// mode, filtered by the umask); this avoids changing the process-wide umask
/// under other threads. The private directory around it is the real fence.
fn bind_socket(path: &Path) -> Result<(UnixListener, BoundSocketFile), ServerError> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| ServerError::io("create socket for", path, e))?;
    rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(PRIVATE_FILE_MODE))
        .map_err(|e| ServerError::io("chmod socket for", path, e))?;
    let addr = SocketAddrUnix::new(path).map_err(|e| ServerError::io("address", path, e))?;
    rustix::net::bind(&fd, &addr).map_err(|e| {
        if e == rustix::io::Errno::ADDRINUSE {
            ServerError::AddressInUse {
                path: path.to_path_buf(),
            }
        } else {
            ServerError::io("bind", path, e)
        }
    })?;
    let listener = UnixListener::from(fd);
    let result = (|| {
        let file = BoundSocketFile::pin(path).map_err(|e| ServerError::io("open", path, e))?;
        let mode = rustix::fs::fstat(&file.pin)
            .map_err(|e| ServerError::io("inspect", path, e))?
            .st_mode;
        if mode & 0o777 != PRIVATE_FILE_MODE {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))
                .map_err(|e| ServerError::io("chmod", path, e))?;
        }
        rustix::net::listen(listener.as_fd(), LISTEN_BACKLOG)
            .map_err(|e| ServerError::io("listen on", path, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| ServerError::io("set non-blocking", path, e))?;
        Ok(file)
    })();
    match result {
        Ok(id) => Ok((listener, id)),
        Err(err) => {
            let _ = std::fs::remove_file(path);
            Err(err)
        }
    }
}

/// Mutable state shared by the accept thread, the classifier threads and the
/// application.
struct State {
    /// Application connections classified and not yet taken by `accept`.
    queue: VecDeque<UnixStream>,
    /// Application connections queued or handed out and not yet reported
    /// closed. Probes are never counted.
    open: usize,
    /// Connections being classified right now.
    classifying: usize,
    /// When `open` last became zero (the start, at first).
    idle_since: Instant,
    /// Set once when a shutdown is asked for.
    stop: Option<ShutdownReason>,
    /// Set when the accept thread has removed the socket file and closed the
    /// listener.
    stopped: bool,
}

/// What the accept thread, the classifier threads, the application's
/// [`Connection`]s and the signal router share.
struct Shared {
    identity: DaemonProcess,
    idle_timeout: Option<Duration>,
    classify_window: Duration,
    state: Mutex<State>,
    changed: Condvar,
    /// Read end of the stop pipe. One byte is written at shutdown and never
    /// read, so it stays readable and wakes every poll that includes it.
    stop_rx: OwnedFd,
    stop_tx: OwnedFd,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn wait_timeout<'a>(
        &self,
        guard: MutexGuard<'a, State>,
        timeout: Duration,
    ) -> MutexGuard<'a, State> {
        self.changed
            .wait_timeout(guard, timeout)
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }

    /// Asks for a shutdown (the first reason wins) and wakes every waiter.
    fn request_stop(&self, reason: ShutdownReason) {
        let mut st = self.lock();
        if st.stop.is_some() {
            return;
        }
        st.stop = Some(reason.clone());
        // Queued connections were never seen by the application; dropping
        // them closes them.
        st.open = st.open.saturating_sub(st.queue.len());
        st.queue.clear();
        drop(st);
        // Logged only after the lock is released: a log record may need the
        // Python GIL, and a Python thread holding it may be waiting for this
        // lock.
        log::info!(
            "backend server on {} stopping: {reason}",
            self.identity.ipc_endpoint.path
        );
        self.changed.notify_all();
        // A full pipe already wakes everyone, so a failed write changes nothing.
        let _ = rustix::io::write(&self.stop_tx, &[1]);
    }

    fn connection_closed(&self) {
        let mut st = self.lock();
        if st.open == 0 {
            drop(st);
            log::warn!("connection_closed called more often than connections were accepted");
            return;
        }
        st.open -= 1;
        if st.open == 0 {
            st.idle_since = Instant::now();
        }
    }

    /// How long the accept thread may sleep before the idle timeout needs
    /// another look; `Some(ZERO)` when it is due. While application
    /// connections are open it looks again after one full timeout: the idle
    /// clock can only restart later than now, so that is never late.
    /// Connections being classified do not count: they may be probes.
    fn idle_wait(&self, st: &State) -> Option<Duration> {
        let idle = self.idle_timeout?;
        if st.open > 0 {
            return Some(idle);
        }
        Some((st.idle_since + idle).saturating_duration_since(Instant::now()))
    }

    /// Called when the idle timeout is due: waits for the connections being
    /// classified (each within one window), since one of them may be an
    /// application connection that arrived just in time. True if the server
    /// is still idle afterwards; false if it has work or is stopping.
    fn still_idle_after_classifying(&self) -> bool {
        let mut st = self.lock();
        while st.stop.is_none() && st.classifying > 0 {
            st = self.wait(st);
        }
        st.stop.is_none() && st.open == 0
    }

    /// Waits until `fd` (if any) reports one of `events` (or hang-up or
    /// error), the stop pipe becomes readable, or `timeout` passes.
    fn poll_with_stop(
        &self,
        fd: Option<BorrowedFd<'_>>,
        events: PollFlags,
        timeout: Option<Duration>,
    ) -> io::Result<Woke> {
        let timespec = match timeout {
            Some(t) => Some(
                Timespec::try_from(t).map_err(|_| io::Error::other("poll timeout out of range"))?,
            ),
            None => None,
        };
        let mut fds = vec![PollFd::new(&self.stop_rx, PollFlags::IN)];
        if let Some(fd) = fd {
            fds.push(PollFd::from_borrowed_fd(fd, events));
        }
        loop {
            match rustix::event::poll(&mut fds, timespec.as_ref()) {
                Ok(0) => return Ok(Woke::Timeout),
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if !fds[0].revents().is_empty() {
            return Ok(Woke::Stop);
        }
        Ok(Woke::Ready)
    }

    fn enqueue(&self, stream: UnixStream) {
        let mut st = self.lock();
        if st.stop.is_some() {
            return;
        }
        st.open += 1;
        st.queue.push_back(stream);
        drop(st);
        self.changed.notify_all();
    }
}

enum Woke {
    Ready,
    Stop,
    Timeout,
}

/// What the bytes peeked so far say about a connection.
#[derive(Debug, PartialEq)]
enum Peeked {
    /// Could still be a probe; `need` bytes in all would settle it.
    NeedMore { need: usize },
    /// Cannot be a probe request.
    NotProbe,
    /// A complete probe request of `frame_len` bytes (header included).
    Probe {
        frame_len: usize,
        request: Box<FrameMsg>,
        nonce: [u8; NONCE_LEN],
    },
}

/// Judges the first bytes of a connection.
fn judge(seen: &[u8]) -> Peeked {
    match seen.first() {
        None => return Peeked::NeedMore { need: HEADER_LEN },
        Some(&version) if version != FRAMING_VERSION => return Peeked::NotProbe,
        Some(_) => {}
    }
    let Some(header) = seen.get(..HEADER_LEN) else {
        return Peeked::NeedMore { need: HEADER_LEN };
    };
    let mut fixed = [0u8; HEADER_LEN];
    fixed.copy_from_slice(header);
    let Ok(body_len) = frame::parse_header(&fixed, MAX_PROBE_REQUEST) else {
        return Peeked::NotProbe;
    };
    let frame_len = HEADER_LEN + body_len as usize;
    let Some(body) = seen.get(HEADER_LEN..frame_len) else {
        return Peeked::NeedMore { need: frame_len };
    };
    let Ok(request) = frame::decode_body(body) else {
        return Peeked::NotProbe;
    };
    match probe::probe_nonce(&request) {
        Some(nonce) => Peeked::Probe {
            frame_len,
            request: Box::new(request),
            nonce,
        },
        None => {
            if request.payload_protocol == crate::contract::proto::payload_protocol::IDENTITY_PROBE
            {
                log::warn!(
                    "malformed identity probe (request_id {}, {} payload bytes); \
                     handing the connection to the application",
                    request.request_id,
                    request.payload.len()
                );
            }
            Peeked::NotProbe
        }
    }
}

/// The outcome of classifying one connection.
enum Class {
    Probe {
        frame_len: usize,
        request: Box<FrameMsg>,
        nonce: [u8; NONCE_LEN],
    },
    Application,
    /// The server is stopping; drop the connection.
    Abandon,
    /// The connection failed while being looked at.
    Broken(io::Error),
}

/// Shortest and longest pause between peeks while a partial frame grows.
const PEEK_BACKOFF_MIN: Duration = Duration::from_millis(1);
const PEEK_BACKOFF_MAX: Duration = Duration::from_millis(16);

fn peek(stream: &UnixStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::net::recv(stream, &mut *buf, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
            Ok((n, _)) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Looks at a connection's first bytes without consuming them, until they
/// are a complete probe request, cannot be one, or `deadline` passes.
///
/// Waiting for the first byte uses `poll`. Waiting for more bytes of a
/// partial frame cannot: peeked bytes stay queued, so the socket stays
/// readable; instead it re-peeks after short pauses, during which `poll`
/// watches for the peer hanging up (no more bytes will come) and for stop.
fn classify(shared: &Shared, stream: &UnixStream, deadline: Instant) -> Class {
    let mut buf = vec![0u8; HEADER_LEN];
    let mut backoff = PEEK_BACKOFF_MIN;
    let mut peer_done = false;
    loop {
        let seen = match peek(stream, &mut buf) {
            // Nothing queued and the peer has shut down its side.
            Ok(0) => return Class::Application,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Class::Application;
                }
                match shared.poll_with_stop(Some(stream.as_fd()), PollFlags::IN, Some(left)) {
                    Ok(Woke::Ready) => continue,
                    Ok(Woke::Timeout) => return Class::Application,
                    Ok(Woke::Stop) => return Class::Abandon,
                    Err(e) => return Class::Broken(e),
                }
            }
            Err(e) => return Class::Broken(e),
        };
        let need = match judge(&buf[..seen]) {
            Peeked::Probe {
                frame_len,
                request,
                nonce,
            } => {
                return Class::Probe {
                    frame_len,
                    request,
                    nonce,
                }
            }
            Peeked::NotProbe => return Class::Application,
            Peeked::NeedMore { need } => need,
        };
        if need > buf.len() {
            let was_full = seen == buf.len();
            buf.resize(need, 0);
            if was_full {
                // More may already be queued than the old buffer could show.
                continue;
            }
        }
        if peer_done {
            return Class::Application;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Class::Application;
        }
        match shared.poll_with_stop(
            Some(stream.as_fd()),
            PollFlags::RDHUP,
            Some(left.min(backoff)),
        ) {
            Ok(Woke::Ready) => peer_done = true,
            Ok(Woke::Timeout) => backoff = (backoff * 2).min(PEEK_BACKOFF_MAX),
            Ok(Woke::Stop) => return Class::Abandon,
            Err(e) => return Class::Broken(e),
        }
    }
}

fn answer_probe(
    shared: &Shared,
    mut stream: &UnixStream,
    frame_len: usize,
    request: &FrameMsg,
    nonce: &[u8; NONCE_LEN],
) -> io::Result<()> {
    // Consume exactly the request; anything the peer sent after it is not
    // ours to read and goes away with the connection.
    let mut consumed = vec![0u8; frame_len];
    stream.set_read_timeout(Some(PROBE_IO_TIMEOUT))?;
    stream.read_exact(&mut consumed)?;
    let response = probe::probe_response(request, nonce, &shared.identity);
    stream.set_write_timeout(Some(PROBE_IO_TIMEOUT))?;
    stream.write_all(&response)?;
    Ok(())
}

fn handle_connection(shared: &Shared, stream: UnixStream, accepted: Instant) {
    let class = classify(shared, &stream, accepted + shared.classify_window);
    serve(shared, stream, class);
}

/// Answers a probe, hands an application connection over, or drops it.
fn serve(shared: &Shared, stream: UnixStream, class: Class) {
    match class {
        Class::Probe {
            frame_len,
            request,
            nonce,
        } => match answer_probe(shared, &stream, frame_len, &request, &nonce) {
            Ok(()) => log::debug!(
                "answered identity probe request_id={} traceparent={:?}",
                request.request_id,
                request.traceparent
            ),
            Err(e) => log::warn!("could not answer identity probe: {e}"),
        },
        Class::Application => {
            // The application's own sockets block; accept() does not inherit
            // the listener's O_NONBLOCK on Linux, but say so explicitly.
            if let Err(e) = stream.set_nonblocking(false) {
                log::warn!("dropping connection that cannot be made blocking: {e}");
                return;
            }
            shared.enqueue(stream);
        }
        Class::Abandon => {}
        Class::Broken(e) => log::warn!("connection failed before it could be classified: {e}"),
    }
}

/// Holds a classification slot; releasing it lets the accept thread go on.
struct ClassifySlot(Arc<Shared>);

impl Drop for ClassifySlot {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.classifying -= 1;
        drop(st);
        self.0.changed.notify_all();
    }
}

/// How much of a new connection the accept thread peeks at before handing
/// it to a classifier thread: enough for any probe a launcher sends.
const FAST_PEEK: usize = 1024;
/// How long the accept thread waits for a new connection's first bytes
/// before handing it to a classifier thread. Bounded and short: it delays
/// the next accept by at most this much.
const FAST_WAIT: Duration = Duration::from_micros(500);

/// Classifies a connection whose first bytes are already queued (or arrive
/// within [`FAST_WAIT`]), on the accept thread: a complete probe is answered at once (its reply fits the
/// fresh socket's empty buffer, so the write cannot block), and bytes that
/// cannot start a probe go straight to the application. Returns the
/// connection when it needs a classifier thread (nothing or part of a frame
/// has arrived yet).
fn classify_queued(shared: &Shared, stream: UnixStream) -> Option<UnixStream> {
    let mut buf = [0u8; FAST_PEEK];
    let mut seen = peek(&stream, &mut buf);
    if matches!(&seen, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
        // A prober writes its request right after connecting; it is usually
        // a few microseconds behind the accept.
        let mut fds = [rustix::event::PollFd::new(&stream, PollFlags::IN)];
        let timespec = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: FAST_WAIT.as_nanos() as _,
        };
        if matches!(rustix::event::poll(&mut fds, Some(&timespec)), Ok(1)) {
            seen = peek(&stream, &mut buf);
        }
    }
    let seen = match seen {
        Ok(0) | Err(_) => return Some(stream),
        Ok(n) => n,
    };
    let class = match judge(&buf[..seen]) {
        Peeked::Probe {
            frame_len,
            request,
            nonce,
        } => Class::Probe {
            frame_len,
            request,
            nonce,
        },
        Peeked::NotProbe => Class::Application,
        Peeked::NeedMore { .. } => return Some(stream),
    };
    serve(shared, stream, class);
    None
}

fn spawn_classifier(shared: &Arc<Shared>, stream: UnixStream) {
    let Some(stream) = classify_queued(shared, stream) else {
        return;
    };
    let accepted = Instant::now();
    shared.lock().classifying += 1;
    let slot = ClassifySlot(Arc::clone(shared));
    let spawned = thread::Builder::new()
        .name("rp-classify".to_owned())
        .spawn(move || {
            let slot = slot;
            handle_connection(&slot.0, stream, accepted);
        });
    if let Err(e) = spawned {
        // The closure, and with it the slot and the stream, was dropped.
        log::warn!("dropping connection: cannot start a thread to classify it: {e}");
    }
}

/// Owns the listener on the accept thread and, when that thread ends for any
/// reason (including a panic), removes the socket file, closes the listener
/// and marks the server stopped.
struct ListenerGuard {
    shared: Arc<Shared>,
    listener: Option<UnixListener>,
    path: PathBuf,
    file: BoundSocketFile,
}

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        match self.file.is_at(&self.path) {
            Ok(true) => match std::fs::remove_file(&self.path) {
                Ok(()) => log::info!("removed socket file {}", self.path.display()),
                Err(e) => log::warn!("cannot remove socket file {}: {e}", self.path.display()),
            },
            Ok(false) => log::warn!(
                "socket file {} is gone or no longer the one this server bound; leaving it",
                self.path.display()
            ),
            Err(e) => log::warn!("cannot inspect socket file {}: {e}", self.path.display()),
        }
        drop(self.listener.take());
        let mut st = self.shared.lock();
        if st.stop.is_none() {
            st.stop = Some(ShutdownReason::Failed {
                reason: "the accept thread ended unexpectedly".to_owned(),
            });
        }
        st.open = st.open.saturating_sub(st.queue.len());
        st.queue.clear();
        st.stopped = true;
        let reason = st.stop.clone();
        drop(st);
        self.shared.changed.notify_all();
        signals::release(&self.shared);
        if let Some(reason) = reason {
            log::info!(
                "backend server on {} shut down ({reason})",
                self.path.display()
            );
        }
    }
}

fn accept_loop(guard: &ListenerGuard) {
    let shared = &guard.shared;
    let Some(listener) = guard.listener.as_ref() else {
        return;
    };
    loop {
        let idle_wait = {
            let mut st = shared.lock();
            while st.stop.is_none() && st.classifying >= MAX_CLASSIFYING {
                st = shared.wait(st);
            }
            if st.stop.is_some() {
                return;
            }
            shared.idle_wait(&st)
        };
        let idle_due = idle_wait.is_some_and(|wait| wait.is_zero());
        if idle_due {
            if !shared.still_idle_after_classifying() {
                continue;
            }
            // Still serve a client already waiting in the backlog; the
            // accept below ends the server if there is none.
        } else {
            match shared.poll_with_stop(Some(listener.as_fd()), PollFlags::IN, idle_wait) {
                Ok(Woke::Ready) => {}
                Ok(Woke::Timeout) => continue,
                Ok(Woke::Stop) => return,
                Err(e) => {
                    shared.request_stop(ShutdownReason::Failed {
                        reason: format!("poll: {e}"),
                    });
                    return;
                }
            }
        }
        match listener.accept() {
            Ok((stream, _)) => spawn_classifier(shared, stream),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if idle_due {
                    shared.request_stop(ShutdownReason::Idle);
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) => {}
            Err(e) => {
                // Typically out of file descriptors: the backlog stays
                // readable, so pause instead of spinning.
                log::warn!("accept on {} failed: {e}", guard.path.display());
                if let Ok(Woke::Stop) =
                    shared.poll_with_stop(None, PollFlags::empty(), Some(ACCEPT_ERROR_PAUSE))
                {
                    return;
                }
            }
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
        let bound = clear_stale_socket(&path).and_then(|()| bind_socket(&path));
        let (listener, file) = match bound {
            Ok(bound) => bound,
            Err(err) => {
                signals::release(&shared);
                return Err(err);
            }
        };
        let guard = ListenerGuard {
            shared: Arc::clone(&shared),
            listener: Some(listener),
            path: path.clone(),
            file,
        };
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

/// Process-wide SIGTERM/SIGINT routing to the server that asked last.
mod signals {
    use std::io;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, PoisonError, Weak};
    use std::thread;

    use signal_hook::consts::signal::{SIGINT, SIGTERM};
    use signal_hook::iterator::Signals;

    use super::{Shared, ShutdownReason};

    struct Router {
        target: Mutex<Option<Weak<Shared>>>,
        /// When true, the signal's default action runs inside the handler.
        /// False only while a server waits for its first signal.
        default_action: Arc<AtomicBool>,
    }

    static ROUTER: Mutex<Option<&'static Router>> = Mutex::new(None);

    fn router() -> io::Result<&'static Router> {
        let mut slot = ROUTER.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(router) = *slot {
            return Ok(router);
        }
        let default_action = Arc::new(AtomicBool::new(true));
        // Registered before the iterator, so on the first signal the
        // condition is still false and only the iterator acts.
        for sig in [SIGTERM, SIGINT] {
            signal_hook::flag::register_conditional_default(sig, Arc::clone(&default_action))?;
        }
        let mut signals = Signals::new([SIGTERM, SIGINT])?;
        let router: &'static Router = Box::leak(Box::new(Router {
            target: Mutex::new(None),
            default_action,
        }));
        thread::Builder::new()
            .name("rp-signals".to_owned())
            .spawn(move || {
                for sig in signals.forever() {
                    deliver(router, sig);
                }
            })?;
        *slot = Some(router);
        Ok(router)
    }

    fn deliver(router: &Router, sig: i32) {
        let target = router
            .target
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // Arm the default action first: from now on a signal terminates.
        router.default_action.store(true, Ordering::SeqCst);
        match target.and_then(|weak| weak.upgrade()) {
            Some(shared) => shared.request_stop(ShutdownReason::Signal(sig)),
            None => {
                let _ = signal_hook::low_level::emulate_default_handler(sig);
            }
        }
    }

    pub(super) fn route_to(shared: &Arc<Shared>) -> io::Result<()> {
        let router = router()?;
        let mut target = router.target.lock().unwrap_or_else(PoisonError::into_inner);
        *target = Some(Arc::downgrade(shared));
        router.default_action.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Called when `shared` has stopped: signals get their default action
    /// back unless another server took over the routing.
    pub(super) fn release(shared: &Shared) {
        let Some(router) = *ROUTER.lock().unwrap_or_else(PoisonError::into_inner) else {
            return;
        };
        let mut target = router.target.lock().unwrap_or_else(PoisonError::into_inner);
        if target
            .as_ref()
            .is_some_and(|weak| std::ptr::eq(weak.as_ptr(), shared))
        {
            router.default_action.store(true, Ordering::SeqCst);
            *target = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::env::format_exe_digest;
    use crate::contract::frame::MAX_FRAME_BODY;
    use crate::launch::verify::ProbeRequest;

    #[test]
    fn judge_recognises_a_probe_only_when_complete() {
        let req = ProbeRequest::with_nonce([5; 32], &TraceContext::default());
        for cut in 0..req.bytes.len() {
            match judge(&req.bytes[..cut]) {
                Peeked::NeedMore { need } => assert!(need > cut, "{cut}"),
                other => panic!("{cut}: {other:?}"),
            }
        }
        match judge(&req.bytes) {
            Peeked::Probe {
                frame_len, nonce, ..
            } => {
                assert_eq!(frame_len, req.bytes.len());
                assert_eq!(nonce, [5; 32]);
            }
            other => panic!("{other:?}"),
        }
        let mut longer = req.bytes.clone();
        longer.extend_from_slice(b"trailing");
        assert!(matches!(judge(&longer), Peeked::Probe { .. }));
    }

    #[test]
    fn judge_rejects_what_cannot_be_a_probe() {
        assert_eq!(judge(b"GET / HTTP/1.1"), Peeked::NotProbe);
        assert_eq!(judge(&[1, 0xff, 0xff, 0xff, 0xff]), Peeked::NotProbe);
        let req = ProbeRequest::with_nonce([5; 32], &TraceContext::default());
        let mut frame = frame::decode_frame(&req.bytes, MAX_FRAME_BODY).unwrap();
        frame.request_id ^= 1;
        let bytes = frame::encode_frame(&frame, MAX_FRAME_BODY).unwrap();
        assert_eq!(judge(&bytes), Peeked::NotProbe);
        let mut garbled = req.bytes.clone();
        garbled[HEADER_LEN] = 0xff;
        assert_eq!(judge(&garbled), Peeked::NotProbe);
    }

    fn config_with(digest_var: Option<String>) -> ServerConfig {
        ServerConfig::from_lookup(|name| {
            let value = match name {
                ENV_SERVICE_NAME => "echo".to_owned(),
                ENV_SERVICE_VERSION => "1.0.0".to_owned(),
                ENV_BACKEND_PIPE => "/tmp/rp-hint-test/s/b.sock".to_owned(),
                ENV_BACKEND_NAMESPACE | ENV_INSTANCE => "shared".to_owned(),
                ENV_EXE_DIGEST => digest_var.clone()?,
                _ => return None,
            };
            Some(value.into())
        })
        .unwrap()
    }

    #[test]
    fn the_launchers_digest_is_used_only_while_the_stamp_holds() {
        let exe = Path::new(proc::SELF_EXE_LINK);
        let stamp = FileStamp::of(&std::fs::metadata(exe).unwrap());
        let real = sha256_file(exe).unwrap();
        // A digest that is not ours shows which source was used.
        let hinted = [0x5a; 32];
        let identity = |var: Option<String>| config_with(var).daemon_identity().unwrap().exe_sha256;
        assert_eq!(identity(Some(format_exe_digest(&hinted, &stamp))), hinted);
        let moved = FileStamp {
            ctime: (stamp.ctime.0, stamp.ctime.1 + 1),
            ..stamp
        };
        assert_eq!(identity(Some(format_exe_digest(&hinted, &moved))), real);
        let other = FileStamp {
            ino: stamp.ino + 1,
            ..stamp
        };
        assert_eq!(identity(Some(format_exe_digest(&hinted, &other))), real);
        assert_eq!(identity(Some("not a digest".to_owned())), real);
        assert_eq!(identity(None), real);
    }

    #[test]
    fn endpoint_paths_must_be_plain() {
        for ok in [
            "/tmp/s/b.sock",
            "/run/user/0/rp/s/b..sock",
            "/tmp/s/.b.sock",
            "/tmp//b.sock",
        ] {
            assert_eq!(endpoint_path_problem(ok), None, "{ok}");
        }
        for (bad, says) in [
            ("/tmp/s/../b.sock", "'..'"),
            ("/tmp/s/..", "'..'"),
            ("/tmp/./b.sock", "'.'"),
            ("/tmp/s/b.sock\n", "control character '\\n'"),
            ("/tmp/s/b\r.sock", "control character"),
            ("/tmp/s/b\x7f.sock", "control character"),
            ("/tmp/s/b\u{9b}.sock", "control character"),
            ("/tmp/s/", "ends with '/'"),
        ] {
            let reason = endpoint_path_problem(bad).unwrap_or_default();
            assert!(reason.contains(says), "{bad:?}: {reason}");
        }
    }

    #[test]
    fn a_config_built_in_code_refuses_a_path_that_is_not_plain() {
        let key = BackendKey::new(BrokerInstanceKey::shared(), "echo", "1.0.0").unwrap();
        let endpoint = Endpoint::new("shared", "/tmp/s/../b.sock").unwrap();
        match ServerConfig::new(endpoint, key).unwrap_err() {
            ServerError::Validation(ValidationError::Identity { field, value, .. }) => {
                assert_eq!(field, "path");
                assert_eq!(value, "/tmp/s/../b.sock");
            }
            err => panic!("{err}"),
        }
    }

    #[test]
    fn validation_reasons_drop_the_repeated_value() {
        let err = validate_service_name("Zc").unwrap_err();
        let reason = reason_of(&err);
        assert!(reason.starts_with("service name: "), "{reason}");
        assert!(!reason.contains("\"Zc\""), "{reason}");
    }
}
