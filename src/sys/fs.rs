//! Private directories and atomic files.
//!
//! Every directory the broker keeps secrets in (sockets, service definitions,
//! and later state and logs) goes through [`ensure_private_dir`]: it is created
//! with mode 0700 when missing, and when it already exists it must be a real
//! directory (not a symlink), owned by the effective user, with no group or
//! other permission bits. A directory that fails is refused, never repaired: a
//! directory pre-created by someone else is an attack, not a convenience.
//!
//! Files are written with [`write_atomic`] (temporary file, fsync, rename,
//! fsync of the directory) so a reader sees the old content or the new, never
//! a torn write, and a failed write leaves no temporary file behind.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use crate::contract::clock;
use crate::contract::error::FsError;
use crate::sys::host;

/// Permission bits of a private directory.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Permission bits of a private file.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

fn insecure(path: &Path, reason: String) -> FsError {
    FsError::InsecureDirectory {
        path: path.to_path_buf(),
        reason,
    }
}

/// Checks that `path` is a private directory of the effective user: a real
/// directory (symlinks are not followed), owned by the effective uid, with
/// `mode & 0o077 == 0`.
pub fn check_private_dir(path: &Path) -> Result<(), FsError> {
    let meta = fs::symlink_metadata(path).map_err(|e| FsError::io("inspect", path, e))?;
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        return Err(insecure(
            path,
            "is a symbolic link; a private directory must be a real directory".to_owned(),
        ));
    }
    if !file_type.is_dir() {
        return Err(insecure(path, "is not a directory".to_owned()));
    }
    let euid = host::effective_uid();
    if meta.uid() != euid {
        return Err(insecure(
            path,
            format!(
                "is owned by uid {}, not by this user (uid {euid})",
                meta.uid()
            ),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(insecure(
            path,
            format!("has mode {mode:04o}, which gives group or other access; it must be 0700"),
        ));
    }
    Ok(())
}

/// Checks the directory a private tree hangs from: it must be a directory
/// owned by this user or root, and if group or other can write to it, it must
/// carry the sticky bit (as `/tmp` does), so nobody else can rename our
/// entries in it.
fn check_trusted_base(base: &Path) -> Result<(), FsError> {
    check_links_on(base)?;
    let meta = fs::metadata(base).map_err(|e| FsError::io("inspect", base, e))?;
    if !meta.is_dir() {
        return Err(insecure(base, "is not a directory".to_owned()));
    }
    let euid = host::effective_uid();
    if meta.uid() != euid && meta.uid() != 0 {
        return Err(insecure(
            base,
            format!(
                "is owned by uid {}, neither this user (uid {euid}) nor root",
                meta.uid()
            ),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(insecure(
            base,
            format!("has mode {mode:04o}: writable by others without the sticky bit"),
        ));
    }
    Ok(())
}

/// Every symbolic link on the way to `path` must belong to this user or
/// root: another user can re-point a link of theirs at any time, moving
/// whatever hangs from it to a place of their choosing.
fn check_links_on(path: &Path) -> Result<(), FsError> {
    let euid = host::effective_uid();
    let mut prefix = PathBuf::new();
    for component in path.components() {
        prefix.push(component);
        let Ok(meta) = fs::symlink_metadata(&prefix) else {
            continue;
        };
        if meta.file_type().is_symlink() && meta.uid() != euid && meta.uid() != 0 {
            return Err(insecure(
                &prefix,
                format!(
                    "is a symbolic link owned by uid {}, neither this user (uid {euid}) nor root; \
                     its owner can re-point it",
                    meta.uid()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks a canonical directory and every directory above it the way a
/// binary's directories are checked: each owned by this user or root, and
/// none writable by group or other unless it carries the sticky bit. Files
/// found under such a path can be replaced only by this user or root.
pub fn check_trusted_dir_chain(dir: &Path) -> Result<(), FsError> {
    for ancestor in dir.ancestors() {
        check_trusted_base(ancestor)?;
    }
    Ok(())
}

/// Why a file may not be trusted (owned by someone other than this user or
/// root, or writable by group or other), or `None`.
pub fn untrusted_file_reason(meta: &fs::Metadata) -> Option<String> {
    let euid = host::effective_uid();
    if meta.uid() != euid && meta.uid() != 0 {
        return Some(format!(
            "is owned by uid {}, neither this user (uid {euid}) nor root",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    (mode & 0o022 != 0).then(|| format!("has mode {mode:04o}: writable by group or other"))
}

fn make_dir(path: &Path) -> Result<bool, FsError> {
    match DirBuilder::new().mode(PRIVATE_DIR_MODE).create(path) {
        Ok(()) => {
            log::info!("created private directory {}", path.display());
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(FsError::io("create directory", path, e)),
    }
}

/// Makes sure `path` is a private directory, creating what is missing.
///
/// `base` is the directory the private tree hangs from (for the socket
/// directory, `$XDG_RUNTIME_DIR` or `/tmp`); it defaults to the parent of
/// `path`. Missing directories up to and including `base` are created 0700;
/// `base` must then pass the trusted-base check, and every component below it
/// is created 0700 if missing and must pass [`check_private_dir`].
pub fn ensure_private_dir(path: &Path, base: Option<&Path>) -> Result<(), FsError> {
    walk_private_tree(path, base, Walk::Create).map(|_| ())
}

/// What [`ensure_private_dir`] would do, without doing it: the same checks
/// of every directory that exists, from the base down, and the list of
/// directories it would create. An error is the one a launch would get.
pub fn inspect_private_dir(path: &Path, base: Option<&Path>) -> Result<Vec<PathBuf>, FsError> {
    walk_private_tree(path, base, Walk::DryRun)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Walk {
    Create,
    DryRun,
}

/// The one walk behind [`ensure_private_dir`] and [`inspect_private_dir`];
/// returns the directories that were (or would be) created.
fn walk_private_tree(
    path: &Path,
    base: Option<&Path>,
    walk: Walk,
) -> Result<Vec<PathBuf>, FsError> {
    if !path.is_absolute() {
        return Err(insecure(path, "is not an absolute path".to_owned()));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(insecure(path, "contains '.' or '..' components".to_owned()));
    }
    let base = match base {
        Some(base) => base.to_path_buf(),
        None => path
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
    };
    let below = path.strip_prefix(&base).map_err(|_| {
        insecure(
            path,
            format!("is not inside its base directory {}", base.display()),
        )
    })?;
    let mut created = Vec::new();
    if !base.exists() {
        created.push(base.clone());
        if walk == Walk::DryRun {
            created.extend(below.components().scan(base.clone(), |dir, c| {
                dir.push(c);
                Some(dir.clone())
            }));
            return Ok(created);
        }
        DirBuilder::new()
            .mode(PRIVATE_DIR_MODE)
            .recursive(true)
            .create(&base)
            .map_err(|e| FsError::io("create directory", &base, e))?;
    }
    check_trusted_base(&base)?;
    let mut current = base;
    let mut missing = false;
    for component in below.components() {
        current.push(component);
        if walk == Walk::DryRun {
            missing = missing
                || fs::symlink_metadata(&current)
                    .is_err_and(|e| e.kind() == io::ErrorKind::NotFound);
            if missing {
                created.push(current.clone());
                continue;
            }
        } else if make_dir(&current)? {
            created.push(current.clone());
        }
        check_private_dir(&current)?;
    }
    Ok(created)
}

/// Writes `bytes` to `dir/file_name` atomically with mode 0600.
pub fn write_atomic(dir: &Path, file_name: &str, bytes: &[u8]) -> Result<PathBuf, FsError> {
    let target = dir.join(file_name);
    let mut token = [0u8; 8];
    clock::fill_random(&mut token).map_err(|e| {
        FsError::io(
            "create temporary file in",
            dir,
            io::Error::other(e.to_string()),
        )
    })?;
    let temp = dir.join(format!(".{file_name}.{}.tmp", hex::encode(token)));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE_FILE_MODE)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&temp)
            .map_err(|e| FsError::io("create", &temp, e))?;
        // The mode given to open() is filtered by the umask; make it exact.
        file.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE_MODE))
            .map_err(|e| FsError::io("chmod", &temp, e))?;
        file.write_all(bytes)
            .map_err(|e| FsError::io("write", &temp, e))?;
        file.sync_all()
            .map_err(|e| FsError::io("fsync", &temp, e))?;
        fs::rename(&temp, &target).map_err(|e| FsError::io("rename into place", &target, e))
    })();
    if let Err(err) = result {
        let _ = fs::remove_file(&temp);
        return Err(err);
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FsError::io("fsync directory", dir, e))?;
    Ok(target)
}

/// Outcome of [`read_bounded`] for a file that is over the limit.
pub enum Bounded {
    Read(Vec<u8>),
    TooLarge(u64),
}

/// Reads a regular file (symlinks refused) of at most `limit` bytes, checking
/// the size before reading so an oversized file costs no memory. The open is
/// non-blocking, so a FIFO at the path is refused as not a regular file
/// instead of waiting for a writer forever (non-blocking has no effect on
/// reading a regular file).
pub fn read_bounded(path: &Path, limit: u64) -> Result<Bounded, io::Error> {
    let (file, meta) = open_regular(path)?;
    read_open_bounded(file, &meta, limit)
}

/// Opens a regular file for reading the way [`read_bounded`] does (no
/// symlink followed, a FIFO refused) and returns it with its metadata, so a
/// caller can judge the file it will read, not the name.
pub fn open_regular(path: &Path) -> Result<(File, fs::Metadata), io::Error> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok((file, meta))
}

/// Reads a file opened by [`open_regular`], never past `limit`.
pub fn read_open_bounded(
    file: File,
    meta: &fs::Metadata,
    limit: u64,
) -> Result<Bounded, io::Error> {
    if meta.len() > limit {
        return Ok(Bounded::TooLarge(meta.len()));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    // Never read past the limit even if the file grows under us.
    file.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Ok(Bounded::TooLarge(buf.len() as u64));
    }
    Ok(Bounded::Read(buf))
}

/// Creates a new file (never an existing one, never through a symlink),
/// mode 0600, for appending; not inherited by children.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC).bits() as i32)
        .open(path)
}

/// A lock file, opened (created 0600 if missing, symlinks refused) and
/// locked with `flock`: advisory, released when the file is closed, so a
/// holder that dies releases it.
#[derive(Debug)]
pub struct LockFile {
    file: File,
}

/// How [`LockFile::lock`] locks (waits go through
/// [`LockFile::lock_until`], which bounds them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// The exclusive lock if free now, else [`Locked::WouldBlock`].
    TryExclusive,
}

/// What [`LockFile::lock`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locked {
    Yes,
    WouldBlock,
}

impl LockFile {
    /// Opens (or creates) the lock file at `path`, without locking it.
    pub fn open(path: &Path) -> io::Result<LockFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(PRIVATE_FILE_MODE)
            .custom_flags(
                (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC).bits() as i32,
            )
            .open(path)?;
        Ok(LockFile { file })
    }

    /// Locks the file without waiting.
    pub fn lock(&self, mode: LockMode) -> io::Result<Locked> {
        use rustix::fs::FlockOperation as Op;
        let op = match mode {
            LockMode::TryExclusive => Op::NonBlockingLockExclusive,
        };
        loop {
            match rustix::fs::flock(&self.file, op) {
                Ok(()) => return Ok(Locked::Yes),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::WOULDBLOCK) if mode == LockMode::TryExclusive => {
                    return Ok(Locked::WouldBlock)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits for the lock (shared or exclusive) until `deadline`; returns
    /// [`Locked::WouldBlock`] if it is still held by another then. The
    /// wait is woken by every close of the file at `path` (an inotify
    /// watch: a holder releases the lock by closing it, or by dying), and
    /// at least every 100 ms in case an event was missed; without inotify
    /// (its per-user limits reached) it polls, backing off to 10 ms.
    pub fn lock_until(&self, path: &Path, shared: bool, deadline: Instant) -> io::Result<Locked> {
        use rustix::fs::inotify;
        use rustix::fs::FlockOperation as Op;
        let op = if shared {
            Op::NonBlockingLockShared
        } else {
            Op::NonBlockingLockExclusive
        };
        let try_lock = || loop {
            match rustix::fs::flock(&self.file, op) {
                Ok(()) => return Ok(true),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::WOULDBLOCK) => return Ok(false),
                Err(e) => return Err(io::Error::from(e)),
            }
        };
        if try_lock()? {
            return Ok(Locked::Yes);
        }
        let watch = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
            .ok()
            .filter(|fd| {
                inotify::add_watch(
                    fd,
                    path,
                    inotify::WatchFlags::CLOSE | inotify::WatchFlags::DELETE_SELF,
                )
                .is_ok()
            });
        let mut backoff = Duration::from_millis(1);
        loop {
            // Checked after the watch exists, so a release in between wakes us.
            if try_lock()? {
                return Ok(Locked::Yes);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Locked::WouldBlock);
            }
            let left = deadline - now;
            match &watch {
                Some(fd) => {
                    let slice = left.min(Duration::from_millis(100));
                    let timeout = rustix::time::Timespec {
                        tv_sec: slice.as_secs() as _,
                        tv_nsec: slice.subsec_nanos() as _,
                    };
                    let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
                    match rustix::event::poll(&mut fds, Some(&timeout)) {
                        Ok(_) | Err(rustix::io::Errno::INTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                    // Drain the events; what they were does not matter.
                    let mut buf = [0u8; 1024];
                    while rustix::io::read(fd, &mut buf).is_ok_and(|n| n > 0) {}
                }
                None => {
                    std::thread::sleep(left.min(backoff));
                    backoff = (backoff * 2).min(Duration::from_millis(10));
                }
            }
        }
    }

    /// The process holding an exclusive `flock` on this file, as
    /// `/proc/locks` tells (the pid that took it), if any.
    pub fn holder(&self) -> Option<u32> {
        let meta = self.file.metadata().ok()?;
        let dev = meta.dev();
        let wanted = format!(
            "{:02x}:{:02x}:{}",
            libc::major(dev),
            libc::minor(dev),
            meta.ino()
        );
        let locks = fs::read_to_string("/proc/locks").ok()?;
        locks.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // "1: FLOCK ADVISORY WRITE 1234 08:02:131 0 EOF"; a waiter's
            // line has "->" after the number.
            if fields.get(1) != Some(&"FLOCK") || fields.get(3) != Some(&"WRITE") {
                return None;
            }
            (fields.get(5) == Some(&wanted.as_str())).then(|| fields.get(4)?.parse().ok())?
        })
    }

    /// Removes the file at `path` only if it is still this file, so a
    /// holder that was stopped while another took the key over never
    /// removes the new lock file.
    pub fn remove_if_at(&self, path: &Path) -> io::Result<bool> {
        if !self.is_at(path)? {
            return Ok(false);
        }
        match fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Releases the lock (closing the file releases it too).
    pub fn unlock(&self) {
        let _ = rustix::fs::flock(&self.file, rustix::fs::FlockOperation::Unlock);
    }

    /// Whether the file at `path` is still this file (same device and
    /// inode): a lock on a file that was removed or replaced meanwhile
    /// guards nothing.
    pub fn is_at(&self, path: &Path) -> io::Result<bool> {
        let held = self.file.metadata()?;
        Ok(match fs::symlink_metadata(path) {
            Ok(now) => now.dev() == held.dev() && now.ino() == held.ino(),
            Err(_) => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dry_run_judges_like_the_real_walk_and_creates_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("base");
        let leaf = base.join("a").join("b");
        assert_eq!(
            inspect_private_dir(&leaf, Some(&base)).unwrap(),
            vec![base.clone(), base.join("a"), leaf.clone()]
        );
        assert!(!base.exists());
        ensure_private_dir(&base.join("a"), Some(&base)).unwrap();
        assert_eq!(
            inspect_private_dir(&leaf, Some(&base)).unwrap(),
            vec![leaf.clone()]
        );
        std::fs::set_permissions(base.join("a"), fs::Permissions::from_mode(0o755)).unwrap();
        let dry = inspect_private_dir(&leaf, Some(&base)).unwrap_err();
        let real = ensure_private_dir(&leaf, Some(&base)).unwrap_err();
        assert_eq!(dry.to_string(), real.to_string());
        assert!(matches!(dry, FsError::InsecureDirectory { .. }));
        assert!(!leaf.exists());
    }

    #[test]
    fn creates_private_tree_and_refuses_loose_one() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        fs::set_permissions(base, fs::Permissions::from_mode(0o700)).unwrap();
        let dir = base.join("a").join("b");
        ensure_private_dir(&dir, Some(base)).unwrap();
        for p in [base.join("a"), dir.clone()] {
            assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o700);
        }
        ensure_private_dir(&dir, Some(base)).unwrap();

        fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
        let err = ensure_private_dir(&dir, Some(base)).unwrap_err();
        assert!(matches!(err, FsError::InsecureDirectory { .. }), "{err}");
    }

    #[test]
    fn refuses_symlinked_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        fs::create_dir(&real).unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o700)).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = ensure_private_dir(&link, None).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn atomic_write_leaves_only_the_target() {
        let tmp = tempfile::tempdir().unwrap();
        let path = write_atomic(tmp.path(), "x.bin", b"hello").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.bin")]);
    }

    #[test]
    fn read_bounded_refuses_big_files_without_reading() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("big");
        fs::write(&path, vec![0u8; 100]).unwrap();
        assert!(matches!(
            read_bounded(&path, 99).unwrap(),
            Bounded::TooLarge(100)
        ));
        assert!(matches!(read_bounded(&path, 100).unwrap(), Bounded::Read(v) if v.len() == 100));
    }
}
