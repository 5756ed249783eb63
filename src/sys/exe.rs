//! The backend executable: allow-list check, open once, hash once, and what
//! the kernel will actually run (`#!` scripts).
//!
//! [`open_backend`] canonicalizes the binary and its allow-list root (symlinks
//! and `..` resolved), requires the binary inside the root, opens it, checks
//! that the opened file is the canonical one (a component swapped between the
//! two steps is caught), that it is a regular executable file that neither
//! group nor other can write, that the root is not writable by group or
//! other either, and that every directory on the way from `/` is owned by
//! this user or root and, if others can write to it, sticky
//! ([`check_trusted_path`]; the same holds for a script's interpreter). It then hashes the open descriptor, reusing a cached digest
//! when device, inode, size, mtime and ctime are unchanged: ctime cannot be set
//! by users and moves on every write, so an unchanged stamp means unchanged
//! content.
//!
//! For a `#!` script the identity is the script's (path and hash), and
//! [`ScriptInterpreter`] says which executable `/proc/<pid>/exe` must show:
//! the interpreter as the kernel resolves it, or for `/usr/bin/env NAME` the
//! first `NAME` on the launch `PATH`.

use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::contract::stamp::FileStamp;
use crate::sys::digest::{cached_digests, Digests, Need};
use crate::sys::proc::own_fd_path as fd_path;

impl FileStamp {
    /// The stamp of a file as `stat` reports it.
    pub fn of(meta: &Metadata) -> Self {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// Why a backend executable was refused.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("binary_path is empty")]
    EmptyBinaryPath,
    #[error("per_version_binary_dir is empty")]
    EmptyPerVersionBinaryDir,
    #[error("cannot canonicalize binary {path}: {source}")]
    CanonicalizeBinary {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot canonicalize allow-list root {path}: {source}")]
    CanonicalizeBinaryRoot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("binary {binary} is outside its allow-list root {root}")]
    BinaryOutsideAllowRoot { binary: PathBuf, root: PathBuf },
    #[error("binary {path} cannot be used: {reason}")]
    NotExecutable { path: PathBuf, reason: String },
    #[error("{path} is writable by group or other (mode {mode:04o}); refusing to run it")]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("script {path} names interpreter {interpreter:?}: {reason}")]
    BadInterpreter {
        path: PathBuf,
        interpreter: String,
        reason: String,
    },
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The interpreter of a `#!` script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptInterpreter {
    /// The canonical executable `/proc/<pid>/exe` will show.
    pub exe: PathBuf,
    /// The `#!` line's interpreter path as written.
    pub declared: String,
    /// Where the script's `/dev/fd/N` stands on the command line of the
    /// process the kernel starts: `interpreter /dev/fd/N` (1), or
    /// `interpreter ARG /dev/fd/N` (2) when the `#!` line has an argument;
    /// `/usr/bin/env NAME` runs `NAME /dev/fd/N` (1).
    pub script_arg_index: usize,
}

/// An opened, checked and hashed backend executable.
#[derive(Debug)]
pub struct BackendBinary {
    pub file: File,
    pub canonical: PathBuf,
    pub stamp: FileStamp,
    /// Its digests: BLAKE3, and SHA-256 unless only BLAKE3 was asked for.
    pub digests: Digests,
    /// Whether `stamp` vouches for `digests` (see [`cached_digests`]).
    pub stamp_vouches: bool,
    /// Set for `#!` scripts.
    pub interpreter: Option<ScriptInterpreter>,
}

impl BackendBinary {
    /// The executable `/proc/<pid>/exe` must show once it runs.
    pub fn expected_exe(&self) -> &Path {
        match &self.interpreter {
            Some(i) => &i.exe,
            None => &self.canonical,
        }
    }
}

fn io_error<'a>(
    operation: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> BinaryError + 'a {
    move |source| BinaryError::Io {
        operation,
        path: path.to_path_buf(),
        source,
    }
}

/// Applies the allow-list rule, opens, checks and hashes the backend binary.
/// `path_var` is the `PATH` of the launch environment (for `#!/usr/bin/env`).
pub fn open_backend(
    binary_path: &Path,
    root: &Path,
    path_var: Option<&OsStr>,
) -> Result<BackendBinary, BinaryError> {
    open_backend_recorded(binary_path, root, path_var, None, Need::Both)
}

/// [`open_backend`], hashing what `need` asks for, where `recorded` are
/// digests recorded earlier with the stamp the file had then: while the
/// stamp is unchanged and they cover `need`, they are taken instead of
/// hashing (they are not put in the digest cache; the caller must prove
/// them before calling [`remember_digest`]).
///
/// [`remember_digest`]: crate::sys::digest::remember_digest
pub fn open_backend_recorded(
    binary_path: &Path,
    root: &Path,
    path_var: Option<&OsStr>,
    recorded: Option<(FileStamp, Digests)>,
    need: Need,
) -> Result<BackendBinary, BinaryError> {
    if binary_path.as_os_str().is_empty() {
        return Err(BinaryError::EmptyBinaryPath);
    }
    if root.as_os_str().is_empty() {
        return Err(BinaryError::EmptyPerVersionBinaryDir);
    }
    let root_path = root;
    let root = root_path
        .canonicalize()
        .map_err(|source| BinaryError::CanonicalizeBinaryRoot {
            path: root_path.to_path_buf(),
            source,
        })?;
    let given = binary_path;
    let canonical = given
        .canonicalize()
        .map_err(|source| BinaryError::CanonicalizeBinary {
            path: given.to_path_buf(),
            source,
        })?;
    if !canonical.starts_with(&root) || canonical == root {
        return Err(BinaryError::BinaryOutsideAllowRoot {
            binary: canonical,
            root,
        });
    }
    check_not_writable_by_others(&root)?;

    // O_NONBLOCK: a FIFO planted in the root must not block the open; the
    // regular-file check below refuses it. (No effect on regular files.)
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&canonical)
        .map_err(io_error("open", &canonical))?;
    // The file we opened must be the one we checked, not one swapped in
    // between canonicalize and open.
    let opened = fd_path(file.as_raw_fd()).map_err(io_error("inspect", &canonical))?;
    if opened != canonical {
        return Err(BinaryError::BinaryOutsideAllowRoot {
            binary: opened,
            root,
        });
    }
    let meta = file.metadata().map_err(io_error("stat", &canonical))?;
    if !meta.is_file() {
        return Err(BinaryError::NotExecutable {
            path: canonical,
            reason: "not a regular file".to_owned(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o111 == 0 {
        return Err(BinaryError::NotExecutable {
            path: canonical,
            reason: format!("mode {mode:04o} has no execute bit"),
        });
    }
    if mode & 0o022 != 0 {
        return Err(BinaryError::InsecurePermissions {
            path: canonical,
            mode,
        });
    }
    check_trusted_path(&canonical)?;
    let stamp = FileStamp::of(&meta);
    let (digests, stamp_vouches) = match recorded {
        Some((recorded_stamp, digests)) if recorded_stamp == stamp && digests.covers(need) => {
            (digests, true)
        }
        _ => cached_digests(&file, stamp, need).map_err(io_error("hash", &canonical))?,
    };
    let interpreter = script_interpreter(&file, &canonical, path_var)?;
    if let Some(interp) = &interpreter {
        check_trusted_path(&interp.exe)?;
    }
    Ok(BackendBinary {
        file,
        canonical,
        stamp,
        digests,
        stamp_vouches,
        interpreter,
    })
}

/// Every directory from `/` to `file`, and `file` itself, must be owned by
/// this user or root. A directory that group or other can write must carry
/// the sticky bit (as `/tmp` does), so nobody else can rename or replace an
/// entry in it; `file` must not be writable by group or other at all.
/// Otherwise another local user could put their own code in the path of a
/// verified binary.
pub fn check_trusted_path(file: &Path) -> Result<(), BinaryError> {
    let euid = crate::sys::host::effective_uid();
    let owner_ok = |uid: u32| uid == euid || uid == 0;
    let meta = std::fs::metadata(file).map_err(io_error("stat", file))?;
    if !owner_ok(meta.uid()) {
        return Err(BinaryError::NotExecutable {
            path: file.to_path_buf(),
            reason: format!(
                "owned by uid {}, neither this user (uid {euid}) nor root",
                meta.uid()
            ),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(BinaryError::InsecurePermissions {
            path: file.to_path_buf(),
            mode,
        });
    }
    for dir in file.ancestors().skip(1) {
        let meta = std::fs::metadata(dir).map_err(io_error("stat", dir))?;
        let mode = meta.permissions().mode() & 0o7777;
        if !owner_ok(meta.uid()) || (mode & 0o022 != 0 && mode & 0o1000 == 0) {
            return Err(BinaryError::InsecurePermissions {
                path: dir.to_path_buf(),
                mode,
            });
        }
    }
    Ok(())
}

fn check_not_writable_by_others(dir: &Path) -> Result<(), BinaryError> {
    let meta = std::fs::metadata(dir).map_err(io_error("stat", dir))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(BinaryError::InsecurePermissions {
            path: dir.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Parses the `#!` line of an open file, if any, and resolves the executable
/// the kernel will end up running.
fn script_interpreter(
    file: &File,
    script: &Path,
    path_var: Option<&OsStr>,
) -> Result<Option<ScriptInterpreter>, BinaryError> {
    let mut head = [0u8; 256];
    let mut reader = file;
    reader
        .seek(SeekFrom::Start(0))
        .map_err(io_error("read", script))?;
    let mut filled = 0;
    while filled < head.len() {
        match reader.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error("read", script)(e)),
        }
    }
    let head = &head[..filled];
    let Some(rest) = head.strip_prefix(b"#!") else {
        return Ok(None);
    };
    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let line = line.trim_matches(|c| c == ' ' || c == '\t');
    let (declared, arg) = match line.find([' ', '\t']) {
        Some(at) => (
            &line[..at],
            line[at..].trim_matches(|c| c == ' ' || c == '\t'),
        ),
        None => (line, ""),
    };
    let bad = |reason: &str| BinaryError::BadInterpreter {
        path: script.to_path_buf(),
        interpreter: declared.to_owned(),
        reason: reason.to_owned(),
    };
    if !declared.starts_with('/') {
        return Err(bad("the #! interpreter must be an absolute path"));
    }
    let interp = Path::new(declared)
        .canonicalize()
        .map_err(|e| bad(&e.to_string()))?;
    let is_env = interp.file_name() == Some(OsStr::new("env"));
    let exe = if is_env {
        if arg.is_empty() || arg.starts_with('-') {
            return Err(bad(
                "#!/usr/bin/env needs a program name (options are not supported)",
            ));
        }
        find_on_path(arg, path_var)
            .ok_or_else(|| bad(&format!("{arg} is not on the launch PATH")))?
    } else {
        interp
    };
    Ok(Some(ScriptInterpreter {
        exe,
        declared: declared.to_owned(),
        script_arg_index: if is_env || arg.is_empty() { 1 } else { 2 },
    }))
}

/// The canonical path of the first executable `name` on `path_var`.
fn find_on_path(name: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).canonicalize().ok();
    }
    let path_var = path_var?;
    for dir in path_var.as_bytes().split(|&b| b == b':') {
        if dir.is_empty() {
            continue;
        }
        let candidate = Path::new(OsStr::from_bytes(dir)).join(name);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return candidate.canonicalize().ok();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::{Duration, SystemTime};

    #[test]
    fn a_file_changed_since_its_stamp_cannot_vouch_for_its_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        File::create(&path).unwrap().write_all(b"content").unwrap();
        let file = File::open(&path).unwrap();
        let stamp = FileStamp::of(&file.metadata().unwrap());
        // Appended after the stamp was taken: the size (at least) differs.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b" and more")
            .unwrap();
        let (digests, vouches) = cached_digests(&file, stamp, Need::Both).unwrap();
        assert_eq!(
            digests.sha256,
            Some(crate::sys::digest::sha256_file(&path).unwrap())
        );
        assert!(!vouches, "the content hashed is not the stamped one");
        assert!(!cached_digests(&file, stamp, Need::Blake3).unwrap().1);
    }

    #[test]
    fn a_settled_file_vouches_and_is_not_hashed_again() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        File::create(&path).unwrap().write_all(b"settled").unwrap();
        let file = File::open(&path).unwrap();
        let stamp = FileStamp::of(&file.metadata().unwrap());
        let granule = crate::sys::digest::timestamp_granule();
        let deadline = SystemTime::now() + Duration::from_secs(60);
        while !stamp.settled_before(SystemTime::now(), granule) {
            assert!(SystemTime::now() < deadline, "the file never settled");
            std::thread::sleep(Duration::from_millis(1));
        }
        let (digest, vouches) = cached_digests(&file, stamp, Need::Both).unwrap();
        assert!(vouches);
        // Cached: the same digest for the same stamp, although the path now
        // names other content (the open file is still the stamped one).
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            cached_digests(&file, stamp, Need::Both).unwrap(),
            (digest, true)
        );
        assert_eq!(
            cached_digests(&file, stamp, Need::Blake3).unwrap(),
            (digest, true)
        );
    }
}
