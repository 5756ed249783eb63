//! The per-user tree under `/tmp`, for when `XDG_RUNTIME_DIR` is unusable.
//!
//! The v1 name is `/tmp/running-process-{uid}`. `/tmp` is shared, so
//! another local user can create that name first (a directory of theirs, a
//! file, a symlink); it would then be refused forever and the user locked
//! out. When the v1 path is taken by anyone else, the tree moves to
//! `/tmp/running-process-{uid}-{16 random hex}`, a name nobody can predict
//! before it exists and nobody else can take once it does (`/tmp` is
//! sticky). The chosen name is kept in a pointer file in the user's own
//! state directory (`$XDG_STATE_HOME/running-process/tmp-tree`, else
//! `~/.local/state/running-process/tmp-tree`, mode 0600), created
//! atomically so that concurrent processes agree on one tree. If that
//! alternative is taken too (the machine was rebooted, `/tmp` emptied, and
//! someone created the name first), a new one is drawn and the pointer
//! replaced.
//!
//! Without a home to keep the pointer in, the v1 path is used and refused
//! with an error that says how to recover (set `XDG_RUNTIME_DIR`).

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::contract::clock;
use crate::sys::fs::{ensure_private_dir, read_bounded, write_atomic, Bounded};
use crate::sys::host;

/// Name of the pointer file in the user's state directory.
pub const POINTER_FILE: &str = "tmp-tree";

/// How the per-user `/tmp` tree was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpTree {
    /// The tree to use (`/tmp/running-process-{uid}` or an alternative).
    pub path: PathBuf,
    /// The v1 path, and the uid that owns what is there, when someone else
    /// took it (so the tree moved).
    pub taken: Option<(PathBuf, u32)>,
}

/// The v1 path of the per-user `/tmp` tree.
pub fn v1_tmp_tree(uid: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/running-process-{uid}"))
}

/// The owner of what is at `path` if it is not a real directory of this
/// (effective) user: someone else's directory, or any file or symlink.
fn taken_by(path: &Path) -> Option<u32> {
    let meta = fs::symlink_metadata(path).ok()?;
    let euid = host::effective_uid();
    (!(meta.is_dir() && meta.uid() == euid)).then_some(meta.uid())
}

fn state_home() -> Option<PathBuf> {
    let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(state) = non_empty("XDG_STATE_HOME").filter(|v| Path::new(v).is_absolute()) {
        return Some(PathBuf::from(state).join("running-process"));
    }
    let home = non_empty("HOME").filter(|v| Path::new(v).is_absolute())?;
    Some(PathBuf::from(home).join(".local/state/running-process"))
}

/// Whether `text` names an alternative tree of `uid` exactly.
fn valid_alternative(text: &str, uid: u32) -> Option<PathBuf> {
    let token = text.strip_prefix(&format!("/tmp/running-process-{uid}-"))?;
    (token.len() == 16
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then(|| PathBuf::from(text))
}

fn read_pointer(pointer: &Path, uid: u32) -> Option<PathBuf> {
    match read_bounded(pointer, 256) {
        Ok(Bounded::Read(bytes)) => {
            valid_alternative(std::str::from_utf8(&bytes).ok()?.trim(), uid)
        }
        _ => None,
    }
}

/// Writes `text` to `pointer` only if no pointer exists (a temporary file
/// hard-linked into place, so two processes never both win); returns the
/// pointer's content afterwards.
fn create_pointer(dir: &Path, pointer: &Path, text: &str, uid: u32) -> io::Result<Option<PathBuf>> {
    let token = text.rsplit('-').next().unwrap_or_default();
    let temp = write_atomic(
        dir,
        &format!(".{POINTER_FILE}.{token}.new"),
        text.as_bytes(),
    )
    .map_err(|e| io::Error::other(e.to_string()))?;
    let linked = fs::hard_link(&temp, pointer);
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => Ok(Some(PathBuf::from(text))),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(read_pointer(pointer, uid)),
        Err(e) => Err(e),
    }
}

fn draw_alternative(uid: u32) -> Option<String> {
    let mut token = [0u8; 8];
    clock::fill_random(&mut token).ok()?;
    Some(format!("/tmp/running-process-{uid}-{}", hex::encode(token)))
}

/// The per-user `/tmp` tree of `uid` (see the module documentation).
pub fn tmp_tree(uid: u32) -> TmpTree {
    let v1 = v1_tmp_tree(uid);
    let Some(owner) = taken_by(&v1) else {
        return TmpTree {
            path: v1,
            taken: None,
        };
    };
    let taken = Some((v1.clone(), owner));
    let fallback = TmpTree {
        path: v1.clone(),
        taken: taken.clone(),
    };
    let Some(dir) = state_home() else {
        return fallback;
    };
    if let Err(e) = ensure_private_dir(&dir, None) {
        log::warn!(
            "cannot keep the /tmp tree's pointer in {}: {e}",
            dir.display()
        );
        return fallback;
    }
    let pointer = dir.join(POINTER_FILE);
    for _ in 0..4 {
        if let Some(path) = read_pointer(&pointer, uid) {
            if taken_by(&path).is_none() {
                return TmpTree { path, taken };
            }
            // Taken as well: forget it and draw again.
            log::warn!(
                "{} is taken by another user; choosing another per-user /tmp tree",
                path.display()
            );
            let _ = fs::remove_file(&pointer);
        }
        let Some(drawn) = draw_alternative(uid) else {
            return fallback;
        };
        match create_pointer(&dir, &pointer, &drawn, uid) {
            Ok(Some(path)) if taken_by(&path).is_none() => {
                log::info!(
                    "{} belongs to uid {owner}; using {} for this user's sockets, logs and state",
                    v1.display(),
                    path.display()
                );
                return TmpTree { path, taken };
            }
            Ok(_) => continue,
            Err(e) => {
                log::warn!("cannot write {}: {e}", pointer.display());
                return fallback;
            }
        }
    }
    fallback
}
