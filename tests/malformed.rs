//! Malformed input to every decoder of the core: frame headers and bodies
//! (also read from a real socket), probe requests and responses,
//! `DaemonProcess` (protobuf and JSON), `ServiceDefinition` (bytes and the
//! `.servicedef` store) and pool manifests. Each case asserts the exact error
//! variant.
//!
//! Duplicated fields follow protobuf, deliberately: in protobuf input the
//! last value of a scalar, string or bytes field wins, a repeated field
//! appends, a map keeps the last value of a key, and an embedded message is
//! merged, which is what every conforming protobuf decoder does (so a peer
//! and we never disagree on what a message says); the result is then
//! validated like any other. JSON identities refuse duplicate keys.
//! Unknown protobuf fields (including the reserved Frame numbers 10 to 15)
//! and unknown JSON keys are ignored, as the contract asks.
//!
//! The binary also writes and checks the fuzz seed corpus (`fuzz/corpus`).
//! The global allocator here counts allocations per thread, to prove that
//! oversized declared lengths are refused before any buffer is allocated.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use running_process::fuzzing::decode_pool_manifest;
use running_process::wire::{
    self as frame, encode_frame, parse_header, ENVELOPE_VERSION, HEADER_LEN, MAX_FRAME_BODY,
    MAX_HELLO_BODY,
};
use running_process::wire::{
    self as probe, ProbeError, ProbeRequest, MAX_PROBE_RESPONSE, NONCE_LEN,
};
use running_process::wire::{payload_protocol, FrameKind, FrameMsg, PayloadEncoding};
use running_process::{
    BackendKey, BrokerInstanceKey, DaemonProcess, Endpoint, Isolation, NameKind, ServiceDefinition,
    TraceContext,
};
use running_process::{DecodeError, StoreError, ValidationError};
use running_process::{MAX_ALLOW_LIST, MAX_LABELS, MAX_SERVICEDEF_BYTES};

// ---------------------------------------------------------------------------
// Allocation accounting

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// What `f` allocated on this thread: its result, the number of allocations
/// and the largest single one in bytes.
fn measure<R>(f: impl FnOnce() -> R) -> (R, usize, usize) {
    ALLOCATIONS.with(|n| n.set(0));
    LARGEST.with(|l| l.set(0));
    let result = f();
    (result, ALLOCATIONS.with(Cell::get), LARGEST.with(Cell::get))
}

// ---------------------------------------------------------------------------
// Protobuf wire helpers, written from the encoding rules

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const SGROUP: u8 = 3;
const EGROUP: u8 = 4;
const I32: u8 = 5;

fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn key(field: u32, wire_type: u8) -> Vec<u8> {
    varint((u64::from(field) << 3) | u64::from(wire_type))
}

fn uint_field(field: u32, value: u64) -> Vec<u8> {
    [key(field, VARINT), varint(value)].concat()
}

fn len_field(field: u32, data: &[u8]) -> Vec<u8> {
    [key(field, LEN), varint(data.len() as u64), data.to_vec()].concat()
}

// ---------------------------------------------------------------------------
// Sample values

const HASH: [u8; 32] = [0xab; 32];
const BOOT_ID: &str = "0d3c9a52-6c1e-4c2f-9a43-2f1d2a7b9e10";
const SOCKET: &str = "/run/user/1000/running-process/broker/be.sock";

fn identity() -> DaemonProcess {
    DaemonProcess {
        pid: 4242,
        exe_path: "/opt/echo/1.0.0/echo".into(),
        exe_sha256: HASH,
        boot_id: BOOT_ID.into(),
        ipc_endpoint: Endpoint::new("shared", SOCKET).unwrap(),
        started_at_unix_ms: 1_764_000_000_000,
        idle_timeout_secs: Some(30),
    }
}

fn endpoint_bytes(namespace: &[u8], path: &[u8]) -> Vec<u8> {
    [len_field(1, namespace), len_field(2, path)].concat()
}

/// The fields of [`identity`], by hand, in field order.
fn identity_fields() -> Vec<Vec<u8>> {
    vec![
        uint_field(1, 4242),
        len_field(2, b"/opt/echo/1.0.0/echo"),
        len_field(3, &HASH),
        len_field(4, &endpoint_bytes(b"shared", SOCKET.as_bytes())),
        uint_field(5, 1_764_000_000_000),
        len_field(6, BOOT_ID.as_bytes()),
        uint_field(7, 30),
    ]
}

/// [`identity_fields`] with field `number` replaced by `replacement`.
fn identity_with(number: usize, replacement: &[u8]) -> Vec<u8> {
    let mut fields = identity_fields();
    fields[number - 1] = replacement.to_vec();
    fields.concat()
}

fn service_definition() -> ServiceDefinition {
    ServiceDefinition {
        service_name: "echo".into(),
        binary_path: "/opt/echo/1.0.0/echo".into(),
        per_version_binary_dir: "/opt/echo/1.0.0".into(),
        isolation: Isolation::Shared,
        min_version: Some("1.0.0".parse().unwrap()),
        version_allow_list: vec!["1.0.0".parse().unwrap()],
        labels: [("team".to_owned(), "build".to_owned())].into(),
        ..Default::default()
    }
}

fn sample_frame() -> FrameMsg {
    FrameMsg {
        envelope_version: ENVELOPE_VERSION,
        kind: FrameKind::Request as i32,
        payload_protocol: payload_protocol::IDENTITY_PROBE,
        payload: vec![7; 32],
        request_id: 42,
        payload_encoding: PayloadEncoding::None as i32,
        deadline_unix_ms: 0,
        traceparent: String::new(),
        tracestate: String::new(),
    }
}

fn malformed(err: DecodeError, what: &str, reason: &str) {
    match err {
        DecodeError::Malformed { what: w, reason: r } => {
            assert_eq!(w, what);
            assert!(r.contains(reason), "{r:?} does not say {reason:?}");
        }
        other => panic!("expected Malformed {{ {what}, {reason} }}, got {other:?}"),
    }
}

/// Decodes each case and checks that it is `Malformed { what, .. }` with a
/// reason saying the given words, and that no single allocation exceeded
/// `max_allocation`. Reports every mismatch at once.
fn expect_malformed<T: std::fmt::Debug>(
    what: &str,
    cases: &[(&str, Vec<u8>, &str)],
    max_allocation: usize,
    decode: impl Fn(&[u8]) -> Result<T, DecodeError>,
) {
    let mut wrong = Vec::new();
    for (name, input, reason) in cases {
        let (result, _, largest) = measure(|| decode(input));
        match result {
            Err(DecodeError::Malformed { what: w, reason: r })
                if w == what && r.contains(reason) => {}
            other => wrong.push(format!("{name}: expected {reason:?}, got {other:?}")),
        }
        if largest > max_allocation {
            wrong.push(format!("{name}: allocated {largest} bytes at once"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn invalid_identity(err: DecodeError, field: &str) {
    match err {
        DecodeError::Invalid(ValidationError::Identity { field: f, .. }) => assert_eq!(f, field),
        other => panic!("expected an invalid {field}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Frame headers: declared lengths are refused before any allocation

#[test]
fn header_declaring_up_to_4_gib_is_refused_without_allocating() {
    for declared in [MAX_FRAME_BODY + 1, 1 << 30, u32::MAX - 1, u32::MAX] {
        for limit in [MAX_HELLO_BODY, MAX_PROBE_RESPONSE, MAX_FRAME_BODY, u32::MAX] {
            let mut header = [1u8; HEADER_LEN];
            header[1..].copy_from_slice(&declared.to_le_bytes());
            let (result, allocations, _) = measure(|| parse_header(&header, limit));
            assert_eq!(
                result,
                Err(DecodeError::FrameTooLarge {
                    length: u64::from(declared),
                    limit: u64::from(limit.min(MAX_FRAME_BODY)),
                })
            );
            assert_eq!(allocations, 0, "parse_header allocated for {declared}");
            // The whole-frame decoder refuses on the header too, whatever
            // follows it.
            let bytes = [header.as_slice(), &[0u8; 16]].concat();
            let (result, allocations, _) = measure(|| frame::decode_frame(&bytes, limit));
            assert!(matches!(result, Err(DecodeError::FrameTooLarge { .. })));
            assert_eq!(allocations, 0);
        }
    }
}

#[test]
fn a_limit_above_the_contract_cap_is_lowered_to_it() {
    let at_cap = [[1u8].as_slice(), &MAX_FRAME_BODY.to_le_bytes()].concat();
    let over = [[1u8].as_slice(), &(MAX_FRAME_BODY + 1).to_le_bytes()].concat();
    let at_cap: [u8; HEADER_LEN] = at_cap.try_into().unwrap();
    let over: [u8; HEADER_LEN] = over.try_into().unwrap();
    assert_eq!(parse_header(&at_cap, u32::MAX), Ok(MAX_FRAME_BODY));
    assert_eq!(
        parse_header(&over, u32::MAX),
        Err(DecodeError::FrameTooLarge {
            length: u64::from(MAX_FRAME_BODY) + 1,
            limit: u64::from(MAX_FRAME_BODY),
        })
    );
    // Encoding cannot produce an over-cap frame either.
    let mut big = sample_frame();
    big.payload = vec![0; MAX_FRAME_BODY as usize];
    assert!(matches!(
        encode_frame(&big, u32::MAX),
        Err(DecodeError::FrameTooLarge { limit, .. }) if limit == u64::from(MAX_FRAME_BODY)
    ));
}

#[test]
fn header_caps_are_inclusive() {
    for limit in [0, MAX_HELLO_BODY, MAX_PROBE_RESPONSE, MAX_FRAME_BODY] {
        let mut header = [1u8; HEADER_LEN];
        header[1..].copy_from_slice(&limit.to_le_bytes());
        assert_eq!(parse_header(&header, limit), Ok(limit));
        header[1..].copy_from_slice(&(limit + 1).to_le_bytes());
        assert_eq!(
            parse_header(&header, limit),
            Err(DecodeError::FrameTooLarge {
                length: u64::from(limit) + 1,
                limit: u64::from(limit),
            })
        );
    }
}

#[test]
fn wrong_framing_versions_are_refused() {
    for version in [0u8, 2, 0x7f, 0xff] {
        let header = [version, 0, 0, 0, 0];
        match parse_header(&header, MAX_FRAME_BODY) {
            Err(DecodeError::Frame { reason }) => assert!(
                reason.contains(&format!("framing version {version} is not supported")),
                "{reason}"
            ),
            other => panic!("version {version}: {other:?}"),
        }
    }
    // The version is checked before the length.
    assert!(matches!(
        parse_header(&[2, 0xff, 0xff, 0xff, 0xff], MAX_FRAME_BODY),
        Err(DecodeError::Frame { .. })
    ));
}

#[test]
fn every_truncation_and_any_padding_of_a_frame_is_refused() {
    let bytes = encode_frame(&sample_frame(), MAX_FRAME_BODY).unwrap();
    for cut in 0..bytes.len() {
        match frame::decode_frame(&bytes[..cut], MAX_FRAME_BODY) {
            Err(DecodeError::Frame { reason }) if cut < HEADER_LEN => {
                assert!(reason.contains("shorter than a frame header"), "{reason}")
            }
            Err(DecodeError::Frame { reason }) => assert!(
                reason.contains(&format!(
                    "declares {} body bytes but {} follow",
                    bytes.len() - HEADER_LEN,
                    cut - HEADER_LEN
                )),
                "{reason}"
            ),
            other => panic!("prefix of {cut} bytes: {other:?}"),
        }
    }
    let padded = [bytes.as_slice(), &[0]].concat();
    assert!(matches!(
        frame::decode_frame(&padded, MAX_FRAME_BODY),
        Err(DecodeError::Frame { .. })
    ));
    // Two frames back to back are not one frame.
    let twice = [bytes.as_slice(), bytes.as_slice()].concat();
    assert!(matches!(
        frame::decode_frame(&twice, MAX_FRAME_BODY),
        Err(DecodeError::Frame { .. })
    ));
}

// ---------------------------------------------------------------------------
// Frame bodies

#[test]
fn frame_body_wire_errors_are_malformed() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        // An 11-byte varint, and a 10-byte one whose last byte overflows 64 bits.
        (
            "varint over 10 bytes",
            [key(5, VARINT), vec![0xff; 10], vec![0x01]].concat(),
            "invalid varint",
        ),
        (
            "varint over 64 bits",
            [key(5, VARINT), vec![0xff; 9], vec![0x02]].concat(),
            "invalid varint",
        ),
        (
            "varint cut short",
            [key(5, VARINT), vec![0x80]].concat(),
            "invalid varint",
        ),
        ("key varint cut short", vec![0x80], "invalid varint"),
        ("key over 32 bits", varint(1 << 35), "invalid key value"),
        ("field number 0", key(0, VARINT), "invalid tag value: 0"),
        (
            "wire type 6",
            varint((1 << 3) | 6),
            "invalid wire type value: 6",
        ),
        (
            "wire type 7",
            varint((1 << 3) | 7),
            "invalid wire type value: 7",
        ),
        (
            "uint32 as length-delimited",
            len_field(1, b"\x01"),
            "invalid wire type: LengthDelimited (expected Varint)",
        ),
        (
            "bytes as varint",
            uint_field(4, 1),
            "invalid wire type: Varint (expected LengthDelimited)",
        ),
        (
            "uint64 as fixed64",
            [key(5, I64), vec![0; 8]].concat(),
            "invalid wire type: SixtyFourBit (expected Varint)",
        ),
        (
            "string as fixed32",
            [key(8, I32), vec![0; 4]].concat(),
            "invalid wire type: ThirtyTwoBit (expected LengthDelimited)",
        ),
        (
            "invalid UTF-8 in traceparent",
            len_field(8, b"00-\xff\xfe"),
            "invalid string value: data is not UTF-8 encoded",
        ),
        (
            "overlong UTF-8 in tracestate",
            len_field(9, b"\xc0\xaf"),
            "invalid string value: data is not UTF-8 encoded",
        ),
        (
            "UTF-16 surrogate in tracestate",
            len_field(9, b"\xed\xa0\x80"),
            "invalid string value: data is not UTF-8 encoded",
        ),
        (
            "length past the end",
            [key(4, LEN), varint(100), vec![0; 10]].concat(),
            "buffer underflow",
        ),
        (
            "length of 2^63",
            [key(4, LEN), varint(1 << 63)].concat(),
            "buffer underflow",
        ),
        (
            "fixed64 cut short",
            [key(20, I64), vec![0; 7]].concat(),
            "buffer underflow",
        ),
        (
            "fixed32 cut short",
            [key(20, I32), vec![0; 3]].concat(),
            "buffer underflow",
        ),
        (
            "lone end group",
            key(20, EGROUP),
            "unexpected end group tag",
        ),
        (
            "group closed by another number",
            [key(20, SGROUP), key(21, EGROUP)].concat(),
            "unexpected end group tag",
        ),
        // The group's end is looked for where the input ends.
        ("unclosed group", key(20, SGROUP), "invalid varint"),
        (
            "groups nested 101 deep",
            key(20, SGROUP).repeat(101),
            "recursion limit reached",
        ),
    ];
    expect_malformed("Frame", &cases, 4096, frame::decode_body);
}

#[test]
fn frame_unknown_and_reserved_fields_are_ignored() {
    let sample = sample_frame();
    let plain = encode_frame(&sample, MAX_FRAME_BODY).unwrap()[HEADER_LEN..].to_vec();
    let mut unknown = plain.clone();
    for field in 10..=15 {
        unknown.extend(uint_field(field, 1));
    }
    unknown.extend(len_field(16, b"later"));
    unknown.extend([key(17, I64), vec![0; 8]].concat());
    unknown.extend([key(18, I32), vec![0; 4]].concat());
    unknown.extend([key(19, SGROUP), uint_field(1, 5), key(19, EGROUP)].concat());
    unknown.extend(uint_field((1 << 29) - 1, 9));
    assert_eq!(frame::decode_body(&unknown).unwrap(), sample);
}

#[test]
fn frame_duplicate_fields_take_the_last_value() {
    let body = [
        uint_field(1, 7),
        uint_field(5, 1),
        len_field(4, b"first"),
        len_field(8, b"first"),
        encode_frame(&sample_frame(), MAX_FRAME_BODY).unwrap()[HEADER_LEN..].to_vec(),
        uint_field(5, 99),
    ]
    .concat();
    let decoded = frame::decode_body(&body).unwrap();
    let mut expected = sample_frame();
    expected.request_id = 99;
    // sample_frame's empty traceparent is not encoded, so "first" stays.
    expected.traceparent = "first".into();
    assert_eq!(decoded, expected);
}

#[test]
fn uint32_fields_keep_the_low_32_bits_of_a_wider_varint() {
    // Protobuf's rule for a uint32 field read from a 64-bit varint: the
    // value is truncated. Every conforming decoder does the same, so a peer
    // cannot make us and another reader see different versions.
    let body = uint_field(1, (1 << 32) | u64::from(ENVELOPE_VERSION));
    assert_eq!(frame::decode_body(&body).unwrap().envelope_version, 1);
    // Enum fields are open: an unknown kind decodes and is refused by the
    // probe checks below.
    assert_eq!(frame::decode_body(&uint_field(2, 99)).unwrap().kind, 99);
    assert_eq!(
        frame::decode_body(&uint_field(2, u64::MAX)).unwrap().kind,
        -1
    );
}

// ---------------------------------------------------------------------------
// read_frame over a real socket

fn header_declaring(length: u32) -> Vec<u8> {
    [[1u8].as_slice(), &length.to_le_bytes()].concat()
}

#[test]
fn socket_peer_declaring_4_gib_gets_frame_too_large_at_once() {
    for limit in [MAX_PROBE_RESPONSE, MAX_FRAME_BODY, u32::MAX] {
        let (mut reader, mut peer) = UnixStream::pair().unwrap();
        peer.write_all(&header_declaring(u32::MAX)).unwrap();
        // The peer stays connected and sends nothing more: only a check on
        // the header can end the read before the 30 s timeout.
        let (result, _, largest) =
            measure(|| probe::read_frame(&mut reader, limit, Duration::from_secs(30)));
        match result {
            Err(ProbeError::Decode(DecodeError::FrameTooLarge { length, limit: cap })) => {
                assert_eq!(length, u64::from(u32::MAX));
                assert_eq!(cap, u64::from(limit.min(MAX_FRAME_BODY)));
            }
            other => panic!("limit {limit}: {other:?}"),
        }
        assert!(
            largest < 1024,
            "allocated {largest} bytes for a refused frame"
        );
        drop(peer);
    }
}

#[test]
fn socket_peer_that_stops_short_gets_closed_with_counts() {
    let full = encode_frame(&sample_frame(), MAX_FRAME_BODY).unwrap();
    let body_len = full.len() - HEADER_LEN;
    for cut in [
        0,
        1,
        HEADER_LEN - 1,
        HEADER_LEN,
        HEADER_LEN + 1,
        full.len() - 1,
    ] {
        let (mut reader, mut peer) = UnixStream::pair().unwrap();
        peer.write_all(&full[..cut]).unwrap();
        drop(peer);
        let (received, expected) = if cut < HEADER_LEN {
            (cut, HEADER_LEN)
        } else {
            (cut - HEADER_LEN, body_len)
        };
        match probe::read_frame(&mut reader, MAX_PROBE_RESPONSE, Duration::from_secs(30)) {
            Err(ProbeError::Closed {
                received: r,
                expected: e,
            }) => assert_eq!((r, e), (received, expected), "cut at {cut}"),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn socket_peer_that_stalls_or_trickles_times_out_at_the_deadline() {
    // Declares 100 bytes, sends 10, stays connected.
    let (mut reader, mut peer) = UnixStream::pair().unwrap();
    peer.write_all(&header_declaring(100)).unwrap();
    peer.write_all(&[0; 10]).unwrap();
    let timeout = Duration::from_millis(200);
    match probe::read_frame(&mut reader, MAX_PROBE_RESPONSE, timeout) {
        Err(ProbeError::Timeout { timeout: t }) => assert_eq!(t, timeout),
        other => panic!("{other:?}"),
    }
    drop(peer);

    // One byte every 20 ms would take 2 s for the body: each byte arrives
    // well within any per-read timeout, but the deadline is for the whole
    // frame.
    let (mut reader, mut peer) = UnixStream::pair().unwrap();
    let trickler = thread::spawn(move || {
        if peer.write_all(&header_declaring(100)).is_err() {
            return;
        }
        for _ in 0..100 {
            thread::sleep(Duration::from_millis(20));
            if peer.write_all(&[0]).is_err() {
                return;
            }
        }
    });
    let timeout = Duration::from_millis(300);
    let result = probe::read_frame(&mut reader, MAX_PROBE_RESPONSE, timeout);
    drop(reader);
    trickler.join().unwrap();
    match result {
        Err(ProbeError::Timeout { timeout: t }) => assert_eq!(t, timeout),
        other => panic!("{other:?}"),
    }
}

#[test]
fn socket_wrong_version_and_garbage_bodies_are_decode_errors() {
    let (mut reader, mut peer) = UnixStream::pair().unwrap();
    peer.write_all(&[2, 0, 0, 0, 0]).unwrap();
    assert!(matches!(
        probe::read_frame(&mut reader, MAX_PROBE_RESPONSE, Duration::from_secs(30)),
        Err(ProbeError::Decode(DecodeError::Frame { .. }))
    ));

    let body = [key(5, VARINT), vec![0xff; 10], vec![0x01]].concat();
    let (mut reader, mut peer) = UnixStream::pair().unwrap();
    peer.write_all(&header_declaring(body.len() as u32))
        .unwrap();
    peer.write_all(&body).unwrap();
    match probe::read_frame(&mut reader, MAX_PROBE_RESPONSE, Duration::from_secs(30)) {
        Err(ProbeError::Decode(err)) => malformed(err, "Frame", "invalid varint"),
        other => panic!("{other:?}"),
    }
    // Bytes after the frame are left for the next read.
    let (mut reader, mut peer) = UnixStream::pair().unwrap();
    let bytes = encode_frame(&sample_frame(), MAX_FRAME_BODY).unwrap();
    peer.write_all(&bytes).unwrap();
    peer.write_all(&[9, 9, 9]).unwrap();
    assert_eq!(
        probe::read_frame(&mut reader, MAX_PROBE_RESPONSE, Duration::from_secs(30)).unwrap(),
        sample_frame()
    );
}

// ---------------------------------------------------------------------------
// Probe responses (prober side) and probe requests (backend side)

const NONCE: [u8; NONCE_LEN] = *b"0123456789abcdef0123456789ABCDEF";

fn probe_request() -> ProbeRequest {
    ProbeRequest::with_nonce(NONCE, &TraceContext::default())
}

fn good_response() -> FrameMsg {
    let request = frame::decode_frame(&probe_request().bytes, MAX_FRAME_BODY).unwrap();
    let answer = probe::probe_response(&request, &NONCE, &identity());
    frame::decode_frame(&answer, MAX_FRAME_BODY).unwrap()
}

fn protocol_error(response: &FrameMsg, field: &str, actual: &str) {
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

// ---------------------------------------------------------------------------
// DaemonProcess, protobuf

#[test]
fn daemon_process_hand_built_encoding_decodes() {
    assert_eq!(
        DaemonProcess::from_bytes(&identity_fields().concat()).unwrap(),
        identity()
    );
    assert_eq!(identity().to_bytes(), identity_fields().concat());
}

#[test]
fn daemon_process_field_rules() {
    let decode = |bytes: Vec<u8>| DaemonProcess::from_bytes(&bytes).unwrap_err();
    invalid_identity(decode(vec![]), "exe_sha256");
    invalid_identity(
        decode(identity_with(3, &len_field(3, &[0xab; 31]))),
        "exe_sha256",
    );
    invalid_identity(
        decode(identity_with(3, &len_field(3, &[0xab; 33]))),
        "exe_sha256",
    );
    invalid_identity(decode(identity_with(3, &[])), "exe_sha256");
    invalid_identity(decode(identity_with(1, &[])), "pid");
    invalid_identity(decode(identity_with(1, &uint_field(1, 1 << 31))), "pid");
    invalid_identity(
        decode(identity_with(2, &len_field(2, b"relative/echo"))),
        "exe_path",
    );
    invalid_identity(
        decode(identity_with(2, &len_field(2, b"/opt/e\0cho"))),
        "exe_path",
    );
    invalid_identity(
        decode(identity_with(2, &len_field(2, &[b'/'; 4097]))),
        "exe_path",
    );
    invalid_identity(
        decode(identity_with(6, &len_field(6, b"boot id"))),
        "boot_id",
    );
    invalid_identity(decode(identity_with(6, &[])), "boot_id");
    invalid_identity(
        decode(identity_with(6, &len_field(6, &[b'a'; 129]))),
        "boot_id",
    );
    let endpoint = |namespace: &[u8], path: &[u8]| len_field(4, &endpoint_bytes(namespace, path));
    invalid_identity(
        decode(identity_with(4, &endpoint(b"", SOCKET.as_bytes()))),
        "namespace_id",
    );
    invalid_identity(
        decode(identity_with(4, &endpoint(b"sh ared", SOCKET.as_bytes()))),
        "namespace_id",
    );
    invalid_identity(
        decode(identity_with(4, &endpoint(b"shared", b"relative.sock"))),
        "path",
    );
    invalid_identity(
        decode(identity_with(4, &endpoint(b"shared", &[b'/'; 108]))),
        "path",
    );
    malformed(
        decode(identity_with(4, &[])),
        "DaemonProcess",
        "ipc_endpoint is missing",
    );
}

#[test]
fn daemon_process_wire_errors_are_malformed() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "pid as bytes",
            identity_with(1, &len_field(1, b"1")),
            "invalid wire type",
        ),
        (
            "exe_path as varint",
            identity_with(2, &uint_field(2, 1)),
            "invalid wire type",
        ),
        (
            "endpoint as fixed32",
            identity_with(4, &[key(4, I32), vec![0; 4]].concat()),
            "invalid wire type",
        ),
        (
            "invalid UTF-8 exe_path",
            identity_with(2, &len_field(2, b"/opt/\xff")),
            "not UTF-8",
        ),
        (
            "invalid UTF-8 boot_id",
            identity_with(6, &len_field(6, b"\xc3")),
            "not UTF-8",
        ),
        (
            "invalid UTF-8 endpoint path",
            identity_with(
                4,
                &len_field(4, &endpoint_bytes(b"shared", b"/run/\xfe.sock")),
            ),
            "not UTF-8",
        ),
        (
            "endpoint length past its end",
            identity_with(4, &[key(4, LEN), varint(200), vec![0; 4]].concat()),
            "buffer underflow",
        ),
        (
            "endpoint field past the end of the input",
            [
                identity_with(4, &[]),
                len_field(4, &[key(1, LEN), varint(10)].concat()),
            ]
            .concat(),
            "buffer underflow",
        ),
        (
            // The string reads on into the next field (valid UTF-8 there);
            // the endpoint's own length then no longer adds up.
            "endpoint field past the endpoint",
            [
                identity_fields()[..3].concat(),
                len_field(4, &[key(1, LEN), varint(3)].concat()),
                identity_fields()[5].clone(),
            ]
            .concat(),
            "delimited length exceeded",
        ),
        (
            "pid varint overflow",
            identity_with(1, &[key(1, VARINT), vec![0xff; 10], vec![1]].concat()),
            "invalid varint",
        ),
        (
            "hash length of 2^64-1",
            identity_with(3, &[key(3, LEN), varint(u64::MAX)].concat()),
            "buffer underflow",
        ),
        (
            "field number 0",
            [identity_fields().concat(), key(0, LEN)].concat(),
            "invalid tag value: 0",
        ),
    ];
    expect_malformed(
        "DaemonProcess",
        &cases,
        16 * 1024,
        DaemonProcess::from_bytes,
    );
    // Every truncation inside a field is malformed; one at a field boundary
    // is a shorter message (then refused by a rule, or a different value).
    let bytes = identity().to_bytes();
    let boundaries: Vec<usize> = identity_fields()
        .iter()
        .scan(0, |at, f| {
            *at += f.len();
            Some(*at)
        })
        .collect();
    for cut in 1..bytes.len() {
        let result = DaemonProcess::from_bytes(&bytes[..cut]);
        if boundaries.contains(&cut) {
            assert_ne!(result, Ok(identity()), "cut at {cut}");
        } else {
            assert!(
                matches!(result, Err(DecodeError::Malformed { .. })),
                "cut at {cut}: {result:?}"
            );
        }
    }
}

#[test]
fn daemon_process_unknown_fields_are_ignored() {
    let bytes = [
        identity_fields().concat(),
        uint_field(8, 1),
        len_field(9, b"\xff\xfe not UTF-8, but unknown"),
        [key(10, I64), vec![0; 8]].concat(),
        [key(11, I32), vec![0; 4]].concat(),
        [key(12, SGROUP), uint_field(1, 1), key(12, EGROUP)].concat(),
        uint_field((1 << 29) - 1, 1),
    ]
    .concat();
    assert_eq!(DaemonProcess::from_bytes(&bytes).unwrap(), identity());
    // ... and so are unknown fields inside the endpoint.
    let endpoint = [
        endpoint_bytes(b"shared", SOCKET.as_bytes()),
        uint_field(3, 1),
    ]
    .concat();
    assert_eq!(
        DaemonProcess::from_bytes(&identity_with(4, &len_field(4, &endpoint))).unwrap(),
        identity()
    );
}

#[test]
fn daemon_process_duplicate_fields_follow_protobuf() {
    // Scalars, strings and bytes: the last value wins, and is validated.
    let bytes = [
        uint_field(1, 1),
        len_field(3, &[0; 31]),
        len_field(2, b"relative"),
        identity_fields().concat(),
    ]
    .concat();
    assert_eq!(DaemonProcess::from_bytes(&bytes).unwrap(), identity());
    let bytes = [identity_fields().concat(), uint_field(1, 0)].concat();
    invalid_identity(DaemonProcess::from_bytes(&bytes).unwrap_err(), "pid");
    // An embedded message given twice is merged field by field.
    let split = [
        len_field(4, &len_field(1, b"shared")),
        len_field(4, &len_field(2, SOCKET.as_bytes())),
    ]
    .concat();
    assert_eq!(
        DaemonProcess::from_bytes(&identity_with(4, &split)).unwrap(),
        identity()
    );
    // A uint32 read from a wider varint keeps its low 32 bits.
    let wide = identity_with(1, &uint_field(1, (1 << 32) | 4242));
    assert_eq!(DaemonProcess::from_bytes(&wide).unwrap(), identity());
    // An explicitly present idle timeout of 0 stays distinct from none.
    let zero = identity_with(7, &uint_field(7, 0));
    assert_eq!(
        DaemonProcess::from_bytes(&zero).unwrap().idle_timeout_secs,
        Some(0)
    );
    assert_eq!(
        DaemonProcess::from_bytes(&identity_with(7, &[]))
            .unwrap()
            .idle_timeout_secs,
        None
    );
}

// ---------------------------------------------------------------------------
// DaemonProcess, JSON

fn json_identity() -> serde_json::Value {
    serde_json::from_str(&identity().to_json()).unwrap()
}

fn json_with(field: &str, value: serde_json::Value) -> String {
    let mut json = json_identity();
    json[field] = value;
    json.to_string()
}

#[test]
fn daemon_json_refuses_duplicate_keys() {
    let text = identity().to_json();
    let duplicated = text.replacen("{", "{\"pid\":1,", 1);
    malformed(
        DaemonProcess::from_json(&duplicated).unwrap_err(),
        "DaemonProcess JSON",
        "duplicate field `pid`",
    );
    let nested = text.replacen("\"namespace_id\"", "\"path\":\"/x\",\"namespace_id\"", 1);
    malformed(
        DaemonProcess::from_json(&nested).unwrap_err(),
        "DaemonProcess JSON",
        "duplicate field `path`",
    );
}

#[test]
fn daemon_json_malformed_text() {
    let text = identity().to_json();
    let nested_unknown = format!(
        "{{\"extra\":{}{},{}",
        "[".repeat(10_000),
        "]".repeat(10_000),
        &text[1..]
    );
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty", String::new(), "EOF while parsing"),
        (
            "truncated",
            text[..text.len() - 1].to_owned(),
            "EOF while parsing",
        ),
        (
            "trailing characters",
            format!("{text} x"),
            "trailing characters",
        ),
        (
            "two objects",
            format!("{text}{text}"),
            "trailing characters",
        ),
        ("an empty array", "[]".to_owned(), "invalid length 0"),
        (
            "an array of the values in field order",
            format!(
                "[4242,\"/opt/echo/1.0.0/echo\",\"{}\",\"{BOOT_ID}\",{{\"namespace_id\":\"shared\",\"path\":\"{SOCKET}\"}},1,30]",
                hex::encode(HASH)
            ),
            "must be JSON objects",
        ),
        (
            "an endpoint as an array",
            json_with("ipc_endpoint", serde_json::json!(["shared", SOCKET])),
            "must be JSON objects",
        ),
        (
            "pid as string",
            json_with("pid", "4242".into()),
            "invalid type: string",
        ),
        (
            "pid negative",
            json_with("pid", (-1).into()),
            "invalid value: integer `-1`",
        ),
        (
            "pid over u32",
            json_with("pid", (1u64 << 32).into()),
            "invalid value: integer",
        ),
        (
            "pid float",
            json_with("pid", 4242.5.into()),
            "invalid type: floating point",
        ),
        (
            "pid null",
            json_with("pid", serde_json::Value::Null),
            "invalid type: null",
        ),
        (
            "missing pid",
            text.replacen("\"pid\":4242,", "", 1),
            "missing field `pid`",
        ),
        (
            "missing endpoint path",
            text.replacen(&format!(",\"path\":\"{SOCKET}\""), "", 1),
            "missing field `path`",
        ),
        (
            // Escapes that are not a Unicode scalar value (the JSON way to
            // smuggle invalid UTF-8 into a string).
            "high surrogate without its pair",
            json_with("exe_path", "PLACEHOLDER".into()).replace("PLACEHOLDER", "/\\ud800/x"),
            "unexpected end of hex escape",
        ),
        (
            "low surrogate alone",
            json_with("exe_path", "PLACEHOLDER".into()).replace("PLACEHOLDER", "/\\udc00"),
            "lone leading surrogate in hex escape",
        ),
        (
            "bad escape",
            json_with("exe_path", "PLACEHOLDER".into()).replace("PLACEHOLDER", "/\\q"),
            "invalid escape",
        ),
        (
            "raw control character",
            json_with("exe_path", "PLACEHOLDER".into()).replace("PLACEHOLDER", "/\u{1}"),
            "control character",
        ),
        (
            "nested 10,000 deep",
            nested_unknown,
            "recursion limit exceeded",
        ),
        (
            "idle timeout negative",
            json_with("idle_timeout_secs", (-5).into()),
            "invalid value",
        ),
    ];
    let cases: Vec<(&str, Vec<u8>, &str)> = cases
        .into_iter()
        .map(|(name, text, reason)| (name, text.into_bytes(), reason))
        .collect();
    expect_malformed("DaemonProcess JSON", &cases, 64 * 1024, |text| {
        DaemonProcess::from_json(std::str::from_utf8(text).unwrap())
    });
}

#[test]
fn daemon_json_field_rules_and_unknown_keys() {
    let decode = |text: String| DaemonProcess::from_json(&text).unwrap_err();
    invalid_identity(
        decode(json_with("exe_sha256", "zz".repeat(32).into())),
        "exe_sha256",
    );
    invalid_identity(
        decode(json_with("exe_sha256", "ab".repeat(31).into())),
        "exe_sha256",
    );
    invalid_identity(decode(json_with("exe_sha256", "abc".into())), "exe_sha256");
    invalid_identity(decode(json_with("pid", 0.into())), "pid");
    invalid_identity(decode(json_with("pid", (1u64 << 31).into())), "pid");
    invalid_identity(decode(json_with("exe_path", "echo".into())), "exe_path");
    invalid_identity(decode(json_with("boot_id", "".into())), "boot_id");
    invalid_identity(
        decode(json_with(
            "ipc_endpoint",
            serde_json::json!({"namespace_id": "shared", "path": "x.sock"}),
        )),
        "path",
    );
    // Unknown keys are ignored, at the top and inside the endpoint; a null
    // idle timeout is none.
    let mut json = json_identity();
    json["later"] = serde_json::json!({"a": [1, 2, {"b": null}]});
    json["ipc_endpoint"]["later"] = 1.into();
    assert_eq!(
        DaemonProcess::from_json(&json.to_string()).unwrap(),
        identity()
    );
    json["idle_timeout_secs"] = serde_json::Value::Null;
    assert_eq!(
        DaemonProcess::from_json(&json.to_string())
            .unwrap()
            .idle_timeout_secs,
        None
    );
}

// ---------------------------------------------------------------------------
// ServiceDefinition, protobuf

fn sd_fields() -> Vec<Vec<u8>> {
    vec![
        len_field(1, b"echo"),
        len_field(2, b"/opt/echo/1.0.0/echo"),
        uint_field(3, 1),
        len_field(5, b"/opt/echo/1.0.0"),
        len_field(6, b"1.0.0"),
        len_field(7, b"1.0.0"),
        len_field(8, &[len_field(1, b"team"), len_field(2, b"build")].concat()),
    ]
}

fn invalid_sd(err: DecodeError, field: &str) {
    match err {
        DecodeError::Invalid(ValidationError::ServiceDefinition { field: f, .. }) => {
            assert_eq!(f, field)
        }
        other => panic!("expected an invalid {field}, got {other:?}"),
    }
}

#[test]
fn service_definition_hand_built_encoding_decodes() {
    assert_eq!(
        ServiceDefinition::from_bytes(&sd_fields().concat()).unwrap(),
        service_definition()
    );
    assert_eq!(service_definition().to_bytes(), sd_fields().concat());
}

#[test]
fn service_definition_wire_and_enum_errors() {
    let with = |index: usize, field: Vec<u8>| {
        let mut fields = sd_fields();
        fields[index] = field;
        fields.concat()
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "isolation 3",
            with(2, uint_field(3, 3)),
            "isolation 3 is not a BrokerIsolation value",
        ),
        (
            "isolation -1",
            with(2, uint_field(3, u64::MAX)),
            "isolation -1 is not a BrokerIsolation value",
        ),
        (
            "isolation as bytes",
            with(2, len_field(3, b"\x01")),
            "invalid wire type",
        ),
        (
            "name as varint",
            with(0, uint_field(1, 5)),
            "invalid wire type",
        ),
        (
            "invalid UTF-8 name",
            with(0, len_field(1, b"ech\xff")),
            "not UTF-8",
        ),
        (
            "invalid UTF-8 allow-list entry",
            with(5, len_field(7, b"1.0.\xff")),
            "not UTF-8",
        ),
        (
            "invalid UTF-8 label key",
            with(
                6,
                len_field(8, &[len_field(1, b"te\xffam"), len_field(2, b"x")].concat()),
            ),
            "not UTF-8",
        ),
        (
            "label entry as varint",
            with(6, uint_field(8, 1)),
            "invalid wire type",
        ),
        (
            "label entry cut short",
            with(
                6,
                len_field(8, &[key(1, LEN), varint(9), b"team".to_vec()].concat()),
            ),
            "buffer underflow",
        ),
        (
            "varint overflow",
            with(2, [key(3, VARINT), vec![0x80; 10], vec![0]].concat()),
            "invalid varint",
        ),
        (
            "truncated",
            sd_fields().concat()[..10].to_vec(),
            "buffer underflow",
        ),
        (
            "field number 0",
            [sd_fields().concat(), key(0, VARINT)].concat(),
            "invalid tag value: 0",
        ),
    ];
    expect_malformed(
        "ServiceDefinition",
        &cases,
        16 * 1024,
        ServiceDefinition::from_bytes,
    );
}

#[test]
fn service_definition_rules_apply_to_decoded_values() {
    let decode =
        |fields: Vec<Vec<u8>>| ServiceDefinition::from_bytes(&fields.concat()).unwrap_err();
    let mut no_name = sd_fields();
    no_name.remove(0);
    match decode(no_name) {
        DecodeError::Invalid(ValidationError::Name { kind, value, .. }) => {
            assert_eq!((kind, value.as_str()), (NameKind::ServiceName, ""))
        }
        other => panic!("{other:?}"),
    }
    let mut relative = sd_fields();
    relative[1] = len_field(2, b"echo");
    invalid_sd(decode(relative), "binary_path");
    let mut explicit_without_name = sd_fields();
    explicit_without_name[2] = uint_field(3, 2);
    invalid_sd(decode(explicit_without_name), "explicit_instance");
    let mut empty_label_key = sd_fields();
    empty_label_key[6] = len_field(8, &len_field(2, b"build"));
    invalid_sd(decode(empty_label_key), "labels");
    let mut too_many_labels = sd_fields();
    too_many_labels.extend((0..MAX_LABELS).map(|i| {
        len_field(
            8,
            &[len_field(1, format!("k{i}").as_bytes()), len_field(2, b"v")].concat(),
        )
    }));
    invalid_sd(decode(too_many_labels), "labels");
    let mut long_allow_list = sd_fields();
    long_allow_list.extend((0..MAX_ALLOW_LIST).map(|_| len_field(7, b"1.0.0")));
    invalid_sd(decode(long_allow_list), "version_allow_list");
    let mut bad_version = sd_fields();
    bad_version[4] = len_field(6, b"01.0.0");
    assert!(matches!(
        decode(bad_version),
        DecodeError::Invalid(ValidationError::Version { .. })
    ));
}

#[test]
fn service_definition_duplicates_and_unknown_fields_follow_protobuf() {
    let bytes = [
        len_field(1, b"first"),
        sd_fields().concat(),
        // A repeated field appends; a map keeps the last value of a key.
        len_field(7, b"1.1.0"),
        len_field(
            8,
            &[len_field(1, b"team"), len_field(2, b"release")].concat(),
        ),
        // Unknown fields, inside a label entry too.
        uint_field(9, 1),
        len_field(100, b"later"),
        len_field(
            8,
            &[len_field(1, b"tier"), len_field(2, b"1"), uint_field(3, 7)].concat(),
        ),
    ]
    .concat();
    let decoded = ServiceDefinition::from_bytes(&bytes).unwrap();
    let mut expected = service_definition();
    expected.version_allow_list.push("1.1.0".parse().unwrap());
    expected.labels.insert("team".into(), "release".into());
    expected.labels.insert("tier".into(), "1".into());
    assert_eq!(decoded, expected);
    // A label entry without a value has the empty value.
    let bytes = [sd_fields().concat(), len_field(8, &len_field(1, b"flag"))].concat();
    assert_eq!(
        ServiceDefinition::from_bytes(&bytes).unwrap().labels["flag"],
        ""
    );
}

// ---------------------------------------------------------------------------
// The .servicedef store

fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn store_file(dir: &Path, content: &[u8]) -> PathBuf {
    let path = dir.join("echo.servicedef");
    fs::write(&path, content).unwrap();
    path
}

#[test]
fn store_reader_maps_decode_errors() {
    let dir = private_dir();
    let garbage = store_file(dir.path(), b"\xff\xff\xff");
    match ServiceDefinition::load_file(&garbage) {
        Err(StoreError::Decode { path, source }) => {
            assert_eq!(path, garbage);
            malformed(source, "ServiceDefinition", "invalid varint");
        }
        other => panic!("{other:?}"),
    }
    let truncated = store_file(dir.path(), &service_definition().to_bytes()[..12]);
    assert!(matches!(
        ServiceDefinition::load_file(&truncated),
        Err(StoreError::Decode {
            source: DecodeError::Malformed { .. },
            ..
        })
    ));
    let bad_isolation = [sd_fields().concat(), uint_field(3, 5)].concat();
    assert!(matches!(
        ServiceDefinition::load("echo", Some(dir.path())),
        Err(StoreError::Decode { .. })
    ));
    store_file(dir.path(), &bad_isolation);
    assert!(matches!(
        ServiceDefinition::load("echo", Some(dir.path())),
        Err(StoreError::Decode {
            source: DecodeError::Malformed { .. },
            ..
        })
    ));
    // A decoded but invalid definition is a validation error, the same as
    // from a constructor.
    let mut relative = sd_fields();
    relative[1] = len_field(2, b"echo");
    store_file(dir.path(), &relative.concat());
    assert!(matches!(
        ServiceDefinition::load("echo", Some(dir.path())),
        Err(StoreError::Invalid(ValidationError::ServiceDefinition {
            field: "binary_path",
            ..
        }))
    ));
    // An empty file is a definition without a name.
    store_file(dir.path(), b"");
    assert!(matches!(
        ServiceDefinition::load("echo", Some(dir.path())),
        Err(StoreError::Invalid(ValidationError::Name {
            kind: NameKind::ServiceName,
            ..
        }))
    ));
    // A valid definition of another service.
    let mut other = service_definition();
    other.service_name = "other".into();
    store_file(dir.path(), &other.to_bytes());
    match ServiceDefinition::load("echo", Some(dir.path())) {
        Err(StoreError::StemMismatch {
            stem, service_name, ..
        }) => assert_eq!((stem.as_str(), service_name.as_str()), ("echo", "other")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn store_reader_refuses_a_4_gib_file_without_reading_it() {
    let dir = private_dir();
    let path = dir.path().join("echo.servicedef");
    let file = fs::File::create(&path).unwrap();
    // Sparse: no disk space, but the size a reader would have to allocate.
    file.set_len(4 << 30).unwrap();
    drop(file);
    let (result, _, largest) = measure(|| ServiceDefinition::load_file(&path));
    match result {
        Err(StoreError::TooLarge {
            path: p,
            length,
            limit,
        }) => {
            assert_eq!(p, path);
            assert_eq!((length, limit), (4 << 30, MAX_SERVICEDEF_BYTES));
        }
        other => panic!("{other:?}"),
    }
    assert!(largest < 64 * 1024, "allocated {largest} bytes");
    // One byte over the limit is refused the same way.
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(MAX_SERVICEDEF_BYTES + 1)
        .unwrap();
    assert!(matches!(
        ServiceDefinition::load_file(&path),
        Err(StoreError::TooLarge { length, .. }) if length == MAX_SERVICEDEF_BYTES + 1
    ));
}

#[test]
fn store_reader_refuses_a_fifo_without_blocking() {
    let dir = private_dir();
    let path = dir.path().join("echo.servicedef");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    // A blocking open of a FIFO waits for a writer forever; the reader must
    // refuse it as not a regular file instead. Run it on a thread so a
    // regression fails the test rather than hanging it: a writer opened
    // after the deadline releases a blocked reader.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let reader_path = path.clone();
    let reader = thread::spawn(move || {
        let result = ServiceDefinition::load_file(&reader_path);
        let _ = done_tx.send(());
        result
    });
    let finished = done_rx.recv_timeout(Duration::from_secs(30)).is_ok();
    if !finished {
        let _unblock = fs::File::options().write(true).open(&path);
    }
    let result = reader.join().unwrap();
    assert!(finished, "loading a FIFO blocked");
    match result {
        Err(StoreError::Fs(running_process::FsError::Io {
            operation, source, ..
        })) => {
            assert_eq!(operation, "read");
            assert_eq!(source.kind(), std::io::ErrorKind::InvalidInput);
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Pool manifests

fn manifest() -> serde_json::Value {
    serde_json::json!({
        "manifest_version": 1,
        "instance": "shared",
        "service_name": "echo",
        "service_version": "1.0.0",
        "daemon": json_identity(),
        "launched_by_pid": 1,
    })
}

fn manifest_error(value: &serde_json::Value) -> String {
    decode_pool_manifest(value.to_string().as_bytes()).unwrap_err()
}

#[test]
fn pool_manifest_decodes_and_refuses_wrong_versions() {
    let key = BackendKey::new(BrokerInstanceKey::shared(), "echo", "1.0.0").unwrap();
    assert_eq!(
        decode_pool_manifest(manifest().to_string().as_bytes()).unwrap(),
        (key, identity())
    );
    for version in [0u64, 2, u64::from(u32::MAX)] {
        let mut m = manifest();
        m["manifest_version"] = version.into();
        assert_eq!(
            manifest_error(&m),
            format!("manifest version {version} is not 1")
        );
    }
    let mut m = manifest();
    m["manifest_version"] = (1u64 << 32).into();
    assert!(manifest_error(&m).contains("invalid value: integer"));
}

#[test]
fn pool_manifest_refuses_malformed_content() {
    let text = manifest().to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty", String::new(), "EOF while parsing"),
        (
            "truncated",
            text[..text.len() / 2].to_owned(),
            "EOF while parsing",
        ),
        (
            "not UTF-8",
            "{\"instance\":\"\u{fffd}\"}".replace('\u{fffd}', "\u{1}"),
            "control character",
        ),
        (
            "duplicate key",
            text.replacen("{", "{\"instance\":\"shared\",", 1),
            "duplicate field `instance`",
        ),
        (
            "missing daemon",
            text.replacen("\"daemon\"", "\"demon\"", 1),
            "missing field `daemon`",
        ),
    ];
    for (name, text, reason) in cases {
        let err = decode_pool_manifest(text.as_bytes()).expect_err(name);
        assert!(err.contains(reason), "{name}: {err}");
    }
    let invalid_utf8 = [b"{\"instance\":\"".as_slice(), b"\xff\"}"].concat();
    assert!(decode_pool_manifest(&invalid_utf8)
        .unwrap_err()
        .contains("invalid unicode code point"));

    let mut m = manifest();
    m["instance"] = "private:".into();
    assert!(
        manifest_error(&m).contains("invalid"),
        "{}",
        manifest_error(&m)
    );
    let mut m = manifest();
    m["service_version"] = "1.0".into();
    assert!(manifest_error(&m).contains("invalid version"));
    let mut m = manifest();
    m["daemon"]["pid"] = 0.into();
    assert!(manifest_error(&m).contains("pid"));
    let mut m = manifest();
    m["daemon"] = "not an object".into();
    assert!(manifest_error(&m).contains("invalid type: string"));
    // The daemon object is read through a generic JSON value, where a
    // duplicated key keeps its last value (the identity JSON decoder alone
    // refuses it). Pinned so that a change either way is deliberate.
    let duplicated = manifest()
        .to_string()
        .replacen("\"pid\":4242", "\"pid\":1,\"pid\":4242", 1);
    assert_eq!(
        decode_pool_manifest(duplicated.as_bytes()).unwrap().1,
        identity()
    );
    // Unknown keys are ignored (newer writers add fields).
    let mut m = manifest();
    m["written_by"] = "a later version".into();
    assert!(decode_pool_manifest(m.to_string().as_bytes()).is_ok());
}

// ---------------------------------------------------------------------------
// The fuzz seed corpus

/// Seeds per fuzz target: small valid inputs and edge cases, so that every
/// target starts past the checks that a random input rarely passes. Written
/// by `RP_WRITE_FUZZ_CORPUS=1 cargo test --test malformed fuzz_seed_corpus`.
fn seed_corpus() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let frame_bytes = |f: &FrameMsg| encode_frame(f, MAX_FRAME_BODY).unwrap();
    let probe_nonce: [u8; 32] = *b"running-process fuzz probe nonce";
    let fuzz_request = ProbeRequest::with_nonce(probe_nonce, &TraceContext::default());
    let request_frame = frame::decode_frame(&fuzz_request.bytes, MAX_FRAME_BODY).unwrap();
    let answer = probe::probe_response(&request_frame, &probe_nonce, &identity());
    let traced = TraceContext::new(
        7,
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "vendor=value",
    )
    .unwrap();
    let traced_request = ProbeRequest::with_nonce(probe_nonce, &traced);
    let mut explicit = service_definition();
    explicit.isolation = Isolation::Explicit;
    explicit.explicit_instance = "ci".into();
    let mut private = service_definition();
    private.isolation = Isolation::Private;
    private.min_version = None;
    private.version_allow_list = vec!["1.0.0-rc.1".parse().unwrap(), "2.0.0".parse().unwrap()];
    let mut fuzz_named = service_definition();
    fuzz_named.service_name = "fuzz".into();
    let mut no_idle = identity();
    no_idle.idle_timeout_secs = None;
    let mut explicit_manifest = manifest();
    explicit_manifest["instance"] = "explicit:ci".into();
    let mut private_manifest = manifest();
    private_manifest["instance"] = "private:echo".into();
    private_manifest["binary_stamp"] = serde_json::json!({
        "dev": 2049, "ino": 1234, "size": 4096, "mtime": [1_764_000_000, 5], "ctime": [1_764_000_000, 6]
    });

    vec![
        ("frame", "probe-request", fuzz_request.bytes.clone()),
        ("frame", "probe-response", answer.clone()),
        ("frame", "traced-request", traced_request.bytes.clone()),
        ("frame", "empty-body", vec![1, 0, 0, 0, 0]),
        ("frame", "declares-4gib", vec![1, 0xff, 0xff, 0xff, 0xff]),
        ("frame", "version-2", vec![2, 0, 0, 0, 0]),
        ("frame", "sample", frame_bytes(&sample_frame())),
        ("probe", "response", answer[HEADER_LEN..].to_vec()),
        (
            "probe",
            "request",
            fuzz_request.bytes[HEADER_LEN..].to_vec(),
        ),
        (
            "probe",
            "traced-request",
            traced_request.bytes[HEADER_LEN..].to_vec(),
        ),
        ("probe_socket", "response", answer.clone()),
        ("probe_socket", "request", fuzz_request.bytes.clone()),
        (
            "probe_socket",
            "declares-4gib",
            vec![1, 0xff, 0xff, 0xff, 0xff],
        ),
        (
            "probe_socket",
            "short-body",
            [header_declaring(40), vec![0; 10]].concat(),
        ),
        ("daemon_process", "identity", identity().to_bytes()),
        ("daemon_process", "no-idle-timeout", no_idle.to_bytes()),
        (
            "daemon_process",
            "unknown-fields",
            [identity().to_bytes(), uint_field(8, 1), len_field(9, b"x")].concat(),
        ),
        (
            "daemon_process",
            "split-endpoint",
            identity_with(
                4,
                &[
                    len_field(4, &len_field(1, b"shared")),
                    len_field(4, &len_field(2, SOCKET.as_bytes())),
                ]
                .concat(),
            ),
        ),
        ("daemon_json", "identity", identity().to_json().into_bytes()),
        (
            "daemon_json",
            "no-idle-timeout",
            no_idle.to_json().into_bytes(),
        ),
        (
            "daemon_json",
            "unknown-keys",
            json_with("later", serde_json::json!([1, {"a": null}])).into_bytes(),
        ),
        (
            "service_definition",
            "shared",
            service_definition().to_bytes(),
        ),
        ("service_definition", "explicit", explicit.to_bytes()),
        ("service_definition", "private", private.to_bytes()),
        ("servicedef_store", "fuzz-named", fuzz_named.to_bytes()),
        (
            "servicedef_store",
            "other-name",
            service_definition().to_bytes(),
        ),
        (
            "pool_manifest",
            "shared",
            serde_json::to_vec_pretty(&manifest()).unwrap(),
        ),
        (
            "pool_manifest",
            "explicit",
            explicit_manifest.to_string().into_bytes(),
        ),
        (
            "pool_manifest",
            "private-with-stamp",
            private_manifest.to_string().into_bytes(),
        ),
    ]
}

#[test]
fn fuzz_seed_corpus_is_current() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus");
    let write = std::env::var_os("RP_WRITE_FUZZ_CORPUS").is_some_and(|v| v == "1");
    for (target, name, bytes) in seed_corpus() {
        let path = corpus.join(target).join(format!("seed-{name}"));
        if write {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, &bytes).unwrap();
        } else {
            let committed = fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; regenerate with RP_WRITE_FUZZ_CORPUS=1 cargo test --test malformed",
                    path.display()
                )
            });
            assert!(committed == bytes, "{} is out of date", path.display());
        }
    }
}

#[test]
fn seed_corpus_entries_decode_as_intended() {
    // The valid seeds are valid: a target that starts from them begins past
    // the decoders' first checks.
    for (target, name, bytes) in seed_corpus() {
        let ok = match target {
            "frame" | "probe_socket" => frame::decode_frame(&bytes, MAX_FRAME_BODY).is_ok(),
            "probe" => frame::decode_body(&bytes).is_ok(),
            "daemon_process" => DaemonProcess::from_bytes(&bytes).is_ok(),
            "daemon_json" => DaemonProcess::from_json(std::str::from_utf8(&bytes).unwrap()).is_ok(),
            "service_definition" | "servicedef_store" => {
                ServiceDefinition::from_bytes(&bytes).is_ok()
            }
            "pool_manifest" => decode_pool_manifest(&bytes).is_ok(),
            other => panic!("unknown target {other}"),
        };
        let meant_invalid = matches!(name, "declares-4gib" | "version-2" | "short-body");
        assert_eq!(ok, !meant_invalid, "{target}/{name}");
    }
}
