//! The identity probe (`broker::probe`), both sides, on a decoded frame body:
//! the prober's `check_response` against a probe with a known nonce, and the
//! backend's `probe_nonce`. What either accepts must round-trip through the
//! other side's encoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use running_process::wire::{self as probe, ProbeRequest, NONCE_LEN};
use running_process::wire::{self as frame, MAX_FRAME_BODY};
use running_process::wire::{payload_protocol, FrameKind, PayloadEncoding};
use running_process::{DaemonProcess, TraceContext};

#[global_allocator]
static ALLOC: rp_fuzz::CappedAlloc = rp_fuzz::CappedAlloc;

fuzz_target!(|data: &[u8]| {
    let Ok(received) = frame::decode_body(data) else {
        return;
    };
    let trace = TraceContext::default();

    // Backend side: a probe request it would answer.
    if let Some(nonce) = probe::probe_nonce(&received) {
        assert_eq!(received.payload, nonce, "nonce is not the whole payload");
        assert_eq!(received.request_id, probe::request_id_of(&nonce));
        assert_eq!(received.kind, FrameKind::Request as i32);
        assert_eq!(received.envelope_version, frame::ENVELOPE_VERSION);
        assert_eq!(received.payload_protocol, payload_protocol::IDENTITY_PROBE);
        assert_eq!(received.payload_encoding, PayloadEncoding::None as i32);
        // The prober that sent it accepts the answer.
        let identity = rp_fuzz::sample_identity();
        let answer = probe::probe_response(&received, &nonce, &identity);
        let answer = frame::decode_frame(&answer, MAX_FRAME_BODY).expect("an answer decodes");
        assert_eq!(answer.traceparent, received.traceparent);
        assert_eq!(answer.tracestate, received.tracestate);
        let prober = ProbeRequest::with_nonce(nonce, &trace);
        assert_eq!(
            prober.check_response(&answer).expect("own answer accepted"),
            identity
        );
    }

    // Prober side: an answer to the probe with the fixed nonce.
    let request = ProbeRequest::with_nonce(rp_fuzz::PROBE_NONCE, &trace);
    if let Ok(identity) = request.check_response(&received) {
        assert_eq!(&received.payload[..NONCE_LEN], rp_fuzz::PROBE_NONCE);
        assert_eq!(received.request_id, request.request_id);
        let decoded = DaemonProcess::from_bytes(&received.payload[NONCE_LEN..])
            .expect("the accepted identity decodes on its own");
        assert_eq!(decoded, identity);
        // The backend's encoder gives an answer the prober reads the same.
        let sent = frame::decode_frame(&request.bytes, MAX_FRAME_BODY).expect("request decodes");
        let nonce = probe::probe_nonce(&sent).expect("our own request is a probe");
        let answer = probe::probe_response(&sent, &nonce, &identity);
        let answer = frame::decode_frame(&answer, MAX_FRAME_BODY).expect("an answer decodes");
        assert_eq!(
            request.check_response(&answer).expect("re-encoded answer"),
            identity
        );
    }
});
