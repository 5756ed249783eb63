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
//! ([`check_trusted_path`]). It then hashes the open descriptor, reusing a cached digest
//! when device, inode, size, mtime and ctime are unchanged: ctime cannot be set
//! by users and moves on every write, so an unchanged stamp means unchanged
//! content.
//!
//! For a `#!` script the identity is the script's (path and hash), and
//! [`ScriptInterpreter`] says which executable `/proc/<pid>/exe` must show:
//! the interpreter as the kernel resolves it, or for `/usr/bin/env NAME` the
//! first `NAME` on the launch `PATH` (absolute directories only). The
//! interpreter is resolved link by link ([`resolve_trusted`]): every
//! directory an entry on the way is looked up in, through every link, must
//! be owned by this user or root and not writable by others (or sticky, with
//! the entry the user's or root's), like the binary's own. It is then opened
//! there; the launcher executes that descriptor, so nothing is looked up by
//! name again at exec time (see `sys::spawn`).

use std::ffi::{CString, OsStr};
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::contract::stamp::FileStamp;
use crate::sys::digest::{cached_digests, Digests, Need};
use crate::sys::proc::own_fd_path as fd_path;
use crate::sys::spawn::ScriptExec;

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
    /// The command line before `/dev/fd/N`, as the kernel (and `env`) would
    /// build it: the declared interpreter and the `#!` line's argument, or
    /// `NAME` alone for `/usr/bin/env NAME`; for a CPython interpreter,
    /// `-I` (isolated mode) right after it.
    pub leading_args: Vec<String>,
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
    /// For `#!` scripts: the interpreter binary, opened where it was
    /// resolved and checked; the launcher executes this descriptor, so no
    /// second lookup by name (by the kernel or by `env`) can pick another.
    pub interpreter_file: Option<File>,
}

impl ScriptInterpreter {
    /// Where the script's `/dev/fd/N` stands on the command line of the
    /// process: right after [`ScriptInterpreter::leading_args`]
    /// (`interpreter /dev/fd/N` is 1, `interpreter ARG /dev/fd/N` 2,
    /// `NAME /dev/fd/N` for `/usr/bin/env NAME` 1, one more for `-I`).
    pub fn script_arg_index(&self) -> usize {
        self.leading_args.len()
    }
}

impl BackendBinary {
    /// How `sys::spawn` starts it, if it is a `#!` script: its checked
    /// interpreter's descriptor, with the kernel's command line.
    pub fn script_exec(&self) -> Option<ScriptExec<'_>> {
        let (interpreter, file) = (self.interpreter.as_ref()?, self.interpreter_file.as_ref()?);
        Some(ScriptExec {
            interpreter: file,
            leading: interpreter
                .leading_args
                .iter()
                // The #! line was refused if it held a NUL byte.
                .filter_map(|a| CString::new(a.as_bytes()).ok())
                .collect(),
        })
    }

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
    let (interpreter, interpreter_file) = match script_interpreter(&file, &canonical, path_var)? {
        Some((interpreter, opened)) => (Some(interpreter), Some(opened)),
        None => (None, None),
    };
    Ok(BackendBinary {
        file,
        canonical,
        stamp,
        digests,
        stamp_vouches,
        interpreter,
        interpreter_file,
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
    check_trusted_file(file, &meta)?;
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

/// `file` (with its metadata `meta`) is owned by this user or root and not
/// writable by group or other.
fn check_trusted_file(file: &Path, meta: &Metadata) -> Result<(), BinaryError> {
    let euid = crate::sys::host::effective_uid();
    if meta.uid() != euid && meta.uid() != 0 {
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

/// Parses the `#!` line of an open file, if any, resolves the executable
/// the kernel (and `env`) would run for it, link by link with every
/// directory on the way trusted ([`resolve_trusted`]), and opens it.
fn script_interpreter(
    file: &File,
    script: &Path,
    path_var: Option<&OsStr>,
) -> Result<Option<(ScriptInterpreter, File)>, BinaryError> {
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
    if line.contains('\0') {
        return Err(bad("the #! line holds a NUL byte"));
    }
    // A missing or unreadable interpreter is the script's problem; a
    // directory others could steer stays an InsecurePermissions.
    let resolve = |path: &Path| match resolve_trusted(path) {
        Err(BinaryError::Io { source, path, .. }) => {
            Err(bad(&format!("{}: {source}", path.display())))
        }
        other => other,
    };
    let interp = resolve(Path::new(declared))?;
    let is_env = interp.file_name() == Some(OsStr::new("env"));
    let (exe, leading_args) = if is_env {
        if arg.is_empty() || arg.starts_with('-') {
            return Err(bad(
                "#!/usr/bin/env needs a program name (options are not supported)",
            ));
        }
        let found = find_on_path(arg, path_var)
            .ok_or_else(|| bad(&format!("{arg} is not on the launch PATH")))?;
        (resolve(&found)?, vec![arg.to_owned()])
    } else if arg.is_empty() {
        (interp, vec![declared.to_owned()])
    } else {
        (interp, vec![declared.to_owned(), arg.to_owned()])
    };
    // Every directory on the way was checked by the resolution; the file
    // itself is judged through the descriptor that will be executed.
    let opened = open_interpreter(&exe).map_err(|reason| bad(&reason))?;
    check_trusted_file(&exe, &opened.metadata().map_err(io_error("stat", &exe))?)?;
    let mut leading_args = leading_args;
    if is_python(&exe) {
        // Isolated mode: no PYTHON* variable, no user site directory and,
        // above all, not the script's directory first on sys.path, so
        // nothing is imported from beside the script without being named
        // by the script itself (which the identity covers).
        leading_args.insert(1, "-I".to_owned());
    }
    Ok(Some((
        ScriptInterpreter {
            exe,
            declared: declared.to_owned(),
            leading_args,
        },
        opened,
    )))
}

/// Whether `exe` is a CPython interpreter (`python`, `python3`,
/// `python3.12`...), by its resolved file name.
fn is_python(exe: &Path) -> bool {
    exe.file_name()
        .and_then(OsStr::to_str)
        .and_then(|name| name.strip_prefix("python"))
        .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

/// Opens the resolved interpreter (never through a link) and checks that it
/// is what the launcher can execute by descriptor: a regular, executable
/// ELF file (an interpreter that is itself a script would be looked up by
/// path again).
fn open_interpreter(exe: &Path) -> Result<File, String> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(exe)
        .map_err(|e| format!("cannot open {}: {e}", exe.display()))?;
    let meta = opened
        .metadata()
        .map_err(|e| format!("cannot stat {}: {e}", exe.display()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("{} is not an executable file", exe.display()));
    }
    let mut magic = [0u8; 4];
    let is_elf = std::os::unix::fs::FileExt::read_exact_at(&opened, &mut magic, 0).is_ok()
        && magic == *b"\x7fELF";
    if !is_elf {
        return Err(format!(
            "{} is not a binary (a script as interpreter is not supported: \
             name the program it runs in the #! line)",
            exe.display()
        ));
    }
    Ok(opened)
}

/// Resolves the absolute `path` the way the kernel does, one component at a
/// time, following links, and refuses a resolution that another user could
/// steer: every directory an entry (file, directory or link) is looked up in
/// must be owned by this user or root and, if group or other can write to
/// it, sticky with the entry owned by this user or root. So a link in a
/// shared, group-writable tools directory cannot be on the way to what
/// runs, whatever it points to now.
pub fn resolve_trusted(path: &Path) -> Result<PathBuf, BinaryError> {
    use std::path::Component;
    const MAX_LINKS: usize = 40;
    let euid = crate::sys::host::effective_uid();
    let owner_ok = |uid: u32| uid == euid || uid == 0;
    let push_components = |pending: &mut Vec<std::ffi::OsString>, path: &Path| {
        let names: Vec<_> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name.to_os_string()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect();
        pending.extend(names.into_iter().rev());
    };
    if !path.is_absolute() {
        return Err(io_error("resolve", path)(io::Error::from(
            io::ErrorKind::InvalidInput,
        )));
    }
    let mut pending = Vec::new();
    push_components(&mut pending, path);
    let mut current = PathBuf::from("/");
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            current.pop();
            continue;
        }
        let dir = std::fs::metadata(&current).map_err(io_error("stat", &current))?;
        let dir_mode = dir.permissions().mode() & 0o7777;
        let entry = current.join(&name);
        let meta = std::fs::symlink_metadata(&entry).map_err(io_error("stat", &entry))?;
        let others_write = dir_mode & 0o022 != 0;
        if !owner_ok(dir.uid())
            || (others_write && (dir_mode & 0o1000 == 0 || !owner_ok(meta.uid())))
        {
            return Err(BinaryError::InsecurePermissions {
                path: current,
                mode: dir_mode,
            });
        }
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return Err(io_error("resolve", path)(io::Error::from_raw_os_error(
                    libc::ELOOP,
                )));
            }
            let target = std::fs::read_link(&entry).map_err(io_error("read link", &entry))?;
            if target.is_absolute() {
                current = PathBuf::from("/");
            }
            push_components(&mut pending, &target);
        } else {
            current = entry;
        }
    }
    Ok(current)
}

/// The first executable `name` on `path_var`, as `env` would find it, not
/// yet resolved. Only absolute directories count: the backend starts in
/// `/`, where a relative one would mean something else.
fn find_on_path(name: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if name.contains('/') {
        let path = Path::new(name);
        return path.is_absolute().then(|| path.to_path_buf());
    }
    let path_var = path_var?;
    for dir in path_var.as_bytes().split(|&b| b == b':') {
        let dir = Path::new(OsStr::from_bytes(dir));
        if !dir.is_absolute() {
            continue;
        }
        let candidate = dir.join(name);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Some(candidate);
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

    /// What was resolved and checked is what runs: the `#!` line names a
    /// link that is re-pointed after `open_backend` resolved it and before
    /// the spawn. Handed to the kernel, the script would have run under the
    /// new target; executed by descriptor, it runs under the one checked.
    #[test]
    fn a_script_runs_the_interpreter_that_was_checked_even_if_its_link_moves_before_the_exec() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let bin = base.join("bin");
        std::fs::create_dir(&bin).unwrap();
        let link = bin.join("interp");
        std::os::unix::fs::symlink("/bin/sh", &link).unwrap();
        let root = base.join("1.0.0");
        std::fs::create_dir(&root).unwrap();
        let script = root.join("backend");
        std::fs::write(&script, format!("#!{}\nexec sleep 30\n", link.display())).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let binary = open_backend(&script, &root, None).unwrap();
        let checked = Path::new("/bin/sh").canonicalize().unwrap();
        assert_eq!(binary.expected_exe(), checked);

        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("/bin/cat", &link).unwrap();
        let log = tempfile::tempfile().unwrap();
        let argv0 = crate::sys::spawn::arg0(&binary.canonical).unwrap();
        let spawned = crate::sys::spawn::spawn(&crate::sys::spawn::SpawnRequest {
            executable: &binary.file,
            script: binary.script_exec(),
            argv: vec![argv0],
            env: Vec::new(),
            log: &log,
            pass: None,
        })
        .unwrap();
        // The exec has happened when spawn returns; `exec sleep` replaces
        // the shell only once it has read the script, well after.
        let ran = std::fs::read_link(format!("/proc/{}/exe", spawned.pid));
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", spawned.pid));
        // SAFETY: our unreaped child.
        unsafe { libc::kill(spawned.pid as libc::pid_t, libc::SIGKILL) };
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(spawned.pid as libc::pid_t, &mut status, 0) };
        let ran = ran.unwrap();
        assert!(
            ran == checked || ran == Path::new("/bin/sleep").canonicalize().unwrap(),
            "ran {}",
            ran.display()
        );
        let cmdline = cmdline.unwrap();
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if ran == checked {
            assert_eq!(args[0], link.as_os_str().as_bytes());
            assert!(args[1].starts_with(b"/dev/fd/"), "{args:?}");
        }
    }

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
