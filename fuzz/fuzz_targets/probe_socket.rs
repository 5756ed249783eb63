//! `probe::read_frame` over a real Unix socket: the peer sends the input and
//! closes. The outcome must be what the framing rules say for those bytes:
//! `Closed` with the exact byte counts when they stop short, the header's
//! own error, or the body decoder's result on exactly the declared bytes.
#![no_main]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use running_process::wire::{self as probe, ProbeError, ProbeRequest, MAX_PROBE_RESPONSE};
use running_process::wire::{self as frame, HEADER_LEN};
use running_process::TraceContext;

#[global_allocator]
static ALLOC: rp_fuzz::CappedAlloc = rp_fuzz::CappedAlloc;

fuzz_target!(|data: &[u8]| {
    let (mut reader, mut writer) = UnixStream::pair().expect("socketpair");
    // Inputs are far below a Unix socket's send buffer: this never blocks.
    writer.write_all(data).expect("write to the pair");
    drop(writer);
    let got = probe::read_frame(&mut reader, MAX_PROBE_RESPONSE, Duration::from_secs(30));

    let Some(header) = data.get(..HEADER_LEN) else {
        match got {
            Err(ProbeError::Closed { received, expected }) => {
                assert_eq!((received, expected), (data.len(), HEADER_LEN));
            }
            other => panic!("{} bytes: expected Closed, got {other:?}", data.len()),
        }
        return;
    };
    let length = match frame::parse_header(header.try_into().expect("five"), MAX_PROBE_RESPONSE) {
        Ok(length) => length as usize,
        Err(expected) => {
            match got {
                Err(ProbeError::Decode(e)) => assert_eq!(e, expected),
                other => panic!("expected the header error {expected:?}, got {other:?}"),
            }
            return;
        }
    };
    let body = &data[HEADER_LEN..];
    if body.len() < length {
        match got {
            Err(ProbeError::Closed { received, expected }) => {
                assert_eq!((received, expected), (body.len(), length));
            }
            other => panic!("short body: expected Closed, got {other:?}"),
        }
        return;
    }
    match (frame::decode_body(&body[..length]), got) {
        (Ok(expected), Ok(frame)) => {
            assert_eq!(frame, expected);
            // What the prober does next must not panic either.
            let request = ProbeRequest::with_nonce(rp_fuzz::PROBE_NONCE, &TraceContext::default());
            let _ = request.check_response(&frame);
        }
        (Err(expected), Err(ProbeError::Decode(e))) => assert_eq!(e, expected),
        (expected, got) => panic!("expected {expected:?}, got {got:?}"),
    }
});
