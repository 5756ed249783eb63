use super::*;

// ---------------------------------------------------------------------------
// Probe responses (prober side) and probe requests (backend side)

const NONCE: [u8; NONCE_LEN] = *b"0123456789abcdef0123456789ABCDEF";

pub(crate) fn probe_request() -> ProbeRequest {
    ProbeRequest::with_nonce(NONCE, &TraceContext::default())
}

pub(crate) fn good_response() -> FrameMsg {
    let request = frame::decode_frame(&probe_request().bytes, MAX_FRAME_BODY).unwrap();
    let answer = probe::probe_response(&request, &NONCE, &identity());
    frame::decode_frame(&answer, MAX_FRAME_BODY).unwrap()
}

pub(crate) fn protocol_error(response: &FrameMsg, field: &str, actual: &str) {
    match probe_request().check_response(response) {
        Err(ProbeError::Protocol {
            field: f,
            actual: a,
            ..
        }) => {
            assert_eq!(f, field);
            assert_eq!(a, actual, "{field}");
        }
        other => panic!("expected a protocol error on {field}, got {other:?}"),
    }
}

#[test]
fn probe_response_fields_are_each_checked() {
    assert_eq!(
        probe_request().check_response(&good_response()).unwrap(),
        identity()
    );

    let mut r = good_response();
    r.envelope_version = 2;
    protocol_error(&r, "envelope_version", "2");
    r.envelope_version = 0;
    protocol_error(&r, "envelope_version", "0");

    for (kind, name) in [
        (0, "REQUEST"),
        (2, "EVENT"),
        (3, "CANCEL"),
        (99, "99"),
        (-1, "-1"),
    ] {
        let mut r = good_response();
        r.kind = kind;
        protocol_error(&r, "kind", name);
    }

    let mut r = good_response();
    r.payload_protocol = payload_protocol::BROKER_CONTROL;
    protocol_error(&r, "payload_protocol", "0x0000");
    r.payload_protocol = u32::MAX;
    protocol_error(&r, "payload_protocol", "0xffffffff");

    let mut r = good_response();
    r.request_id ^= 1;
    protocol_error(&r, "request_id", &r.request_id.to_string());

    let mut r = good_response();
    r.payload_encoding = PayloadEncoding::Zstd as i32;
    protocol_error(&r, "payload_encoding", "1");

    let mut r = good_response();
    r.payload[0] ^= 0xff;
    protocol_error(&r, "nonce", &hex::encode(&r.payload[..NONCE_LEN]));
    for short in [0, 1, NONCE_LEN - 1] {
        let mut r = good_response();
        r.payload.truncate(short);
        protocol_error(&r, "nonce", &hex::encode(&r.payload));
    }
}

#[test]
fn probe_response_checks_run_in_contract_order() {
    let mut r = good_response();
    r.envelope_version = 9;
    r.kind = FrameKind::Event as i32;
    r.request_id = 0;
    r.payload.clear();
    protocol_error(&r, "envelope_version", "9");
    r.envelope_version = ENVELOPE_VERSION;
    protocol_error(&r, "kind", "EVENT");
}

#[test]
fn probe_response_identity_errors_are_decode_errors() {
    let with_payload = |identity_bytes: &[u8]| {
        let mut r = good_response();
        r.payload = [NONCE.as_slice(), identity_bytes].concat();
        probe_request().check_response(&r)
    };
    let decode = |result: Result<DaemonProcess, ProbeError>| match result {
        Err(ProbeError::Decode(e)) => e,
        other => panic!("expected a decode error, got {other:?}"),
    };
    // The nonce alone: an empty identity, whose hash is checked first.
    invalid_identity(decode(with_payload(&[])), "exe_sha256");
    malformed(
        decode(with_payload(&[0xff, 0xff])),
        "DaemonProcess",
        "invalid varint",
    );
    invalid_identity(
        decode(with_payload(&identity_with(1, &uint_field(1, 0)))),
        "pid",
    );
    malformed(
        decode(with_payload(&identity_with(4, &[]))),
        "DaemonProcess",
        "ipc_endpoint is missing",
    );
    // Trailing bytes after a valid identity are another (broken) field.
    let mut trailing = identity().to_bytes();
    trailing.push(0x80);
    malformed(
        decode(with_payload(&trailing)),
        "DaemonProcess",
        "invalid varint",
    );
}

#[test]
fn probe_requests_the_backend_refuses() {
    let request = frame::decode_frame(&probe_request().bytes, MAX_FRAME_BODY).unwrap();
    assert_eq!(probe::probe_nonce(&request), Some(NONCE));

    type Change = Box<dyn Fn(&mut FrameMsg)>;
    let variants: Vec<(&str, Change)> = vec![
        ("envelope 0", Box::new(|f| f.envelope_version = 0)),
        ("envelope 2", Box::new(|f| f.envelope_version = 2)),
        (
            "a response",
            Box::new(|f| f.kind = FrameKind::Response as i32),
        ),
        ("unknown kind", Box::new(|f| f.kind = 77)),
        (
            "admin protocol",
            Box::new(|f| f.payload_protocol = payload_protocol::ADMIN),
        ),
        (
            "zstd",
            Box::new(|f| f.payload_encoding = PayloadEncoding::Zstd as i32),
        ),
        ("unknown encoding", Box::new(|f| f.payload_encoding = 9)),
        (
            "31-byte nonce",
            Box::new(|f| {
                f.payload.pop();
            }),
        ),
        ("33-byte nonce", Box::new(|f| f.payload.push(0))),
        ("empty payload", Box::new(|f| f.payload.clear())),
        (
            "request id off by one",
            Box::new(|f| f.request_id = f.request_id.wrapping_add(1)),
        ),
        (
            "request id of another nonce",
            Box::new(|f| f.payload[0] ^= 1),
        ),
    ];
    for (name, change) in variants {
        let mut frame = request.clone();
        change(&mut frame);
        assert_eq!(probe::probe_nonce(&frame), None, "{name}");
    }
    // Trace fields, a deadline and unknown fields do not matter.
    let mut body = probe_request().bytes[HEADER_LEN..].to_vec();
    body.extend(uint_field(7, 5));
    body.extend(len_field(8, b"not a traceparent"));
    body.extend(uint_field(12, 1));
    assert_eq!(
        probe::probe_nonce(&frame::decode_body(&body).unwrap()),
        Some(NONCE)
    );
}
