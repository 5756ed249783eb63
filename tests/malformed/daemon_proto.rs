use super::*;

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
        uint_field(13, 1),
        len_field(14, b"\xff\xfe not UTF-8, but unknown"),
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
