//! The identity probe of the v1 contract (payload protocol `0xB232`) as
//! messages: the request a prober sends and the answer a backend gives.
//!
//! Prober: a fresh 32-byte nonce per probe, `request_id` = the nonce's first
//! 8 bytes as a little-endian u64, one REQUEST frame, one RESPONSE frame whose
//! payload is the nonce followed by a protobuf `DaemonProcess`. The identity is
//! then compared field by field (pid, exe_path, exe_sha256, boot_id,
//! ipc_endpoint); `started_at_unix_ms` and `idle_timeout_secs` are informative.
//!
//! This module builds and checks bytes only. Sending them is
//! [`crate::launch::verify`]'s job (prober) and [`crate::sdk`]'s (backend);
//! deciding whom to trust is the launcher's, which ties the answer to the
//! socket's peer credentials and to the process it spawned.

use std::io;
use std::time::Duration;

use crate::contract::clock;
use crate::contract::error::{DecodeError, HostError};
use crate::contract::frame::{self, ENVELOPE_VERSION, MAX_FRAME_BODY};
use crate::contract::identity::DaemonProcess;
use crate::contract::proto::{
    payload_protocol::IDENTITY_PROBE, FrameKind, FrameMsg, PayloadEncoding,
};
use crate::contract::trace::TraceContext;

/// Bytes of a probe nonce.
pub const NONCE_LEN: usize = 32;
/// Cap on a probe response body: a nonce and an identity are a few hundred
/// bytes; anything near this is hostile.
pub const MAX_PROBE_RESPONSE: u32 = 64 * 1024;

/// A probe that failed or an identity that did not match.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The socket failed (connect, read, write).
    #[error("probe {operation} failed: {source}")]
    Io {
        operation: &'static str,
        #[source]
        source: io::Error,
    },
    /// No complete answer before the deadline.
    #[error("probe got no complete answer within {timeout:?}")]
    Timeout { timeout: Duration },
    /// The peer closed the connection before a complete frame.
    #[error("peer closed the connection after {received} of {expected} bytes")]
    Closed { received: usize, expected: usize },
    /// The answer is not a valid frame or identity.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The answer is a frame, but not the response to this probe.
    #[error("probe response {field}: expected {expected}, got {actual}")]
    Protocol {
        field: &'static str,
        expected: String,
        actual: String,
    },
    /// The identity differs from the expected one.
    #[error("identity mismatch on {field}: expected {expected}, actual {actual}")]
    Mismatch {
        field: &'static str,
        expected: String,
        actual: String,
    },
    #[error(transparent)]
    Host(#[from] HostError),
}

/// One probe in flight: its nonce and the framed request bytes.
pub struct ProbeRequest {
    pub nonce: [u8; NONCE_LEN],
    pub request_id: u64,
    pub bytes: Vec<u8>,
}

impl ProbeRequest {
    /// A fresh probe with a nonce from the OS and the given trace fields.
    pub fn new(trace: &TraceContext) -> Result<Self, ProbeError> {
        let mut nonce = [0u8; NONCE_LEN];
        clock::fill_random(&mut nonce)?;
        Ok(Self::with_nonce(nonce, trace))
    }

    /// A probe with a given nonce (tests and fuzzing).
    pub fn with_nonce(nonce: [u8; NONCE_LEN], trace: &TraceContext) -> Self {
        let request_id = request_id_of(&nonce);
        let frame = FrameMsg {
            envelope_version: ENVELOPE_VERSION,
            kind: FrameKind::Request as i32,
            payload_protocol: IDENTITY_PROBE,
            payload: nonce.to_vec(),
            request_id,
            payload_encoding: PayloadEncoding::None as i32,
            deadline_unix_ms: 0,
            traceparent: trace.traceparent().to_owned(),
            tracestate: trace.tracestate().to_owned(),
        };
        // A 32-byte payload and validated trace fields are far below the cap.
        let bytes = frame::encode_frame(&frame, MAX_FRAME_BODY).unwrap_or_default();
        ProbeRequest {
            nonce,
            request_id,
            bytes,
        }
    }

    /// Checks a response frame against this probe and returns the identity in
    /// it (not yet compared with anything).
    pub fn check_response(&self, response: &FrameMsg) -> Result<DaemonProcess, ProbeError> {
        let expect = |field: &'static str, ok: bool, expected: String, actual: String| {
            if ok {
                Ok(())
            } else {
                Err(ProbeError::Protocol {
                    field,
                    expected,
                    actual,
                })
            }
        };
        expect(
            "envelope_version",
            response.envelope_version == ENVELOPE_VERSION,
            ENVELOPE_VERSION.to_string(),
            response.envelope_version.to_string(),
        )?;
        expect(
            "kind",
            response.kind == FrameKind::Response as i32,
            "RESPONSE".to_owned(),
            kind_name(response.kind),
        )?;
        expect(
            "payload_protocol",
            response.payload_protocol == IDENTITY_PROBE,
            format!("{IDENTITY_PROBE:#06x}"),
            format!("{:#06x}", response.payload_protocol),
        )?;
        expect(
            "request_id",
            response.request_id == self.request_id,
            self.request_id.to_string(),
            response.request_id.to_string(),
        )?;
        expect(
            "payload_encoding",
            response.payload_encoding == PayloadEncoding::None as i32,
            "NONE".to_owned(),
            response.payload_encoding.to_string(),
        )?;
        let payload = &response.payload;
        let echoed = payload.get(..NONCE_LEN).unwrap_or(payload);
        expect(
            "nonce",
            echoed == self.nonce,
            hex::encode(self.nonce),
            hex::encode(echoed),
        )?;
        Ok(DaemonProcess::from_bytes(&payload[NONCE_LEN..])?)
    }
}

fn kind_name(kind: i32) -> String {
    match FrameKind::try_from(kind) {
        Ok(k) => format!("{k:?}").to_uppercase(),
        Err(_) => kind.to_string(),
    }
}

/// `request_id` of a probe: the nonce's first 8 bytes, little-endian.
pub fn request_id_of(nonce: &[u8; NONCE_LEN]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&nonce[..8]);
    u64::from_le_bytes(first)
}

/// Backend side: the nonce of `frame` if it is a valid probe request
/// (REQUEST, envelope 1, protocol 0xB232, encoding NONE, a 32-byte payload,
/// and the request id the nonce implies).
pub fn probe_nonce(frame: &FrameMsg) -> Option<[u8; NONCE_LEN]> {
    if frame.envelope_version != ENVELOPE_VERSION
        || frame.kind != FrameKind::Request as i32
        || frame.payload_protocol != IDENTITY_PROBE
        || frame.payload_encoding != PayloadEncoding::None as i32
    {
        return None;
    }
    let nonce: [u8; NONCE_LEN] = frame.payload.as_slice().try_into().ok()?;
    (frame.request_id == request_id_of(&nonce)).then_some(nonce)
}

/// Backend side: the framed answer to a probe request, copying its request
/// id, traceparent and tracestate.
pub fn probe_response(
    request: &FrameMsg,
    nonce: &[u8; NONCE_LEN],
    identity: &DaemonProcess,
) -> Vec<u8> {
    let mut payload = nonce.to_vec();
    payload.extend_from_slice(&identity.to_bytes());
    let frame = FrameMsg {
        envelope_version: ENVELOPE_VERSION,
        kind: FrameKind::Response as i32,
        payload_protocol: IDENTITY_PROBE,
        payload,
        request_id: request.request_id,
        payload_encoding: PayloadEncoding::None as i32,
        deadline_unix_ms: 0,
        traceparent: request.traceparent.clone(),
        tracestate: request.tracestate.clone(),
    };
    // A validated identity is far below the cap.
    frame::encode_frame(&frame, MAX_FRAME_BODY).unwrap_or_default()
}

/// Compares the executable hashes an identity carries with the expected
/// ones, whatever generation each side is of: every digest both sides carry
/// must be equal (BLAKE3, and SHA-256 where both have a real one, not the
/// zeros of a BLAKE3-only identity), and at least one must be compared. So a
/// first-generation peer is checked by its SHA-256, a BLAKE3-only peer by its
/// BLAKE3, a compatible peer by both; a peer that carries neither expected
/// digest is refused on `exe_hash_algorithm`.
pub fn compare_hashes(
    expected_sha256: Option<[u8; 32]>,
    expected_blake3: Option<[u8; 32]>,
    actual: &DaemonProcess,
) -> Result<(), ProbeError> {
    let mut compared = false;
    if let (Some(expected), Some(actual)) = (expected_blake3, actual.exe_blake3) {
        if expected != actual {
            return Err(ProbeError::Mismatch {
                field: "exe_hash",
                expected: format!("blake3:{}", hex::encode(expected)),
                actual: format!("blake3:{}", hex::encode(actual)),
            });
        }
        compared = true;
    }
    if let (Some(expected), Some(actual)) = (expected_sha256, actual.real_sha256()) {
        if expected != actual {
            return Err(ProbeError::Mismatch {
                field: "exe_sha256",
                expected: hex::encode(expected),
                actual: hex::encode(actual),
            });
        }
        compared = true;
    }
    if !compared {
        let named = |sha256: bool, blake3: bool| match (sha256, blake3) {
            (true, true) => "blake3 and sha256",
            (false, true) => "blake3 only",
            (true, false) => "sha256 only",
            (false, false) => "no hash",
        };
        return Err(ProbeError::Mismatch {
            field: "exe_hash_algorithm",
            expected: named(expected_sha256.is_some(), expected_blake3.is_some()).to_owned(),
            actual: named(actual.real_sha256().is_some(), actual.exe_blake3.is_some()).to_owned(),
        });
    }
    Ok(())
}

/// Compares a probed identity with the expected one on the fields the
/// contract names; the first difference is reported with both values.
pub fn compare_identity(
    expected: &DaemonProcess,
    actual: &DaemonProcess,
) -> Result<(), ProbeError> {
    let mismatch = |field: &'static str, e: String, a: String| ProbeError::Mismatch {
        field,
        expected: e,
        actual: a,
    };
    if expected.pid != actual.pid {
        return Err(mismatch(
            "pid",
            expected.pid.to_string(),
            actual.pid.to_string(),
        ));
    }
    if expected.exe_path != actual.exe_path {
        return Err(mismatch(
            "exe_path",
            expected.exe_path.clone(),
            actual.exe_path.clone(),
        ));
    }
    compare_hashes(expected.real_sha256(), expected.exe_blake3, actual)?;
    if expected.boot_id != actual.boot_id {
        return Err(mismatch(
            "boot_id",
            expected.boot_id.clone(),
            actual.boot_id.clone(),
        ));
    }
    if expected.ipc_endpoint.namespace_id != actual.ipc_endpoint.namespace_id {
        return Err(mismatch(
            "ipc_endpoint.namespace_id",
            expected.ipc_endpoint.namespace_id.clone(),
            actual.ipc_endpoint.namespace_id.clone(),
        ));
    }
    if expected.ipc_endpoint.path != actual.ipc_endpoint.path {
        return Err(mismatch(
            "ipc_endpoint.path",
            expected.ipc_endpoint.path.clone(),
            actual.ipc_endpoint.path.clone(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::identity::Endpoint;

    fn identity() -> DaemonProcess {
        DaemonProcess {
            pid: 77,
            exe_path: "/bin/x".into(),
            exe_sha256: [3; 32],
            exe_blake3: None,
            boot_id: "boot".into(),
            ipc_endpoint: Endpoint::new("shared", "/tmp/x.sock").unwrap(),
            started_at_unix_ms: 1,
            idle_timeout_secs: None,
        }
    }

    #[test]
    fn request_and_response_round_trip() {
        let trace = TraceContext::new_root(0).unwrap();
        let req = ProbeRequest::with_nonce([9; 32], &trace);
        assert_eq!(req.request_id, u64::from_le_bytes([9; 8]));
        let frame = frame::decode_frame(&req.bytes, MAX_FRAME_BODY).unwrap();
        let nonce = probe_nonce(&frame).unwrap();
        assert_eq!(nonce, [9; 32]);
        let resp = probe_response(&frame, &nonce, &identity());
        let resp = frame::decode_frame(&resp, MAX_FRAME_BODY).unwrap();
        assert_eq!(resp.traceparent, trace.traceparent());
        assert_eq!(req.check_response(&resp).unwrap(), identity());
    }

    #[test]
    fn wrong_nonce_and_fields_are_named() {
        let trace = TraceContext::default();
        let req = ProbeRequest::with_nonce([1; 32], &trace);
        let other = ProbeRequest::with_nonce([2; 32], &trace);
        let frame = frame::decode_frame(&other.bytes, MAX_FRAME_BODY).unwrap();
        let resp = frame::decode_frame(
            &probe_response(&frame, &[2; 32], &identity()),
            MAX_FRAME_BODY,
        )
        .unwrap();
        match req.check_response(&resp).unwrap_err() {
            ProbeError::Protocol { field, .. } => assert_eq!(field, "request_id"),
            e => panic!("{e}"),
        }
        let mut forged = resp.clone();
        forged.request_id = req.request_id;
        match req.check_response(&forged).unwrap_err() {
            ProbeError::Protocol { field, .. } => assert_eq!(field, "nonce"),
            e => panic!("{e}"),
        }
        let mut not_probe = frame.clone();
        not_probe.payload.push(0);
        assert!(probe_nonce(&not_probe).is_none());
    }

    #[test]
    fn identity_comparison_names_the_field() {
        let mut other = identity();
        other.started_at_unix_ms = 99;
        compare_identity(&identity(), &other).unwrap();
        other.pid = 78;
        let err = compare_identity(&identity(), &other)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pid") && err.contains("77") && err.contains("78"),
            "{err}"
        );
    }
}
