//! Fixed endpoints: a backend that serves at a path its caller chose (the
//! way tools that own their endpoint run their daemons, `--endpoint
//! <dir>/sock-v<version>`) instead of one the allocator made up.
//!
//! Such a path is guessable, so what guards it is its directory: it must be
//! private to this user (see [`check_fixed_endpoint`]). What serves it is
//! trusted only after the whole verification of a launch
//! ([`CommandBackendLauncher::serving`]).

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::error::LaunchError;
use super::handle::{remove_socket_file, BackendHandle, Verified};
use super::merged_identity;
use super::start::log_file_name;
use super::verify::{verify_connected, ExeProof};
use super::CommandBackendLauncher;
use crate::contract::clock;
use crate::contract::error::FsError;
use crate::contract::identity::{endpoint_path_problem, DaemonProcess, Endpoint};
use crate::contract::keys::BackendKey;
use crate::contract::trace::TraceContext;
use crate::sys::exe::{check_trusted_path, BackendBinary};
use crate::sys::host;
use crate::sys::net::{connect_until, peer_credentials};
use crate::sys::reaper::ChildWatch;

fn refused(endpoint: &Endpoint, reason: impl Into<String>) -> LaunchError {
    LaunchError::FixedEndpoint {
        path: PathBuf::from(&endpoint.path),
        reason: reason.into(),
    }
}

/// A file-system failure at a fixed endpoint's lock file, as a refusal of
/// the endpoint.
pub(super) fn fixed_fs_error(endpoint: &Endpoint) -> impl Fn(FsError) -> LaunchError + '_ {
    move |e| refused(endpoint, format!("its lock file: {e}"))
}

/// Checks a fixed endpoint before anything is done with it: a valid
/// endpoint with a plain path; its directory exists, is owned by this user
/// or root and is not writable by group or other, on a path of directories
/// owned by this user or root that others cannot write unless sticky (as a
/// binary's directory is checked); a file already at the path is a socket
/// this user owns.
pub(super) fn check_fixed_endpoint(endpoint: &Endpoint) -> Result<(), LaunchError> {
    endpoint.validate()?;
    if let Some(reason) = endpoint_path_problem(&endpoint.path) {
        return Err(refused(endpoint, reason));
    }
    let path = Path::new(&endpoint.path);
    let dir = path.parent().unwrap_or(Path::new("/"));
    let meta = fs::metadata(dir)
        .map_err(|e| refused(endpoint, format!("its directory {}: {e}", dir.display())))?;
    if !meta.is_dir() {
        return Err(refused(
            endpoint,
            format!("{} is not a directory", dir.display()),
        ));
    }
    let euid = host::effective_uid();
    if meta.uid() != euid && meta.uid() != 0 {
        return Err(refused(
            endpoint,
            format!(
                "its directory {} is owned by uid {}, neither this user (uid {euid}) nor root",
                dir.display(),
                meta.uid()
            ),
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refused(
            endpoint,
            format!(
                "its directory {} is writable by group or other (mode {mode:04o}); \
                 another user could bind the endpoint first",
                dir.display()
            ),
        ));
    }
    check_trusted_path(dir).map_err(|e| refused(endpoint, e.to_string()))?;
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(refused(endpoint, e.to_string())),
        Ok(meta) if !meta.file_type().is_socket() => Err(refused(
            endpoint,
            "the path exists and is not a socket; refusing to replace it",
        )),
        Ok(meta) if meta.uid() != euid => Err(refused(
            endpoint,
            format!(
                "the socket is owned by uid {}, not this user (uid {euid})",
                meta.uid()
            ),
        )),
        Ok(_) => Ok(()),
    }
}

impl CommandBackendLauncher {
    /// What serves a fixed endpoint now: a handle on it if it is a backend
    /// of `binary` that passes the whole verification (peer credentials,
    /// `/proc/<pid>/exe` and the stamp of the hashed file, boot, nonce probe
    /// and identity); None if nothing does (a socket nobody listens on is
    /// removed). Anything else serving it is refused and left alone.
    pub(super) fn serving(
        &self,
        key: &BackendKey,
        binary: &BackendBinary,
        endpoint: &Endpoint,
        trace: &TraceContext,
    ) -> Result<Option<BackendHandle>, LaunchError> {
        check_fixed_endpoint(endpoint)?;
        let path = Path::new(&endpoint.path);
        let timeout = self.options.ready_timeout;
        let stream = match connect_until(path, clock::deadline_after(timeout)) {
            Ok(stream) => stream,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                remove_socket_file(path);
                return Ok(None);
            }
            Err(e) => return Err(refused(endpoint, format!("connect: {e}"))),
        };
        let (pid, _) = peer_credentials(&stream)
            .map_err(|e| refused(endpoint, format!("peer credentials: {e}")))?;
        let watch = ChildWatch::adopt(pid)
            .map_err(|e| refused(endpoint, format!("its server pid {pid} is gone ({e})")))?;
        let expected = DaemonProcess {
            pid,
            exe_path: binary.canonical.to_string_lossy().into_owned(),
            exe_sha256: binary.digests.sha256.unwrap_or_default(),
            exe_blake3: Some(binary.digests.blake3),
            boot_id: self.boot_id.clone(),
            ipc_endpoint: endpoint.clone(),
            started_at_unix_ms: 0,
            idle_timeout_secs: None,
        };
        let proof = ExeProof::of(binary);
        let actual = verify_connected(
            stream, &watch, &expected, &proof, self.euid, trace, timeout, false,
        )
        .map_err(|e| {
            refused(
                endpoint,
                format!(
                    "served by pid {pid}, which is not a verified backend of {}: {e}",
                    binary.canonical.display()
                ),
            )
        })?;
        let log_path = self.log_dir.join(log_file_name(key, endpoint));
        let process = Verified {
            watch,
            proof,
            euid: self.euid,
        };
        Ok(Some(BackendHandle::verified(
            key,
            merged_identity(expected, &actual),
            log_path,
            process,
            None,
        )))
    }
}
