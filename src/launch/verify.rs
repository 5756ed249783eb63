//! Verification of a backend's identity over its socket: one probe sent and
//! its answer read under a deadline that a trickling peer cannot stretch.
//!
//! The messages are [`crate::contract::probe`]'s; this module does the I/O.
//! It does not decide whom to trust: the launcher ties the answer to the
//! socket's peer credentials and to the process it spawned.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::contract::clock;
use crate::contract::frame::{self, HEADER_LEN};
use crate::contract::identity::DaemonProcess;
pub use crate::contract::probe::*;
use crate::contract::proto::FrameMsg;
use crate::contract::trace::TraceContext;

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
