//! Framing: `[u8 framing version = 1][u32 little-endian body length][body]`,
//! where the body is a protobuf [`FrameMsg`].
//!
//! The declared length is checked against the caller's cap before any buffer
//! is allocated, so a peer that announces 4 GiB costs nothing. This module
//! encodes and decodes bytes; reading from and writing to sockets belongs to
//! the probe and the backend server.

use prost::Message;

use crate::contract::error::DecodeError;
use crate::contract::proto::FrameMsg;

/// The only framing version of the contract.
pub const FRAMING_VERSION: u8 = 1;
/// Bytes in a frame header (version byte and length).
pub const HEADER_LEN: usize = 5;
/// Cap on a frame body.
pub const MAX_FRAME_BODY: u32 = 16 * 1024 * 1024;
/// Cap on the body of a broker Hello.
pub const MAX_HELLO_BODY: u32 = 64 * 1024;
/// `Frame.envelope_version` of the contract.
pub const ENVELOPE_VERSION: u32 = 1;

/// Encodes `frame` with its header. Fails only if the body is over `limit`
/// (or over [`MAX_FRAME_BODY`], whatever `limit` says).
pub fn encode_frame(frame: &FrameMsg, limit: u32) -> Result<Vec<u8>, DecodeError> {
    let limit = limit.min(MAX_FRAME_BODY);
    let body_len = frame.encoded_len();
    if body_len as u64 > u64::from(limit) {
        return Err(DecodeError::FrameTooLarge {
            length: body_len as u64,
            limit: u64::from(limit),
        });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + body_len);
    out.push(FRAMING_VERSION);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    frame.encode(&mut out).map_err(|e| DecodeError::Frame {
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// Parses a frame header and returns the declared body length, refusing a
/// wrong framing version or a length over `limit`. A `limit` above
/// [`MAX_FRAME_BODY`] is lowered to it: no caller can make a frame over the
/// contract's cap acceptable, and so no caller allocates for one.
pub fn parse_header(header: &[u8; HEADER_LEN], limit: u32) -> Result<u32, DecodeError> {
    let limit = limit.min(MAX_FRAME_BODY);
    if header[0] != FRAMING_VERSION {
        return Err(DecodeError::Frame {
            reason: format!(
                "framing version {} is not supported (expected {FRAMING_VERSION})",
                header[0]
            ),
        });
    }
    let length = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
    if length > limit {
        return Err(DecodeError::FrameTooLarge {
            length: u64::from(length),
            limit: u64::from(limit),
        });
    }
    Ok(length)
}

/// Decodes a frame body (without header).
pub fn decode_body(body: &[u8]) -> Result<FrameMsg, DecodeError> {
    FrameMsg::decode(body).map_err(|e| DecodeError::Malformed {
        what: "Frame",
        reason: e.to_string(),
    })
}

/// Decodes exactly one frame occupying all of `bytes`.
pub fn decode_frame(bytes: &[u8], limit: u32) -> Result<FrameMsg, DecodeError> {
    let header: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| DecodeError::Frame {
            reason: format!("{} bytes is shorter than a frame header", bytes.len()),
        })?;
    let length = parse_header(header, limit)? as usize;
    let body = &bytes[HEADER_LEN..];
    if body.len() != length {
        return Err(DecodeError::Frame {
            reason: format!(
                "header declares {length} body bytes but {} follow",
                body.len()
            ),
        });
    }
    decode_body(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::proto::{FrameKind, PayloadEncoding};

    fn sample() -> FrameMsg {
        FrameMsg {
            envelope_version: ENVELOPE_VERSION,
            kind: FrameKind::Request as i32,
            payload_protocol: 0xB232,
            payload: vec![7; 32],
            request_id: 42,
            payload_encoding: PayloadEncoding::None as i32,
            deadline_unix_ms: 0,
            traceparent: String::new(),
            tracestate: String::new(),
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode_frame(&sample(), MAX_FRAME_BODY).unwrap();
        assert_eq!(bytes[0], 1);
        assert_eq!(decode_frame(&bytes, MAX_FRAME_BODY).unwrap(), sample());
    }

    #[test]
    fn oversized_header_is_refused_before_allocation() {
        let header = [1, 0xff, 0xff, 0xff, 0xff];
        match parse_header(&header, MAX_FRAME_BODY).unwrap_err() {
            DecodeError::FrameTooLarge { length, limit } => {
                assert_eq!(length, u64::from(u32::MAX));
                assert_eq!(limit, u64::from(MAX_FRAME_BODY));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_header(&[2, 0, 0, 0, 0], MAX_FRAME_BODY).is_err());
    }

    #[test]
    fn truncated_and_padded_frames_are_refused() {
        let bytes = encode_frame(&sample(), MAX_FRAME_BODY).unwrap();
        assert!(decode_frame(&bytes[..bytes.len() - 1], MAX_FRAME_BODY).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_frame(&longer, MAX_FRAME_BODY).is_err());
        assert!(decode_frame(&bytes[..3], MAX_FRAME_BODY).is_err());
        assert!(encode_frame(&sample(), 10).is_err());
    }
}
