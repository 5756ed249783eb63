//! The pool's manifest: one JSON file per key recording the verified
//! backend (its `DaemonProcess`, the key, the binary's stamp when hashed, and
//! the [`ProcessMark`] that tells it apart from a later process with its
//! pid). Read strictly: a manifest of another format version or another key,
//! or one that does not validate, is ignored like a missing one, and is
//! never trusted before the backend it names verifies.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::contract::error::{DecodeError, FsError, ValidationError};
use crate::contract::identity::DaemonProcess;
use crate::contract::keys::{BackendKey, BrokerInstanceKey};
use crate::contract::stamp::FileStamp;
use crate::launch::BackendHandle;
use crate::reuse::pool::mark::ProcessMark;
use crate::sys::fs::{read_bounded, write_atomic, Bounded};

/// Largest manifest read.
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024;
/// Version of the manifest format. Fields added since (`binary_stamp`,
/// `process`) are optional, so older and newer readers understand each other.
pub const MANIFEST_VERSION: u32 = 1;
/// What a manifest records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub manifest_version: u32,
    pub instance: String,
    pub service_name: String,
    pub service_version: String,
    /// The `DaemonProcess` JSON of the verified backend.
    pub daemon: serde_json::Value,
    /// Stamp of the binary when it was hashed: while it is unchanged, the
    /// recorded digest stands and the binary is not hashed again. Absent
    /// when the stamp could not vouch for the digest.
    #[serde(default)]
    pub binary_stamp: Option<FileStamp>,
    pub launched_by_pid: u32,
    /// What proves that the pid still names the recorded process. Absent in
    /// manifests written before it existed, and when it could not be read:
    /// then the process is never signalled.
    #[serde(default)]
    pub process: Option<ProcessMark>,
    /// The environment policy the backend was started with, as
    /// `launch::describe_environment` says it (`inherit`, `baseline
    /// +ZCCACHE_*`...), for `ls`. Absent in older manifests.
    #[serde(default)]
    pub environment: Option<String>,
    /// Set on the record of a backend that stopped answering while it was
    /// busy (see `BackendPool::get_or_launch`): it is no longer handed out,
    /// another backend serves the key, and it is left to drain. Kept under
    /// its own name beside the key's manifest, so `ls`, `stop` and `gc`
    /// still know it.
    #[serde(default)]
    pub retired: bool,
}

/// A manifest as read: the identity it records and, when recorded, the mark
/// that proves the process is still that one.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub daemon: DaemonProcess,
    pub mark: Option<ProcessMark>,
    /// The stamp the binary had when its digest was computed (see
    /// `CommandBackendLauncher::adopt_recorded`).
    pub binary_stamp: Option<FileStamp>,
}

/// Why a manifest is not used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("manifest version {found} is not {MANIFEST_VERSION}")]
    Version { found: u32 },
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("it records {recorded}, not {wanted}")]
    OtherKey { recorded: String, wanted: String },
}

/// Every part a manifest records, validated.
pub struct ManifestParts {
    pub key: BackendKey,
    pub daemon: DaemonProcess,
    pub binary_stamp: Option<FileStamp>,
    pub mark: Option<ProcessMark>,
    pub environment: Option<String>,
    pub retired: bool,
}

/// Decodes and validates a manifest (format version, key, identity).
pub fn parse_parts(bytes: &[u8]) -> Result<ManifestParts, ManifestError> {
    let manifest: Manifest = serde_json::from_slice(bytes)?;
    if manifest.manifest_version != MANIFEST_VERSION {
        return Err(ManifestError::Version {
            found: manifest.manifest_version,
        });
    }
    let instance = BrokerInstanceKey::from_id(&manifest.instance)?;
    let key = BackendKey::new(instance, &manifest.service_name, &manifest.service_version)?;
    let daemon = DaemonProcess::from_json(&manifest.daemon.to_string())?;
    Ok(ManifestParts {
        key,
        daemon,
        binary_stamp: manifest.binary_stamp,
        mark: manifest.process,
        environment: manifest.environment,
        retired: manifest.retired,
    })
}

/// A manifest of `wanted`. The recorded digest is not put in the
/// process-wide digest cache here: it stands in for hashing only to verify
/// this manifest's backend, and is cached once that backend has proven it
/// (see `CommandBackendLauncher::adopt_recorded`).
pub fn parse(bytes: &[u8], wanted: &BackendKey) -> Result<Recorded, ManifestError> {
    let parts = parse_parts(bytes)?;
    if &parts.key != wanted {
        return Err(ManifestError::OtherKey {
            recorded: parts.key.to_string(),
            wanted: wanted.to_string(),
        });
    }
    Ok(parts.recorded())
}

impl ManifestParts {
    /// What the pool adopts, stops or removes by: the identity, the mark and
    /// the binary's stamp.
    pub fn recorded(&self) -> Recorded {
        Recorded {
            daemon: self.daemon.clone(),
            mark: self.mark,
            binary_stamp: self.binary_stamp,
        }
    }
}

/// The parts of the manifest file at `path`, if it can be read and parses
/// (the reason logged otherwise, as by [`read_bytes`]).
pub fn read_parts(path: &Path) -> Option<ManifestParts> {
    parse_parts(&read_bytes(path)?).ok()
}

/// Reads the bytes of a manifest file (capped); None when absent, too large
/// or unreadable, with the reason logged.
pub fn read_bytes(path: &Path) -> Option<Vec<u8>> {
    match read_bounded(path, MAX_MANIFEST_BYTES) {
        Ok(Bounded::Read(bytes)) => Some(bytes),
        Ok(Bounded::TooLarge(len)) => {
            log::warn!("ignoring manifest {} of {len} bytes", path.display());
            None
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            log::warn!("cannot read manifest {}: {e}", path.display());
            None
        }
    }
}

/// The manifest of `key` at `path`, if there is a usable one.
pub fn read(path: &Path, key: &BackendKey) -> Option<Recorded> {
    let bytes = read_bytes(path)?;
    match parse(&bytes, key) {
        Ok(recorded) => Some(recorded),
        Err(reason) => {
            log::warn!("ignoring manifest {}: {reason}", path.display());
            None
        }
    }
}

/// Records `handle` as the backend of `key` in `dir/name`, atomically.
pub fn write(
    dir: &Path,
    name: &str,
    key: &BackendKey,
    handle: &BackendHandle,
    environment: &str,
) -> Result<(), FsError> {
    let daemon = handle.daemon();
    // Read while the handle still watches the process: if it is alive
    // after the read, the pid named it throughout.
    let process = match ProcessMark::read(daemon.pid) {
        Ok(mark) if handle.is_alive() => Some(mark),
        Ok(_) => None,
        Err(e) => {
            log::warn!(
                "cannot read the start time of pid {}: {e}; it will never be signalled through the pool",
                daemon.pid
            );
            None
        }
    };
    let manifest = Manifest {
        manifest_version: MANIFEST_VERSION,
        instance: key.instance().id(),
        service_name: key.service_name().to_owned(),
        service_version: key.service_version().to_owned(),
        daemon: serde_json::from_str(&daemon.to_json()).unwrap_or(serde_json::Value::Null),
        binary_stamp: handle.binary_stamp(),
        launched_by_pid: std::process::id(),
        process,
        environment: Some(environment.to_owned()),
        retired: false,
    };
    let text = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    write_atomic(dir, name, &text).map(|_| ())
}

/// Adds the stamp that vouches for the recorded digest to the manifest at
/// `dir/name`, if it still records `daemon` for `key`, in the current format,
/// and no stamp yet (everything else is kept as written). Returns whether it was added. The
/// caller holds the key's lock and has proven the stamp: a verified
/// adoption hashed the binary, settled, to the recorded digest.
pub fn add_binary_stamp(
    dir: &Path,
    name: &str,
    key: &BackendKey,
    daemon: &DaemonProcess,
    stamp: FileStamp,
) -> Result<bool, FsError> {
    let Some(bytes) = read_bytes(&dir.join(name)) else {
        return Ok(false);
    };
    let Ok(parts) = parse_parts(&bytes) else {
        return Ok(false);
    };
    let Ok(mut manifest) = serde_json::from_slice::<Manifest>(&bytes) else {
        return Ok(false);
    };
    // A manifest of the older format (no process record) is left as it was
    // written: adoption never rewrites it into a newer one.
    if &parts.key != key
        || &parts.daemon != daemon
        || manifest.binary_stamp.is_some()
        || manifest.process.is_none()
    {
        return Ok(false);
    }
    manifest.binary_stamp = Some(stamp);
    let text = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    write_atomic(dir, name, &text).map(|_| true)
}

/// Moves the manifest `dir/name` of `daemon` aside to `dir/retired_name`,
/// marked retired, if it still records `daemon` (the caller holds the key's
/// lock). Returns whether it was moved.
pub fn set_aside(
    dir: &Path,
    name: &str,
    retired_name: &str,
    daemon: &DaemonProcess,
) -> Result<bool, FsError> {
    let Some(bytes) = read_bytes(&dir.join(name)) else {
        return Ok(false);
    };
    let (Ok(parts), Ok(mut manifest)) = (
        parse_parts(&bytes),
        serde_json::from_slice::<Manifest>(&bytes),
    ) else {
        return Ok(false);
    };
    if &parts.daemon != daemon {
        return Ok(false);
    }
    manifest.retired = true;
    let text = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    write_atomic(dir, retired_name, &text)?;
    match std::fs::remove_file(dir.join(name)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(FsError::io("remove", dir.join(name), e)),
    }
}

/// The manifest decoder on its own, without the pool, the key check or the
/// digest cache (for the fuzz targets and malformed-input tests; see
/// `crate::fuzzing`).
pub fn decode(bytes: &[u8]) -> Result<(BackendKey, DaemonProcess), ManifestError> {
    parse_parts(bytes).map(|parts| (parts.key, parts.daemon))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_without_the_process_record_still_parses() {
        let recorded = |process: &str| {
            format!(
                r#"{{"manifest_version": 1, "instance": "shared", "service_name": "echo",
                "service_version": "1.0.0", "launched_by_pid": 7, {process}
                "daemon": {{"pid": 42, "exe_path": "/opt/echo", "exe_sha256": "{}",
                "boot_id": "b", "ipc_endpoint": {{"namespace_id": "shared", "path": "/tmp/e.sock"}},
                "started_at_unix_ms": 1}}}}"#,
                "ab".repeat(32)
            )
        };
        let key = BackendKey::new(BrokerInstanceKey::Shared, "echo", "1.0.0").unwrap();
        let old = parse(recorded("").as_bytes(), &key).unwrap();
        assert_eq!(old.daemon.pid, 42);
        assert_eq!(old.mark, None);
        let new = parse(
            recorded(r#""process": {"start_ticks": 9, "uid": 3, "exe": null},"#).as_bytes(),
            &key,
        )
        .unwrap();
        assert_eq!(
            new.mark,
            Some(ProcessMark {
                start_ticks: 9,
                uid: 3,
                exe: None
            })
        );
    }
}
