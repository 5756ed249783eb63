//! Steps 2 to 4 of a launch: the endpoint and log file reserved for the
//! backend ([`Reservation`], which gives both back unless the launch
//! succeeds), its environment (the v1 contract on top of the caller's,
//! scrubbed), and the detached spawn of exactly the hashed descriptor,
//! watched from then on.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{shortage, LaunchError};
use super::handle::{end_escaped_helpers, remove_socket_file};
use super::{environ, CommandBackendLauncher};
use crate::contract::env;
use crate::contract::error::{AllocError, FsError};
use crate::contract::identity::Endpoint;
use crate::contract::keys::BackendKey;
use crate::contract::service::{Listener, ServiceDefinition};
use crate::contract::trace::TraceContext;
use crate::launch::endpoint::BackendEndpointAllocator;
use crate::sys::exe::BackendBinary;
use crate::sys::fs::{create_private_file, ensure_private_dir};
use crate::sys::net::bind_private_socket;
use crate::sys::proc;
use crate::sys::reaper::ChildWatch;
use crate::sys::spawn::{self, SpawnError, SpawnRequest};

/// An endpoint allocated for a backend and, once opened, its log file. Until
/// [`Reservation::keep`] is called, dropping it removes whatever the launch
/// left at the endpoint path, gives the path back to the allocator and
/// removes the log: a failed launch leaves nothing behind.
pub(super) struct Reservation {
    /// The allocator that handed out the endpoint; None for a fixed
    /// endpoint, which nobody allocates.
    pub(super) allocator: Option<Arc<BackendEndpointAllocator>>,
    pub(super) endpoint: Endpoint,
    log: Option<(File, PathBuf)>,
    kept: bool,
}

impl Reservation {
    pub(super) fn log_path(&self) -> &Path {
        self.log.as_ref().map_or(Path::new(""), |(_, path)| path)
    }

    /// The launch succeeded: the allocator and log path now belong to the
    /// backend's handle.
    pub(super) fn keep(mut self) -> (Option<Arc<BackendEndpointAllocator>>, PathBuf) {
        self.kept = true;
        let log_path = self.log.take().map(|(_, path)| path).unwrap_or_default();
        (self.allocator.clone(), log_path)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let path = Path::new(&self.endpoint.path);
        remove_socket_file(path);
        if let Some(allocator) = &self.allocator {
            allocator.release(path);
        }
        if let Some((_, log)) = &self.log {
            remove_log(log);
        }
    }
}

impl CommandBackendLauncher {
    /// Step 2: an endpoint in the key's instance namespace and a fresh log
    /// file for the backend.
    pub(super) fn reserve(
        &self,
        key: &BackendKey,
        binary: &BackendBinary,
    ) -> Result<Reservation, LaunchError> {
        let allocator = self
            .allocator(key.instance())
            .map_err(|e| e.or_shortage(&binary.canonical))?;
        let endpoint = allocator
            .allocate()
            .map_err(|e| LaunchError::Endpoint(e).or_shortage(&binary.canonical))?;
        self.reservation(key, binary, Some(allocator), endpoint)
    }

    /// Step 2 for a fixed endpoint (already checked, and locked against the
    /// launchers of other processes): nothing to allocate; the log file.
    pub(super) fn reserve_fixed(
        &self,
        key: &BackendKey,
        binary: &BackendBinary,
        endpoint: &Endpoint,
    ) -> Result<Reservation, LaunchError> {
        self.reservation(key, binary, None, endpoint.clone())
    }

    fn reservation(
        &self,
        key: &BackendKey,
        binary: &BackendBinary,
        allocator: Option<Arc<BackendEndpointAllocator>>,
        endpoint: Endpoint,
    ) -> Result<Reservation, LaunchError> {
        let mut reservation = Reservation {
            allocator,
            endpoint,
            log: None,
            kept: false,
        };
        let log = self
            .open_log(key, &reservation.endpoint)
            .map_err(|e| e.or_shortage(&binary.canonical))?;
        reservation.log = Some(log);
        Ok(reservation)
    }

    /// Steps 3 and 4: starts exactly the hashed descriptor, detached, with
    /// the backend's environment and its output in the log, and watches it.
    /// Once the child is reaped its socket file goes and its endpoint is
    /// released, whoever holds its handle.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start(
        &self,
        key: &BackendKey,
        sd: &ServiceDefinition,
        trace: &TraceContext,
        binary: &BackendBinary,
        reservation: &Reservation,
        args: &[String],
        listener: Option<&OwnedFd>,
    ) -> Result<ChildWatch, LaunchError> {
        let listener_fd = listener.map(AsRawFd::as_raw_fd);
        let env: Vec<CString> = self
            .environment(key, sd, reservation, trace, binary, listener_fd)
            .iter()
            .filter_map(|(k, v)| spawn::env_entry(k, v))
            .collect();
        let argv0 = spawn::arg0(&binary.canonical).unwrap_or_default();
        // Expanded and checked for NUL bytes before the launch began.
        let argv: Vec<CString> = std::iter::once(argv0)
            .chain(args.iter().filter_map(|a| CString::new(a.as_bytes()).ok()))
            .collect();
        let Some((log, _)) = &reservation.log else {
            return Err(LaunchError::LogFile(FsError::io(
                "open",
                reservation.log_path(),
                io::Error::from(io::ErrorKind::NotFound),
            )));
        };
        let request = SpawnRequest {
            executable: &binary.file,
            script: binary.script_exec(),
            argv,
            env,
            log,
            pass: listener_fd,
        };
        let spawned = spawn::spawn(&request).map_err(|e| {
            let (errno, source) = match e {
                SpawnError::Exec { errno, source } => (Some(errno), source),
                SpawnError::Setup { operation, source } => (
                    source.raw_os_error(),
                    io::Error::new(source.kind(), format!("{operation}: {source}")),
                ),
            };
            LaunchError::Spawn {
                path: binary.canonical.clone(),
                errno,
                source,
            }
        })?;
        let reaped_endpoint = PathBuf::from(&reservation.endpoint.path);
        let reaped_allocator = reservation.allocator.clone();
        let attested = Arc::clone(&self.attested);
        let proven_at = reservation.endpoint.path.clone();
        let backend_pid = spawned.pid;
        // Started before the backend's own start: every helper it forks
        // starts at or after this.
        let since_ticks = proc::stat(spawned.pid).map_or(0, |s| s.start_ticks);
        ChildWatch::start(spawned, move || {
            // The group itself is killed before the reap.
            end_escaped_helpers(&proven_at, since_ticks, backend_pid);
            attested.forget_endpoint(&proven_at);
            remove_socket_file(&reaped_endpoint);
            if let Some(allocator) = reaped_allocator {
                allocator.release(&reaped_endpoint);
            }
        })
        .map_err(|source| shortage(&binary.canonical, "start the reaper thread", &source))
    }

    /// The environment the backend starts with.
    fn environment(
        &self,
        key: &BackendKey,
        sd: &ServiceDefinition,
        reservation: &Reservation,
        trace: &TraceContext,
        binary: &BackendBinary,
        listener: Option<RawFd>,
    ) -> Vec<(OsString, OsString)> {
        let mut vars =
            environ::backend_environment(sd, &self.options.env_scrub, std::env::vars_os());
        let endpoint = &reservation.endpoint;
        let mut set = |k: &str, v: &str| vars.push((k.into(), v.into()));
        if let Some(max) = self.options.max_log_bytes {
            if let Some(log) = reservation.log_path().to_str() {
                set(env::ENV_LOG_FILE, log);
                set(env::ENV_LOG_MAX_BYTES, &max.to_string());
            }
        }
        set(env::ENV_SERVICE_NAME, key.service_name());
        set(env::ENV_SERVICE_VERSION, key.service_version());
        set(env::ENV_BACKEND_PIPE, &endpoint.path);
        set(env::ENV_BACKEND_NAMESPACE, &endpoint.namespace_id);
        set(env::ENV_INSTANCE, &key.instance().id());
        if !trace.traceparent().is_empty() {
            set(env::ENV_TRACEPARENT, trace.traceparent());
        }
        if !trace.tracestate().is_empty() {
            set(env::ENV_TRACESTATE, trace.tracestate());
        }
        if let Some(secs) = self.options.idle_timeout_secs {
            set(env::ENV_IDLE_TIMEOUT_SECS, &secs.to_string());
        }
        if let Some(fd) = listener {
            set(env::ENV_LISTENER_FD, &fd.to_string());
        }
        if let (true, Some(sha256)) = (binary.stamp_vouches, binary.digests.sha256) {
            set(
                env::ENV_EXE_DIGEST,
                &env::format_exe_digest(&sha256, &binary.digests.blake3, &binary.stamp),
            );
        }
        vars
    }

    /// The listening socket of the endpoint, bound here before the spawn
    /// (mode 0600, in the endpoint's directory, which the reservation
    /// checked), at a descriptor number above the standard streams; None
    /// when the backend binds it itself: the definition says
    /// [`Listener::Bind`], or [`env::ENV_OWNED_BIND`] turns it off. Whatever
    /// this leaves at the path, the reservation removes if the launch
    /// fails.
    pub(super) fn bind_listener(
        &self,
        sd: &ServiceDefinition,
        reservation: &Reservation,
        binary: &BackendBinary,
    ) -> Result<Option<OwnedFd>, LaunchError> {
        let opted_out = std::env::var(env::ENV_OWNED_BIND)
            .ok()
            .is_some_and(|v| env::owned_bind_disabled(&v));
        if sd.listener == Listener::Bind || opted_out {
            return Ok(None);
        }
        let path = Path::new(&reservation.endpoint.path);
        let fail = |operation: &'static str, source: io::Error| {
            if reservation.allocator.is_none() {
                LaunchError::FixedEndpoint {
                    path: path.to_path_buf(),
                    reason: format!("{operation}: {source}"),
                }
            } else {
                LaunchError::Endpoint(AllocError::Fs(FsError::io(operation, path, source)))
                    .or_shortage(&binary.canonical)
            }
        };
        // Blocking, as a socket a process creates itself would be (the flag
        // belongs to the socket, which the backend shares).
        let (listener, _file) = bind_private_socket(path).map_err(|(op, e)| fail(op, e))?;
        let fd = spawn::above_stdio(listener.as_raw_fd())
            .map_err(|e| fail("duplicate the listener of", e))?;
        Ok(Some(fd))
    }

    fn open_log(
        &self,
        key: &BackendKey,
        endpoint: &Endpoint,
    ) -> Result<(File, PathBuf), LaunchError> {
        ensure_private_dir(&self.log_dir, self.log_base.as_deref())
            .map_err(LaunchError::LogFile)?;
        let path = self.log_dir.join(log_file_name(key, endpoint));
        let file = create_private_file(&path)
            .map_err(|e| LaunchError::LogFile(FsError::io("create", &path, e)))?;
        Ok((file, path))
    }
}

/// `{service}-{version}-{endpoint token}.log`: one log per backend. The
/// token is the random part of an allocated endpoint's name, or for a fixed
/// endpoint `fixed-` and 16 hex digits of the BLAKE3 of its path.
pub(super) fn log_file_name(key: &BackendKey, endpoint: &Endpoint) -> String {
    let allocated = endpoint
        .path
        .rsplit_once("-be-")
        .and_then(|(_, t)| t.strip_suffix(".sock"))
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_hexdigit()));
    let token = match allocated {
        Some(token) => token.to_owned(),
        None => format!(
            "fixed-{}",
            hex::encode(&blake3::hash(endpoint.path.as_bytes()).as_bytes()[..8])
        ),
    };
    format!(
        "{}-{}-{token}.log",
        key.service_name(),
        key.service_version()
    )
}

/// Removes a backend's log and the older part a bounded log was rotated to
/// (`<log>.1`).
pub(super) fn remove_log(log: &Path) {
    let _ = std::fs::remove_file(log);
    let mut rotated = log.as_os_str().to_owned();
    rotated.push(".1");
    let _ = std::fs::remove_file(rotated);
}
