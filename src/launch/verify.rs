//! Step 6 of a launch, verification of what answers at the endpoint: the
//! socket's peer credentials (pid and uid), `/proc/<pid>` against the file
//! that was hashed ([`ExeProof`], including where a script's descriptor
//! stands on its interpreter's command line), and the nonce probe, sent and
//! read under a deadline that a trickling peer cannot stretch, its identity
//! compared field by field.
//!
//! The probe's messages are [`crate::contract::probe`]'s; this module does
//! the I/O and the checks around it.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::contract::clock;
use crate::contract::env;
use crate::contract::frame::{self, HEADER_LEN};
use crate::contract::identity::DaemonProcess;
use crate::contract::keys::BackendKey;
pub use crate::contract::probe::*;
use std::path::{Path, PathBuf};

use crate::contract::proto::FrameMsg;
use crate::contract::stamp::FileStamp;
use crate::contract::trace::TraceContext;
use crate::launch::error::{mismatch, LaunchError};
use crate::sys::exe::BackendBinary;
use crate::sys::net::{connect_until, peer_credentials};
use crate::sys::proc;
use crate::sys::reaper::ChildWatch;

/// Shortest timeout a probe uses: the socket API cannot express zero.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);

fn io_err(operation: &'static str, source: io::Error, timeout: Duration) -> ProbeError {
    match source.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ProbeError::Timeout { timeout },
        _ => ProbeError::Io { operation, source },
    }
}

fn read_exact_until(
    stream: &mut UnixStream,
    buf: &mut [u8],
    deadline: Instant,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let mut filled = 0;
    while filled < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ProbeError::Timeout { timeout });
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| io_err("set timeout", e, timeout))?;
        match stream.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(ProbeError::Closed {
                    received: filled,
                    expected: buf.len(),
                })
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("read", e, timeout)),
        }
    }
    Ok(())
}

/// Reads one frame from `stream` with a body cap of `limit`, giving up when
/// `timeout` has passed since the call (a peer that trickles bytes cannot
/// stretch it).
pub fn read_frame(
    stream: &mut UnixStream,
    limit: u32,
    timeout: Duration,
) -> Result<FrameMsg, ProbeError> {
    let deadline = clock::deadline_after(timeout);
    let mut header = [0u8; HEADER_LEN];
    read_exact_until(stream, &mut header, deadline, timeout)?;
    let length = frame::parse_header(&header, limit)? as usize;
    let mut body = vec![0u8; length];
    read_exact_until(stream, &mut body, deadline, timeout)?;
    Ok(frame::decode_body(&body)?)
}

/// Runs one probe over a connected stream and returns the identity the peer
/// claims (checked against the probe, not yet compared).
pub fn probe_stream(
    stream: &mut UnixStream,
    trace: &TraceContext,
    timeout: Duration,
) -> Result<DaemonProcess, ProbeError> {
    let timeout = timeout.max(MIN_TIMEOUT);
    let request = ProbeRequest::new(trace)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| io_err("set timeout", e, timeout))?;
    stream
        .write_all(&request.bytes)
        .map_err(|e| io_err("write", e, timeout))?;
    let response = read_frame(stream, MAX_PROBE_RESPONSE, timeout)?;
    request.check_response(&response)
}

// The launch's own checks, around the probe.

/// What `/proc/<pid>` must show for the process to be the one launched.
#[derive(Debug, Clone)]
pub(crate) struct ExeProof {
    /// The canonical executable (`/proc/<pid>/exe`).
    pub(crate) exe: PathBuf,
    /// For a script: the script path and where its `/dev/fd/N` stands on the
    /// interpreter's command line; the script's stamp must match.
    pub(crate) script: Option<(PathBuf, usize)>,
    /// Stamp of the hashed file.
    pub(crate) stamp: FileStamp,
    /// Whether the stamp vouches for the digest (it may be recorded).
    pub(crate) stamp_vouches: bool,
}

impl ExeProof {
    pub(crate) fn of(binary: &BackendBinary) -> Self {
        ExeProof {
            exe: binary.expected_exe().to_path_buf(),
            script: binary
                .interpreter
                .as_ref()
                .map(|i| (binary.canonical.clone(), i.script_arg_index())),
            stamp: binary.stamp,
            stamp_vouches: binary.stamp_vouches,
        }
    }

    /// Checks `/proc/<pid>` against the launched executable.
    pub(crate) fn check(&self, pid: u32) -> Result<(), LaunchError> {
        // A binary renamed over or removed after the exec still runs the
        // hashed inode, which the stamp check below proves.
        let actual = proc::exe_path(pid)
            .map_err(|e| mismatch("exe_path", self.exe.display(), format!("unreadable: {e}")))?;
        if actual != self.exe {
            return Err(mismatch("exe_path", self.exe.display(), actual.display()));
        }
        let hashed_file = match &self.script {
            None => proc::exe_link(pid),
            Some((script, index)) => script_fd_of(pid, script, *index)?,
        };
        let meta = std::fs::metadata(&hashed_file)
            .map_err(|e| mismatch("exe_sha256", "the hashed file", format!("unreadable: {e}")))?;
        let stamp = FileStamp::of(&meta);
        if stamp != self.stamp {
            return Err(mismatch(
                "exe_sha256",
                format!("content of inode {} as hashed", self.stamp.ino),
                format!("inode {} changed since it was hashed", stamp.ino),
            ));
        }
        Ok(())
    }
}

/// The `/proc/<pid>/fd/N` of the script the kernel was asked to run: the
/// command line is the interpreter's, with `/dev/fd/N` exactly where the
/// kernel puts it (argument `index`), and that descriptor is the script. A
/// process that merely holds the script open and names it elsewhere on its
/// command line (`python -c CODE /dev/fd/N`) runs other code.
pub(crate) fn script_fd_of(pid: u32, script: &Path, index: usize) -> Result<PathBuf, LaunchError> {
    let cmdline = proc::command_line(pid).map_err(|e| {
        mismatch(
            "script",
            script.display(),
            format!("cmdline unreadable: {e}"),
        )
    })?;
    let arg = cmdline.get(index).map(Vec::as_slice).unwrap_or_default();
    let Some(n) = arg.strip_prefix(b"/dev/fd/") else {
        return Err(mismatch(
            "script",
            script.display(),
            format!(
                "the process was not started by its interpreter on the script's descriptor \
                 (command line argument {index} is {:?})",
                String::from_utf8_lossy(arg)
            ),
        ));
    };
    let fd_link = proc::fd_link(pid, &String::from_utf8_lossy(n));
    let target = std::fs::read_link(&fd_link).map_err(|e| {
        mismatch(
            "script",
            script.display(),
            format!("descriptor unreadable: {e}"),
        )
    })?;
    if target != script {
        return Err(mismatch("script", script.display(), target.display()));
    }
    Ok(fd_link)
}

/// Checks the connected socket and `/proc` and probes; returns the identity
/// the backend reported.
///
/// `launcher_bound`: this process bound the endpoint and passed the
/// listening socket to the child, closing its own copy. The kernel records a
/// listener's credentials at `listen`, so a connection queued before the
/// child took the socket over (and listened on it again) names this process
/// as its peer. Such a connection serves as the readiness wait only: once
/// it is answered, a second connection is verified in full, and its peer
/// must be the child.
#[allow(clippy::too_many_arguments)]
pub(crate) fn verify_connected(
    mut stream: UnixStream,
    watch: &ChildWatch,
    expected: &DaemonProcess,
    proof: &ExeProof,
    euid: u32,
    trace: &TraceContext,
    timeout: Duration,
    launcher_bound: bool,
) -> Result<DaemonProcess, LaunchError> {
    let (peer_pid, peer_uid) = peer_credentials(&stream).map_err(|source| {
        LaunchError::Probe(ProbeError::Io {
            operation: "read peer credentials",
            source,
        })
    })?;
    let queued_early = launcher_bound && peer_pid == std::process::id();
    if peer_pid != expected.pid && !queued_early {
        return Err(mismatch("peer pid", expected.pid, peer_pid));
    }
    if peer_uid != euid {
        return Err(mismatch("peer uid", euid, peer_uid));
    }
    // A passed listener is connected to at once, possibly before the child
    // runs its final image (`#!/usr/bin/env python3` runs env first): its
    // executable is checked once it has answered.
    if !launcher_bound {
        proof.check(expected.pid)?;
    }
    let actual = probe_stream(&mut stream, trace, timeout)?;
    if queued_early {
        // The answer says the child is up, not who answered: any holder of
        // the listener could have. The child listened again on the socket
        // before it accepted (else it could not be verified later either),
        // so a new connection names the process that did; that one is
        // verified in full.
        return connect_and_verify(watch, expected, proof, euid, trace, timeout)
            .map_err(explain_unlistened);
    }
    if launcher_bound {
        proof.check(expected.pid)?;
    }
    compare_identity(expected, &actual)?;
    if !watch.is_alive() {
        return Err(mismatch(
            "pid alive",
            expected.pid,
            "exited during verification",
        ));
    }
    Ok(actual)
}

/// A second connection to a passed listener that still names this launcher:
/// the backend never listened on the socket again, and says so.
fn explain_unlistened(err: LaunchError) -> LaunchError {
    match err {
        LaunchError::Mismatch {
            field,
            expected,
            actual,
        } if field == "peer pid" && actual == std::process::id().to_string() => {
            LaunchError::Mismatch {
                field,
                expected,
                actual: format!(
                    "{actual} (this launcher: the backend serves on the passed listener \
                     without listening on it again, so no connection can name it; its \
                     definition needs listener BIND)"
                ),
            }
        }
        other => other,
    }
}

/// A failed connect to a backend's endpoint, as a probe failure.
pub(crate) fn connect_failed(source: io::Error) -> LaunchError {
    LaunchError::Probe(ProbeError::Io {
        operation: "connect",
        source,
    })
}

/// Connects to `expected`'s endpoint within `timeout` and verifies what
/// answers (see [`verify_connected`]).
pub(crate) fn connect_and_verify(
    watch: &ChildWatch,
    expected: &DaemonProcess,
    proof: &ExeProof,
    euid: u32,
    trace: &TraceContext,
    timeout: Duration,
) -> Result<DaemonProcess, LaunchError> {
    let stream = connect_until(
        Path::new(&expected.ipc_endpoint.path),
        clock::deadline_after(timeout),
    )
    .map_err(connect_failed)?;
    verify_connected(stream, watch, expected, proof, euid, trace, timeout, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::error::DecodeError;

    #[test]
    fn read_frame_refuses_huge_declared_length_and_times_out() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        b.write_all(&[1, 0xff, 0xff, 0xff, 0xff]).unwrap();
        assert!(matches!(
            read_frame(&mut a, MAX_PROBE_RESPONSE, Duration::from_secs(5)),
            Err(ProbeError::Decode(DecodeError::FrameTooLarge { .. }))
        ));
        b.write_all(&[1, 10, 0]).unwrap();
        assert!(matches!(
            read_frame(&mut a, MAX_PROBE_RESPONSE, Duration::from_millis(50)),
            Err(ProbeError::Timeout { .. })
        ));
        drop(b);
        assert!(matches!(
            read_frame(&mut a, MAX_PROBE_RESPONSE, Duration::from_secs(5)),
            Err(ProbeError::Closed { .. })
        ));
    }
}

/// Why a process was not (provably) started for a key.
#[derive(Debug, thiserror::Error)]
pub enum NotStartedFor {
    #[error("its environment is unreadable: {0}")]
    Unreadable(#[source] io::Error),
    #[error("{name} is {found}")]
    Other { name: &'static str, found: String },
}

/// Checks that `pid` was started by a launcher for `key` at `endpoint`: the
/// environment it was started with (which later changes by the process do
/// not alter) holds the contract's variables with those values.
pub fn started_for(pid: u32, key: &BackendKey, endpoint: &str) -> Result<(), NotStartedFor> {
    let environment = proc::start_environment(pid).map_err(NotStartedFor::Unreadable)?;
    let instance = key.instance().id();
    let expected = [
        (env::ENV_SERVICE_NAME, key.service_name()),
        (env::ENV_SERVICE_VERSION, key.service_version()),
        (env::ENV_INSTANCE, instance.as_str()),
        (env::ENV_BACKEND_PIPE, endpoint),
    ];
    for (name, value) in expected {
        let found = proc::env_value(&environment, name);
        if found != Some(value.as_bytes()) {
            return Err(NotStartedFor::Other {
                name,
                found: found.map_or_else(
                    || "unset".to_owned(),
                    |v| format!("{:?}", String::from_utf8_lossy(v)),
                ),
            });
        }
    }
    Ok(())
}
