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
        exe_blake3: None,
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

mod corpus;
mod daemon_json;
mod daemon_proto;
mod frames;
mod manifests;
mod probes;
mod service;
mod store;

use daemon_json::{json_identity, json_with};
use frames::header_declaring;
use manifests::manifest;
use service::sd_fields;
