//! Golden bytes: the protobuf encodings of ServiceDefinition, DaemonProcess and
//! Frame, written out by hand from the field numbers of the v1 contract, so a
//! change of any field number or wire type fails here.

use running_process::wire::{decode_frame, encode_frame, MAX_FRAME_BODY};
use running_process::wire::{FrameKind, FrameMsg, PayloadEncoding};
use running_process::{DaemonProcess, Endpoint, EnvPolicy, Isolation, Listener, ServiceDefinition};

/// A length-delimited field: tag `(field << 3) | 2`, length, bytes.
fn len_field(field: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![(field << 3) | 2, bytes.len() as u8];
    out.extend_from_slice(bytes);
    out
}

/// A varint field: tag `(field << 3) | 0` then the varint bytes given.
fn varint_field(field: u8, varint: &[u8]) -> Vec<u8> {
    let mut out = vec![field << 3];
    out.extend_from_slice(varint);
    out
}

#[test]
fn service_definition_encoding_is_pinned() {
    let sd = ServiceDefinition {
        service_name: "zc".into(),
        binary_path: "/b/x".into(),
        per_version_binary_dir: "/b".into(),
        isolation: Isolation::Shared,
        explicit_instance: String::new(),
        min_version: Some("1.0.0".parse().unwrap()),
        version_allow_list: vec!["1.0.0".parse().unwrap(), "1.1.0".parse().unwrap()],
        labels: [("k".to_owned(), "v".to_owned())].into(),
        args: Vec::new(),
        listener: Listener::Inherit,
        env_policy: EnvPolicy::Inherit,
        env_allow: Vec::new(),
        env_set: Default::default(),
    };
    let expected = [
        len_field(1, b"zc"),
        len_field(2, b"/b/x"),
        varint_field(3, &[1]),
        // 4 (explicit_instance) is empty and therefore absent.
        len_field(5, b"/b"),
        len_field(6, b"1.0.0"),
        len_field(7, b"1.0.0"),
        len_field(7, b"1.1.0"),
        len_field(8, &[len_field(1, b"k"), len_field(2, b"v")].concat()),
    ]
    .concat();
    assert_eq!(sd.to_bytes(), expected);
    assert_eq!(ServiceDefinition::from_bytes(&expected).unwrap(), sd);

    // This project's argument templates ride in field 1001 (tag 8010, two
    // varint bytes), which peers that do not know it skip.
    let with_args = ServiceDefinition {
        args: vec!["--endpoint".into(), "{endpoint}".into()],
        ..sd.clone()
    };
    let field_1001 = |text: &[u8]| {
        let mut out = vec![0xca, 0x3e, text.len() as u8];
        out.extend_from_slice(text);
        out
    };
    let extended = [
        expected.clone(),
        field_1001(b"--endpoint"),
        field_1001(b"{endpoint}"),
    ]
    .concat();
    assert_eq!(with_args.to_bytes(), extended);
    assert_eq!(ServiceDefinition::from_bytes(&extended).unwrap(), with_args);

    // Who binds the endpoint rides in field 1002 (tag 8016), absent for the
    // default (the launcher binds), 1 for a backend that binds itself.
    let binds_itself = ServiceDefinition {
        listener: Listener::Bind,
        ..sd.clone()
    };
    let with_listener = [expected.clone(), vec![0xd0, 0x3e, 0x01]].concat();
    assert_eq!(binds_itself.to_bytes(), with_listener);
    assert_eq!(
        ServiceDefinition::from_bytes(&with_listener).unwrap(),
        binds_itself
    );
    let unknown = [expected.clone(), vec![0xd0, 0x3e, 0x07]].concat();
    assert!(ServiceDefinition::from_bytes(&unknown).is_err());

    // The environment policy rides in fields 1003 (varint, tag 8024), 1004
    // (repeated string, tag 8034) and 1005 (map entries, tag 8042), all
    // absent for the defaults.
    let baseline = ServiceDefinition {
        env_policy: EnvPolicy::Baseline,
        env_allow: vec!["Z_*".into()],
        env_set: [("K".to_owned(), "v".to_owned())].into(),
        ..sd.clone()
    };
    let entry = [len_field(1, b"K"), len_field(2, b"v")].concat();
    let with_env = [
        expected.clone(),
        vec![0xd8, 0x3e, 0x01],
        vec![0xe2, 0x3e, 3],
        b"Z_*".to_vec(),
        vec![0xea, 0x3e, entry.len() as u8],
        entry,
    ]
    .concat();
    assert_eq!(baseline.to_bytes(), with_env);
    assert_eq!(ServiceDefinition::from_bytes(&with_env).unwrap(), baseline);
    let unknown = [expected.clone(), vec![0xd8, 0x3e, 0x07]].concat();
    assert!(ServiceDefinition::from_bytes(&unknown).is_err());

    let explicit = ServiceDefinition {
        isolation: Isolation::Explicit,
        explicit_instance: "ci".into(),
        ..sd
    };
    let bytes = explicit.to_bytes();
    let field4 = len_field(4, b"ci");
    assert!(bytes.windows(field4.len()).any(|w| w == field4.as_slice()));
    assert!(bytes.windows(2).any(|w| w == [3 << 3, 2]));
}

#[test]
fn daemon_process_encoding_is_pinned() {
    let id = DaemonProcess {
        pid: 4242,
        exe_path: "/e".into(),
        exe_sha256: [0xab; 32],
        exe_blake3: None,
        boot_id: "b".into(),
        ipc_endpoint: Endpoint::new("shared", "/s").unwrap(),
        started_at_unix_ms: 1000,
        idle_timeout_secs: Some(30),
    };
    let expected = [
        varint_field(1, &[0x92, 0x21]),
        len_field(2, b"/e"),
        len_field(3, &[0xab; 32]),
        len_field(4, &[len_field(1, b"shared"), len_field(2, b"/s")].concat()),
        varint_field(5, &[0xe8, 0x07]),
        len_field(6, b"b"),
        varint_field(7, &[30]),
    ]
    .concat();
    assert_eq!(id.to_bytes(), expected);
    assert_eq!(DaemonProcess::from_bytes(&expected).unwrap(), id);

    // An absent idle timeout is absent on the wire (proto3 `optional`).
    let no_idle = DaemonProcess {
        idle_timeout_secs: None,
        ..id.clone()
    };
    assert_eq!(no_idle.to_bytes(), expected[..expected.len() - 2]);
    // Fields of newer peers (numbers above 9) are ignored.
    let mut newer = expected.clone();
    newer.extend(len_field(10, b"future"));
    assert_eq!(DaemonProcess::from_bytes(&newer).unwrap(), id);
}

/// The current generation (running-process 4.10.x): fields 8 and 9 carry the
/// algorithm and the BLAKE3 digest, field 3 is left out of the message and
/// appended after it with the legacy SHA-256, so a first-generation prober
/// (which keeps the last field 3 it sees) reads the SHA-256 while a current
/// one reads fields 8 and 9 and skips field 3 as reserved.
#[test]
fn current_generation_encoding_is_pinned() {
    let id = DaemonProcess {
        pid: 4242,
        exe_path: "/e".into(),
        exe_sha256: [0xab; 32],
        exe_blake3: Some([0xcd; 32]),
        boot_id: "b".into(),
        ipc_endpoint: Endpoint::new("shared", "/s").unwrap(),
        started_at_unix_ms: 1000,
        idle_timeout_secs: None,
    };
    let canonical = [
        varint_field(1, &[0x92, 0x21]),
        len_field(2, b"/e"),
        len_field(4, &[len_field(1, b"shared"), len_field(2, b"/s")].concat()),
        varint_field(5, &[0xe8, 0x07]),
        len_field(6, b"b"),
        len_field(8, b"blake3"),
        len_field(9, &[0xcd; 32]),
    ]
    .concat();
    let expected = [canonical.clone(), len_field(3, &[0xab; 32])].concat();
    assert_eq!(id.to_bytes(), expected);
    assert_eq!(DaemonProcess::from_bytes(&expected).unwrap(), id);

    // A BLAKE3-only peer (zccache) appends zeros; a manifest carries no
    // field 3 at all. Both decode with an all-zero legacy slot.
    let blake3_only = DaemonProcess {
        exe_sha256: [0; 32],
        ..id.clone()
    };
    let zeros = [canonical.clone(), len_field(3, &[0; 32])].concat();
    assert_eq!(blake3_only.to_bytes(), zeros);
    assert_eq!(DaemonProcess::from_bytes(&zeros).unwrap(), blake3_only);
    assert_eq!(DaemonProcess::from_bytes(&canonical).unwrap(), blake3_only);

    // Only "blake3" is an algorithm; a hash without one, or one of another
    // length, is refused naming the field.
    for (bytes, field) in [
        (
            [
                &canonical[..canonical.len() - 42],
                &len_field(8, b"sha256")[..],
                &len_field(9, &[0xcd; 32])[..],
            ]
            .concat(),
            "exe_hash_algorithm",
        ),
        (
            [
                &canonical[..canonical.len() - 42],
                &len_field(9, &[0xcd; 32])[..],
            ]
            .concat(),
            "exe_hash",
        ),
        (
            [
                &canonical[..canonical.len() - 34],
                &len_field(9, &[0xcd; 31])[..],
            ]
            .concat(),
            "exe_hash",
        ),
    ] {
        let err = DaemonProcess::from_bytes(&bytes).unwrap_err().to_string();
        assert!(err.contains(field), "{field}: {err}");
    }
}

#[test]
fn frame_encoding_is_pinned() {
    let frame = FrameMsg {
        envelope_version: 1,
        kind: FrameKind::Response as i32,
        payload_protocol: 0xB232,
        payload: vec![1, 2],
        request_id: 7,
        payload_encoding: PayloadEncoding::None as i32,
        deadline_unix_ms: 5,
        traceparent: "t".into(),
        tracestate: "s".into(),
    };
    let body = [
        varint_field(1, &[1]),
        varint_field(2, &[1]),
        varint_field(3, &[0xb2, 0xe4, 0x02]),
        len_field(4, &[1, 2]),
        varint_field(5, &[7]),
        // 6 (payload_encoding NONE) is zero and therefore absent.
        varint_field(7, &[5]),
        len_field(8, b"t"),
        len_field(9, b"s"),
    ]
    .concat();
    let mut framed = vec![1u8];
    framed.extend_from_slice(&(body.len() as u32).to_le_bytes());
    framed.extend_from_slice(&body);
    assert_eq!(encode_frame(&frame, MAX_FRAME_BODY).unwrap(), framed);
    assert_eq!(decode_frame(&framed, MAX_FRAME_BODY).unwrap(), frame);

    let zstd = FrameMsg {
        payload_encoding: PayloadEncoding::Zstd as i32,
        ..frame
    };
    let encoded = encode_frame(&zstd, MAX_FRAME_BODY).unwrap();
    assert!(encoded.windows(2).any(|w| w == [6 << 3, 1]));
}
