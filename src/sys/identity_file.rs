//! Identity files: a daemon's [`DaemonProcess`] as JSON beside its lock or
//! pid file, which clients read to find the daemon and then verify it with
//! the probe (the way both generations of the contract publish a daemon
//! that someone else may adopt).
//!
//! Written atomically (a fresh temporary file in the same directory, mode
//! 0600, renamed into place), in the current generation's form by default;
//! read through a size cap, symlinks refused, in any of the three forms
//! [`DaemonProcess::from_json`] reads. The tolerant reader treats an absent,
//! unreadable or malformed file as no identity, as the contract's clients
//! do; the strict one says why.

use std::io;
use std::path::Path;

use crate::contract::error::{DecodeError, FsError, ValidationError};
use crate::contract::identity::{DaemonProcess, JsonForm};
use crate::sys::fs::{read_bounded, write_atomic, Bounded};

/// Largest identity file that will be read: an identity is under a kilobyte
/// (pretty-printed with integer arrays, about 2 KiB).
pub const MAX_IDENTITY_FILE_BYTES: u64 = 64 * 1024;

/// Why an identity file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityFileError {
    /// The file could not be read or written.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The content is not an identity (malformed JSON, a digest of the
    /// wrong length, an unknown algorithm...).
    #[error("identity file {path}: {source}")]
    Decode {
        path: std::path::PathBuf,
        #[source]
        source: DecodeError,
    },
    /// The identity cannot be written in the form asked for.
    #[error(transparent)]
    Form(#[from] ValidationError),
}

/// Writes `daemon` to `path` as pretty-printed JSON of `form`, atomically,
/// mode 0600. The directory must exist.
pub fn write_identity_file(
    path: &Path,
    daemon: &DaemonProcess,
    form: JsonForm,
) -> Result<(), IdentityFileError> {
    let text = daemon.to_json_form(form, true)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| FsError::io("write", path, io::Error::from(io::ErrorKind::InvalidInput)))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    write_atomic(dir, name, text.as_bytes())?;
    Ok(())
}

/// Reads and validates the identity file at `path`.
pub fn read_identity_file(path: &Path) -> Result<DaemonProcess, IdentityFileError> {
    let bytes = match read_bounded(path, MAX_IDENTITY_FILE_BYTES)
        .map_err(|e| FsError::io("read", path, e))?
    {
        Bounded::Read(bytes) => bytes,
        Bounded::TooLarge(len) => {
            return Err(IdentityFileError::Decode {
                path: path.to_path_buf(),
                source: DecodeError::Malformed {
                    what: "DaemonProcess JSON",
                    reason: format!(
                        "the file is {len} bytes; an identity file is at most \
                         {MAX_IDENTITY_FILE_BYTES}"
                    ),
                },
            })
        }
    };
    let decode = |source| IdentityFileError::Decode {
        path: path.to_path_buf(),
        source,
    };
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        decode(DecodeError::Malformed {
            what: "DaemonProcess JSON",
            reason: format!("is not UTF-8: {e}"),
        })
    })?;
    DaemonProcess::from_json(text).map_err(decode)
}

/// [`read_identity_file`], with an absent, unreadable or malformed file
/// read as no identity.
pub fn read_identity_file_tolerant(path: &Path) -> Option<DaemonProcess> {
    read_identity_file(path).ok()
}

/// Removes the identity file at `path` if it still describes `daemon` (same
/// pid and start time): a daemon that starts in its place must keep its own.
pub fn remove_identity_file_of(path: &Path, daemon: &DaemonProcess) {
    if let Ok(now) = read_identity_file(path) {
        if now.pid == daemon.pid && now.started_at_unix_ms == daemon.started_at_unix_ms {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::identity::Endpoint;
    use std::os::unix::fs::PermissionsExt;

    fn daemon() -> DaemonProcess {
        DaemonProcess {
            pid: 77,
            exe_path: "/x/d".into(),
            exe_sha256: [1; 32],
            exe_blake3: Some([2; 32]),
            boot_id: "b".into(),
            ipc_endpoint: Endpoint::new("default", "/x/s.sock").unwrap(),
            started_at_unix_ms: 5,
            idle_timeout_secs: None,
        }
    }

    #[test]
    fn writes_atomically_private_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.running-process.json");
        write_identity_file(&path, &daemon(), JsonForm::Current).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("{\n  \"pid\": 77,"), "{text}");
        assert_eq!(read_identity_file(&path).unwrap(), daemon());
        // Nothing but the file itself is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        write_identity_file(&path, &daemon(), JsonForm::Legacy).unwrap();
        let legacy = read_identity_file(&path).unwrap();
        assert_eq!((legacy.exe_sha256, legacy.exe_blake3), ([1; 32], None));

        let mut other = daemon();
        other.started_at_unix_ms = 6;
        remove_identity_file_of(&path, &other);
        assert!(path.exists());
        remove_identity_file_of(&path, &daemon());
        assert!(!path.exists());
    }

    #[test]
    fn the_tolerant_reader_says_none_the_strict_one_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.json");
        assert!(read_identity_file_tolerant(&path).is_none());
        assert!(matches!(
            read_identity_file(&path),
            Err(IdentityFileError::Fs(_))
        ));
        std::fs::write(&path, "{not json").unwrap();
        assert!(read_identity_file_tolerant(&path).is_none());
        assert!(matches!(
            read_identity_file(&path),
            Err(IdentityFileError::Decode { .. })
        ));
        std::fs::write(&path, vec![b' '; MAX_IDENTITY_FILE_BYTES as usize + 1]).unwrap();
        let err = read_identity_file(&path).unwrap_err().to_string();
        assert!(err.contains("at most"), "{err}");
        let link = dir.path().join("link.json");
        write_identity_file(&path, &daemon(), JsonForm::Current).unwrap();
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(read_identity_file_tolerant(&link).is_none());
    }
}
