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
//!   another program, a changed binary) is replaced by a fresh launch; the
//!   process it named is left alone, since it is not provably ours.
//!
//! Backends end themselves after their idle timeout; the pool then sees a
//! dead pid, which is an ordinary miss.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::binary::{remember_digest, FileStamp};
use super::error::FsError;
use super::fs::{ensure_private_dir, read_bounded, write_atomic, Bounded};
use super::host;
use super::identity::DaemonProcess;
use super::keys::{BackendKey, BrokerInstanceKey};
use super::launcher::{BackendHandle, BackendLauncher, CommandBackendLauncher, LaunchError};
use super::service::ServiceDefinition;
use super::trace::TraceContext;

/// Largest manifest read.
const MAX_MANIFEST_BYTES: u64 = 64 * 1024;
/// Version of the manifest format.
const MANIFEST_VERSION: u32 = 1;

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
}

/// One backend recorded in the pool.
#[derive(Debug, Clone)]
pub struct PoolEntry {
    pub key: BackendKey,
    pub daemon: DaemonProcess,
    /// Whether the recorded process is still running (pidfd check only).
    pub alive: bool,
}

/// An exclusive `flock` on a key's lock file, released on drop.
struct KeyLock {
    _file: File,
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

    fn lock(&self, key: &BackendKey) -> Result<KeyLock, FsError> {
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
            loop {
                match rustix::fs::flock(file.as_fd(), rustix::fs::FlockOperation::LockExclusive) {
                    Ok(()) => break,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(FsError::io("lock", &path, e.into())),
                }
            }
            // The lock counts only if the locked file is still the one at
            // the path.
            let held = file
                .metadata()
                .map_err(|e| FsError::io("stat lock file", &path, e))?;
            match fs::symlink_metadata(&path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(KeyLock { _file: file });
                }
                _ => continue,
            }
        }
    }

    fn read_manifest(&self, key: &BackendKey) -> Option<DaemonProcess> {
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
            Ok(daemon) => Some(daemon),
            Err(reason) => {
                log::warn!("ignoring manifest {}: {reason}", path.display());
                None
            }
        }
    }

    fn write_manifest(&self, key: &BackendKey, handle: &BackendHandle) -> Result<(), FsError> {
        let daemon = handle.daemon();
        let manifest = Manifest {
            manifest_version: MANIFEST_VERSION,
            instance: key.instance().id(),
            service_name: key.service_name().to_owned(),
            service_version: key.service_version().to_owned(),
            daemon: serde_json::from_str(&daemon.to_json()).unwrap_or(serde_json::Value::Null),
            binary_stamp: handle.binary_stamp(),
            launched_by_pid: std::process::id(),
        };
        let text = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
        let name = format!("{}.json", Self::stem(key));
        write_atomic(&self.state_dir, &name, &text).map(|_| ())
    }

    fn adopt(
        &self,
        key: &BackendKey,
        sd: &ServiceDefinition,
        daemon: &DaemonProcess,
        trace: &TraceContext,
    ) -> Option<BackendHandle> {
        match self
            .launcher
            .adopt(key, sd, daemon, trace, self.verify_timeout)
        {
            Ok(handle) => Some(handle),
            Err(e) => {
                log::info!(
                    "manifest of {key} names pid {} which fails verification: {e}",
                    daemon.pid
                );
                None
            }
        }
    }

    /// The verified backend of `key`: the one recorded if it still verifies,
    /// else a new one launched under the key's lock.
    pub fn get_or_launch(
        &self,
        key: &BackendKey,
        sd: &ServiceDefinition,
        trace: &TraceContext,
    ) -> Result<BackendHandle, PoolError> {
        self.ensure_dir()?;
        if let Some(daemon) = self.read_manifest(key) {
            if let Some(handle) = self.adopt(key, sd, &daemon, trace) {
                return Ok(handle);
            }
        }
        let _lock = self.lock(key)?;
        if let Some(daemon) = self.read_manifest(key) {
            if let Some(handle) = self.adopt(key, sd, &daemon, trace) {
                return Ok(handle);
            }
        }
        let handle = self.launcher.launch(key, sd, trace)?;
        if let Err(e) = self.write_manifest(key, &handle) {
            handle.kill();
            return Err(e.into());
        }
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
            let Ok((key, daemon)) = parse_any_manifest(&bytes) else {
                continue;
            };
            let alive = super::reaper::ChildWatch::adopt(daemon.pid).is_ok_and(|w| w.is_alive());
            entries.push(PoolEntry { key, daemon, alive });
        }
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(entries)
    }

    /// Stops the backend of `key` if its manifest still verifies (SIGTERM,
    /// `grace`, SIGKILL) and removes the manifest. Returns whether a backend
    /// was stopped. A process that does not verify is never signalled.
    pub fn stop(&self, key: &BackendKey, grace: Duration) -> Result<bool, PoolError> {
        self.ensure_dir()?;
        let _lock = self.lock(key)?;
        let stopped = match self.read_manifest(key) {
            Some(daemon) => {
                let sd = recorded_definition(key, &daemon);
                match self.adopt(key, &sd, &daemon, &TraceContext::default()) {
                    Some(handle) => {
                        handle.shutdown(grace);
                        true
                    }
                    None => false,
                }
            }
            None => false,
        };
        for path in [self.manifest_path(key), self.lock_path(key)] {
            // Removing the lock file while holding it is safe: a process that
            // locked the old file sees it is no longer the one at the path
            // and locks the new one.
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
    pub fn get(&self, key: &BackendKey, trace: &TraceContext) -> Option<BackendHandle> {
        let daemon = self.read_manifest(key)?;
        let sd = recorded_definition(key, &daemon);
        self.adopt(key, &sd, &daemon, trace)
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

fn parse_any_manifest(bytes: &[u8]) -> Result<(BackendKey, DaemonProcess), String> {
    parse_manifest_parts(bytes).map(|(key, daemon, _)| (key, daemon))
}

fn parse_manifest_parts(
    bytes: &[u8],
) -> Result<(BackendKey, DaemonProcess, Option<FileStamp>), String> {
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
    Ok((key, daemon, manifest.binary_stamp))
}

fn parse_manifest(bytes: &[u8], key: &BackendKey) -> Result<DaemonProcess, String> {
    let (recorded, daemon, stamp) = parse_manifest_parts(bytes)?;
    if &recorded != key {
        return Err(format!("it records {recorded}, not {key}"));
    }
    // Trusted only because the manifest lives in our private directory; a
    // changed file changes its stamp and is hashed again.
    if let Some(stamp) = stamp {
        remember_digest(stamp, daemon.exe_sha256);
    }
    Ok(daemon)
}
