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

use crate::sys::keylock as lock;
mod gc;
mod manifest;
mod mark;

use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::contract::error::FsError;
use crate::sys::fs::ensure_private_dir;
use crate::sys::host;
use crate::sys::proc;
use lock::{Acquired, KeyLock};
use manifest::Recorded;
use mark::{prove_recorded, recorded_alive, recorded_process_gone, NotProven};

use crate::contract::identity::DaemonProcess;
use crate::contract::keys::{BackendKey, BrokerInstanceKey};
use crate::contract::service::ServiceDefinition;
use crate::contract::trace::TraceContext;
use crate::launch::verify::ProbeError;
use crate::launch::{BackendHandle, BackendLauncher, CommandBackendLauncher, LaunchError};
pub use gc::GcReport;
pub use manifest::ManifestError;

/// How long a killed backend is given to be gone before its socket file is
/// removed anyway.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How often, at most, a pool collects garbage by itself (see
/// [`BackendPool::gc_if_due`]).
pub const AUTO_GC_EVERY: Duration = Duration::from_secs(600);
/// Files in the log directory past which a pool collects by itself: twice
/// the default limit on running backends.
pub const AUTO_GC_FILES: usize = 2 * crate::launch::DEFAULT_MAX_BACKENDS as usize;

/// Why a pool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Fs(#[from] FsError),
}

impl From<lock::LockError> for PoolError {
    fn from(err: lock::LockError) -> Self {
        match err {
            lock::LockError::Fs(e) => PoolError::Fs(e),
            busy => PoolError::Launch(LaunchError::from_lock(busy, LaunchError::LogFile)),
        }
    }
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
    /// The environment policy it was started with (see
    /// `launch::describe_environment`); None for older manifests.
    pub environment: Option<String>,
    /// Set aside while busy: no longer handed out, left to drain (see
    /// [`BackendPool::get_or_launch`]).
    pub retired: bool,
}

/// Backends shared between processes through manifests in a state directory.
pub struct BackendPool {
    launcher: Arc<CommandBackendLauncher>,
    state_dir: PathBuf,
    state_base: Option<PathBuf>,
    verify_timeout: Duration,
    /// When this pool last collected by itself.
    last_auto_gc: std::sync::Mutex<Option<std::time::Instant>>,
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
            last_auto_gc: std::sync::Mutex::new(None),
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

    /// Blocks until the key's exclusive lock is ours (see [`lock`]).
    fn lock(&self, key: &BackendKey) -> Result<KeyLock, PoolError> {
        Ok(lock::lock(&self.lock_path(key), self.lock_wait())?)
    }

    /// The longest wait for a key's lock (see
    /// [`CommandBackendLauncher::lock_wait`]), the verification included.
    fn lock_wait(&self) -> Duration {
        self.launcher.lock_wait() + self.verify_timeout * 2
    }

    /// One attempt at the key's exclusive lock (see [`lock::acquire`]).
    fn acquire(&self, key: &BackendKey, wait_shared: bool) -> Result<Acquired, PoolError> {
        Ok(lock::acquire(
            &self.lock_path(key),
            wait_shared,
            self.lock_wait(),
        )?)
    }

    /// Removes the key's lock file while holding its lock, when no manifest
    /// is left for the key (a refused or failed request), so that nothing of
    /// a request that recorded nothing stays behind. Safe although others
    /// may be blocked on this very file: whoever then locks it sees it is no
    /// longer the one at the path and starts over (see [`lock`]).
    fn remove_lock_file_if_unused(&self, key: &BackendKey, lock: &KeyLock) {
        if fs::symlink_metadata(self.manifest_path(key)).is_ok() {
            return;
        }
        if let Err(e) = lock.remove_file(&self.lock_path(key)) {
            log::warn!("{e}");
        }
    }

    fn read_manifest(&self, key: &BackendKey) -> Option<Recorded> {
        manifest::read(&self.manifest_path(key), key)
    }

    /// A backend launched from a binary too fresh for its stamp to vouch
    /// for the digest is recorded without a stamp, so every adopter hashes
    /// the binary. The first adopter whose own hash vouches (the binary has
    /// settled since) records its stamp, if it can take the key's lock at
    /// once; later adopters then take the recorded digest while the stamp
    /// holds. Best effort: nothing waits for the lock, and a failure only
    /// means the next adopter hashes too.
    fn record_proven_stamp(&self, key: &BackendKey, recorded: &Recorded, handle: &BackendHandle) {
        let (None, Some(stamp)) = (recorded.binary_stamp, handle.binary_stamp()) else {
            return;
        };
        let added = match lock::try_lock(&self.lock_path(key)) {
            Ok(Some(lock)) => {
                let added = manifest::add_binary_stamp(
                    &self.state_dir,
                    &format!("{}.json", Self::stem(key)),
                    key,
                    &recorded.daemon,
                    stamp,
                );
                // A stop may have removed the manifest and the lock file
                // meanwhile: the lock file just opened is not left behind.
                self.remove_lock_file_if_unused(key, &lock);
                added
            }
            Ok(None) => Ok(false),
            Err(e) => Err(e),
        };
        match added {
            Ok(true) => log::debug!("recorded the settled stamp of {key}'s binary"),
            Ok(false) => {}
            Err(e) => log::debug!("cannot record the stamp of {key}'s binary: {e}"),
        }
    }

    fn write_manifest(
        &self,
        key: &BackendKey,
        sd: &ServiceDefinition,
        handle: &BackendHandle,
    ) -> Result<(), FsError> {
        let name = format!("{}.json", Self::stem(key));
        let environment = crate::launch::describe_environment(sd);
        manifest::write(&self.state_dir, &name, key, handle, &environment)
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

    /// `recorded` failed verification with `err` under the key's lock and a
    /// new backend is about to replace it. One that only did not answer in
    /// time while its threads kept running (`before` is its
    /// [`proc::activity`] from just before the verification) is busy, not
    /// hung: all its descriptors in use by clients, say, with the probe
    /// waiting in its backlog. It is set aside, never signalled: its record
    /// moves to `<stem>.retired-<pid>.json`, so it is no longer handed out
    /// but `ls`, `stop` and `gc` still know it, and it keeps serving its
    /// clients until it idles out. Any other failure goes to
    /// [`BackendPool::retire`].
    fn make_way(
        &self,
        key: &BackendKey,
        recorded: &Recorded,
        err: &LaunchError,
        before: Option<u64>,
    ) {
        let daemon = &recorded.daemon;
        let working = no_answer(err)
            && before
                .is_some_and(|before| proc::activity(daemon.pid).is_ok_and(|now| now != before));
        if working && prove_recorded(key, daemon, recorded.mark.as_ref()).is_ok() {
            let stem = Self::stem(key);
            let retired = format!("{stem}.retired-{}.json", daemon.pid);
            match manifest::set_aside(&self.state_dir, &format!("{stem}.json"), &retired, daemon) {
                Ok(true) => {
                    log::warn!(
                        "pid {}, the backend of {key}, gave no answer ({err}) but is working: \
                         retired (no longer handed out, left to finish with its clients), \
                         not signalled; a new backend takes its place",
                        daemon.pid
                    );
                    return;
                }
                Ok(false) => {}
                Err(e) => log::warn!("cannot set the record of pid {} aside: {e}", daemon.pid),
            }
        }
        self.retire(key, recorded, err);
    }

    /// After `recorded` failed verification with `err` (under the key's
    /// lock): kills its process if the failure is the backend's (see
    /// [`backend_at_fault`]) and the process is provably the recorded one
    /// (see [`BackendPool::end_recorded`]). Returns whether it was killed.
    fn retire(&self, key: &BackendKey, recorded: &Recorded, err: &LaunchError) -> bool {
        let pid = recorded.daemon.pid;
        if !backend_at_fault(err) {
            self.remove_dead_endpoint(recorded);
            return false;
        }
        match self.end_recorded(key, recorded, None) {
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

    /// Ends the recorded process, only once it is proven to be that
    /// process: same boot; then, through a pidfd opened first, the start
    /// time, uid and executable stamp read again for the pid, and the
    /// environment it was started with naming this key and the recorded
    /// endpoint; then the pidfd shows the process still running, so the
    /// reads described it; then the signals go through the pidfd: SIGKILL
    /// at once, or with a `grace`, SIGTERM first and SIGKILL once it has
    /// passed. Waits (up to [`KILL_WAIT`]) for it to end and removes the
    /// socket file it could not remove itself.
    fn end_recorded(
        &self,
        key: &BackendKey,
        recorded: &Recorded,
        grace: Option<Duration>,
    ) -> Result<(), NotProven> {
        let daemon = &recorded.daemon;
        let pidfd = prove_recorded(key, daemon, recorded.mark.as_ref())?;
        let ended = match grace {
            Some(grace) => {
                pidfd.term().map_err(NotProven::Signal)?;
                pidfd.ended_within(grace)
            }
            None => false,
        };
        if !ended {
            pidfd.kill().map_err(NotProven::Signal)?;
        }
        if !pidfd.ended_within(KILL_WAIT) {
            log::warn!(
                "pid {} has not ended {KILL_WAIT:?} after SIGKILL",
                daemon.pid
            );
        }
        // What it forked goes with it, wherever it went: proven above to be
        // the recorded backend, its helpers carry its endpoint.
        crate::launch::end_escaped_helpers(
            &daemon.ipc_endpoint.path,
            recorded.mark.as_ref().map_or(0, |mark| mark.start_ticks),
            daemon.pid,
        );
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
                self.record_proven_stamp(key, recorded, &handle);
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
            let before = proc::activity(recorded.daemon.pid).ok();
            match self.adopt(key, sd, &recorded, trace) {
                Ok(handle) => return Ok(handle),
                Err(e) => self.make_way(key, &recorded, &e, before),
            }
        }
        let handle = match self.launcher.launch(key, sd, trace) {
            Ok(handle) => handle,
            Err(e) => {
                self.remove_lock_file_if_unused(key, &lock);
                return Err(e.into());
            }
        };
        if let Err(e) = self.write_manifest(key, sd, &handle) {
            handle.kill();
            self.remove_lock_file_if_unused(key, &lock);
            return Err(e.into());
        }
        drop(lock);
        self.gc_if_due();
        Ok(handle)
    }

    /// Automatic garbage collection, after a launch: once the launcher's
    /// log directory holds more than [`AUTO_GC_FILES`] files (what ended
    /// backends leave piles up there first), at most once per
    /// [`AUTO_GC_EVERY`] for this pool, with the default `min_age`. Counting
    /// is one directory listing; nothing is written to decide. Failures are
    /// logged, never raised: the launch has succeeded.
    fn gc_if_due(&self) {
        let piled = fs::read_dir(self.launcher.log_dir())
            .map(|listing| listing.count() > AUTO_GC_FILES)
            .unwrap_or(false);
        if !piled {
            return;
        }
        {
            let mut last = self
                .last_auto_gc
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < AUTO_GC_EVERY) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        match self.gc(false, gc::DEFAULT_MIN_AGE) {
            Ok(report) => log::info!(
                "automatic gc of {}: {} records, {} locks, {} logs, {} sockets, {} bytes",
                self.state_dir.display(),
                report.records.len(),
                report.locks.len(),
                report.logs.len(),
                report.sockets.len(),
                report.bytes
            ),
            Err(e) => log::warn!("automatic gc of {} failed: {e}", self.state_dir.display()),
        }
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
            let Some(parts) = manifest::read_parts(&path) else {
                continue;
            };
            let alive = recorded_alive(&parts.daemon, parts.mark.as_ref());
            entries.push(PoolEntry {
                key: parts.key,
                daemon: parts.daemon,
                alive,
                environment: parts.environment,
                retired: parts.retired,
            });
        }
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(entries)
    }

    /// Stops the backend of `key` if its manifest still verifies (SIGTERM,
    /// `grace`, SIGKILL) and removes the manifest. Returns whether a backend
    /// was stopped. A recorded backend that fails verification is killed only
    /// if it is provably the recorded process; any other process is never
    /// signalled. The log of a backend that ends within `grace` goes with it
    /// (see [`BackendPool::stop_keeping_log`]).
    pub fn stop(&self, key: &BackendKey, grace: Duration) -> Result<bool, PoolError> {
        self.stop_with(key, grace, false)
    }

    /// [`BackendPool::stop`], keeping the backend's log file.
    pub fn stop_keeping_log(&self, key: &BackendKey, grace: Duration) -> Result<bool, PoolError> {
        self.stop_with(key, grace, true)
    }

    fn stop_with(
        &self,
        key: &BackendKey,
        grace: Duration,
        keep_log: bool,
    ) -> Result<bool, PoolError> {
        self.ensure_dir()?;
        let lock = self.lock(key)?;
        let stopped = match self.read_manifest(key) {
            Some(recorded) => {
                let sd = recorded_definition(key, &recorded.daemon);
                match self.adopt(key, &sd, &recorded, &TraceContext::default()) {
                    Ok(handle) => {
                        handle.shutdown_with(grace, keep_log);
                        true
                    }
                    // Busy, or hung: proven, it gets SIGTERM and the grace
                    // a stop gives, as a backend that answered would.
                    Err(e) if no_answer(&e) => {
                        self.end_recorded(key, &recorded, Some(grace)).is_ok()
                    }
                    Err(e) => self.retire(key, &recorded, &e),
                }
            }
            None => false,
        };
        let stopped = self.stop_retired(key, grace) || stopped;
        let path = self.manifest_path(key);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(FsError::io("remove", path, e).into()),
        }
        // Removing the lock file while holding it is safe: a process that
        // locked the old file sees it is no longer the one at the path and
        // locks the new one (see `acquire`).
        lock.remove_file(&self.lock_path(key))?;
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

    /// Stops every backend of the pool; returns how many keys had one (or
    /// a retired one) running. Logs go as with [`BackendPool::stop`] unless
    /// `keep_log`.
    pub fn stop_all(&self, grace: Duration, keep_log: bool) -> Result<usize, PoolError> {
        let mut keys: Vec<BackendKey> = self.list()?.into_iter().map(|e| e.key).collect();
        keys.dedup();
        let mut stopped = 0;
        for key in keys {
            if self.stop_with(&key, grace, keep_log)? {
                stopped += 1;
            }
        }
        Ok(stopped)
    }

    /// Ends the retired backends of `key` (SIGTERM, `grace`, SIGKILL, each
    /// proven to be the recorded process first) and removes their records;
    /// the caller holds the key's lock. Returns whether one was running.
    fn stop_retired(&self, key: &BackendKey, grace: Duration) -> bool {
        let prefix = format!("{}.retired-", Self::stem(key));
        let Ok(listing) = fs::read_dir(&self.state_dir) else {
            return false;
        };
        let mut stopped = false;
        for item in listing.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&prefix) || !name.ends_with(".json") {
                continue;
            }
            let path = item.path();
            let Some(parts) = manifest::read_parts(&path) else {
                continue;
            };
            if &parts.key != key {
                continue;
            }
            let recorded = parts.recorded();
            match self.end_recorded(key, &recorded, Some(grace)) {
                Ok(()) => stopped = true,
                Err(why) => log::info!(
                    "not signalling pid {} named by a retired record of {key}: {why}",
                    recorded.daemon.pid
                ),
            }
            if let Err(e) = fs::remove_file(&path) {
                log::warn!("cannot remove {}: {e}", path.display());
            }
        }
        stopped
    }
}

/// The definition a manifest implies: its binary as recorded, allow-listed
/// in the binary's own directory. Enough to verify the backend before
/// stopping it, when the caller has only the key.
fn recorded_definition(key: &BackendKey, daemon: &DaemonProcess) -> ServiceDefinition {
    let root = Path::new(&daemon.exe_path)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    ServiceDefinition {
        service_name: key.service_name().to_owned(),
        binary_path: daemon.exe_path.clone().into(),
        per_version_binary_dir: root,
        isolation: key.instance().isolation(),
        explicit_instance: match key.instance() {
            BrokerInstanceKey::Explicit(name) => name.clone(),
            _ => String::new(),
        },
        ..ServiceDefinition::default()
    }
}

/// Whether a failed verification says only that the backend gave no
/// answer in time (the probe timed out, or its connection could not even
/// be queued): busy or hung, not wrong.
fn no_answer(err: &LaunchError) -> bool {
    match err {
        LaunchError::Probe(ProbeError::Timeout { .. }) => true,
        LaunchError::Probe(ProbeError::Io { source, .. }) => matches!(
            source.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        _ => false,
    }
}

/// Whether a failed verification is the backend's doing: it does not
/// answer, answers wrongly, is not at its endpoint, or is not (or no longer)
/// what was recorded. A failure on our side (the caller's definition, the
/// binary policy, running out of descriptors, the random source) is not, and
/// never leads to a signal. Which process may then be signalled is decided
/// by [`BackendPool::end_recorded`], not here.
fn backend_at_fault(err: &LaunchError) -> bool {
    match err {
        LaunchError::Mismatch { .. } | LaunchError::Stale { .. } => true,
        LaunchError::Probe(ProbeError::Io { source, .. }) => !matches!(
            source.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS)
        ),
        LaunchError::Probe(ProbeError::Host(_)) => false,
        LaunchError::Probe(_) => true,
        _ => false,
    }
}

/// The manifest decoder on its own (for `crate::fuzzing`).
pub fn decode_manifest(bytes: &[u8]) -> Result<(BackendKey, DaemonProcess), ManifestError> {
    manifest::decode(bytes)
}
