//! Binding the endpoint: clearing a stale socket file (never a live one, never
//! anything that is not a socket), creating the socket with mode 0600, and
//! remembering which file is ours so that only it is removed at the end; or
//! taking over the listener a launcher bound and passed.

use std::io::{self};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use std::collections::BTreeSet;
use std::os::fd::RawFd;
use std::sync::Mutex;

use super::config::{invalid_env, InheritedListener};
use super::ServerError;
use crate::sys::net::{adopt_listener, bind_private_socket, SocketFilePin};

/// The socket file this server created (see [`SocketFilePin`]).
pub(super) type BoundSocketFile = SocketFilePin;

pub(super) fn describe_file_type(meta: &std::fs::Metadata) -> &'static str {
    let ft = meta.file_type();
    if ft.is_symlink() {
        "symbolic link"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_file() {
        "regular file"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "special file"
    }
}

/// Clears the socket path for binding: nothing there is fine; a socket that
/// refuses connections is stale and is removed; a live socket or anything
/// that is not a socket is an error and is left as it is.
pub(super) fn clear_stale_socket(path: &Path) -> Result<(), ServerError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ServerError::io("inspect", path, e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::NotASocket {
            path: path.to_path_buf(),
            found: describe_file_type(&meta),
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ServerError::AddressInUse {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            match std::fs::remove_file(path) {
                Ok(()) => {
                    log::info!("removed stale socket file {}", path.display());
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(ServerError::io("remove stale socket", path, e)),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ServerError::io("connect to existing socket", path, e)),
    }
}

/// Creates, binds and listens on the endpoint socket with mode 0600 (see
/// [`bind_private_socket`]), non-blocking for the accept loop.
pub(super) fn bind_socket(path: &Path) -> Result<(UnixListener, BoundSocketFile), ServerError> {
    let (listener, file) = bind_private_socket(path).map_err(|(operation, source)| {
        if source.kind() == io::ErrorKind::AddrInUse {
            ServerError::AddressInUse {
                path: path.to_path_buf(),
            }
        } else {
            ServerError::io(operation, path, source)
        }
    })?;
    // The accept loop polls. On failure the socket file goes with the
    // listener, as for any other failed bind.
    if let Err(e) = listener.set_nonblocking(true) {
        let _ = std::fs::remove_file(path);
        return Err(ServerError::io("set non-blocking", path, e));
    }
    Ok((listener, file))
}

/// The passed descriptors servers of this process own now: a descriptor is
/// passed once, and a second server must not claim one the first owns. A
/// server's descriptor leaves the set when its listener is closed
/// ([`release_adopted`]).
static ADOPTED: Mutex<BTreeSet<RawFd>> = Mutex::new(BTreeSet::new());

fn adopted() -> std::sync::MutexGuard<'static, BTreeSet<RawFd>> {
    ADOPTED.lock().unwrap_or_else(|p| p.into_inner())
}

/// The listener taken over at `fd` has been closed.
pub(super) fn release_adopted(fd: RawFd) {
    adopted().remove(&fd);
}

/// Takes over the listening socket passed to this process (see
/// [`adopt_listener`]): the first of `inherited`'s descriptors that is a
/// listening Unix socket bound to `path`. None fits: the error names the
/// variable that passed them and says what each one is.
pub(super) fn adopt_inherited(
    inherited: &InheritedListener,
    path: &Path,
) -> Result<(UnixListener, BoundSocketFile), ServerError> {
    let value = if inherited.count == 1 {
        inherited.first.to_string()
    } else {
        inherited.count.to_string()
    };
    let mut owned = adopted();
    let mut reasons = Vec::new();
    for fd in inherited.first..inherited.first.saturating_add(inherited.count) {
        if owned.contains(&fd) {
            reasons.push(format!(
                "descriptor {fd} was taken over already by a server of this process"
            ));
            continue;
        }
        // SAFETY: the descriptors were passed to this process for its
        // server through the environment; nothing else in it owns them,
        // and ADOPTED keeps a second server from claiming one.
        match unsafe { adopt_listener(fd, path) } {
            Ok(listener) => {
                let file =
                    SocketFilePin::pin(path).map_err(|e| ServerError::io("open", path, e))?;
                owned.insert(fd);
                return Ok((listener, file));
            }
            Err(reason) => reasons.push(reason),
        }
    }
    Err(invalid_env(inherited.variable, &value, reasons.join("; ")))
}
