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

use std::path::Path;

use crate::contract::error::FsError;
use crate::sys::fs::{LockFile, LockMode, Locked};

/// An exclusive lock on a key's lock file, released on drop.
#[derive(Debug)]
pub struct KeyLock {
    _file: LockFile,
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

/// Blocks until the exclusive lock of the lock file at `path` is ours.
pub fn lock(path: &Path) -> Result<KeyLock, FsError> {
    loop {
        if let Acquired::Locked(lock) = acquire(path, false)? {
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
/// block on a shared lock instead, release it as soon as we have it and
/// return [`Acquired::Waited`]. Without it, blocks for the exclusive lock.
pub fn acquire(path: &Path, wait_shared: bool) -> Result<Acquired, FsError> {
    let mode = if wait_shared {
        LockMode::TryExclusive
    } else {
        LockMode::Exclusive
    };
    loop {
        let file = LockFile::open(path).map_err(|e| FsError::io("open lock file", path, e))?;
        match file.lock(mode).map_err(|e| FsError::io("lock", path, e))? {
            Locked::Yes => {}
            Locked::WouldBlock => {
                file.lock(LockMode::Shared)
                    .map_err(|e| FsError::io("lock", path, e))?;
                // Released by the close as well; explicit for clarity.
                file.unlock();
                return Ok(Acquired::Waited);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn private_dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn the_exclusive_lock_is_free_again_after_drop() {
        let dir = private_dir();
        let path = dir.path().join("k.lock");
        let held = lock(&path).unwrap();
        drop(held);
        assert!(matches!(acquire(&path, true).unwrap(), Acquired::Locked(_)));
    }

    #[test]
    fn a_held_lock_makes_others_wait_in_shared_mode() {
        let dir = private_dir();
        let path = dir.path().join("k.lock");
        let held = lock(&path).unwrap();
        // flock conflicts between open file descriptions, so a second open
        // in this process stands for another process.
        let other = LockFile::open(&path).unwrap();
        assert_eq!(
            other.lock(LockMode::TryExclusive).unwrap(),
            Locked::WouldBlock
        );
        drop(held);
        assert_eq!(other.lock(LockMode::Shared).unwrap(), Locked::Yes);
        other.unlock();
        assert!(matches!(acquire(&path, true).unwrap(), Acquired::Locked(_)));
    }

    /// Waits until some process is blocked on a lock of the file with
    /// inode `ino` (a `->` line of `/proc/locks`).
    fn wait_for_blocked_lock_on(ino: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let suffix = format!(":{ino} ");
        loop {
            let locks = std::fs::read_to_string("/proc/locks").unwrap();
            if locks.lines().any(|l| {
                l.contains("->")
                    && l.split_whitespace()
                        .nth(6)
                        .is_some_and(|f| format!("{f} ").ends_with(&suffix))
            }) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "nobody blocked on the lock"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
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
        let held = lock(&path).unwrap();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || acquire(&path, true).unwrap())
        };
        wait_for_blocked_lock_on(inode(&path));
        drop(held);
        assert!(matches!(waiter.join().unwrap(), Acquired::Waited));
    }

    #[test]
    fn a_lock_won_on_a_removed_file_is_given_up_for_the_file_at_the_path() {
        let dir = private_dir();
        let path = dir.path().join("k.lock");
        let held = lock(&path).unwrap();
        let old = inode(&path);
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || lock(&path).unwrap())
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
        assert!(lock(&path).is_err());
        assert!(!target.exists());
    }
}
