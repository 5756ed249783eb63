//! The lock protocol of a key (a pool key, a fixed endpoint): who launches, and how the others wait.
//!
//! Each key has a lock file (beside a pool manifest, or beside a fixed
//! endpoint). The launcher of a key holds
//! its exclusive lock while it launches and records the backend. The
//! exclusive lock counts only if, once held, the locked file is still the
//! one at the path: the file may be removed by its holder (a stop, or a
//! failed launch that recorded nothing); a process that locked the removed
//! inode sees that and opens the path again (creating a new file), so two
//! processes can never both believe they hold the key's lock.
//!
//! Waiters do not queue for the exclusive lock one after the other: they
//! block on a shared lock, which every waiter obtains at once when the
//! holder releases the exclusive one, and then read (and verify) what the
//! holder recorded in parallel. A shared wait on a removed inode is
//! harmless: it only tells that the holder is done.

//!
//! Every wait is bounded. A holder that dies releases the lock by dying; a
//! holder that is stopped (SIGSTOP, Ctrl-Z, a debugger) would hold it for
//! ever, so once it has been seen stopped for [`STOPPED_GRACE`] the waiter
//! takes the key over: it removes the lock file (if it is still the one the
//! stopped process holds) and locks a new one at the path. A stopped holder
//! that is resumed later removes only its own lock file, never the new one.
//! A holder that is running but does not let go within the wait's limit is
//! reported, by pid and state, as [`LockError::Busy`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::contract::error::FsError;
use crate::sys::fs::{LockFile, LockMode, Locked};
use crate::sys::proc;

/// How long a holder must be seen stopped before a waiter takes over.
pub const STOPPED_GRACE: Duration = Duration::from_secs(2);

/// How often a waiter looks at the holder while it waits.
const HOLDER_CHECK: Duration = Duration::from_millis(250);

/// An exclusive lock on a key's lock file, released on drop.
#[derive(Debug)]
pub struct KeyLock {
    _file: LockFile,
}

impl KeyLock {
    /// Removes the lock file at `path` if it is still the one this lock
    /// holds (see [`LockFile::remove_if_at`]).
    pub fn remove_file(&self, path: &Path) -> Result<(), FsError> {
        self._file
            .remove_if_at(path)
            .map(drop)
            .map_err(|e| FsError::io("remove lock file", path, e))
    }
}

/// The process holding a key's lock, as far as the system tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    /// Its state letter in `/proc/<pid>/stat` (`R`, `S`, `D`, `T`, ...).
    pub state: Option<char>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.pid, self.state) {
            (Some(pid), Some('T' | 't')) => write!(f, "pid {pid} (stopped)"),
            (Some(pid), Some('D')) => write!(f, "pid {pid} (in uninterruptible sleep)"),
            (Some(pid), Some(state)) => write!(f, "pid {pid} (state {state})"),
            (Some(pid), None) => write!(f, "pid {pid}"),
            (None, _) => write!(f, "a process /proc/locks does not name"),
        }
    }
}

/// Why a key's lock was not obtained.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(transparent)]
    Fs(#[from] FsError),
    /// Still held when the wait's limit ran out.
    #[error("the key's lock {path} is still held after {waited:?} by {holder}")]
    Busy {
        path: PathBuf,
        waited: Duration,
        holder: Holder,
    },
}

/// What an attempt at a key's lock came to.
#[derive(Debug)]
pub enum Acquired {
    /// The exclusive lock is ours.
    Locked(KeyLock),
    /// Another process held it; we waited (in shared mode, with every other
    /// waiter) until it released it, and hold nothing now.
    Waited,
}

/// Blocks until the exclusive lock of the lock file at `path` is ours, or
/// `limit` has passed.
pub fn lock(path: &Path, limit: Duration) -> Result<KeyLock, LockError> {
    let deadline = Instant::now() + limit;
    loop {
        if let Acquired::Locked(lock) = acquire_until(path, false, deadline)? {
            return Ok(lock);
        }
    }
}

/// The exclusive lock of the lock file at `path` if it is free now; None if
/// another process holds it (nobody waits here).
pub fn try_lock(path: &Path) -> Result<Option<KeyLock>, FsError> {
    let file = LockFile::open(path).map_err(|e| FsError::io("open lock file", path, e))?;
    match file
        .lock(LockMode::TryExclusive)
        .map_err(|e| FsError::io("lock", path, e))?
    {
        Locked::WouldBlock => Ok(None),
        Locked::Yes => Ok(file
            .is_at(path)
            .map_err(|e| FsError::io("stat lock file", path, e))?
            .then_some(KeyLock { _file: file })),
    }
}

/// One attempt at the exclusive lock of the lock file at `path`. With
/// `wait_shared`, a lock held by another process is not queued for: we
/// wait for a shared lock instead, release it as soon as we have it and
/// return [`Acquired::Waited`]. Without it, waits for the exclusive lock.
/// No wait lasts past `limit`.
pub fn acquire(path: &Path, wait_shared: bool, limit: Duration) -> Result<Acquired, LockError> {
    acquire_until(path, wait_shared, Instant::now() + limit)
}

fn acquire_until(path: &Path, wait_shared: bool, deadline: Instant) -> Result<Acquired, LockError> {
    let started = Instant::now();
    loop {
        let file = LockFile::open(path).map_err(|e| FsError::io("open lock file", path, e))?;
        let locked = file
            .lock(LockMode::TryExclusive)
            .map_err(|e| FsError::io("lock", path, e))?;
        if locked == Locked::WouldBlock {
            match wait_for(&file, path, wait_shared, started, deadline)? {
                Waited::TookOver => continue,
                Waited::Got if wait_shared => {
                    // Released by the close as well; explicit for clarity.
                    file.unlock();
                    return Ok(Acquired::Waited);
                }
                Waited::Got => {}
            }
        }
        if file
            .is_at(path)
            .map_err(|e| FsError::io("stat lock file", path, e))?
        {
            return Ok(Acquired::Locked(KeyLock { _file: file }));
        }
    }
}

enum Waited {
    /// The lock (shared or exclusive, as asked) is ours now.
    Got,
    /// The holder was stopped; its lock file is gone from the path, and the
    /// caller starts over with a new one.
    TookOver,
}

/// Waits for the lock held by another, looking at the holder every
/// [`HOLDER_CHECK`]: one seen stopped for [`STOPPED_GRACE`] loses the key.
fn wait_for(
    file: &LockFile,
    path: &Path,
    shared: bool,
    started: Instant,
    deadline: Instant,
) -> Result<Waited, LockError> {
    let mut stopped_since: Option<Instant> = None;
    loop {
        let slice = (Instant::now() + HOLDER_CHECK).min(deadline);
        let got = file
            .lock_until(path, shared, slice)
            .map_err(|e| FsError::io("lock", path, e))?;
        if got == Locked::Yes {
            return Ok(Waited::Got);
        }
        let now = Instant::now();
        let pid = file.holder();
        let state = pid
            .and_then(|pid| proc::stat(pid).ok())
            .map(|s| s.state as char);
        let holder = Holder { pid, state };
        if matches!(state, Some('T' | 't')) {
            let since = *stopped_since.get_or_insert(now);
            if now.duration_since(since) >= STOPPED_GRACE {
                log::warn!(
                    "the lock {} is held by {holder} for {:?}: taking the key over",
                    path.display(),
                    now.duration_since(since)
                );
                file.remove_if_at(path)
                    .map_err(|e| FsError::io("remove lock file", path, e))?;
                return Ok(Waited::TookOver);
            }
        } else {
            stopped_since = None;
        }
        if now >= deadline {
            return Err(LockError::Busy {
                path: path.to_path_buf(),
                waited: now.duration_since(started),
                holder,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private_dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    /// A limit that only a hang reaches.
    const LIMIT: Duration = Duration::from_secs(120);

    #[test]
    fn the_exclusive_lock_is_free_again_after_drop() {
        let dir = private_dir();
        let path = dir.path().join("k.lock");
        let held = lock(&path, LIMIT).unwrap();
        drop(held);
        assert!(matches!(
            acquire(&path, true, LIMIT).unwrap(),
            Acquired::Locked(_)
        ));
    }

    #[test]
    fn a_held_lock_makes_others_wait_in_shared_mode() {
        let dir = private_dir();
        let path = dir.path().join("k.lock");
        let held = lock(&path, LIMIT).unwrap();
        // flock conflicts between open file descriptions, so a second open
        // in this process stands for another process.
        let other = LockFile::open(&path).unwrap();
        assert_eq!(
            other.lock(LockMode::TryExclusive).unwrap(),
            Locked::WouldBlock
        );
        drop(held);
        let deadline = Instant::now() + LIMIT;
        assert_eq!(
            other.lock_until(&path, true, deadline).unwrap(),
            Locked::Yes
        );
        other.unlock();
        assert!(matches!(
            acquire(&path, true, LIMIT).unwrap(),
            Acquired::Locked(_)
        ));
    }

    /// Waits until this process watches the file with inode `ino` for
    /// closes (an inotify watch listed in `/proc/self/fdinfo`): a waiter
    /// has found the lock held and is waiting for its release.
    fn wait_for_blocked_lock_on(ino: u64) {
        let deadline = Instant::now() + LIMIT;
        let wanted = format!("ino:{ino:x} ");
        loop {
            let watched = std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .flatten()
                .any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|t| t.to_string_lossy() == "anon_inode:inotify")
                        && std::fs::read_to_string(format!(
                            "/proc/self/fdinfo/{}",
                            fd.file_name().to_string_lossy()
                        ))
                        .is_ok_and(|info| info.contains(&wanted))
                });
            if watched {
                return;
            }
            assert!(Instant::now() < deadline, "nobody waited on the lock");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn inode(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn a_waiter_in_shared_mode_is_told_when_the_holder_is_done() {
        let dir = private_dir();
        let path = dir.path().join("k.lock");
        let held = lock(&path, LIMIT).unwrap();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || acquire(&path, true, LIMIT).unwrap())
        };
        wait_for_blocked_lock_on(inode(&path));
        drop(held);
        assert!(matches!(waiter.join().unwrap(), Acquired::Waited));
    }

    #[test]
    fn a_lock_won_on_a_removed_file_is_given_up_for_the_file_at_the_path() {
        let dir = private_dir();
        let path = dir.path().join("k.lock");
        let held = lock(&path, LIMIT).unwrap();
        let old = inode(&path);
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || lock(&path, LIMIT).unwrap())
        };
        // The waiter is blocked on the old file; the holder removes it (as a
        // stop or a failed launch does) and releases it.
        wait_for_blocked_lock_on(old);
        std::fs::remove_file(&path).unwrap();
        drop(held);
        let won = waiter.join().unwrap();
        // It holds the lock of the new file at the path, not of the old one.
        assert!(won._file.is_at(&path).unwrap());
        let other = LockFile::open(&path).unwrap();
        assert_eq!(
            other.lock(LockMode::TryExclusive).unwrap(),
            Locked::WouldBlock
        );
    }

    #[test]
    fn a_symlink_at_the_lock_path_is_refused() {
        let dir = private_dir();
        let target = dir.path().join("elsewhere");
        let path = dir.path().join("k.lock");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(lock(&path, LIMIT).is_err());
        assert!(!target.exists());
    }

    #[test]
    fn a_holder_that_keeps_it_past_the_limit_is_named() {
        let dir = private_dir();
        let path = dir.path().join("k.lock");
        let _held = lock(&path, LIMIT).unwrap();
        let err = lock(&path, Duration::from_millis(300)).unwrap_err();
        match err {
            LockError::Busy {
                path: p,
                waited,
                holder,
            } => {
                assert_eq!(p, path);
                assert!(waited >= Duration::from_millis(300));
                // flock holders are listed by the process that took them.
                assert_eq!(holder.pid, Some(std::process::id()));
                assert!(holder.state.is_some());
                assert!(err_text(&holder).starts_with(&format!("pid {}", std::process::id())));
            }
            other => panic!("{other:?}"),
        }
    }

    fn err_text(holder: &Holder) -> String {
        holder.to_string()
    }

    #[test]
    fn a_holder_that_lost_the_key_never_removes_the_new_lock_file() {
        let dir = private_dir();
        let path = dir.path().join("k.lock");
        let old = lock(&path, LIMIT).unwrap();
        // Taken over: the old file is removed and a new one locked.
        std::fs::remove_file(&path).unwrap();
        let new = lock(&path, LIMIT).unwrap();
        old.remove_file(&path).unwrap();
        assert!(path.exists(), "the new holder's lock file was removed");
        new.remove_file(&path).unwrap();
        assert!(!path.exists());
    }
}
