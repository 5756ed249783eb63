//! Sockets: connecting under a deadline, the kernel's word on who is at the
//! other end of a connected socket, binding an endpoint privately, and
//! taking over a listening socket passed by a launcher.

use std::io;
use std::os::fd::RawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// Connects to a Unix socket, giving up at `deadline`. A listener whose
/// backlog is full makes a blocking `connect` wait indefinitely; here the
/// attempt is non-blocking and retried until the deadline, so a wedged or
/// hostile listener cannot stall the caller. `NotFound` and
/// `ConnectionRefused` are returned at once (nobody listens).
pub fn connect_until(path: &std::path::Path, deadline: Instant) -> io::Result<UnixStream> {
    use rustix::net::{
        connect, socket_with, AddressFamily, SocketAddrUnix, SocketFlags, SocketType,
    };
    let addr = SocketAddrUnix::new(path)?;
    let mut pause = Duration::from_micros(50);
    loop {
        let fd = socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        match connect(&fd, &addr) {
            Ok(()) => {
                let stream = UnixStream::from(fd);
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the listener's backlog stayed full until the deadline",
                    ));
                }
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(Duration::from_millis(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Who is at the other end of a connected Unix socket, as the kernel
/// recorded it when the peer created its end: `(pid, effective uid)`.
pub fn peer_credentials(stream: &UnixStream) -> io::Result<(u32, u32)> {
    use std::os::fd::AsFd;
    let cred = rustix::net::sockopt::socket_peercred(stream.as_fd())?;
    Ok((cred.pid.as_raw_nonzero().get() as u32, cred.uid.as_raw()))
}

/// Whether the socket file at `path` is stale: nothing listens on it (a
/// connect is refused at once). A listener, even one whose backlog is full,
/// and a path that cannot be checked count as not stale, so a caller that
/// removes only stale sockets never takes a live endpoint away.
pub fn socket_is_stale(path: &std::path::Path) -> bool {
    matches!(
        connect_until(path, Instant::now()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
    )
}

/// Listen backlog of an endpoint socket.
pub const LISTEN_BACKLOG: i32 = 128;

/// The socket file a process created by binding. An `O_PATH` descriptor pins
/// its inode, so no other file can get the same inode number while the pin
/// lives (ext4 hands a freed number to the next new file at once); a file at
/// the path with the same device and inode is therefore this one, and a file
/// someone else put there later is never taken for it.
#[derive(Debug)]
pub struct SocketFilePin {
    pin: std::os::fd::OwnedFd,
}

impl SocketFilePin {
    /// Pins the file now at `path` (not following a symlink).
    pub fn pin(path: &Path) -> io::Result<Self> {
        use rustix::fs::{Mode, OFlags};
        let pin = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(SocketFilePin { pin })
    }

    /// Whether `path` still names this socket file.
    pub fn is_at(&self, path: &Path) -> io::Result<bool> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
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

/// Creates, binds and listens on a Unix stream socket at `path` with mode
/// 0600, blocking and close-on-exec; on failure nothing is left at the
/// path. The error names the step that failed; a path already taken fails
/// with [`io::ErrorKind::AddrInUse`].
///
/// The mode is set on the socket before `bind`, so the file never exists
/// with wider permissions (Linux creates the file from the socket inode's
/// mode, filtered by the umask); this avoids changing the process-wide umask
/// under other threads. The private directory around it is the real fence.
pub fn bind_private_socket(
    path: &Path,
) -> Result<(UnixListener, SocketFilePin), (&'static str, io::Error)> {
    use crate::sys::fs::PRIVATE_FILE_MODE;
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    use std::os::unix::fs::PermissionsExt;

    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| ("create socket for", e.into()))?;
    rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(PRIVATE_FILE_MODE))
        .map_err(|e| ("chmod socket for", e.into()))?;
    let addr = SocketAddrUnix::new(path).map_err(|e| ("address", e.into()))?;
    rustix::net::bind(&fd, &addr).map_err(|e| ("bind", e.into()))?;
    let listener = UnixListener::from(fd);
    let result = (|| {
        let file = SocketFilePin::pin(path).map_err(|e| ("open", e))?;
        let mode = rustix::fs::fstat(&file.pin)
            .map_err(|e| ("inspect", e.into()))?
            .st_mode;
        if mode & 0o777 != PRIVATE_FILE_MODE {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))
                .map_err(|e| ("chmod", e))?;
        }
        rustix::net::listen(&listener, LISTEN_BACKLOG).map_err(|e| ("listen on", e.into()))?;
        Ok(file)
    })();
    match result {
        Ok(file) => Ok((listener, file)),
        Err(err) => {
            let _ = std::fs::remove_file(path);
            Err(err)
        }
    }
}

/// Takes over the listening socket a launcher (or a service manager) passed
/// at descriptor `fd`, which must be a listening Unix stream socket bound to
/// exactly `path`. On success it is owned by the returned listener, marked
/// close-on-exec (the backend's own children do not get it) and
/// non-blocking, and listened on again: Linux records a listening socket's
/// credentials at `listen`, so from then on every new connection's peer
/// credentials name this process rather than the launcher that bound it. On
/// failure the descriptor is left open and untouched, and the reason says
/// what it is instead.
///
/// # Safety
/// Nothing else in the process may own descriptor `fd` (it came from the
/// environment of a freshly started process).
pub unsafe fn adopt_listener(fd: RawFd, path: &Path) -> Result<UnixListener, String> {
    use std::os::fd::{BorrowedFd, FromRawFd};
    if fd < 0 || rustix::io::fcntl_getfd(BorrowedFd::borrow_raw(fd)).is_err() {
        return Err(format!("descriptor {fd} is not open"));
    }
    let borrowed = BorrowedFd::borrow_raw(fd);
    let stat = rustix::fs::fstat(borrowed).map_err(|e| format!("descriptor {fd}: {e}"))?;
    let kind = rustix::fs::FileType::from_raw_mode(stat.st_mode);
    if kind != rustix::fs::FileType::Socket {
        return Err(format!("descriptor {fd} is not a socket ({kind:?})"));
    }
    let domain = rustix::net::sockopt::socket_domain(borrowed)
        .map_err(|e| format!("descriptor {fd}: {e}"))?;
    if domain != rustix::net::AddressFamily::UNIX {
        return Err(format!("descriptor {fd} is not a Unix socket"));
    }
    let ty =
        rustix::net::sockopt::socket_type(borrowed).map_err(|e| format!("descriptor {fd}: {e}"))?;
    if ty != rustix::net::SocketType::STREAM {
        return Err(format!("descriptor {fd} is not a stream socket"));
    }
    if !rustix::net::sockopt::socket_acceptconn(borrowed).unwrap_or(false) {
        return Err(format!("descriptor {fd} is not listening"));
    }
    // Not owned until every check has passed: a descriptor that is not the
    // endpoint's is left as it was.
    let listener = std::mem::ManuallyDrop::new(UnixListener::from_raw_fd(fd));
    let bound = listener
        .local_addr()
        .map_err(|e| format!("descriptor {fd}: {e}"))?;
    match bound.as_pathname() {
        Some(bound) if bound == path => {}
        other => {
            return Err(format!(
                "descriptor {fd} is bound to {}, not to the endpoint {}",
                other.map_or_else(|| "no path".to_owned(), |p| p.display().to_string()),
                path.display()
            ))
        }
    }
    let taken = (|| {
        rustix::io::fcntl_setfd(&*listener, rustix::io::FdFlags::CLOEXEC)
            .map_err(|e| format!("descriptor {fd}: close-on-exec: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("descriptor {fd}: non-blocking: {e}"))?;
        rustix::net::listen(&*listener, LISTEN_BACKLOG)
            .map_err(|e| format!("descriptor {fd}: listen: {e}"))
    })();
    // Owned only once taken over; a failure leaves the descriptor open.
    taken.map(|()| std::mem::ManuallyDrop::into_inner(listener))
}
