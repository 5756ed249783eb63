//! The handle on a verified backend: its identity, its process (watched
//! through a pidfd), and what ending it cleans up.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::error::{mismatch, LaunchError};
use super::ready::connect_and_verify;
use super::verify::ExeProof;
use super::LOG_TAIL_BYTES;
use crate::contract::identity::{DaemonProcess, Endpoint};
use crate::contract::keys::BackendKey;
use crate::contract::stamp::FileStamp;
use crate::contract::trace::TraceContext;
use crate::launch::endpoint::BackendEndpointAllocator;
use crate::sys::reaper::{ChildWatch, Exit};

/// A verified, running backend started by a [`CommandBackendLauncher`].
///
/// Clones share the backend: they watch the same process, and shutting it
/// down through one is seen by all.
#[derive(Clone)]
pub struct BackendHandle {
    pub(super) inner: Arc<HandleParts>,
}

pub(super) struct HandleParts {
    pub(super) key: BackendKey,
    pub(super) daemon: DaemonProcess,
    pub(super) log_path: PathBuf,
    pub(super) watch: ChildWatch,
    pub(super) allocator: Arc<BackendEndpointAllocator>,
    pub(super) proof: ExeProof,
    pub(super) euid: u32,
    /// Whether this process launched the backend (and reserved its
    /// endpoint); an adopted backend's endpoint is not reserved here.
    pub(super) launched: bool,
}

impl std::fmt::Debug for BackendHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendHandle")
            .field("key", &self.inner.key.to_string())
            .field("pid", &self.inner.daemon.pid)
            .field("endpoint", &self.inner.daemon.ipc_endpoint.path)
            .finish()
    }
}

impl BackendHandle {
    /// The handle on a backend this process launched (and reserved the
    /// endpoint of).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn launched(
        key: &BackendKey,
        daemon: DaemonProcess,
        log_path: PathBuf,
        watch: ChildWatch,
        allocator: Arc<BackendEndpointAllocator>,
        proof: ExeProof,
        euid: u32,
    ) -> Self {
        Self::new(key, daemon, log_path, watch, allocator, proof, euid, true)
    }

    /// The handle on a backend another process launched, verified here.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn adopted(
        key: &BackendKey,
        daemon: DaemonProcess,
        log_path: PathBuf,
        watch: ChildWatch,
        allocator: Arc<BackendEndpointAllocator>,
        proof: ExeProof,
        euid: u32,
    ) -> Self {
        Self::new(key, daemon, log_path, watch, allocator, proof, euid, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        key: &BackendKey,
        daemon: DaemonProcess,
        log_path: PathBuf,
        watch: ChildWatch,
        allocator: Arc<BackendEndpointAllocator>,
        proof: ExeProof,
        euid: u32,
        launched: bool,
    ) -> Self {
        BackendHandle {
            inner: Arc::new(HandleParts {
                key: key.clone(),
                daemon,
                log_path,
                watch,
                allocator,
                proof,
                euid,
                launched,
            }),
        }
    }

    pub fn key(&self) -> &BackendKey {
        &self.inner.key
    }

    pub fn daemon(&self) -> &DaemonProcess {
        &self.inner.daemon
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.daemon.ipc_endpoint
    }

    pub fn log_path(&self) -> &Path {
        &self.inner.log_path
    }

    pub fn pid(&self) -> u32 {
        self.inner.daemon.pid
    }

    /// Stamp of the hashed file (the binary, or a script), for recording
    /// alongside the digest; None when the stamp cannot vouch for the digest
    /// (the file changed within a second of being hashed).
    pub fn binary_stamp(&self) -> Option<FileStamp> {
        self.inner
            .proof
            .stamp_vouches
            .then_some(self.inner.proof.stamp)
    }

    /// Whether the backend process is still running (via its pidfd).
    pub fn is_alive(&self) -> bool {
        self.inner.watch.is_alive()
    }

    /// How the backend ended, if it has.
    pub fn exit(&self) -> Option<Exit> {
        // Once the pidfd says the process ended, its reap is imminent: wait
        // for it, so the cleanup below never depends on winning that race.
        let exit = if self.inner.watch.is_alive() {
            None
        } else {
            Some(self.inner.watch.wait())
        };
        if exit.is_some() {
            self.cleanup();
        }
        exit
    }

    /// Re-runs the whole verification: alive, peer credentials, executable,
    /// probe and identity.
    pub fn verify(&self, trace: &TraceContext, timeout: Duration) -> Result<(), LaunchError> {
        if !self.is_alive() {
            return Err(mismatch("pid alive", self.inner.daemon.pid, "exited"));
        }
        connect_and_verify(
            &self.inner.watch,
            &self.inner.daemon,
            &self.inner.proof,
            self.inner.euid,
            trace,
            timeout,
        )
        .map(|_| ())
    }

    /// A new connection to the backend.
    pub fn connect(&self) -> io::Result<UnixStream> {
        UnixStream::connect(&self.inner.daemon.ipc_endpoint.path)
    }

    /// Waits up to `timeout` for the backend to exit.
    pub fn wait(&self, timeout: Duration) -> Option<Exit> {
        let exit = self.inner.watch.wait_timeout(timeout);
        if exit.is_some() {
            self.cleanup();
        }
        exit
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; always reaped. A clean
    /// end (exit 0, or the SIGTERM itself) also removes the log file; any
    /// other end keeps it for diagnosis.
    pub fn shutdown(&self, grace: Duration) -> Exit {
        let exit = self.inner.watch.terminate(grace);
        self.cleanup();
        if matches!(exit, Exit::Code(0) | Exit::Signal(libc::SIGTERM)) {
            let _ = std::fs::remove_file(&self.inner.log_path);
        }
        exit
    }

    /// SIGKILL; always reaped.
    pub fn kill(&self) -> Exit {
        let exit = self.inner.watch.kill();
        self.cleanup();
        exit
    }

    /// Once the backend is gone: its socket file (if it left one) is removed
    /// and, if this process launched it, the endpoint released.
    pub(super) fn cleanup(&self) {
        let path = Path::new(&self.inner.daemon.ipc_endpoint.path);
        remove_socket_file(path);
        if self.inner.launched {
            self.inner.allocator.release(path);
        }
    }
}

pub(super) fn remove_socket_file(path: &Path) {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The last [`LOG_TAIL_BYTES`] of a log file, as text.
pub fn log_tail(path: &Path) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
    let mut buf = Vec::new();
    let _ = file.take(LOG_TAIL_BYTES).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
