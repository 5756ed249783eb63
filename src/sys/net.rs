//! Sockets: connecting under a deadline, and the kernel's word on who is at
//! the other end of a connected socket.

use std::io;
use std::os::unix::net::UnixStream;
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
