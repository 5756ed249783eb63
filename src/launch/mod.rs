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

pub mod endpoint;
pub mod verify;

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::num::NonZeroU32;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::contract::clock;
use crate::contract::env;
use crate::contract::error::{AllocError, FsError, HostError, ValidationError};
use crate::contract::identity::{DaemonProcess, Endpoint};
use crate::contract::keys::{BackendKey, BrokerInstanceKey};
use crate::contract::service::ServiceDefinition;
use crate::contract::stamp::FileStamp;
use crate::contract::trace::TraceContext;
use crate::launch::endpoint::{BackendEndpointAllocator, DEFAULT_MAX_ATTEMPTS};
use crate::launch::verify::{compare_identity, probe_stream, ProbeError};
use crate::sys::digest::remember_digest;
use crate::sys::exe::{open_backend, open_backend_recorded, BackendBinary, BinaryError};
use crate::sys::fs::ensure_private_dir;
use crate::sys::host;
use crate::sys::net::connect_until;
use crate::sys::proc;
use crate::sys::reaper::{ChildWatch, Exit};
use crate::sys::spawn::{self, SpawnError, SpawnRequest};

/// Default seconds a backend may sit without clients before it exits.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u32 = 30;
/// Default time a backend has to become ready.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of the log file's end carried in launch errors.
pub const LOG_TAIL_BYTES: u64 = 4096;

/// Environment variables removed from a backend's environment by default:
/// every `LD_*` loader variable and the other variables glibc ignores for
/// set-uid programs because they change what code a process loads.
pub const DEFAULT_ENV_SCRUB: &[&str] = &[
    "LD_*",
    "GCONV_PATH",
    "GETCONF_DIR",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "MALLOC_TRACE",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
];

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
}

fn mismatch(field: &'static str, expected: impl ToString, actual: impl ToString) -> LaunchError {
    LaunchError::Mismatch {
        field,
        expected: expected.to_string(),
        actual: actual.to_string(),
    }
}

/// Whether `err` says the launching process or the system ran out of
/// descriptors, memory or processes: nothing about the backend is wrong, and
/// the same launch may succeed once the shortage is over.
fn exhausted(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN | libc::ENOBUFS)
    )
}

/// A shortage during launch step `step`, as a spawn failure that names the
/// step and keeps the errno.
fn shortage(binary: &Path, step: &str, source: &io::Error) -> LaunchError {
    LaunchError::Spawn {
        path: binary.to_path_buf(),
        errno: source.raw_os_error(),
        source: io::Error::new(source.kind(), format!("{step}: {source}")),
    }
}

impl LaunchError {
    /// The same failure, reported as a shortage (see [`exhausted`]) when that
    /// is what it is, whichever launch step met it.
    fn or_shortage(self, binary: &Path) -> LaunchError {
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
    /// Where backend logs go (default: `logs` beside the socket directory).
    pub log_dir: Option<PathBuf>,
    /// Socket directory override (default: [`host::socket_dir`]).
    pub socket_dir: Option<PathBuf>,
    /// Names removed from the inherited environment; a trailing `*` matches
    /// a prefix.
    pub env_scrub: Vec<String>,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        LaunchOptions {
            idle_timeout_secs: NonZeroU32::new(DEFAULT_IDLE_TIMEOUT_SECS),
            ready_timeout: DEFAULT_READY_TIMEOUT,
            log_dir: None,
            socket_dir: None,
            env_scrub: DEFAULT_ENV_SCRUB.iter().map(|s| (*s).to_owned()).collect(),
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
        let (log_dir, log_base) = match &options.log_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let parent = socket_dir.parent().unwrap_or(Path::new("/")).to_path_buf();
                (parent.join("logs"), socket_base.clone())
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
        })
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

    /// The environment the backend starts with.
    fn environment(
        &self,
        key: &BackendKey,
        endpoint: &Endpoint,
        trace: &TraceContext,
        binary: &BackendBinary,
    ) -> Vec<(OsString, OsString)> {
        let scrubbed = |name: &OsStr| {
            let name = name.as_bytes();
            name.starts_with(b"RUNNING_PROCESS_BROKER_V1_")
                || name == env::ENV_EXE_DIGEST.as_bytes()
                || self
                    .options
                    .env_scrub
                    .iter()
                    .any(|rule| match rule.strip_suffix('*') {
                        Some(prefix) => name.starts_with(prefix.as_bytes()),
                        None => name == rule.as_bytes(),
                    })
        };
        let mut vars: Vec<(OsString, OsString)> =
            std::env::vars_os().filter(|(k, _)| !scrubbed(k)).collect();
        let mut set = |k: &str, v: &str| vars.push((k.into(), v.into()));
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
        if binary.stamp_vouches {
            set(
                env::ENV_EXE_DIGEST,
                &env::format_exe_digest(&binary.sha256, &binary.stamp),
            );
        }
        vars
    }

    fn open_log(
        &self,
        key: &BackendKey,
        endpoint: &Endpoint,
    ) -> Result<(File, PathBuf), LaunchError> {
        ensure_private_dir(&self.log_dir, self.log_base.as_deref())
            .map_err(LaunchError::LogFile)?;
        let path = self.log_dir.join(log_file_name(key, endpoint));
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| LaunchError::LogFile(FsError::io("create", &path, e)))?;
        Ok((file, path))
    }
}

impl CommandBackendLauncher {
    /// A handle on a backend that some process launched earlier (its identity
    /// read from a pool manifest), after verifying it as a launch would: the
    /// key and definition agree and the version is admitted (a version the
    /// definition refuses now is not handed out because it was admitted
    /// once), the binary passes the allow-list rules and still hashes to the recorded
    /// digest (no rehash while its stamp is unchanged), the process runs that
    /// very file, its boot is ours, and the socket's peer credentials and the
    /// nonce probe prove the identity. The backend is not our child: it is
    /// watched through a pidfd and never reaped here.
    pub fn adopt(
        &self,
        key: &BackendKey,
        sd: &ServiceDefinition,
        daemon: &DaemonProcess,
        trace: &TraceContext,
        timeout: Duration,
    ) -> Result<BackendHandle, LaunchError> {
        self.adopt_recorded(key, sd, daemon, None, trace, timeout)
    }

    /// [`CommandBackendLauncher::adopt`], with the stamp the binary had when
    /// the launching process hashed it (recorded in the pool manifest next to
    /// the digest). While the binary's stamp is still `recorded_stamp`, the
    /// recorded digest stands in for hashing it again, for this verification
    /// only; the process-wide digest cache learns it only once the backend
    /// has fully verified (the digest it reports in the probe, its own hash
    /// of its executable or the one its launcher computed for this very
    /// stamp, agrees). A wrong recorded digest thus fails this adoption and
    /// nothing else: later launches hash the binary themselves.
    pub fn adopt_recorded(
        &self,
        key: &BackendKey,
        sd: &ServiceDefinition,
        daemon: &DaemonProcess,
        recorded_stamp: Option<FileStamp>,
        trace: &TraceContext,
        timeout: Duration,
    ) -> Result<BackendHandle, LaunchError> {
        check_policy(key, sd)?;
        if daemon.boot_id != self.boot_id {
            return Err(mismatch("boot_id", &self.boot_id, &daemon.boot_id));
        }
        if daemon.ipc_endpoint.namespace_id != key.instance().id() {
            return Err(mismatch(
                "ipc_endpoint.namespace_id",
                key.instance().id(),
                &daemon.ipc_endpoint.namespace_id,
            ));
        }
        let path_var = std::env::var_os("PATH");
        let recorded = recorded_stamp.map(|stamp| (stamp, daemon.exe_sha256));
        let binary = open_backend_recorded(
            &sd.binary_path,
            &sd.per_version_binary_dir,
            path_var.as_deref(),
            recorded,
        )?;
        if binary.sha256 != daemon.exe_sha256 {
            return Err(mismatch(
                "exe_sha256",
                hex::encode(binary.sha256),
                daemon.exe_sha256_hex(),
            ));
        }
        let exe_path = binary.canonical.to_string_lossy();
        if daemon.exe_path != exe_path {
            return Err(mismatch("exe_path", exe_path, &daemon.exe_path));
        }
        let watch = ChildWatch::adopt(daemon.pid)
            .map_err(|e| mismatch("pid alive", daemon.pid, format!("no such process ({e})")))?;
        let proof = ExeProof::of(&binary);
        connect_and_verify(&watch, daemon, &proof, self.euid, trace, timeout)?;
        if recorded_stamp == Some(binary.stamp) {
            // The backend runs this very inode (the proof checked it) and
            // reported the recorded digest, computed by hashing that file
            // (by itself or by its launcher, for this stamp): it is proven.
            remember_digest(binary.stamp, binary.sha256);
        }
        // The endpoint is not reserved in the allocator: its socket file is
        // on disk while the backend lives, which `allocate` already skips,
        // and a reservation could only be released by the process that
        // launched the backend (the one that reaps it), so a long-lived
        // process adopting backends that end elsewhere would accumulate them.
        let allocator = self.allocator(key.instance())?;
        let log_path = self.log_dir.join(log_file_name(key, &daemon.ipc_endpoint));
        Ok(BackendHandle {
            inner: Arc::new(HandleParts {
                key: key.clone(),
                daemon: daemon.clone(),
                log_path,
                watch,
                allocator,
                proof,
                euid: self.euid,
                launched: false,
            }),
        })
    }

    /// Applies the rules a request must meet before anything is spawned or
    /// adopted (the definition is valid and agrees with the key, the version
    /// is admitted), without touching the binary or the disk.
    pub fn check_request(
        &self,
        key: &BackendKey,
        sd: &ServiceDefinition,
    ) -> Result<(), LaunchError> {
        check_policy(key, sd)
    }

    /// How many endpoint paths this launcher's allocators hold reserved
    /// (one per launched backend not yet seen to end).
    pub fn reserved_endpoints(&self) -> usize {
        self.allocators
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|a| a.reserved_count())
            .sum()
    }
}

impl BackendLauncher for CommandBackendLauncher {
    fn launch(
        &self,
        key: &BackendKey,
        sd: &ServiceDefinition,
        trace: &TraceContext,
    ) -> Result<BackendHandle, LaunchError> {
        let started = Instant::now();
        // 1. Policy, before any side effect.
        check_policy(key, sd)?;
        let path_var = std::env::var_os("PATH");
        let binary = open_backend(
            &sd.binary_path,
            &sd.per_version_binary_dir,
            path_var.as_deref(),
        )
        .map_err(|e| LaunchError::from(e).or_shortage(Path::new(&sd.binary_path)))?;

        // 2. Endpoint.
        let allocator = self
            .allocator(key.instance())
            .map_err(|e| e.or_shortage(&binary.canonical))?;
        let endpoint = allocator
            .allocate()
            .map_err(|e| LaunchError::Endpoint(e).or_shortage(&binary.canonical))?;
        let release = |log: Option<&Path>| {
            remove_socket_file(Path::new(&endpoint.path));
            allocator.release(Path::new(&endpoint.path));
            if let Some(log) = log {
                let _ = std::fs::remove_file(log);
            }
        };

        let (log, log_path) = match self.open_log(key, &endpoint) {
            Ok(l) => l,
            Err(e) => {
                release(None);
                return Err(e.or_shortage(&binary.canonical));
            }
        };

        // 3-4. Spawn exactly the hashed descriptor.
        let env: Vec<CString> = self
            .environment(key, &endpoint, trace, &binary)
            .iter()
            .filter_map(|(k, v)| spawn::env_entry(k, v))
            .collect();
        let argv0 = spawn::arg0(&binary.canonical).unwrap_or_default();
        let request = SpawnRequest {
            executable: &binary.file,
            is_script: binary.interpreter.is_some(),
            argv: vec![argv0],
            env,
            log: &log,
        };
        let spawned = match spawn::spawn(&request) {
            Ok(s) => s,
            Err(e) => {
                release(Some(&log_path));
                let (errno, source) = match e {
                    SpawnError::Exec { errno, source } => (Some(errno), source),
                    SpawnError::Setup { operation, source } => (
                        source.raw_os_error(),
                        io::Error::new(source.kind(), format!("{operation}: {source}")),
                    ),
                };
                return Err(LaunchError::Spawn {
                    path: binary.canonical.clone(),
                    errno,
                    source,
                });
            }
        };
        let pid = spawned.pid;
        let reaped_endpoint = PathBuf::from(&endpoint.path);
        let reaped_allocator = Arc::clone(&allocator);
        let watch = match ChildWatch::start(spawned, move || {
            // Once reaped, the backend's socket file goes with it, also when
            // it could not remove the file itself (killed), whether or not
            // anyone holds its handle.
            remove_socket_file(&reaped_endpoint);
            reaped_allocator.release(&reaped_endpoint);
        }) {
            Ok(w) => w,
            Err(source) => {
                // Without a watcher nobody would reap it: kill and reap here.
                // SAFETY: `pid` is our unreaped child.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                    libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
                }
                release(Some(&log_path));
                return Err(shortage(
                    &binary.canonical,
                    "start the reaper thread",
                    &source,
                ));
            }
        };
        log::debug!(
            "spawned {} {} pid {pid} at {} (trace {})",
            key.service_name(),
            key.service_version(),
            endpoint.path,
            trace.trace_id().unwrap_or("-")
        );

        let expected = DaemonProcess {
            pid,
            exe_path: binary.canonical.to_string_lossy().into_owned(),
            exe_sha256: binary.sha256,
            boot_id: self.boot_id.clone(),
            ipc_endpoint: endpoint.clone(),
            started_at_unix_ms: clock::unix_time_ms(),
            idle_timeout_secs: self.options.idle_timeout_secs.map(NonZeroU32::get),
        };
        let proof = ExeProof::of(&binary);

        // 5-6. Readiness and verification.
        match wait_ready_and_verify(
            &watch,
            &expected,
            &proof,
            self.euid,
            trace,
            self.options.ready_timeout,
            &log_path,
        ) {
            Ok(actual) => {
                let daemon = DaemonProcess {
                    started_at_unix_ms: actual.started_at_unix_ms,
                    idle_timeout_secs: actual.idle_timeout_secs,
                    ..expected
                };
                log::info!(
                    "launched {} {} pid {pid} at {} in {:.1} ms (trace {})",
                    key.service_name(),
                    key.service_version(),
                    endpoint.path,
                    started.elapsed().as_secs_f64() * 1000.0,
                    trace.trace_id().unwrap_or("-")
                );
                Ok(BackendHandle {
                    inner: Arc::new(HandleParts {
                        key: key.clone(),
                        daemon,
                        log_path,
                        watch,
                        allocator,
                        proof,
                        euid: self.euid,
                        launched: true,
                    }),
                })
            }
            Err(err) => {
                let err = err.or_shortage(&binary.canonical);
                watch.kill();
                release(Some(&log_path));
                log::warn!(
                    "launch of {} {} pid {pid} at {} failed (trace {}): {err}",
                    key.service_name(),
                    key.service_version(),
                    endpoint.path,
                    trace.trace_id().unwrap_or("-")
                );
                Err(err)
            }
        }
    }
}

/// The rules a key and its definition must meet before anything is spawned
/// or adopted: a valid definition for the key's service and instance, and a
/// version the definition admits.
fn check_policy(key: &BackendKey, sd: &ServiceDefinition) -> Result<(), LaunchError> {
    sd.validate()?;
    if key.service_name() != sd.service_name {
        return Err(ValidationError::ServiceDefinition {
            field: "service_name",
            value: sd.service_name.clone(),
            reason: format!("the backend key is for service {:?}", key.service_name()),
        }
        .into());
    }
    let wanted_instance = BrokerInstanceKey::from_service_definition(sd)?;
    if key.instance() != &wanted_instance {
        return Err(ValidationError::ServiceDefinition {
            field: "isolation",
            value: sd.isolation.name().to_owned(),
            reason: format!(
                "the definition asks for instance {wanted_instance} but the key names {}",
                key.instance()
            ),
        }
        .into());
    }
    sd.check_version(key.service_version())?;
    Ok(())
}

/// `{service}-{version}-{endpoint token}.log`: one log per backend.
fn log_file_name(key: &BackendKey, endpoint: &Endpoint) -> String {
    let token = endpoint
        .path
        .rsplit("-be-")
        .next()
        .and_then(|t| t.strip_suffix(".sock"))
        .unwrap_or("backend");
    format!(
        "{}-{}-{token}.log",
        key.service_name(),
        key.service_version()
    )
}

/// What `/proc/<pid>` must show for the process to be the one launched.
#[derive(Debug, Clone)]
struct ExeProof {
    /// The canonical executable (`/proc/<pid>/exe`).
    exe: PathBuf,
    /// For a script: the script path and where its `/dev/fd/N` stands on the
    /// interpreter's command line; the script's stamp must match.
    script: Option<(PathBuf, usize)>,
    /// Stamp of the hashed file.
    stamp: FileStamp,
    /// Whether the stamp vouches for the digest (it may be recorded).
    stamp_vouches: bool,
}

impl ExeProof {
    fn of(binary: &BackendBinary) -> Self {
        ExeProof {
            exe: binary.expected_exe().to_path_buf(),
            script: binary
                .interpreter
                .as_ref()
                .map(|i| (binary.canonical.clone(), i.script_arg_index)),
            stamp: binary.stamp,
            stamp_vouches: binary.stamp_vouches,
        }
    }

    /// Checks `/proc/<pid>` against the launched executable.
    fn check(&self, pid: u32) -> Result<(), LaunchError> {
        // A binary renamed over or removed after the exec still runs the
        // hashed inode, which the stamp check below proves.
        let actual = proc::exe_path(pid)
            .map_err(|e| mismatch("exe_path", self.exe.display(), format!("unreadable: {e}")))?;
        if actual != self.exe {
            return Err(mismatch("exe_path", self.exe.display(), actual.display()));
        }
        let hashed_file = match &self.script {
            None => proc::exe_link(pid),
            Some((script, index)) => script_fd_of(pid, script, *index)?,
        };
        let meta = std::fs::metadata(&hashed_file)
            .map_err(|e| mismatch("exe_sha256", "the hashed file", format!("unreadable: {e}")))?;
        let stamp = FileStamp::of(&meta);
        if stamp != self.stamp {
            return Err(mismatch(
                "exe_sha256",
                format!("content of inode {} as hashed", self.stamp.ino),
                format!("inode {} changed since it was hashed", stamp.ino),
            ));
        }
        Ok(())
    }
}

/// The `/proc/<pid>/fd/N` of the script the kernel was asked to run: the
/// command line is the interpreter's, with `/dev/fd/N` exactly where the
/// kernel puts it (argument `index`), and that descriptor is the script. A
/// process that merely holds the script open and names it elsewhere on its
/// command line (`python -c CODE /dev/fd/N`) runs other code.
fn script_fd_of(pid: u32, script: &Path, index: usize) -> Result<PathBuf, LaunchError> {
    let cmdline = proc::command_line(pid).map_err(|e| {
        mismatch(
            "script",
            script.display(),
            format!("cmdline unreadable: {e}"),
        )
    })?;
    let arg = cmdline.get(index).map(Vec::as_slice).unwrap_or_default();
    let Some(n) = arg.strip_prefix(b"/dev/fd/") else {
        return Err(mismatch(
            "script",
            script.display(),
            format!(
                "the process was not started by its interpreter on the script's descriptor \
                 (command line argument {index} is {:?})",
                String::from_utf8_lossy(arg)
            ),
        ));
    };
    let fd_link = proc::fd_link(pid, &String::from_utf8_lossy(n));
    let target = std::fs::read_link(&fd_link).map_err(|e| {
        mismatch(
            "script",
            script.display(),
            format!("descriptor unreadable: {e}"),
        )
    })?;
    if target != script {
        return Err(mismatch("script", script.display(), target.display()));
    }
    Ok(fd_link)
}

fn remove_socket_file(path: &Path) {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The last [`LOG_TAIL_BYTES`] of a log file, as text.
pub fn log_tail(path: &Path) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
    let mut buf = Vec::new();
    let _ = file.take(LOG_TAIL_BYTES).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Checks the connected socket and `/proc` and probes; returns the identity
/// the backend reported.
fn verify_connected(
    mut stream: UnixStream,
    watch: &ChildWatch,
    expected: &DaemonProcess,
    proof: &ExeProof,
    euid: u32,
    trace: &TraceContext,
    timeout: Duration,
) -> Result<DaemonProcess, LaunchError> {
    let cred = rustix::net::sockopt::socket_peercred(stream.as_fd()).map_err(|e| {
        LaunchError::Probe(ProbeError::Io {
            operation: "read peer credentials",
            source: e.into(),
        })
    })?;
    let peer_pid = cred.pid.as_raw_nonzero().get() as u32;
    if peer_pid != expected.pid {
        return Err(mismatch("peer pid", expected.pid, peer_pid));
    }
    if cred.uid.as_raw() != euid {
        return Err(mismatch("peer uid", euid, cred.uid.as_raw()));
    }
    proof.check(expected.pid)?;
    let actual = probe_stream(&mut stream, trace, timeout)?;
    compare_identity(expected, &actual)?;
    if !watch.is_alive() {
        return Err(mismatch(
            "pid alive",
            expected.pid,
            "exited during verification",
        ));
    }
    Ok(actual)
}

/// Connects to `expected`'s endpoint within `timeout` and verifies what
/// answers (see [`verify_connected`]).
fn connect_and_verify(
    watch: &ChildWatch,
    expected: &DaemonProcess,
    proof: &ExeProof,
    euid: u32,
    trace: &TraceContext,
    timeout: Duration,
) -> Result<DaemonProcess, LaunchError> {
    let stream = connect_until(
        Path::new(&expected.ipc_endpoint.path),
        clock::deadline_after(timeout),
    )
    .map_err(|source| {
        LaunchError::Probe(ProbeError::Io {
            operation: "connect",
            source,
        })
    })?;
    verify_connected(stream, watch, expected, proof, euid, trace, timeout)
}

/// Shortest and longest pause between connect attempts while a backend
/// starts (see [`ready_pause`]).
const READY_MIN_PAUSE: Duration = Duration::from_micros(20);
const READY_MAX_PAUSE: Duration = Duration::from_millis(2);
/// What one connect attempt costs the starting backend, in seconds: on a
/// small machine each wake-up of ours takes CPU time and cache from it
/// (measured: 175 attempts 200 µs apart slowed a 35 ms Python backend start
/// by 2 ms on 2 cores).
const READY_WAKE_COST: f64 = 11e-6;

/// The pause before the next connect attempt, `elapsed` after the spawn.
/// Each attempt costs the backend [`READY_WAKE_COST`]; each pause may
/// oversleep the moment the backend binds by up to its length. For a start
/// time `t` the sum of both is smallest with pauses of
/// `sqrt(2 * READY_WAKE_COST * t)`, and the time elapsed so far is the best
/// guess of `t`: about 100 µs half a millisecond in (a native backend), 0.9
/// ms 35 ms in (a Python one). (Waiting on an inotify watch of the socket
/// directory instead is no faster and costs a descriptor whose close waits
/// for an RCU grace period, several milliseconds.)
fn ready_pause(elapsed: Duration) -> Duration {
    let pace = (2.0 * READY_WAKE_COST * elapsed.as_secs_f64()).sqrt();
    Duration::from_secs_f64(pace).clamp(READY_MIN_PAUSE, READY_MAX_PAUSE)
}

/// Waits until the backend accepts, then verifies it; fails at once if the
/// child exits first.
fn wait_ready_and_verify(
    watch: &ChildWatch,
    expected: &DaemonProcess,
    proof: &ExeProof,
    euid: u32,
    trace: &TraceContext,
    ready_timeout: Duration,
    log_path: &Path,
) -> Result<DaemonProcess, LaunchError> {
    let started = Instant::now();
    let deadline = clock::deadline_after(ready_timeout);
    let path = Path::new(&expected.ipc_endpoint.path);
    loop {
        match connect_until(path, deadline) {
            Ok(stream) => {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                return verify_connected(stream, watch, expected, proof, euid, trace, left)
                    .map_err(|e| {
                        // The pidfd tells at once that the child ended; its
                        // status follows from the reaper.
                        let ended = (!watch.is_alive()).then(|| watch.wait());
                        match (e, ended) {
                            // A probe cut short by the child's death is an early exit.
                            (LaunchError::Probe(_), Some(exit)) => LaunchError::Exited {
                                pid: expected.pid,
                                exit,
                                log_tail: log_tail(log_path),
                            },
                            (LaunchError::Probe(ProbeError::Timeout { .. }), None) => {
                                LaunchError::NotReady {
                                    pid: expected.pid,
                                    timeout: ready_timeout,
                                    log_tail: log_tail(log_path),
                                }
                            }
                            (e, _) => e,
                        }
                    });
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound
                        | io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::TimedOut
                ) =>
            {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(LaunchError::NotReady {
                        pid: expected.pid,
                        timeout: ready_timeout,
                        log_tail: log_tail(log_path),
                    });
                }
                // Sleep on the pidfd: an exit wakes us at once.
                let wait = ready_pause(started.elapsed()).min(left);
                let timespec = rustix::event::Timespec {
                    tv_sec: wait.as_secs() as _,
                    tv_nsec: wait.subsec_nanos() as _,
                };
                let pidfd = watch.pidfd();
                let mut fds = [rustix::event::PollFd::new(
                    &pidfd,
                    rustix::event::PollFlags::IN,
                )];
                let _ = rustix::event::poll(&mut fds, Some(&timespec));
            }
            Err(e) => {
                return Err(LaunchError::Probe(ProbeError::Io {
                    operation: "connect",
                    source: e,
                }))
            }
        }
        if !watch.is_alive() {
            let exit = watch.wait();
            return Err(LaunchError::Exited {
                pid: expected.pid,
                exit,
                log_tail: log_tail(log_path),
            });
        }
    }
}

/// A verified, running backend started by a [`CommandBackendLauncher`].
///
/// Clones share the backend: they watch the same process, and shutting it
/// down through one is seen by all.
#[derive(Clone)]
pub struct BackendHandle {
    inner: Arc<HandleParts>,
}

struct HandleParts {
    key: BackendKey,
    daemon: DaemonProcess,
    log_path: PathBuf,
    watch: ChildWatch,
    allocator: Arc<BackendEndpointAllocator>,
    proof: ExeProof,
    euid: u32,
    /// Whether this process launched the backend (and reserved its
    /// endpoint); an adopted backend's endpoint is not reserved here.
    launched: bool,
}

impl std::fmt::Debug for BackendHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendHandle")
            .field("key", &self.inner.key.to_string())
            .field("pid", &self.inner.daemon.pid)
            .field("endpoint", &self.inner.daemon.ipc_endpoint.path)
            .finish()
    }
}

impl BackendHandle {
    pub fn key(&self) -> &BackendKey {
        &self.inner.key
    }

    pub fn daemon(&self) -> &DaemonProcess {
        &self.inner.daemon
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.daemon.ipc_endpoint
    }

    pub fn log_path(&self) -> &Path {
        &self.inner.log_path
    }

    pub fn pid(&self) -> u32 {
        self.inner.daemon.pid
    }

    /// Stamp of the hashed file (the binary, or a script), for recording
    /// alongside the digest; None when the stamp cannot vouch for the digest
    /// (the file changed within a second of being hashed).
    pub fn binary_stamp(&self) -> Option<FileStamp> {
        self.inner
            .proof
            .stamp_vouches
            .then_some(self.inner.proof.stamp)
    }

    /// Whether the backend process is still running (via its pidfd).
    pub fn is_alive(&self) -> bool {
        self.inner.watch.is_alive()
    }

    /// How the backend ended, if it has.
    pub fn exit(&self) -> Option<Exit> {
        // Once the pidfd says the process ended, its reap is imminent: wait
        // for it, so the cleanup below never depends on winning that race.
        let exit = if self.inner.watch.is_alive() {
            None
        } else {
            Some(self.inner.watch.wait())
        };
        if exit.is_some() {
            self.cleanup();
        }
        exit
    }

    /// Re-runs the whole verification: alive, peer credentials, executable,
    /// probe and identity.
    pub fn verify(&self, trace: &TraceContext, timeout: Duration) -> Result<(), LaunchError> {
        if !self.is_alive() {
            return Err(mismatch("pid alive", self.inner.daemon.pid, "exited"));
        }
        connect_and_verify(
            &self.inner.watch,
            &self.inner.daemon,
            &self.inner.proof,
            self.inner.euid,
            trace,
            timeout,
        )
        .map(|_| ())
    }

    /// A new connection to the backend.
    pub fn connect(&self) -> io::Result<UnixStream> {
        UnixStream::connect(&self.inner.daemon.ipc_endpoint.path)
    }

    /// Waits up to `timeout` for the backend to exit.
    pub fn wait(&self, timeout: Duration) -> Option<Exit> {
        let exit = self.inner.watch.wait_timeout(timeout);
        if exit.is_some() {
            self.cleanup();
        }
        exit
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; always reaped. A clean
    /// end (exit 0, or the SIGTERM itself) also removes the log file; any
    /// other end keeps it for diagnosis.
    pub fn shutdown(&self, grace: Duration) -> Exit {
        let exit = self.inner.watch.terminate(grace);
        self.cleanup();
        if matches!(exit, Exit::Code(0) | Exit::Signal(libc::SIGTERM)) {
            let _ = std::fs::remove_file(&self.inner.log_path);
        }
        exit
    }

    /// SIGKILL; always reaped.
    pub fn kill(&self) -> Exit {
        let exit = self.inner.watch.kill();
        self.cleanup();
        exit
    }

    /// Once the backend is gone: its socket file (if it left one) is removed
    /// and, if this process launched it, the endpoint released.
    fn cleanup(&self) {
        let path = Path::new(&self.inner.daemon.ipc_endpoint.path);
        remove_socket_file(path);
        if self.inner.launched {
            self.inner.allocator.release(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_pauses_grow_with_the_square_root_of_the_time_elapsed() {
        let pause = |us: u64| ready_pause(Duration::from_micros(us));
        assert_eq!(pause(0), READY_MIN_PAUSE);
        let native = pause(500);
        assert!(native > Duration::from_micros(90) && native < Duration::from_micros(120));
        let python = pause(35_000);
        assert!(python > Duration::from_micros(800) && python < Duration::from_micros(1000));
        // Four times the time elapsed, twice the pause, up to the cap.
        let ratio = pause(40_000).as_secs_f64() / pause(10_000).as_secs_f64();
        assert!((ratio - 2.0).abs() < 0.01, "{ratio}");
        assert_eq!(pause(60_000_000), READY_MAX_PAUSE);
        let mut last = Duration::ZERO;
        for us in (0..400_000).step_by(997) {
            let p = pause(us);
            assert!(p >= last && (READY_MIN_PAUSE..=READY_MAX_PAUSE).contains(&p));
            last = p;
        }
    }
}
