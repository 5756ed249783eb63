//! Garbage collection of what ended backends leave behind: records of
//! backends that are provably gone, lock files nobody uses, temporary files
//! of interrupted writes, log files no process has open, and socket files
//! nothing listens on.
//!
//! Everything it removes lies in this user's private directories (the
//! pool's state directory, the launcher's log and socket directories), is
//! owned by this user, and is older than `min_age` (a file that a launch in
//! progress is still setting up is younger). Records and lock files are
//! removed under the key's lock, taken without waiting: a key that someone
//! holds is in use and left alone. A log file is kept while any process has
//! it open (its backend writes to it) or while a live record names its
//! backend; a socket file is kept unless a connect to it is refused.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::manifest;
use super::mark::recorded_process_gone;
use super::{BackendPool, PoolError};
use crate::contract::error::FsError;
use crate::sys::host;
use crate::sys::keylock as lock;

/// The default `min_age`: a file younger than this may belong to a launch
/// still setting up.
pub const DEFAULT_MIN_AGE: Duration = Duration::from_secs(60);

/// What a garbage collection removed (or, in a dry run, would remove).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Manifests of backends that are provably gone.
    pub records: Vec<PathBuf>,
    /// Lock files of keys with no manifest.
    pub locks: Vec<PathBuf>,
    /// Temporary files of writes that never finished.
    pub temporary: Vec<PathBuf>,
    /// Log files no process has open and no live record names.
    pub logs: Vec<PathBuf>,
    /// Socket files in the socket directory that nothing listens on.
    pub sockets: Vec<PathBuf>,
    /// Bytes the removed files held.
    pub bytes: u64,
}

/// A directory's entries owned by this user, older than `min_age`, with
/// their metadata (symlinks are not followed, and so never count).
fn old_entries(dir: &Path, min_age: Duration) -> Result<Vec<(PathBuf, fs::Metadata)>, FsError> {
    let euid = host::effective_uid();
    let now = SystemTime::now();
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(FsError::io("list", dir, e)),
    };
    let mut found = Vec::new();
    for item in listing.flatten() {
        let path = item.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        if meta.uid() == euid && age >= min_age {
            found.push((path, meta));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

fn extension_is(path: &Path, extension: &str) -> bool {
    path.extension().and_then(|e| e.to_str()) == Some(extension)
}

/// Every file that a process of this user (or any, for root) has open, as
/// `/proc/<pid>/fd` shows it.
fn open_files() -> HashSet<PathBuf> {
    let mut open = HashSet::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return open;
    };
    for process in procs.flatten() {
        let name = process.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = fs::read_link(fd.path()) {
                open.insert(target);
            }
        }
    }
    open
}

impl BackendPool {
    /// Removes (or with `dry_run` only lists) what ended backends left
    /// behind; see the module documentation for the rules. Files younger
    /// than `min_age` are left alone.
    pub fn gc(&self, dry_run: bool, min_age: Duration) -> Result<GcReport, PoolError> {
        let mut report = GcReport::default();
        let remove =
            |path: &Path, meta: &fs::Metadata, into: &mut Vec<PathBuf>, bytes: &mut u64| {
                if !dry_run {
                    match fs::remove_file(path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                        Err(e) => {
                            log::warn!("gc: cannot remove {}: {e}", path.display());
                            return;
                        }
                    }
                }
                *bytes += meta.len();
                into.push(path.to_path_buf());
            };
        let state = old_entries(&self.state_dir, min_age)?;
        let mut live_tokens = Vec::new();
        for (path, meta) in &state {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with('.') && name.ends_with(".tmp") && meta.is_file() {
                remove(path, meta, &mut report.temporary, &mut report.bytes);
                continue;
            }
            if !extension_is(path, "json") || !meta.is_file() {
                continue;
            }
            let Some(parts) = manifest::read_parts(path) else {
                continue;
            };
            if !recorded_process_gone(&parts.daemon, parts.mark.as_ref()) {
                live_tokens.push(parts.daemon.ipc_endpoint.path.clone());
                continue;
            }
            let lock_path = self.lock_path(&parts.key);
            let held = if dry_run {
                None
            } else {
                match lock::try_lock(&lock_path)? {
                    Some(held) => Some(held),
                    None => continue, // in use: someone is launching or stopping it
                }
            };
            // Under the lock, the record must still be the gone one.
            let still = manifest::read_parts(path).is_some_and(|now| now.daemon == parts.daemon);
            if !still {
                continue;
            }
            let recorded = parts.recorded();
            if !dry_run {
                self.remove_dead_endpoint(&recorded);
            }
            remove(path, meta, &mut report.records, &mut report.bytes);
            // A retired record's key may have a live backend of its own:
            // its lock file goes only with its manifest (below).
            if !parts.retired {
                if let Ok(lock_meta) = fs::symlink_metadata(&lock_path) {
                    remove(&lock_path, &lock_meta, &mut report.locks, &mut report.bytes);
                }
            }
            drop(held);
        }
        for (path, meta) in &state {
            if !extension_is(path, "lock") || !meta.is_file() || report.locks.contains(path) {
                continue;
            }
            if fs::symlink_metadata(path.with_extension("json")).is_ok() {
                continue;
            }
            let held = if dry_run {
                None
            } else {
                match lock::try_lock(path)? {
                    Some(held) => Some(held),
                    None => continue,
                }
            };
            if fs::symlink_metadata(path.with_extension("json")).is_err() {
                remove(path, meta, &mut report.locks, &mut report.bytes);
            }
            drop(held);
        }

        // Logs: listed first, so one created after the scan of open files
        // is not even considered.
        let logs: Vec<_> = old_entries(self.launcher.log_dir(), min_age)?
            .into_iter()
            .filter(|(path, meta)| {
                meta.is_file()
                    && (extension_is(path, "log") || path.to_string_lossy().ends_with(".log.1"))
            })
            .collect();
        if !logs.is_empty() {
            let open = open_files();
            for (path, meta) in &logs {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                let named_live = live_tokens.iter().any(|endpoint| {
                    endpoint
                        .rsplit_once("-be-")
                        .and_then(|(_, t)| t.strip_suffix(".sock"))
                        .is_some_and(|token| name.contains(token))
                });
                let canonical = fs::canonicalize(path).unwrap_or_else(|_| path.clone());
                if named_live || open.contains(&canonical) {
                    continue;
                }
                remove(path, meta, &mut report.logs, &mut report.bytes);
            }
        }

        for (path, meta) in old_entries(self.launcher.socket_dir(), min_age)? {
            if !meta.file_type().is_socket() {
                continue;
            }
            match UnixStream::connect(&path) {
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    remove(&path, &meta, &mut report.sockets, &mut report.bytes);
                }
                _ => {}
            }
        }
        Ok(report)
    }
}
