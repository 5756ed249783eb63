//! Frame header and body decoding (`broker::frame`): the header under every
//! cap the product uses, a whole frame, and the body decoder alone. A decoded
//! frame must re-encode to bytes that decode to the same frame, and its
//! encoding must be stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use running_process::wire::FrameMsg;
use running_process::wire::{
    self as frame, FRAMING_VERSION, HEADER_LEN, MAX_FRAME_BODY, MAX_HELLO_BODY,
};
use running_process::DecodeError;

#[global_allocator]
static ALLOC: rp_fuzz::CappedAlloc = rp_fuzz::CappedAlloc;

fn round_trip(decoded: &FrameMsg) {
    let bytes = frame::encode_frame(decoded, MAX_FRAME_BODY).expect("a decoded frame re-encodes");
    let again = frame::decode_frame(&bytes, MAX_FRAME_BODY).expect("a re-encoded frame decodes");
    assert_eq!(&again, decoded, "decode(encode(frame)) differs");
    let stable = frame::encode_frame(&again, MAX_FRAME_BODY).expect("re-encodes");
    assert_eq!(stable, bytes, "encoding is not stable");
}

fn check_header(header: &[u8; HEADER_LEN]) {
    let declared = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
    for limit in [0, 5, MAX_HELLO_BODY, MAX_FRAME_BODY, u32::MAX] {
        match frame::parse_header(header, limit) {
            Ok(length) => {
                assert_eq!(header[0], FRAMING_VERSION);
                assert_eq!(length, declared);
                assert!(length <= limit, "{length} accepted over the cap {limit}");
                assert!(
                    length <= MAX_FRAME_BODY,
                    "{length} accepted over the contract's 16 MiB"
                );
            }
            Err(DecodeError::Frame { .. }) => assert_ne!(header[0], FRAMING_VERSION),
            Err(DecodeError::FrameTooLarge { length, limit: cap }) => {
                assert_eq!(header[0], FRAMING_VERSION);
                assert_eq!(length, u64::from(declared));
                assert!(length > cap && cap <= u64::from(limit));
            }
            Err(other) => panic!("parse_header: unexpected {other:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(header) = data.get(..HEADER_LEN) {
        check_header(header.try_into().expect("five bytes"));
    }

    let whole = frame::decode_frame(data, MAX_FRAME_BODY);
    if let Ok(decoded) = &whole {
        round_trip(decoded);
        // Exactly one frame: header, then the declared number of bytes.
        let declared = u32::from_le_bytes([data[1], data[2], data[3], data[4]]) as usize;
        assert_eq!(data.len(), HEADER_LEN + declared);
    }

    // The body decoder alone, on what follows a header, and on everything.
    let body = data.get(HEADER_LEN..).unwrap_or_default();
    let from_body = frame::decode_body(body);
    if let Ok(decoded) = &from_body {
        round_trip(decoded);
    }
    // A whole frame decodes exactly when its header is acceptable, the
    // length matches and its body decodes.
    if whole.is_ok() {
        assert_eq!(whole, from_body);
    }
    if let Ok(decoded) = frame::decode_body(data) {
        round_trip(&decoded);
    }
});
