//! The verified launch: from a key, a service definition and a trace context
//! to a running backend whose identity has been proven, or a typed error and
//! nothing left behind.
//!
//! Steps, in order (each failure after the spawn kills and reaps the child,
//! removes its socket file and log, and releases the endpoint):
//!
//! 1. policy before side effects: the key and definition are valid and agree,
//!    the version is admitted, the binary lies inside its allow-list root and
//!    is a regular executable nobody else can write ([`crate::sys::exe`]);
//! 2. an endpoint from the allocator of the key's instance namespace;
//! 3. the binary is hashed once and that same descriptor is executed;
//! 4. detached spawn ([`crate::sys::spawn`]) with the v1 environment, loader
//!    variables scrubbed, output to a private log file;
//! 5. readiness: connect attempts paced by the time elapsed (about 100 µs
//!    apart for a native backend, 1 ms for an interpreter; see
//!    `ready_pause`), while sleeping on the child's pidfd, so a child that
//!    dies is noticed at once;
//! 6. verification on the connected socket: peer credentials (pid and uid),
//!    `/proc/<pid>/exe` and the stamp of the hashed file, the nonce probe, and
//!    the identity compared field by field.
//!
//! What this module does not do: reuse backends (registry, pool) or decide
//! which version to run (router).

mod adopt;
mod attest;
pub mod endpoint;
mod environ;
mod error;
mod fixed;
mod handle;
mod policy;
mod ready;
mod start;
pub mod verify;

pub use environ::{describe as describe_environment, DEFAULT_ENV_SCRUB};
pub use error::LaunchError;
use fixed::{check_fixed_endpoint, fixed_fs_error};
pub(crate) use handle::end_escaped_helpers;
pub use handle::BackendHandle;
#[cfg(any(test, feature = "bench"))]
pub(crate) use handle::Process;
use handle::Verified;
use policy::check_policy;
use ready::wait_ready_and_verify;
use start::Reservation;
use verify::ExeProof;

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::contract::args::{self, expand_args, validate_values};
use crate::contract::clock;
use crate::contract::identity::{DaemonProcess, Endpoint};
use crate::contract::keys::{BackendKey, BrokerInstanceKey};
use crate::contract::service::ServiceDefinition;
use crate::contract::trace::TraceContext;
use crate::launch::endpoint::{BackendEndpointAllocator, DEFAULT_MAX_ATTEMPTS};
use crate::sys::exe::{open_backend, BackendBinary};
use crate::sys::host;
use crate::sys::keylock::{self, Acquired};
use crate::sys::reaper::{ChildWatch, WeakChildWatch};

/// Default seconds a backend may sit without clients before it exits.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u32 = 30;
/// Default time a backend has to become ready.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of the log file's end carried in launch errors.
pub const LOG_TAIL_BYTES: u64 = 4096;

/// Anything that can start a backend for a key.
pub trait BackendLauncher: Send + Sync {
    fn launch(
        &self,
        key: &BackendKey,
        service_definition: &ServiceDefinition,
        trace: &TraceContext,
    ) -> Result<BackendHandle, LaunchError>;
}

/// Settings of a [`CommandBackendLauncher`].
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// Passed to the backend as `RUNNING_PROCESS_BROKER_V1_IDLE_TIMEOUT_SECS`
    /// (None: the backend never idles out; the contract has no zero).
    pub idle_timeout_secs: Option<NonZeroU32>,
    /// How long a backend has to become ready and pass the probe.
    pub ready_timeout: Duration,
    /// Where backend logs go (default: `logs` beside the user's default
    /// socket directory, also when `socket_dir` is given).
    pub log_dir: Option<PathBuf>,
    /// Socket directory override (default: [`host::socket_dir`]).
    pub socket_dir: Option<PathBuf>,
    /// Names removed from the inherited environment; a trailing `*` matches
    /// a prefix.
    pub env_scrub: Vec<String>,
    /// How long a backend this process fully verified (launched, or adopted
    /// with the nonce probe) may be adopted again on the kernel's word alone
    /// (peer credentials, start time, executable stamp; see
    /// `launch::attest`) before the full probe is due again. Zero: every
    /// adoption probes.
    pub full_probe_interval: Duration,
    /// Most backends of the user that may run at once in the socket
    /// directory (their endpoint sockets are counted; one nothing listens
    /// on does not count). A launch beyond it is refused with
    /// [`LaunchError::TooManyBackends`] before anything is spawned. None: no
    /// limit. [`ENV_MAX_BACKENDS`] in the launching environment overrides
    /// it (`0` for no limit).
    pub max_backends: Option<u32>,
    /// The size a backend's log may reach before it is rotated to
    /// `<log>.1` (kept by backends built on the SDK, which get the bound in
    /// `RUNNING_PROCESS_LOG_FILE` and `RUNNING_PROCESS_LOG_MAX_BYTES`; see
    /// `sdk::logcap`). None: unbounded.
    pub max_log_bytes: Option<u64>,
}

/// Default [`LaunchOptions::max_log_bytes`]: 16 MiB.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 16 << 20;

/// Default [`LaunchOptions::max_backends`].
pub const DEFAULT_MAX_BACKENDS: u32 = 64;

/// Read by the launcher, not passed on: the most backends of the user that
/// may run at once (`0`: no limit); overrides
/// [`LaunchOptions::max_backends`].
pub const ENV_MAX_BACKENDS: &str = "RUNNING_PROCESS_MAX_BACKENDS";

/// Default [`LaunchOptions::full_probe_interval`].
pub const DEFAULT_FULL_PROBE_INTERVAL: Duration = Duration::from_secs(5);

impl Default for LaunchOptions {
    fn default() -> Self {
        LaunchOptions {
            idle_timeout_secs: NonZeroU32::new(DEFAULT_IDLE_TIMEOUT_SECS),
            ready_timeout: DEFAULT_READY_TIMEOUT,
            log_dir: None,
            socket_dir: None,
            env_scrub: DEFAULT_ENV_SCRUB.iter().map(|s| (*s).to_owned()).collect(),
            full_probe_interval: DEFAULT_FULL_PROBE_INTERVAL,
            max_backends: Some(DEFAULT_MAX_BACKENDS),
            max_log_bytes: Some(DEFAULT_MAX_LOG_BYTES),
        }
    }
}

/// Launches backends as child processes of this process and verifies them.
pub struct CommandBackendLauncher {
    user_sid_hash: String,
    boot_id: String,
    euid: u32,
    options: LaunchOptions,
    socket_dir: PathBuf,
    socket_base: Option<PathBuf>,
    log_dir: PathBuf,
    log_base: Option<PathBuf>,
    allocators: Mutex<HashMap<String, Arc<BackendEndpointAllocator>>>,
    /// The backends this launcher started, until they are reaped; weak, so
    /// that a reaped backend's pidfd closes with its last handle.
    children: Mutex<Vec<(BackendKey, DaemonProcess, WeakChildWatch)>>,
    /// Backends this process has fully verified (see `attest`).
    attested: Arc<attest::Attested>,
}

impl CommandBackendLauncher {
    /// A launcher for the calling user.
    pub fn for_current_user(options: LaunchOptions) -> Result<Self, LaunchError> {
        Self::new(&host::user_sid_hash()?, options)
    }

    /// A launcher with an explicit per-user hash.
    pub fn new(user_sid_hash: &str, options: LaunchOptions) -> Result<Self, LaunchError> {
        crate::contract::names::validate_user_sid_hash(user_sid_hash)?;
        let (socket_dir, socket_base) = match &options.socket_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let (dir, base) = host::socket_dir_with_base();
                (dir, Some(base))
            }
        };
        // Logs go to the user's own tree (beside the default socket
        // directory), also when the socket directory is given: beside a
        // socket directory under /tmp they would land in a /tmp/logs that
        // the first user to create it owns, locking every other user out.
        let (log_dir, log_base) = match &options.log_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let (default_socket_dir, base) = host::socket_dir_with_base();
                let parent = default_socket_dir
                    .parent()
                    .unwrap_or(Path::new("/"))
                    .to_path_buf();
                (parent.join("logs"), Some(base))
            }
        };
        Ok(CommandBackendLauncher {
            user_sid_hash: user_sid_hash.to_owned(),
            boot_id: host::boot_id()?,
            euid: host::effective_uid(),
            options,
            socket_dir,
            socket_base,
            log_dir,
            log_base,
            allocators: Mutex::new(HashMap::new()),
            children: Mutex::new(Vec::new()),
            attested: Arc::default(),
        })
    }

    /// The backends this launcher started that are still running (not yet
    /// reaped), whoever holds their handles: what a test harness checks
    /// for leaks, without scanning the process table.
    pub fn live_children(&self) -> Vec<(BackendKey, DaemonProcess)> {
        self.live()
            .into_iter()
            .map(|(key, daemon, _)| (key, daemon))
            .collect()
    }

    /// The children still running. One that has ended but is not yet
    /// reaped (its reaper is about to) is not listed; it stays recorded
    /// until its exit is.
    fn live(&self) -> Vec<(BackendKey, DaemonProcess, ChildWatch)> {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        let mut live = Vec::new();
        children.retain(|(key, daemon, weak)| match weak.upgrade() {
            Some(watch) if watch.try_exit().is_none() => {
                if watch.is_alive() {
                    live.push((key.clone(), daemon.clone(), watch));
                }
                true
            }
            _ => false,
        });
        live
    }

    /// Kills (SIGKILL through the pidfd, then reaped) every backend this
    /// launcher started that still runs, and returns them: the end of a
    /// test that must not leave a backend behind.
    pub fn kill_children(&self) -> Vec<(BackendKey, DaemonProcess)> {
        self.live()
            .into_iter()
            .map(|(key, daemon, watch)| {
                watch.kill();
                (key, daemon)
            })
            .collect()
    }

    fn record_child(&self, key: &BackendKey, daemon: &DaemonProcess, watch: &ChildWatch) {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children.retain(|(_, _, weak)| weak.upgrade().is_some_and(|w| w.try_exit().is_none()));
        children.push((key.clone(), daemon.clone(), watch.downgrade()));
    }

    pub fn options(&self) -> &LaunchOptions {
        &self.options
    }

    pub fn user_sid_hash(&self) -> &str {
        &self.user_sid_hash
    }

    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    fn allocator(
        &self,
        instance: &BrokerInstanceKey,
    ) -> Result<Arc<BackendEndpointAllocator>, LaunchError> {
        let namespace = instance.id();
        let mut map = self.allocators.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = map.get(&namespace) {
            return Ok(Arc::clone(a));
        }
        // The directory fixed when the launcher was made, not the
        // environment as it is now.
        let allocator = BackendEndpointAllocator::in_dir(
            &self.user_sid_hash,
            &namespace,
            &self.socket_dir,
            self.socket_base.as_deref(),
            DEFAULT_MAX_ATTEMPTS,
        )
        .map_err(LaunchError::Endpoint)?;
        let allocator = Arc::new(allocator);
        map.insert(namespace, Arc::clone(&allocator));
        Ok(allocator)
    }
}

impl BackendLauncher for CommandBackendLauncher {
    fn launch(
        &self,
        key: &BackendKey,
        sd: &ServiceDefinition,
        trace: &TraceContext,
    ) -> Result<BackendHandle, LaunchError> {
        self.launch_with(key, sd, trace, &LaunchRequest::default())
    }
}

/// The identity a handle carries: the expected one, with the backend's own
/// answer for what the contract leaves to it (its start time, idle timeout
/// and the generation of its hash; each digest it carries was checked
/// against ours).
fn merged_identity(expected: DaemonProcess, actual: &DaemonProcess) -> DaemonProcess {
    DaemonProcess {
        started_at_unix_ms: actual.started_at_unix_ms,
        idle_timeout_secs: actual.idle_timeout_secs,
        exe_sha256: actual.exe_sha256,
        exe_blake3: actual.exe_blake3,
        ..expected
    }
}

/// What a launch may ask for beyond the key and the definition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchRequest {
    /// Serve at this endpoint (namespace and socket path) instead of one
    /// the allocator makes up: the way tools that own their endpoint run
    /// their daemons. See [`CommandBackendLauncher::launch_with`].
    pub endpoint: Option<Endpoint>,
    /// Values for the definition's own argument placeholders (the builtin
    /// ones are the launcher's; see [`crate::contract::args`]).
    pub arg_values: BTreeMap<String, String>,
}

impl CommandBackendLauncher {
    /// [`BackendLauncher::launch`] with a [`LaunchRequest`]: the
    /// definition's argument templates are expanded with the request's
    /// values (a placeholder without one is an error before anything is
    /// done), and the backend may serve at a fixed endpoint.
    ///
    /// A fixed endpoint's directory must exist, be owned by this user or
    /// root and be writable by nobody else, on a path of such directories
    /// (sticky ones aside); a file at the path must be a socket of this
    /// user's. Launches of the same endpoint from any process take turns on
    /// a lock file beside it (`<path>.lock`), and each first looks at what
    /// serves the endpoint: a backend of this definition's binary that
    /// passes the whole verification is handed out (adopted: not a second
    /// launch); a socket nobody listens on is removed; anything else
    /// serving it is refused ([`LaunchError::FixedEndpoint`]), never
    /// signalled or unlinked.
    pub fn launch_with(
        &self,
        key: &BackendKey,
        sd: &ServiceDefinition,
        trace: &TraceContext,
        request: &LaunchRequest,
    ) -> Result<BackendHandle, LaunchError> {
        let started = Instant::now();
        validate_values(&request.arg_values)?;
        if let Some(endpoint) = &request.endpoint {
            check_fixed_endpoint(endpoint)?;
        }
        // Every placeholder must have a value before anything is done; the
        // log file's path is known only once it is reserved, so a stand-in
        // checks that it is filled.
        let mut values = self.builtin_values(key, request, Path::new("/"));
        values.extend(request.arg_values.clone());
        expand_args(&sd.args, &values)?;
        let binary = self.admit(key, sd)?;
        let Some(endpoint) = &request.endpoint else {
            self.check_backend_limit()?;
            let reservation = self.reserve(key, &binary)?;
            return self.run(key, sd, trace, binary, reservation, request, started);
        };
        let lock_path = PathBuf::from(format!("{}.lock", endpoint.path));
        loop {
            let acquired = keylock::acquire(&lock_path, true, self.lock_wait())
                .map_err(|e| LaunchError::from_lock(e, fixed_fs_error(endpoint)))?;
            match acquired {
                Acquired::Locked(lock) => {
                    let launched = match self.serving(key, &binary, endpoint, trace) {
                        Ok(Some(handle)) => return Ok(handle),
                        Ok(None) => self
                            .reserve_fixed(key, &binary, endpoint)
                            .and_then(|r| self.run(key, sd, trace, binary, r, request, started)),
                        Err(e) => Err(e),
                    };
                    if launched.is_err() {
                        // Nothing serves the endpoint for us: the lock file
                        // goes too, removed while held (a waiter that locks
                        // the removed file sees that and opens the path
                        // again).
                        let _ = lock.remove_file(&lock_path);
                    }
                    drop(lock);
                    return launched;
                }
                // Another process launched meanwhile: what it left is
                // checked; if it failed, the lock is tried again.
                Acquired::Waited => {
                    if let Some(handle) = self.serving(key, &binary, endpoint, trace)? {
                        return Ok(handle);
                    }
                }
            }
        }
    }

    /// The values of the builtin argument placeholders.
    fn builtin_values(
        &self,
        key: &BackendKey,
        request: &LaunchRequest,
        log_path: &Path,
    ) -> BTreeMap<String, String> {
        let endpoint = request.endpoint.as_ref();
        // An allocated endpoint is known only once reserved; its namespace
        // is the instance's.
        let namespace = endpoint.map_or_else(|| key.instance().id(), |e| e.namespace_id.clone());
        let path = endpoint.map_or_else(String::new, |e| e.path.clone());
        [
            (args::ENDPOINT, path),
            (args::LOG_FILE, log_path.to_string_lossy().into_owned()),
            (args::NAMESPACE, namespace),
            (args::SERVICE, key.service_name().to_owned()),
            (args::VERSION, key.service_version().to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Steps 3 to 6, once the endpoint and log are reserved.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        key: &BackendKey,
        sd: &ServiceDefinition,
        trace: &TraceContext,
        binary: BackendBinary,
        reservation: Reservation,
        request: &LaunchRequest,
        started: Instant,
    ) -> Result<BackendHandle, LaunchError> {
        let mut values = self.builtin_values(key, request, reservation.log_path());
        values.insert(args::ENDPOINT.to_owned(), reservation.endpoint.path.clone());
        values.extend(request.arg_values.clone());
        let argv = expand_args(&sd.args, &values)?;
        // Bound before the spawn when the backend takes its listener from
        // the launcher; this process's copy is closed as soon as the child
        // has its own, so the child's exit closes the socket.
        let listener = self.bind_listener(sd, &reservation, &binary)?;
        let inherited = listener.is_some();
        let watch = self.start(
            key,
            sd,
            trace,
            &binary,
            &reservation,
            &argv,
            listener.as_ref(),
        );
        drop(listener);
        let watch = watch?;
        let expected = DaemonProcess {
            pid: watch.pid(),
            exe_path: binary.canonical.to_string_lossy().into_owned(),
            // A launch hashes with both algorithms: the backend may answer in
            // either generation.
            exe_sha256: binary.digests.sha256.unwrap_or_default(),
            exe_blake3: Some(binary.digests.blake3),
            boot_id: self.boot_id.clone(),
            ipc_endpoint: reservation.endpoint.clone(),
            started_at_unix_ms: clock::unix_time_ms(),
            idle_timeout_secs: self.options.idle_timeout_secs.map(NonZeroU32::get),
        };
        let what = format!(
            "{} {} pid {} at {} (trace {})",
            key.service_name(),
            key.service_version(),
            expected.pid,
            expected.ipc_endpoint.path,
            trace.trace_id().unwrap_or("-")
        );
        log::debug!("spawned {what}");
        let proof = ExeProof::of(&binary);
        let ready = wait_ready_and_verify(
            &watch,
            &expected,
            &proof,
            self.euid,
            trace,
            self.options.ready_timeout,
            reservation.log_path(),
            inherited,
        );
        let actual = match ready {
            Ok(actual) => actual,
            Err(err) => {
                let err = err.or_shortage(&binary.canonical);
                // Killed and reaped before the reservation goes, so nothing
                // of the backend outlives the error.
                watch.kill();
                drop(reservation);
                log::warn!("launch of {what} failed: {err}");
                return Err(err);
            }
        };
        log::info!(
            "launched {what} in {:.1} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
        let (allocator, log_path) = reservation.keep();
        let daemon = merged_identity(expected, &actual);
        self.record_child(key, &daemon, &watch);
        self.attested
            .remember(key, &daemon, &watch, self.options.full_probe_interval);
        let process = Verified {
            watch,
            proof,
            euid: self.euid,
        };
        Ok(BackendHandle::verified(
            key, daemon, log_path, process, allocator,
        ))
    }
}

/// Applies the allow-list rules to a definition's binary: opened, checked
/// and hashed once, as a launch does.
fn open_binary(sd: &ServiceDefinition) -> Result<BackendBinary, LaunchError> {
    // `#!/usr/bin/env NAME` finds NAME where the backend would: on the
    // PATH its environment policy gives it.
    let path_var = environ::backend_path(sd);
    open_backend(
        &sd.binary_path,
        &sd.per_version_binary_dir,
        path_var.as_deref(),
    )
    .map_err(|e| LaunchError::from(e).or_shortage(&sd.binary_path))
}

impl ServiceDefinition {
    /// The binary checks of a launch, made now, spawning nothing: the
    /// allow-list root exists, the binary is a regular executable file inside
    /// it, neither is writable by anyone but this user or root, and a `#!`
    /// interpreter resolves to such a file. A definition written with a bad
    /// binary is caught here instead of at its first launch.
    pub fn check_binary(&self) -> Result<(), LaunchError> {
        open_binary(self).map(drop)
    }
}

impl CommandBackendLauncher {
    /// The limit on running backends in force: [`ENV_MAX_BACKENDS`] if set
    /// to a number, else the option.
    pub fn max_backends(&self) -> Option<u32> {
        match std::env::var(ENV_MAX_BACKENDS)
            .ok()
            .map(|v| v.trim().parse::<u32>())
        {
            Some(Ok(0)) => None,
            Some(Ok(limit)) => Some(limit),
            _ => self.options.max_backends,
        }
    }

    /// Refuses a launch while the user's running backends reach the limit.
    /// Counting the socket files is a directory listing; only at the limit
    /// is each one connected to, so an endpoint nothing listens on any more
    /// does not count. Launches running at the same moment in several
    /// processes each see the others' sockets only once bound, so they can
    /// pass the limit by as many as run at once.
    fn check_backend_limit(&self) -> Result<(), LaunchError> {
        let Some(limit) = self.max_backends() else {
            return Ok(());
        };
        let Ok(listing) = std::fs::read_dir(&self.socket_dir) else {
            return Ok(()); // no directory yet: no backend
        };
        let sockets: Vec<PathBuf> = listing
            .flatten()
            .filter(|item| {
                item.file_name()
                    .to_str()
                    .is_some_and(crate::contract::names::is_backend_socket_name)
                    && item
                        .file_type()
                        .is_ok_and(|t| std::os::unix::fs::FileTypeExt::is_socket(&t))
            })
            .map(|item| item.path())
            .collect();
        if sockets.len() < limit as usize {
            return Ok(());
        }
        let running = sockets
            .iter()
            .filter(|path| !crate::sys::net::socket_is_stale(path))
            .count();
        if running < limit as usize {
            return Ok(());
        }
        Err(LaunchError::TooManyBackends {
            limit,
            running,
            dir: self.socket_dir.clone(),
        })
    }

    /// The longest wait for a key's lock: a holder launches (up to the
    /// ready timeout) and verifies (up to as long again), twice over, plus
    /// five seconds. A stopped holder loses the key sooner (see
    /// [`crate::sys::keylock`]).
    pub fn lock_wait(&self) -> Duration {
        self.options.ready_timeout * 4 + Duration::from_secs(5)
    }

    /// Step 1, before any side effect: the request meets the rules (see
    /// [`check_policy`]) and the binary passes the allow-list rules, opened
    /// and hashed once.
    fn admit(
        &self,
        key: &BackendKey,
        sd: &ServiceDefinition,
    ) -> Result<BackendBinary, LaunchError> {
        check_policy(key, sd)?;
        open_binary(sd)
    }
}
