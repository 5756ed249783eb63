//! Facts about this host and user that names and identities are built from:
//! the per-user hash, the boot id, the socket directory, and OS randomness.
//!
//! Reading these is cheap but not free, so callers that need them often (the
//! allocator, a launcher) read them once and keep them.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use crate::contract::error::HostError;

/// Where the machine id is looked for, in order.
pub const MACHINE_ID_PATHS: [&str; 2] = ["/etc/machine-id", "/var/lib/dbus/machine-id"];
/// Where the Linux kernel publishes the id of the current boot.
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// The real uid of this process (the uid the per-user names are built from).
pub fn real_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// The effective uid of this process (the owner of files it creates).
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The trimmed machine id, from the first of [`MACHINE_ID_PATHS`] that holds one.
pub fn machine_id() -> Result<String, HostError> {
    let mut reasons = Vec::new();
    for path in MACHINE_ID_PATHS {
        match fs::read_to_string(path) {
            Ok(text) => {
                let id = text.trim();
                if id.is_empty() {
                    reasons.push(format!("{path} is empty"));
                } else {
                    return Ok(id.to_owned());
                }
            }
            Err(e) => reasons.push(format!("{path}: {e}")),
        }
    }
    Err(HostError::MachineId {
        paths: MACHINE_ID_PATHS.iter().map(PathBuf::from).collect(),
        reason: reasons.join("; "),
    })
}

/// The per-user hash of the contract for a given uid and machine id: the first
/// 8 bytes of BLAKE3 over `"{uid}:{machine_id}"`, as 16 lowercase hex digits.
pub fn user_sid_hash_for(uid: u32, machine_id: &str) -> String {
    let digest = blake3::hash(format!("{uid}:{machine_id}").as_bytes());
    hex::encode(&digest.as_bytes()[..8])
}

/// The per-user hash of the calling user on this machine.
pub fn user_sid_hash() -> Result<String, HostError> {
    Ok(user_sid_hash_for(real_uid(), &machine_id()?))
}

/// The trimmed id of the current boot.
pub fn boot_id() -> Result<String, HostError> {
    let err = |reason: String| HostError::BootId {
        path: PathBuf::from(BOOT_ID_PATH),
        reason,
    };
    let text = fs::read_to_string(BOOT_ID_PATH).map_err(|e| err(e.to_string()))?;
    let id = text.trim();
    if id.is_empty() {
        return Err(err("file is empty".to_owned()));
    }
    Ok(id.to_owned())
}

/// The v1 socket directory for a given `XDG_RUNTIME_DIR` value and uid:
/// `$XDG_RUNTIME_DIR/running-process/broker`, or
/// `/tmp/running-process-{uid}/broker` when the variable is unset, empty, or
/// not an absolute path (the XDG base directory rules ignore relative paths).
/// [`socket_dir_with_base`] moves the `/tmp` one when another user has taken
/// its name.
///
/// Returns the directory and the trusted base it hangs from; every component
/// below the base is private to the user and is checked as such.
pub fn socket_dir_for(xdg_runtime_dir: Option<&OsStr>, uid: u32) -> (PathBuf, PathBuf) {
    match xdg_runtime_dir.map(Path::new) {
        Some(base) if base.is_absolute() => (
            base.join("running-process").join("broker"),
            base.to_path_buf(),
        ),
        _ => (
            PathBuf::from(format!("/tmp/running-process-{uid}/broker")),
            PathBuf::from("/tmp"),
        ),
    }
}

/// The socket directory of the calling user (see [`socket_dir_for`]).
pub fn socket_dir() -> PathBuf {
    socket_dir_with_base().0
}

/// The socket directory and the trusted base directory it lives under.
/// Without a usable `XDG_RUNTIME_DIR`, the per-user `/tmp` tree is the v1
/// one unless another user has taken its name (see
/// [`crate::sys::tmp_tree`]).
pub fn socket_dir_with_base() -> (PathBuf, PathBuf) {
    let xdg = std::env::var_os("XDG_RUNTIME_DIR");
    match xdg.as_deref().map(Path::new) {
        Some(base) if base.is_absolute() => socket_dir_for(xdg.as_deref(), real_uid()),
        _ => (
            crate::sys::tmp_tree::tmp_tree(real_uid())
                .path
                .join("broker"),
            PathBuf::from("/tmp"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_sid_hash_is_blake3_prefix() {
        let expected = hex::encode(&blake3::hash(b"1000:abc").as_bytes()[..8]);
        assert_eq!(user_sid_hash_for(1000, "abc"), expected);
        assert_eq!(expected.len(), 16);
        assert_ne!(
            user_sid_hash_for(1000, "abc"),
            user_sid_hash_for(1001, "abc")
        );
    }

    #[test]
    fn socket_dir_follows_xdg_rules() {
        let (dir, base) = socket_dir_for(Some(OsStr::new("/run/user/5")), 5);
        assert_eq!(dir, PathBuf::from("/run/user/5/running-process/broker"));
        assert_eq!(base, PathBuf::from("/run/user/5"));
        for unset in [None, Some(OsStr::new("")), Some(OsStr::new("relative/dir"))] {
            let (dir, base) = socket_dir_for(unset, 7);
            assert_eq!(dir, PathBuf::from("/tmp/running-process-7/broker"));
            assert_eq!(base, PathBuf::from("/tmp"));
        }
    }

    #[test]
    fn host_facts_are_readable_here() {
        let hash = user_sid_hash().unwrap();
        assert_eq!(hash.len(), 16);
        let boot = boot_id().unwrap();
        assert!(!boot.is_empty() && boot.trim() == boot);
    }
}
