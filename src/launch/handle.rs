//! The handle on a verified backend: its identity, its process (watched
//! through a pidfd), and what ending it cleans up.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::error::{mismatch, LaunchError};
use super::verify::connect_and_verify;
use super::verify::ExeProof;
use super::LOG_TAIL_BYTES;
use crate::contract::identity::{DaemonProcess, Endpoint};
use crate::contract::keys::BackendKey;
use crate::contract::names::is_backend_socket_name;
use crate::contract::stamp::FileStamp;
use crate::contract::trace::TraceContext;
use crate::launch::endpoint::BackendEndpointAllocator;
use crate::sys::proc;
use crate::sys::reaper::{ChildWatch, Exit};

/// What a handle needs from the process behind it. The real one
/// ([`Verified`]) watches a launched or adopted process through its pidfd
/// and re-verifies it over its socket; the unit tests of the reuse layer
/// (router admission, budgets, eviction) substitute a double, so that logic
/// is tested without starting processes.
pub(crate) trait Process: Send + Sync {
    /// Whether the process is still running.
    fn is_alive(&self) -> bool;
    /// Waits for the process to end (it is reaped if it is our child).
    fn wait(&self) -> Exit;
    /// Waits up to `timeout` for the process to end.
    fn wait_timeout(&self, timeout: Duration) -> Option<Exit>;
    /// SIGTERM, up to `grace`, then SIGKILL; returns once it has ended,
    /// with whether it ended within `grace` (no SIGKILL was needed).
    fn terminate(&self, grace: Duration) -> (Exit, bool);
    /// SIGKILL; returns once it has ended.
    fn kill(&self) -> Exit;
    /// Whether this process spawned it and reaps it: then its reaper ends
    /// what it leaves behind.
    fn reaped_here(&self) -> bool {
        true
    }
    /// The whole verification again: peer credentials, executable, probe,
    /// identity.
    fn reverify(
        &self,
        daemon: &DaemonProcess,
        trace: &TraceContext,
        timeout: Duration,
    ) -> Result<(), LaunchError>;
}

/// A verified backend process: its pidfd watch and the proof of the
/// executable it must keep running.
pub(super) struct Verified {
    pub(super) watch: ChildWatch,
    pub(super) proof: ExeProof,
    pub(super) euid: u32,
}

impl Process for Verified {
    fn reaped_here(&self) -> bool {
        self.watch.is_own_child()
    }

    fn is_alive(&self) -> bool {
        self.watch.is_alive()
    }

    fn wait(&self) -> Exit {
        self.watch.wait()
    }

    fn wait_timeout(&self, timeout: Duration) -> Option<Exit> {
        self.watch.wait_timeout(timeout)
    }

    fn terminate(&self, grace: Duration) -> (Exit, bool) {
        self.watch.terminate_within(grace)
    }

    fn kill(&self) -> Exit {
        self.watch.kill()
    }

    fn reverify(
        &self,
        daemon: &DaemonProcess,
        trace: &TraceContext,
        timeout: Duration,
    ) -> Result<(), LaunchError> {
        connect_and_verify(&self.watch, daemon, &self.proof, self.euid, trace, timeout).map(|_| ())
    }
}

/// A verified, running backend started by a [`CommandBackendLauncher`](super::CommandBackendLauncher).
///
/// Clones share the backend: they watch the same process, and shutting it
/// down through one is seen by all.
#[derive(Clone)]
pub struct BackendHandle {
    inner: Arc<HandleParts>,
}

struct HandleParts {
    key: BackendKey,
    daemon: DaemonProcess,
    log_path: PathBuf,
    process: Box<dyn Process>,
    /// Stamp of the hashed file, when it vouches for the digest.
    binary_stamp: Option<FileStamp>,
    /// The allocator that reserved the endpoint, for a backend this process
    /// launched; an adopted backend's endpoint is not reserved here.
    reserved_in: Option<Arc<BackendEndpointAllocator>>,
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
    /// The handle on a backend verified here (launched or adopted); the
    /// stamp of its binary is recorded when it vouches for the digest.
    pub(super) fn verified(
        key: &BackendKey,
        daemon: DaemonProcess,
        log_path: PathBuf,
        process: Verified,
        reserved_in: Option<Arc<BackendEndpointAllocator>>,
    ) -> Self {
        let proof = &process.proof;
        let binary_stamp = proof.stamp_vouches.then_some(proof.stamp);
        Self::new(
            key,
            daemon,
            log_path,
            Box::new(process),
            binary_stamp,
            reserved_in,
        )
    }

    /// The handle on a verified backend. `reserved_in` is the allocator
    /// that reserved its endpoint (a backend this process launched); the
    /// endpoint is released there once the backend is gone.
    pub(crate) fn new(
        key: &BackendKey,
        daemon: DaemonProcess,
        log_path: PathBuf,
        process: Box<dyn Process>,
        binary_stamp: Option<FileStamp>,
        reserved_in: Option<Arc<BackendEndpointAllocator>>,
    ) -> Self {
        BackendHandle {
            inner: Arc::new(HandleParts {
                key: key.clone(),
                daemon,
                log_path,
                process,
                binary_stamp,
                reserved_in,
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
        self.inner.binary_stamp
    }

    /// Whether the backend process is still running (via its pidfd).
    pub fn is_alive(&self) -> bool {
        self.inner.process.is_alive()
    }

    /// How the backend ended, if it has.
    pub fn exit(&self) -> Option<Exit> {
        // Once the pidfd says the process ended, its reap is imminent: wait
        // for it, so the cleanup below never depends on winning that race.
        let exit = if self.inner.process.is_alive() {
            None
        } else {
            Some(self.inner.process.wait())
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
        self.inner
            .process
            .reverify(&self.inner.daemon, trace, timeout)
    }

    /// A new connection to the backend.
    pub fn connect(&self) -> io::Result<UnixStream> {
        UnixStream::connect(&self.inner.daemon.ipc_endpoint.path)
    }

    /// Waits up to `timeout` for the backend to exit.
    pub fn wait(&self, timeout: Duration) -> Option<Exit> {
        let exit = self.inner.process.wait_timeout(timeout);
        if exit.is_some() {
            self.cleanup();
        }
        exit
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; always reaped. A clean
    /// end (exit 0, or the SIGTERM itself) also removes the log file; any
    /// other end keeps it for diagnosis.
    pub fn shutdown(&self, grace: Duration) -> Exit {
        self.shutdown_with(grace, false)
    }

    /// [`BackendHandle::shutdown`]; the log file is removed when the
    /// backend ended cleanly (exit status 0 or the SIGTERM; for an adopted
    /// backend, whose status goes to its own parent, ending within `grace`)
    /// unless `keep_log`. A backend that had to be killed, or failed, keeps
    /// its log for the post-mortem.
    pub fn shutdown_with(&self, grace: Duration, keep_log: bool) -> Exit {
        let since = self.helpers_since();
        let (exit, in_grace) = self.inner.process.terminate(grace);
        self.end_helpers(since);
        self.cleanup();
        let clean = match exit {
            Exit::Code(0) | Exit::Signal(libc::SIGTERM) => true,
            Exit::Unknown => in_grace,
            _ => false,
        };
        if clean && !keep_log {
            super::start::remove_log(&self.inner.log_path);
        }
        exit
    }

    /// SIGKILL; always reaped.
    pub fn kill(&self) -> Exit {
        let since = self.helpers_since();
        let exit = self.inner.process.kill();
        self.end_helpers(since);
        self.cleanup();
        exit
    }

    /// For a backend another process spawned (whose reaper is not ours):
    /// its start time, read while it runs, so [`BackendHandle::end_helpers`]
    /// can tell its helpers from older processes.
    fn helpers_since(&self) -> Option<u64> {
        if self.inner.process.reaped_here() {
            return None; // the reaper ends what it leaves behind
        }
        proc::stat(self.inner.daemon.pid)
            .ok()
            .map(|s| s.start_ticks)
    }

    /// Ends what an adopted backend forked that outlived it outside its
    /// process group (see [`end_escaped_helpers`]).
    fn end_helpers(&self, since: Option<u64>) {
        if let Some(since) = since {
            end_escaped_helpers(
                &self.inner.daemon.ipc_endpoint.path,
                since,
                self.inner.daemon.pid,
            );
        }
    }

    /// Once the backend is gone: its socket file (if it left one) is removed
    /// and, if this process launched it, the endpoint released.
    pub(super) fn cleanup(&self) {
        let path = Path::new(&self.inner.daemon.ipc_endpoint.path);
        remove_socket_file(path);
        if let Some(allocator) = &self.inner.reserved_in {
            allocator.release(path);
        }
    }
}

/// Ends the helpers the backend `pid` at `endpoint`, started at
/// `since_ticks`, forked and that left its process group (a `setsid()`
/// child, a double-forked grandchild re-parented to init): found by the
/// endpoint their start-up environment inherited (see
/// [`proc::end_marked`]). Called once the backend has ended.
pub(crate) fn end_escaped_helpers(endpoint: &str, since_ticks: u64, pid: u32) {
    let ended = proc::end_marked(
        crate::contract::env::ENV_BACKEND_PIPE,
        endpoint,
        since_ticks,
        pid,
    );
    if !ended.is_empty() {
        log::info!(
            "ended {} process(es) pid {pid} left behind outside its process group: {ended:?}",
            ended.len()
        );
    }
}

/// Removes the socket file a backend leaves at `path`. An allocated
/// endpoint (its unguessable name in the private socket directory) is the
/// launch's own: its socket goes whoever still listens on it (an impostor
/// that squatted it). At a fixed endpoint the socket goes only if it is this
/// user's and nothing listens on it any more: a daemon someone else started
/// there since keeps its endpoint.
pub(super) fn remove_socket_file(path: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !meta.file_type().is_socket() {
        return;
    }
    let allocated = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(is_backend_socket_name);
    if allocated
        || (meta.uid() == crate::sys::host::effective_uid()
            && crate::sys::net::socket_is_stale(path))
    {
        let _ = std::fs::remove_file(path);
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
