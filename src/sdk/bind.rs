//! Binding the endpoint: clearing a stale socket file (never a live one, never
//! anything that is not a socket), creating the socket with mode 0600, and
//! remembering which file is ours so that only it is removed at the end.

use std::io::{self};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use super::ServerError;
use crate::sys::fs::PRIVATE_FILE_MODE;

/// Listen backlog of the endpoint socket.
const LISTEN_BACKLOG: i32 = 128;

/// The socket file this server created. An `O_PATH` descriptor pins its
/// inode, so no other file can get the same inode number while the server
/// lives (ext4 hands a freed number to the next new file at once); a file at
/// the path with the same device and inode is therefore this one, and a file
/// someone else put there later is never removed.
#[derive(Debug)]
pub(super) struct BoundSocketFile {
    pub(super) pin: OwnedFd,
}

impl BoundSocketFile {
    pub(super) fn pin(path: &Path) -> io::Result<Self> {
        use rustix::fs::{Mode, OFlags};
        let pin = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(BoundSocketFile { pin })
    }

    /// Whether `path` still names this socket file.
    pub(super) fn is_at(&self, path: &Path) -> io::Result<bool> {
        let ours = rustix::fs::fstat(&self.pin)?;
        match std::fs::symlink_metadata(path) {
            Ok(meta) => Ok(meta.file_type().is_socket()
                && meta.dev() == ours.st_dev
                && meta.ino() == ours.st_ino),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

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

/// Creates, binds and listens on the endpoint socket with mode 0600.
///
/// The mode is set on the socket before `bind`, so the file never exists
/// with wider permissions (Linux creates the file from the socket inode's
/// mode, filtered by the umask); this avoids changing the process-wide umask
/// under other threads. The private directory around it is the real fence.
pub(super) fn bind_socket(path: &Path) -> Result<(UnixListener, BoundSocketFile), ServerError> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| ServerError::io("create socket for", path, e))?;
    rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(PRIVATE_FILE_MODE))
        .map_err(|e| ServerError::io("chmod socket for", path, e))?;
    let addr = SocketAddrUnix::new(path).map_err(|e| ServerError::io("address", path, e))?;
    rustix::net::bind(&fd, &addr).map_err(|e| {
        if e == rustix::io::Errno::ADDRINUSE {
            ServerError::AddressInUse {
                path: path.to_path_buf(),
            }
        } else {
            ServerError::io("bind", path, e)
        }
    })?;
    let listener = UnixListener::from(fd);
    let result = (|| {
        let file = BoundSocketFile::pin(path).map_err(|e| ServerError::io("open", path, e))?;
        let mode = rustix::fs::fstat(&file.pin)
            .map_err(|e| ServerError::io("inspect", path, e))?
            .st_mode;
        if mode & 0o777 != PRIVATE_FILE_MODE {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))
                .map_err(|e| ServerError::io("chmod", path, e))?;
        }
        rustix::net::listen(listener.as_fd(), LISTEN_BACKLOG)
            .map_err(|e| ServerError::io("listen on", path, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| ServerError::io("set non-blocking", path, e))?;
        Ok(file)
    })();
    match result {
        Ok(id) => Ok((listener, id)),
        Err(err) => {
            let _ = std::fs::remove_file(path);
            Err(err)
        }
    }
}
