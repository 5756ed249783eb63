use super::*;

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

pub(crate) fn header_declaring(length: u32) -> Vec<u8> {
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
