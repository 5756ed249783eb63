//! Telling probes from application connections without consuming a byte:
//! the first bytes of a connection are peeked until they are a complete
//! identity probe request (answered here), cannot be one, or the
//! classification window ends (handed to the application untouched).

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use rustix::event::PollFlags;
use rustix::net::RecvFlags;

use super::accept::{Shared, Woke};
use super::MAX_PROBE_REQUEST;
use crate::contract::frame::{self, FRAMING_VERSION, HEADER_LEN};
use crate::contract::probe;
use crate::contract::probe::NONCE_LEN;
use crate::contract::proto::FrameMsg;

/// Bound on consuming a probe request and writing its answer. Both are a few
/// hundred bytes already in (or fitting in) the socket buffers.
const PROBE_IO_TIMEOUT: Duration = Duration::from_secs(1);

/// What the bytes peeked so far say about a connection.
#[derive(Debug, PartialEq)]
pub(super) enum Peeked {
    /// Could still be a probe; `need` bytes in all would settle it.
    NeedMore { need: usize },
    /// Cannot be a probe request.
    NotProbe,
    /// A complete probe request of `frame_len` bytes (header included).
    Probe {
        frame_len: usize,
        request: Box<FrameMsg>,
        nonce: [u8; NONCE_LEN],
    },
}

/// Judges the first bytes of a connection.
pub(super) fn judge(seen: &[u8]) -> Peeked {
    match seen.first() {
        None => return Peeked::NeedMore { need: HEADER_LEN },
        Some(&version) if version != FRAMING_VERSION => return Peeked::NotProbe,
        Some(_) => {}
    }
    let Some(header) = seen.get(..HEADER_LEN) else {
        return Peeked::NeedMore { need: HEADER_LEN };
    };
    let mut fixed = [0u8; HEADER_LEN];
    fixed.copy_from_slice(header);
    let Ok(body_len) = frame::parse_header(&fixed, MAX_PROBE_REQUEST) else {
        return Peeked::NotProbe;
    };
    let frame_len = HEADER_LEN + body_len as usize;
    let Some(body) = seen.get(HEADER_LEN..frame_len) else {
        return Peeked::NeedMore { need: frame_len };
    };
    let Ok(request) = frame::decode_body(body) else {
        return Peeked::NotProbe;
    };
    match probe::probe_nonce(&request) {
        Some(nonce) => Peeked::Probe {
            frame_len,
            request: Box::new(request),
            nonce,
        },
        None => {
            if request.payload_protocol == crate::contract::proto::payload_protocol::IDENTITY_PROBE
            {
                log::warn!(
                    "malformed identity probe (request_id {}, {} payload bytes); \
                     handing the connection to the application",
                    request.request_id,
                    request.payload.len()
                );
            }
            Peeked::NotProbe
        }
    }
}

/// The outcome of classifying one connection.
pub(super) enum Class {
    Probe {
        frame_len: usize,
        request: Box<FrameMsg>,
        nonce: [u8; NONCE_LEN],
    },
    Application,
    /// The peer hung up without sending a byte (a launcher checking who
    /// listens, see `launch::attest`): there is no request for the
    /// application; dropped, and not counted as activity.
    Empty,
    /// The server is stopping; drop the connection.
    Abandon,
    /// The connection failed while being looked at.
    Broken(io::Error),
}

/// Shortest and longest pause between peeks while a partial frame grows.
pub(super) const PEEK_BACKOFF_MIN: Duration = Duration::from_millis(1);
pub(super) const PEEK_BACKOFF_MAX: Duration = Duration::from_millis(16);

pub(super) fn peek(stream: &UnixStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::net::recv(stream, &mut *buf, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
            Ok((n, _)) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Looks at a connection's first bytes without consuming them, until they
/// are a complete probe request, cannot be one, or `deadline` passes.
///
/// Waiting for the first byte uses `poll`. Waiting for more bytes of a
/// partial frame cannot: peeked bytes stay queued, so the socket stays
/// readable; instead it re-peeks after short pauses, during which `poll`
/// watches for the peer hanging up (no more bytes will come) and for stop.
pub(super) fn classify(shared: &Shared, stream: &UnixStream, deadline: Instant) -> Class {
    let mut buf = vec![0u8; HEADER_LEN];
    let mut backoff = PEEK_BACKOFF_MIN;
    let mut peer_done = false;
    loop {
        let seen = match peek(stream, &mut buf) {
            // Nothing queued and the peer has shut down its side: it sent
            // nothing and can send nothing more.
            Ok(0) => return Class::Empty,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Class::Application;
                }
                match shared.poll_with_stop(Some(stream.as_fd()), PollFlags::IN, Some(left)) {
                    Ok(Woke::Ready) => continue,
                    Ok(Woke::Timeout) => return Class::Application,
                    Ok(Woke::Stop) => return Class::Abandon,
                    Err(e) => return Class::Broken(e),
                }
            }
            Err(e) => return Class::Broken(e),
        };
        let need = match judge(&buf[..seen]) {
            Peeked::Probe {
                frame_len,
                request,
                nonce,
            } => {
                return Class::Probe {
                    frame_len,
                    request,
                    nonce,
                }
            }
            Peeked::NotProbe => return Class::Application,
            Peeked::NeedMore { need } => need,
        };
        if need > buf.len() {
            let was_full = seen == buf.len();
            buf.resize(need, 0);
            if was_full {
                // More may already be queued than the old buffer could show.
                continue;
            }
        }
        if peer_done {
            return Class::Application;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Class::Application;
        }
        match shared.poll_with_stop(
            Some(stream.as_fd()),
            PollFlags::RDHUP,
            Some(left.min(backoff)),
        ) {
            Ok(Woke::Ready) => peer_done = true,
            Ok(Woke::Timeout) => backoff = (backoff * 2).min(PEEK_BACKOFF_MAX),
            Ok(Woke::Stop) => return Class::Abandon,
            Err(e) => return Class::Broken(e),
        }
    }
}

pub(super) fn answer_probe(
    shared: &Shared,
    mut stream: &UnixStream,
    frame_len: usize,
    request: &FrameMsg,
    nonce: &[u8; NONCE_LEN],
) -> io::Result<()> {
    // Consume exactly the request; anything the peer sent after it is not
    // ours to read and goes away with the connection.
    let mut consumed = vec![0u8; frame_len];
    stream.set_read_timeout(Some(PROBE_IO_TIMEOUT))?;
    stream.read_exact(&mut consumed)?;
    let response = probe::probe_response(request, nonce, &shared.identity);
    stream.set_write_timeout(Some(PROBE_IO_TIMEOUT))?;
    stream.write_all(&response)?;
    Ok(())
}

pub(super) fn handle_connection(shared: &Shared, stream: UnixStream, accepted: Instant) {
    let class = classify(shared, &stream, accepted + shared.classify_window);
    serve(shared, stream, class);
}

/// Answers a probe, hands an application connection over, or drops it.
pub(super) fn serve(shared: &Shared, stream: UnixStream, class: Class) {
    match class {
        Class::Probe {
            frame_len,
            request,
            nonce,
        } => match answer_probe(shared, &stream, frame_len, &request, &nonce) {
            Ok(()) => log::debug!(
                "answered identity probe request_id={} traceparent={:?}",
                request.request_id,
                request.traceparent
            ),
            Err(e) => log::warn!("could not answer identity probe: {e}"),
        },
        Class::Application => {
            // The application's own sockets block; accept() does not inherit
            // the listener's O_NONBLOCK on Linux, but say so explicitly.
            if let Err(e) = stream.set_nonblocking(false) {
                log::warn!("dropping connection that cannot be made blocking: {e}");
                return;
            }
            shared.enqueue(stream);
        }
        Class::Empty => log::trace!("dropped a connection that closed without a byte"),
        Class::Abandon => {}
        Class::Broken(e) => log::warn!("connection failed before it could be classified: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::frame::MAX_FRAME_BODY;
    use crate::contract::probe::ProbeRequest;
    use crate::contract::trace::TraceContext;

    #[test]
    fn judge_recognises_a_probe_only_when_complete() {
        let req = ProbeRequest::with_nonce([5; 32], &TraceContext::default());
        for cut in 0..req.bytes.len() {
            match judge(&req.bytes[..cut]) {
                Peeked::NeedMore { need } => assert!(need > cut, "{cut}"),
                other => panic!("{cut}: {other:?}"),
            }
        }
        match judge(&req.bytes) {
            Peeked::Probe {
                frame_len, nonce, ..
            } => {
                assert_eq!(frame_len, req.bytes.len());
                assert_eq!(nonce, [5; 32]);
            }
            other => panic!("{other:?}"),
        }
        let mut longer = req.bytes.clone();
        longer.extend_from_slice(b"trailing");
        assert!(matches!(judge(&longer), Peeked::Probe { .. }));
    }

    #[test]
    fn judge_rejects_what_cannot_be_a_probe() {
        assert_eq!(judge(b"GET / HTTP/1.1"), Peeked::NotProbe);
        assert_eq!(judge(&[1, 0xff, 0xff, 0xff, 0xff]), Peeked::NotProbe);
        let req = ProbeRequest::with_nonce([5; 32], &TraceContext::default());
        let mut frame = frame::decode_frame(&req.bytes, MAX_FRAME_BODY).unwrap();
        frame.request_id ^= 1;
        let bytes = frame::encode_frame(&frame, MAX_FRAME_BODY).unwrap();
        assert_eq!(judge(&bytes), Peeked::NotProbe);
        let mut garbled = req.bytes.clone();
        garbled[HEADER_LEN] = 0xff;
        assert_eq!(judge(&garbled), Peeked::NotProbe);
    }
}
