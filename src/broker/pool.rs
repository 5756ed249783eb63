//! The cross-process pool: one verified backend per key for every process of
//! the user, however many ask at once.
//!
//! Each key has, in the pool's private state directory, a lock file and a
//! manifest (the verified `DaemonProcess` plus the key, as JSON).
//!
//! - **Hit, no lock.** Read the manifest and adopt the backend it names,
//!   verifying it as a launch would (see [`CommandBackendLauncher::adopt`]):
//!   same boot, pid alive, `/proc/<pid>/exe` the allow-listed binary whose
//!   digest (cached while its stamp is unchanged) is the recorded one, peer
//!   credentials, nonce probe. One connect and one probe round trip.
//! - **Miss.** Take the key's lock (`flock`, then check that the locked file
//!   is still the one at the path, so a lock file removed and recreated
//!   meanwhile is not trusted), read the manifest again (another process may
//!   just have launched), and only then launch and write the manifest
//!   atomically (temporary file, fsync, rename; mode 0600). A holder that
//!   crashes releases the lock by dying.
//! - A manifest that fails (garbage, another boot, dead pid, a pid reused by
//!   another program, a changed binary, a backend that does not answer) is
//!   replaced by a fresh launch.
//! - The process a failed manifest names is killed only when the failure is
//!   the backend's (no answer, a wrong answer, not at its endpoint, not the
//!   recorded binary) and the process is provably the recorded backend of
//!   this key (see [`ProcessMark`]): the manifest records, with the pid and
//!   boot id, the process's start time, owner and executable stamp; a pidfd
//!   is opened first, those facts are read again for that pid and compared,
//!   the environment the process was started with must name this key and
//!   the recorded endpoint, and the SIGKILL goes through the pidfd, so a pid
//!   reused by another process can never receive it. A manifest without
//!   that record (older format), from another boot, or whose process
//!   differs in any of them never leads to a signal (so a manifest rewritten
//!   to name another process of the user cannot direct a signal at it);
//!   neither does a failure on our side (an invalid definition, a refused
//!   binary, running out of descriptors).
//!
//! Backends end themselves after their idle timeout; the pool then sees a
//! dead pid, which is an ordinary miss.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::binary::FileStamp;
use super::env;
use super::error::FsError;
use super::fs::{ensure_private_dir, read_bounded, write_atomic, Bounded};
use super::host;
use super::identity::DaemonProcess;
use super::keys::{BackendKey, BrokerInstanceKey};
use super::launcher::{BackendHandle, BackendLauncher, CommandBackendLauncher, LaunchError};
use super::probe::ProbeError;
use super::service::ServiceDefinition;
use super::trace::TraceContext;

/// Largest manifest read.
const MAX_MANIFEST_BYTES: u64 = 64 * 1024;
/// Version of the manifest format. Fields added since (`binary_stamp`,
/// `process`) are optional, so older and newer readers understand each other.
const MANIFEST_VERSION: u32 = 1;
/// How long a killed backend is given to be gone before its socket file is
/// removed anyway.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Why a pool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// What a manifest records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    manifest_version: u32,
    instance: String,
    service_name: String,
    service_version: String,
    /// The `DaemonProcess` JSON of the verified backend.
    daemon: serde_json::Value,
    /// Stamp of the binary when it was hashed: while it is unchanged, the
    /// recorded digest stands and the binary is not hashed again. Absent
    /// when the stamp could not vouch for the digest.
    #[serde(default)]
    binary_stamp: Option<FileStamp>,
    launched_by_pid: u32,
    /// What proves that the pid still names the recorded process. Absent in
    /// manifests written before it existed, and when it could not be read:
    /// then the process is never signalled.
    #[serde(default)]
    process: Option<ProcessMark>,
}

/// What tells the recorded backend apart from any later process that reuses
/// its pid: the start time (clock ticks after boot, field 22 of
/// `/proc/<pid>/stat`), meaningful together with the manifest's boot id; the
/// effective uid; and the stamp of `/proc/<pid>/exe` (the binary, or a
/// script's interpreter) when it could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessMark {
    pub start_ticks: u64,
    pub uid: u32,
    #[serde(default)]
    pub exe: Option<FileStamp>,
}

impl ProcessMark {
    /// Reads the mark of `pid` from `/proc`. The caller must make sure the
    /// pid named the intended process for the whole read (a pidfd that has
    /// not signalled an exit afterwards, or an unreaped child).
    pub fn read(pid: u32) -> io::Result<ProcessMark> {
        let invalid = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("cannot parse {what} of pid {pid}"),
            )
        };
        let stat = fs::read(format!("/proc/{pid}/stat"))?;
        let start_ticks = parse_start_ticks(&stat).ok_or_else(|| invalid("/proc/<pid>/stat"))?;
        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        let uid = parse_effective_uid(&status).ok_or_else(|| invalid("/proc/<pid>/status"))?;
        let exe = fs::metadata(format!("/proc/{pid}/exe"))
            .ok()
            .map(|meta| FileStamp::of(&meta));
        Ok(ProcessMark {
            start_ticks,
            uid,
            exe,
        })
    }

    /// Why `now` (read for the same pid later) is not the process this mark
    /// recorded, or None if it is.
    fn differs(&self, now: &ProcessMark) -> Option<String> {
        if now.start_ticks != self.start_ticks {
            return Some(format!(
                "it started at tick {}, the recorded process at tick {}: the pid was reused",
                now.start_ticks, self.start_ticks
            ));
        }
        if now.uid != self.uid {
            return Some(format!(
                "it runs as uid {}, the recorded process as uid {}",
                now.uid, self.uid
            ));
        }
        if self.exe.is_some() && now.exe != self.exe {
            return Some("its executable is not the recorded one".to_owned());
        }
        None
    }
}

/// Field 3 (`state`) of a `/proc/<pid>/stat` line.
fn parse_state(stat: &[u8]) -> Option<u8> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    stat.get(close + 1..)?
        .iter()
        .copied()
        .find(|b| !b.is_ascii_whitespace())
}

/// Field 22 (`starttime`) of a `/proc/<pid>/stat` line. The command name in
/// field 2 may hold spaces and parentheses, so fields are counted after the
/// last `)`.
fn parse_start_ticks(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    // Fields 3, 4, ... follow the name: starttime is the 20th of them.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// The effective uid (second value of the `Uid:` line) of a
/// `/proc/<pid>/status` text.
fn parse_effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line["Uid:".len()..]
        .split_ascii_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A manifest as read: the identity it records and, when recorded, the mark
/// that proves the process is still that one.
#[derive(Debug, Clone, PartialEq)]
struct Recorded {
    daemon: DaemonProcess,
    mark: Option<ProcessMark>,
    /// The stamp the binary had when its digest was computed (see
    /// [`CommandBackendLauncher::adopt_recorded`]).
    binary_stamp: Option<FileStamp>,
}

/// One backend recorded in the pool.
#[derive(Debug, Clone)]
pub struct PoolEntry {
    pub key: BackendKey,
    pub daemon: DaemonProcess,
    /// Whether the recorded process is still running: a pidfd on the pid
    /// shows a running process whose start time, uid and executable are
    /// the ones the manifest recorded (a pid reused by another process is
    /// not alive; neither is one the manifest records no such mark for, nor
    /// one recorded on another boot). No probe is made.
    pub alive: bool,
}

/// An exclusive `flock` on a key's lock file, released on drop.
struct KeyLock {
    _file: File,
}

/// What an attempt at a key's lock came to.
enum Acquired {
    /// The exclusive lock is ours.
    Locked(KeyLock),
    /// Another process held it; we waited (in shared mode, with every other
    /// waiter) until it released it, and hold nothing now.
    Waited,
}

/// Backends shared between processes through manifests in a state directory.
pub struct BackendPool {
    launcher: Arc<CommandBackendLauncher>,
    state_dir: PathBuf,
    state_base: Option<PathBuf>,
    verify_timeout: Duration,
}

impl BackendPool {
    /// A pool over `state_dir` (default: `state` beside the socket directory,
    /// created 0700).
    pub fn new(launcher: Arc<CommandBackendLauncher>, state_dir: Option<PathBuf>) -> Self {
        let (state_dir, state_base) = match state_dir {
            Some(dir) => (dir, None),
            None => {
                let (socket_dir, base) = host::socket_dir_with_base();
                let parent = socket_dir.parent().unwrap_or(Path::new("/")).to_path_buf();
                (parent.join("state"), Some(base))
            }
        };
        BackendPool {
            launcher,
            state_dir,
            state_base,
            verify_timeout: Duration::from_secs(5),
        }
    }

    /// How long the verification of a recorded backend may take (default
    /// 5 s); a backend that does not answer within it is replaced.
    pub fn with_verify_timeout(mut self, timeout: Duration) -> Self {
        self.verify_timeout = timeout;
        self
    }

    pub fn verify_timeout(&self) -> Duration {
        self.verify_timeout
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    fn ensure_dir(&self) -> Result<(), FsError> {
        ensure_private_dir(&self.state_dir, self.state_base.as_deref())
    }

    /// File stem of a key: readable, and unambiguous through a hash of the
    /// whole key.
    fn stem(key: &BackendKey) -> String {
        let digest = blake3::hash(key.to_string().as_bytes());
        format!(
            "{}-{}-{}",
            key.service_name(),
            key.service_version(),
            hex::encode(&digest.as_bytes()[..8])
        )
    }

    fn manifest_path(&self, key: &BackendKey) -> PathBuf {
        self.state_dir.join(format!("{}.json", Self::stem(key)))
    }

    fn lock_path(&self, key: &BackendKey) -> PathBuf {
        self.state_dir.join(format!("{}.lock", Self::stem(key)))
    }

    /// Blocks until the key's exclusive lock is ours.
    fn lock(&self, key: &BackendKey) -> Result<KeyLock, FsError> {
        loop {
            if let Acquired::Locked(lock) = self.acquire(key, false)? {
                return Ok(lock);
            }
        }
    }

    /// One attempt at the key's exclusive lock. With `wait_shared`, a lock
    /// held by another process is not queued for: we block on a shared lock
    /// instead, which every waiter obtains at once when the holder releases
    /// the exclusive one, release it at once and return [`Acquired::Waited`],
    /// so that all waiters read (and verify) what the holder recorded in
    /// parallel instead of taking the lock one after the other. Without it,
    /// blocks for the exclusive lock.
    ///
    /// The exclusive lock counts only if, once held, the locked file is still
    /// the one at the path: the file may be removed by its holder (see
    /// [`BackendPool::stop`] and a failed launch in
    /// [`BackendPool::get_or_launch`]); a process that locked the removed
    /// inode sees that and opens the path again (creating a new file), so two
    /// processes can never both believe they hold the key's lock. A shared
    /// wait on a removed inode is harmless: it only tells that the holder is
    /// done.
    fn acquire(&self, key: &BackendKey, wait_shared: bool) -> Result<Acquired, FsError> {
        use rustix::fs::FlockOperation as Op;
        let path = self.lock_path(key);
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .map_err(|e| FsError::io("open lock file", &path, e))?;
            let exclusive = if wait_shared {
                Op::NonBlockingLockExclusive
            } else {
                Op::LockExclusive
            };
            match flock_retrying(&file, exclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) if wait_shared => {
                    flock_retrying(&file, Op::LockShared)
                        .map_err(|e| FsError::io("lock", &path, e.into()))?;
                    // Released by the close as well; explicit for clarity.
                    let _ = rustix::fs::flock(file.as_fd(), Op::Unlock);
                    return Ok(Acquired::Waited);
                }
                Err(e) => return Err(FsError::io("lock", &path, e.into())),
            }
            let held = file
                .metadata()
                .map_err(|e| FsError::io("stat lock file", &path, e))?;
            match fs::symlink_metadata(&path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(Acquired::Locked(KeyLock { _file: file }));
                }
                _ => continue,
            }
        }
    }

    /// Removes the key's lock file while holding its lock, when no manifest
    /// is left for the key (a refused or failed request), so that nothing of
    /// a request that recorded nothing stays behind. Safe although others
    /// may be blocked on this very file: whoever then locks it sees it is no
    /// longer the one at the path and starts over (see
    /// [`BackendPool::acquire`]).
    fn remove_lock_file_if_unused(&self, key: &BackendKey, _lock: &KeyLock) {
        if fs::symlink_metadata(self.manifest_path(key)).is_ok() {
            return;
        }
        let path = self.lock_path(key);
        if let Err(e) = fs::remove_file(&path) {
            if e.kind() != io::ErrorKind::NotFound {
                log::warn!("cannot remove lock file {}: {e}", path.display());
            }
        }
    }

    fn read_manifest(&self, key: &BackendKey) -> Option<Recorded> {
        let path = self.manifest_path(key);
        let bytes = match read_bounded(&path, MAX_MANIFEST_BYTES) {
            Ok(Bounded::Read(bytes)) => bytes,
            Ok(Bounded::TooLarge(len)) => {
                log::warn!("ignoring manifest {} of {len} bytes", path.display());
                return None;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                log::warn!("cannot read manifest {}: {e}", path.display());
                return None;
            }
        };
        match parse_manifest(&bytes, key) {
            Ok(recorded) => Some(recorded),
            Err(reason) => {
                log::warn!("ignoring manifest {}: {reason}", path.display());
                None
            }
        }
    }

    fn write_manifest(&self, key: &BackendKey, handle: &BackendHandle) -> Result<(), FsError> {
        let daemon = handle.daemon();
        // Read while the handle still watches the process: if it is alive
        // after the read, the pid named it throughout.
        let process = match ProcessMark::read(daemon.pid) {
            Ok(mark) if handle.is_alive() => Some(mark),
            Ok(_) => None,
            Err(e) => {
                log::warn!(
                    "cannot read the start time of pid {}: {e}; it will never be signalled through the pool",
                    daemon.pid
                );
                None
            }
        };
        let manifest = Manifest {
            manifest_version: MANIFEST_VERSION,
            instance: key.instance().id(),
            service_name: key.service_name().to_owned(),
            service_version: key.service_version().to_owned(),
            daemon: serde_json::from_str(&daemon.to_json()).unwrap_or(serde_json::Value::Null),
            binary_stamp: handle.binary_stamp(),
            launched_by_pid: std::process::id(),
            process,
        };
        let text = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
        let name = format!("{}.json", Self::stem(key));
        write_atomic(&self.state_dir, &name, &text).map(|_| ())
    }

    fn adopt(
        &self,
        key: &BackendKey,
        sd: &ServiceDefinition,
        recorded: &Recorded,
        trace: &TraceContext,
    ) -> Result<BackendHandle, LaunchError> {
        let daemon = &recorded.daemon;
        self.launcher
            .adopt_recorded(
                key,
                sd,
                daemon,
                recorded.binary_stamp,
                trace,
                self.verify_timeout,
            )
            .inspect_err(|e| {
                log::info!(
                    "manifest of {key} names pid {} which fails verification: {e}",
                    daemon.pid
                );
            })
    }

    /// After `recorded` failed verification with `err` (under the key's
    /// lock): kills its process if the failure is the backend's (see
    /// [`backend_at_fault`]) and the process is provably the recorded one
    /// (see [`BackendPool::kill_recorded`]). Returns whether it was killed.
    fn retire(&self, key: &BackendKey, recorded: &Recorded, err: &LaunchError) -> bool {
        let pid = recorded.daemon.pid;
        if !backend_at_fault(err) {
            self.remove_dead_endpoint(recorded);
            return false;
        }
        match self.kill_recorded(key, recorded) {
            Ok(()) => {
                log::warn!(
                    "killed pid {pid}, the recorded backend of {key}: it failed verification ({err})"
                );
                true
            }
            Err(why) => {
                log::info!("not signalling pid {pid} named by the manifest of {key}: {why}");
                self.remove_dead_endpoint(recorded);
                false
            }
        }
    }

    /// Removes the socket file a recorded backend left behind, once it is
    /// provably gone (see [`recorded_process_gone`]) and nobody reaps it
    /// with the launcher's reaper (its launching process has exited, or it
    /// was killed elsewhere): only a socket (never a symlink, never any
    /// other file) directly inside the launcher's socket directory, and only
    /// if a connect to it is refused (nothing listens there). Called under
    /// the key's lock.
    fn remove_dead_endpoint(&self, recorded: &Recorded) {
        let daemon = &recorded.daemon;
        if !recorded_process_gone(daemon, recorded.mark.as_ref()) {
            return;
        }
        let socket = Path::new(&daemon.ipc_endpoint.path);
        if socket.parent() != Some(self.launcher.socket_dir()) {
            return;
        }
        match fs::symlink_metadata(socket) {
            Ok(meta) if meta.file_type().is_socket() => {}
            _ => return,
        }
        match UnixStream::connect(socket) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                match fs::remove_file(socket) {
                    Ok(()) => log::info!(
                        "removed the socket file {} of pid {}, which is gone",
                        socket.display(),
                        daemon.pid
                    ),
                    Err(e) => log::warn!("cannot remove {}: {e}", socket.display()),
                }
            }
            _ => {}
        }
    }

    /// SIGKILL to the recorded process, only once it is proven to be that
    /// process: same boot; then, through a pidfd opened first, the start
    /// time, uid and executable stamp read again for the pid, and the
    /// environment it was started with naming this key and the recorded
    /// endpoint; then the pidfd shows the process still running, so the
    /// reads described it; then the signal goes through the pidfd. Waits (up
    /// to [`KILL_WAIT`]) for it to end and removes the socket file it could
    /// not remove itself.
    fn kill_recorded(&self, key: &BackendKey, recorded: &Recorded) -> Result<(), String> {
        let daemon = &recorded.daemon;
        let mark = recorded
            .mark
            .ok_or("the manifest records no start time (older format)")?;
        let boot = host::boot_id().map_err(|e| e.to_string())?;
        if daemon.boot_id != boot {
            return Err(format!("it was recorded on boot {}", daemon.boot_id));
        }
        let euid = host::effective_uid();
        if mark.uid != euid {
            return Err(format!("it was recorded for uid {}, not {euid}", mark.uid));
        }
        let pid = rustix::process::Pid::from_raw(daemon.pid as i32)
            .ok_or("the recorded pid is not a process id")?;
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
            .map_err(|e| format!("no such process ({e})"))?;
        let now = ProcessMark::read(daemon.pid).map_err(|e| format!("/proc unreadable: {e}"))?;
        if let Some(why) = mark.differs(&now) {
            return Err(why);
        }
        started_for(daemon.pid, key, &daemon.ipc_endpoint.path)?;
        if pidfd_ended(&pidfd, Duration::ZERO) {
            return Err("it has ended".to_owned());
        }
        match rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => {}
            Err(e) => return Err(format!("SIGKILL failed: {e}")),
        }
        if !pidfd_ended(&pidfd, KILL_WAIT) {
            log::warn!(
                "pid {} has not ended {KILL_WAIT:?} after SIGKILL",
                daemon.pid
            );
        }
        let socket = Path::new(&daemon.ipc_endpoint.path);
        if socket.parent() == Some(self.launcher.socket_dir()) {
            if let Ok(meta) = fs::symlink_metadata(socket) {
                if meta.file_type().is_socket() {
                    let _ = fs::remove_file(socket);
                }
            }
        }
        Ok(())
    }

    /// The verified backend of `key`: the one recorded if it still verifies,
    /// else a new one launched under the key's lock.
    ///
    /// The request is checked (definition, key, version rules) before
    /// anything touches the disk. A process that finds no usable manifest
    /// tries the key's lock without blocking; if another process holds it
    /// (most likely launching), it waits for it in shared mode, together with
    /// every other waiter, then reads and verifies the manifest the holder
    /// wrote without any lock; only if there is still no usable backend does
    /// it try for the exclusive lock again. Under the exclusive lock, a
    /// recorded backend that still fails is retired (see
    /// [`BackendPool::retire`]), the socket file of one that is provably gone
    /// is removed, and a new backend is launched and recorded. A launch that
    /// fails, and leaves no manifest, takes the key's lock file with it.
    pub fn get_or_launch(
        &self,
        key: &BackendKey,
        sd: &ServiceDefinition,
        trace: &TraceContext,
    ) -> Result<BackendHandle, PoolError> {
        self.launcher.check_request(key, sd)?;
        self.ensure_dir()?;
        let mut seen = self.read_manifest(key);
        if let Some(recorded) = &seen {
            if let Ok(handle) = self.adopt(key, sd, recorded, trace) {
                return Ok(handle);
            }
        }
        let news = |seen: &Option<Recorded>, fresh: &Recorded| {
            seen.as_ref().is_none_or(|s| s.daemon != fresh.daemon)
        };
        let (lock, recorded) = loop {
            match self.acquire(key, true)? {
                Acquired::Waited => {
                    // The holder is done: what it recorded is verified
                    // without any lock, by every waiter at once.
                    let fresh = self.read_manifest(key);
                    if let Some(recorded) = fresh.as_ref().filter(|f| news(&seen, f)) {
                        if let Ok(handle) = self.adopt(key, sd, recorded, trace) {
                            return Ok(handle);
                        }
                    }
                    seen = fresh;
                }
                Acquired::Locked(lock) => {
                    let fresh = self.read_manifest(key);
                    match fresh {
                        Some(recorded) if news(&seen, &recorded) => {
                            // Recorded since we looked: verify it without the
                            // lock, which others may be waiting for.
                            drop(lock);
                            if let Ok(handle) = self.adopt(key, sd, &recorded, trace) {
                                return Ok(handle);
                            }
                            seen = Some(recorded);
                        }
                        fresh => break (lock, fresh),
                    }
                }
            }
        };
        // Under the lock, a backend that still fails is the one to replace.
        if let Some(recorded) = recorded {
            match self.adopt(key, sd, &recorded, trace) {
                Ok(handle) => return Ok(handle),
                Err(e) => {
                    self.retire(key, &recorded, &e);
                }
            }
        }
        let handle = match self.launcher.launch(key, sd, trace) {
            Ok(handle) => handle,
            Err(e) => {
                self.remove_lock_file_if_unused(key, &lock);
                return Err(e.into());
            }
        };
        if let Err(e) = self.write_manifest(key, &handle) {
            handle.kill();
            self.remove_lock_file_if_unused(key, &lock);
            return Err(e.into());
        }
        drop(lock);
        Ok(handle)
    }

    /// Every backend recorded in the pool (manifests that do not parse are
    /// skipped).
    pub fn list(&self) -> Result<Vec<PoolEntry>, PoolError> {
        let mut entries = Vec::new();
        let dir = match fs::read_dir(&self.state_dir) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(entries),
            Err(e) => return Err(FsError::io("list", &self.state_dir, e).into()),
        };
        for item in dir.flatten() {
            let path = item.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Ok(Bounded::Read(bytes)) = read_bounded(&path, MAX_MANIFEST_BYTES) else {
                continue;
            };
            let Ok((key, daemon, _, mark)) = parse_manifest_parts(&bytes) else {
                continue;
            };
            let alive = recorded_alive(&daemon, mark.as_ref());
            entries.push(PoolEntry { key, daemon, alive });
        }
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(entries)
    }

    /// Stops the backend of `key` if its manifest still verifies (SIGTERM,
    /// `grace`, SIGKILL) and removes the manifest. Returns whether a backend
    /// was stopped. A recorded backend that fails verification is killed only
    /// if it is provably the recorded process; any other process is never
    /// signalled.
    pub fn stop(&self, key: &BackendKey, grace: Duration) -> Result<bool, PoolError> {
        self.ensure_dir()?;
        let _lock = self.lock(key)?;
        let stopped = match self.read_manifest(key) {
            Some(recorded) => {
                let sd = recorded_definition(key, &recorded.daemon);
                match self.adopt(key, &sd, &recorded, &TraceContext::default()) {
                    Ok(handle) => {
                        handle.shutdown(grace);
                        true
                    }
                    Err(e) => self.retire(key, &recorded, &e),
                }
            }
            None => false,
        };
        for path in [self.manifest_path(key), self.lock_path(key)] {
            // Removing the lock file while holding it is safe: a process that
            // locked the old file sees it is no longer the one at the path
            // and locks the new one (see `acquire`).
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(FsError::io("remove", path, e).into()),
            }
        }
        Ok(stopped)
    }
}

impl BackendPool {
    /// The recorded backend of `key` if it verifies (fully: boot, pidfd,
    /// executable and digest, peer credentials, nonce probe), without ever
    /// launching one. Verified against the definition the manifest implies.
    /// A backend that fails is left alone (it is replaced, and killed if
    /// provably the recorded one, by the next `get_or_launch`).
    pub fn get(&self, key: &BackendKey, trace: &TraceContext) -> Option<BackendHandle> {
        let recorded = self.read_manifest(key)?;
        let sd = recorded_definition(key, &recorded.daemon);
        self.adopt(key, &sd, &recorded, trace).ok()
    }

    /// Stops every backend of the pool; returns how many were running.
    pub fn stop_all(&self, grace: Duration) -> Result<usize, PoolError> {
        let mut stopped = 0;
        for entry in self.list()? {
            if self.stop(&entry.key, grace)? {
                stopped += 1;
            }
        }
        Ok(stopped)
    }
}

/// The definition a manifest implies: its binary as recorded, allow-listed
/// in the binary's own directory. Enough to verify the backend before
/// stopping it, when the caller has only the key.
fn recorded_definition(key: &BackendKey, daemon: &DaemonProcess) -> ServiceDefinition {
    let root = Path::new(&daemon.exe_path)
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    ServiceDefinition {
        service_name: key.service_name().to_owned(),
        binary_path: daemon.exe_path.clone(),
        per_version_binary_dir: root,
        isolation: key.instance().isolation(),
        explicit_instance: match key.instance() {
            BrokerInstanceKey::Explicit(name) => name.clone(),
            _ => String::new(),
        },
        ..ServiceDefinition::default()
    }
}

/// Whether a failed verification is the backend's doing: it does not
/// answer, answers wrongly, is not at its endpoint, or is not (or no longer)
/// what was recorded. A failure on our side (the caller's definition, the
/// binary policy, running out of descriptors, the random source) is not, and
/// never leads to a signal. Which process may then be signalled is decided
/// by [`BackendPool::kill_recorded`], not here.
fn backend_at_fault(err: &LaunchError) -> bool {
    match err {
        LaunchError::Mismatch { .. } => true,
        LaunchError::Probe(ProbeError::Io { source, .. }) => !matches!(
            source.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS)
        ),
        LaunchError::Probe(ProbeError::Host(_)) => false,
        LaunchError::Probe(_) => true,
        _ => false,
    }
}

/// Checks that `pid` was started by a launcher for `key` at `endpoint`: the
/// environment it was started with (`/proc/<pid>/environ`, which later
/// changes by the process do not alter) holds the contract's variables with
/// those values.
fn started_for(pid: u32, key: &BackendKey, endpoint: &str) -> Result<(), String> {
    let environ = fs::read(format!("/proc/{pid}/environ"))
        .map_err(|e| format!("its environment is unreadable: {e}"))?;
    let instance = key.instance().id();
    let expected = [
        (env::ENV_SERVICE_NAME, key.service_name()),
        (env::ENV_SERVICE_VERSION, key.service_version()),
        (env::ENV_INSTANCE, instance.as_str()),
        (env::ENV_BACKEND_PIPE, endpoint),
    ];
    for (name, value) in expected {
        let found = environ
            .split(|&b| b == 0)
            .filter_map(|entry| entry.strip_prefix(name.as_bytes())?.strip_prefix(b"="))
            .next(); // the first, as getenv reads it
        if found != Some(value.as_bytes()) {
            return Err(format!(
                "it was not started for {key} at {endpoint} ({name} is {})",
                found.map_or_else(
                    || "unset".to_owned(),
                    |v| format!("{:?}", String::from_utf8_lossy(v))
                )
            ));
        }
    }
    Ok(())
}

/// Whether the recorded backend is provably gone: recorded on another boot,
/// no process with its pid, a zombie or dead process with it, or (when the
/// manifest records its start time) one that started at another time, so
/// the pid now names a later process. A process that cannot be told apart
/// from the recorded one is not gone.
fn recorded_process_gone(daemon: &DaemonProcess, mark: Option<&ProcessMark>) -> bool {
    match host::boot_id() {
        Ok(boot) if boot != daemon.boot_id => return true,
        Ok(_) => {}
        Err(_) => return false,
    }
    let stat = match fs::read(format!("/proc/{}/stat", daemon.pid)) {
        Ok(stat) => stat,
        Err(e) => return e.kind() == io::ErrorKind::NotFound,
    };
    if matches!(parse_state(&stat), Some(b'Z' | b'X' | b'x')) {
        return true;
    }
    match (mark, parse_start_ticks(&stat)) {
        (Some(mark), Some(ticks)) => ticks != mark.start_ticks,
        _ => false,
    }
}

/// Whether the recorded backend is still running (for [`BackendPool::list`]):
/// same boot, and under a pidfd opened first, the pid's start time, uid and
/// executable stamp are the recorded ones and the pidfd shows no exit, so
/// the reads described the process it names. Without a recorded mark the
/// pid proves nothing: not alive.
fn recorded_alive(daemon: &DaemonProcess, mark: Option<&ProcessMark>) -> bool {
    let Some(mark) = mark else {
        return false;
    };
    if host::boot_id().map_or(true, |boot| boot != daemon.boot_id) {
        return false;
    }
    let Some(pid) = rustix::process::Pid::from_raw(daemon.pid as i32) else {
        return false;
    };
    let Ok(pidfd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else {
        return false;
    };
    let Ok(now) = ProcessMark::read(daemon.pid) else {
        return false;
    };
    mark.differs(&now).is_none() && !pidfd_ended(&pidfd, Duration::ZERO)
}

/// `flock`, retried when a signal interrupts it.
fn flock_retrying(file: &File, op: rustix::fs::FlockOperation) -> rustix::io::Result<()> {
    loop {
        match rustix::fs::flock(file.as_fd(), op) {
            Err(rustix::io::Errno::INTR) => continue,
            other => return other,
        }
    }
}

/// Whether `pidfd`'s process ends within `timeout` (ZERO: has it ended).
fn pidfd_ended(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let deadline = host::deadline_after(timeout);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let timespec = rustix::event::Timespec {
            tv_sec: left.as_secs().min(i64::MAX as u64) as _,
            tv_nsec: left.subsec_nanos() as _,
        };
        let mut fds = [rustix::event::PollFd::new(
            pidfd,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, Some(&timespec)) {
            Ok(n) => return n > 0,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return false,
        }
    }
}

fn parse_any_manifest(bytes: &[u8]) -> Result<(BackendKey, DaemonProcess), String> {
    parse_manifest_parts(bytes).map(|(key, daemon, _, _)| (key, daemon))
}

type ManifestParts = (
    BackendKey,
    DaemonProcess,
    Option<FileStamp>,
    Option<ProcessMark>,
);

fn parse_manifest_parts(bytes: &[u8]) -> Result<ManifestParts, String> {
    let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if manifest.manifest_version != MANIFEST_VERSION {
        return Err(format!(
            "manifest version {} is not {MANIFEST_VERSION}",
            manifest.manifest_version
        ));
    }
    let instance = BrokerInstanceKey::from_id(&manifest.instance).map_err(|e| e.to_string())?;
    let key = BackendKey::new(instance, &manifest.service_name, &manifest.service_version)
        .map_err(|e| e.to_string())?;
    let daemon =
        DaemonProcess::from_json(&manifest.daemon.to_string()).map_err(|e| e.to_string())?;
    Ok((key, daemon, manifest.binary_stamp, manifest.process))
}

fn parse_manifest(bytes: &[u8], key: &BackendKey) -> Result<Recorded, String> {
    let (recorded, daemon, binary_stamp, mark) = parse_manifest_parts(bytes)?;
    if &recorded != key {
        return Err(format!("it records {recorded}, not {key}"));
    }
    // The recorded digest is not put in the process-wide digest cache here:
    // it stands in for hashing only to verify this manifest's backend, and
    // is cached once that backend has proven it (see
    // `CommandBackendLauncher::adopt_recorded`).
    Ok(Recorded {
        daemon,
        mark,
        binary_stamp,
    })
}

/// The manifest decoder on its own, without the pool, the key check or the
/// digest cache (for the fuzz targets and malformed-input tests; see
/// `crate::fuzzing`).
#[doc(hidden)]
pub fn decode_manifest(bytes: &[u8]) -> Result<(BackendKey, DaemonProcess), String> {
    parse_any_manifest(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_are_counted_after_the_last_parenthesis() {
        let stat =
            b"4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_ticks(stat), Some(987654));
        assert_eq!(parse_start_ticks(b"4242 (short) S 1 2 3"), None);
        assert_eq!(parse_start_ticks(b"no parenthesis at all"), None);
    }

    #[test]
    fn effective_uid_is_the_second_uid() {
        let status = "Name:\tx\nUid:\t1000\t1001\t1002\t1003\nGid:\t5\t5\t5\t5\n";
        assert_eq!(parse_effective_uid(status), Some(1001));
        assert_eq!(parse_effective_uid("Name:\tx\n"), None);
        assert_eq!(parse_effective_uid("Uid:\t1000\n"), None);
    }

    #[test]
    fn the_mark_of_this_process_is_stable_and_its_own() {
        let me = std::process::id();
        let mark = ProcessMark::read(me).unwrap();
        assert_eq!(mark.uid, host::effective_uid());
        assert!(mark.exe.is_some());
        assert_eq!(mark.differs(&ProcessMark::read(me).unwrap()), None);
        let reused = ProcessMark {
            start_ticks: mark.start_ticks + 1,
            ..mark
        };
        assert!(mark.differs(&reused).unwrap().contains("reused"));
        let other_uid = ProcessMark {
            uid: mark.uid + 1,
            ..mark
        };
        assert!(mark.differs(&other_uid).is_some());
        let other_exe = ProcessMark { exe: None, ..mark };
        assert!(mark.differs(&other_exe).is_some());
    }

    #[test]
    fn a_manifest_without_the_process_record_still_parses() {
        let recorded = |process: &str| {
            format!(
                r#"{{"manifest_version": 1, "instance": "shared", "service_name": "echo",
                "service_version": "1.0.0", "launched_by_pid": 7, {process}
                "daemon": {{"pid": 42, "exe_path": "/opt/echo", "exe_sha256": "{}",
                "boot_id": "b", "ipc_endpoint": {{"namespace_id": "shared", "path": "/tmp/e.sock"}},
                "started_at_unix_ms": 1}}}}"#,
                "ab".repeat(32)
            )
        };
        let key = BackendKey::new(BrokerInstanceKey::Shared, "echo", "1.0.0").unwrap();
        let old = parse_manifest(recorded("").as_bytes(), &key).unwrap();
        assert_eq!(old.daemon.pid, 42);
        assert_eq!(old.mark, None);
        let new = parse_manifest(
            recorded(r#""process": {"start_ticks": 9, "uid": 3, "exe": null},"#).as_bytes(),
            &key,
        )
        .unwrap();
        assert_eq!(
            new.mark,
            Some(ProcessMark {
                start_ticks: 9,
                uid: 3,
                exe: None
            })
        );
    }
}
