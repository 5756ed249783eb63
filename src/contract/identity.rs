//! Who a backend is: its [`Endpoint`] and its [`DaemonProcess`] identity
//! (pid, executable path and SHA-256, boot id, endpoint), in the protobuf
//! encoding of the contract and in JSON, plus streamed file hashing.
//!
//! Decoding is strict: an identity with a hash that is not 32 bytes, a pid of
//! 0, a relative path or a missing endpoint is refused, so a value that exists
//! can be compared field by field with the one a launcher expects.

use prost::Message;
use serde::{Deserialize, Serialize};

use crate::contract::error::{DecodeError, ValidationError};
use crate::contract::names::SUN_PATH_MAX;
use crate::contract::proto::{DaemonProcessMsg, EndpointMsg};

/// Longest namespace id, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 256;
/// Longest boot id, in bytes.
pub const MAX_BOOT_ID_LEN: usize = 128;
/// Longest executable path, in bytes (Linux `PATH_MAX`).
pub const MAX_EXE_PATH_LEN: usize = 4096;

fn id_error(field: &'static str, value: &str, reason: impl Into<String>) -> ValidationError {
    ValidationError::Identity {
        field,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// Checks an endpoint namespace id: 1 to 256 printable ASCII characters.
pub fn validate_namespace_id(value: &str) -> Result<(), ValidationError> {
    if value.is_empty() || value.len() > MAX_NAMESPACE_LEN {
        return Err(id_error(
            "namespace_id",
            value,
            format!("must be 1 to {MAX_NAMESPACE_LEN} bytes"),
        ));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(id_error(
            "namespace_id",
            value,
            "must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

fn check_abs_path(field: &'static str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(id_error(field, value, "must not be empty"));
    }
    if value.contains('\0') {
        return Err(id_error(field, value, "contains a NUL byte"));
    }
    if !value.starts_with('/') {
        return Err(id_error(field, value, "must be an absolute path"));
    }
    if value.len() > max {
        return Err(id_error(
            field,
            value,
            format!("is {} bytes; at most {max} are allowed", value.len()),
        ));
    }
    Ok(())
}

/// Where a backend listens: a namespace (the broker instance id) and a Unix
/// socket path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Endpoint {
    pub namespace_id: String,
    pub path: String,
}

impl Endpoint {
    /// A validated endpoint: a valid namespace id and an absolute socket path
    /// that fits `sun_path`.
    pub fn new(namespace_id: &str, path: &str) -> Result<Self, ValidationError> {
        let endpoint = Endpoint {
            namespace_id: namespace_id.to_owned(),
            path: path.to_owned(),
        };
        endpoint.validate()?;
        Ok(endpoint)
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_namespace_id(&self.namespace_id)?;
        check_abs_path("path", &self.path, SUN_PATH_MAX)
    }

    pub fn namespace_id(&self) -> &str {
        &self.namespace_id
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub(crate) fn to_message(&self) -> EndpointMsg {
        EndpointMsg {
            namespace_id: self.namespace_id.clone(),
            path: self.path.clone(),
        }
    }
}

/// The identity of a running backend (the v1 `DaemonProcess` message).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DaemonProcess {
    pub pid: u32,
    pub exe_path: String,
    pub exe_sha256: [u8; 32],
    pub boot_id: String,
    pub ipc_endpoint: Endpoint,
    pub started_at_unix_ms: u64,
    pub idle_timeout_secs: Option<u32>,
}

/// JSON shape of a [`DaemonProcess`]: the hash as 64 lowercase hex digits.
#[derive(Serialize, Deserialize)]
struct DaemonProcessJson {
    pid: u32,
    exe_path: String,
    exe_sha256: String,
    boot_id: String,
    ipc_endpoint: Endpoint,
    started_at_unix_ms: u64,
    #[serde(default)]
    idle_timeout_secs: Option<u32>,
}

impl DaemonProcess {
    /// Applies the identity rules: pid in `1..=i32::MAX`, absolute executable
    /// path, printable boot id, valid endpoint.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.pid == 0 || self.pid > i32::MAX as u32 {
            return Err(id_error(
                "pid",
                &self.pid.to_string(),
                "must be between 1 and 2147483647",
            ));
        }
        check_abs_path("exe_path", &self.exe_path, MAX_EXE_PATH_LEN)?;
        if self.boot_id.is_empty()
            || self.boot_id.len() > MAX_BOOT_ID_LEN
            || !self.boot_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(id_error(
                "boot_id",
                &self.boot_id,
                format!("must be 1 to {MAX_BOOT_ID_LEN} printable ASCII characters"),
            ));
        }
        self.ipc_endpoint.validate()
    }

    /// The executable hash as 64 lowercase hex digits.
    pub fn exe_sha256_hex(&self) -> String {
        hex::encode(self.exe_sha256)
    }

    /// The wire message of this identity.
    pub fn to_message(&self) -> DaemonProcessMsg {
        DaemonProcessMsg {
            pid: self.pid,
            exe_path: self.exe_path.clone(),
            exe_sha256: self.exe_sha256.to_vec(),
            ipc_endpoint: Some(self.ipc_endpoint.to_message()),
            started_at_unix_ms: self.started_at_unix_ms,
            boot_id: self.boot_id.clone(),
            idle_timeout_secs: self.idle_timeout_secs,
        }
    }

    /// An identity from its wire message, validated.
    pub fn from_message(msg: DaemonProcessMsg) -> Result<Self, DecodeError> {
        let exe_sha256 = hash_from_slice(&msg.exe_sha256)?;
        let endpoint = msg.ipc_endpoint.ok_or_else(|| DecodeError::Malformed {
            what: "DaemonProcess",
            reason: "ipc_endpoint is missing".to_owned(),
        })?;
        let identity = DaemonProcess {
            pid: msg.pid,
            exe_path: msg.exe_path,
            exe_sha256,
            boot_id: msg.boot_id,
            ipc_endpoint: Endpoint {
                namespace_id: endpoint.namespace_id,
                path: endpoint.path,
            },
            started_at_unix_ms: msg.started_at_unix_ms,
            idle_timeout_secs: msg.idle_timeout_secs,
        };
        identity.validate()?;
        Ok(identity)
    }

    /// Protobuf encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_message().encode_to_vec()
    }

    /// Decodes and validates a protobuf encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let msg = DaemonProcessMsg::decode(bytes).map_err(|e| DecodeError::Malformed {
            what: "DaemonProcess",
            reason: e.to_string(),
        })?;
        Self::from_message(msg)
    }

    /// JSON encoding (compact, fields in message order, hash as hex).
    pub fn to_json(&self) -> String {
        let json = DaemonProcessJson {
            pid: self.pid,
            exe_path: self.exe_path.clone(),
            exe_sha256: self.exe_sha256_hex(),
            boot_id: self.boot_id.clone(),
            ipc_endpoint: self.ipc_endpoint.clone(),
            started_at_unix_ms: self.started_at_unix_ms,
            idle_timeout_secs: self.idle_timeout_secs,
        };
        // Serializing plain strings and integers cannot fail.
        serde_json::to_string(&json).unwrap_or_default()
    }

    /// Decodes and validates the JSON encoding. Unknown fields are ignored,
    /// as protobuf ignores unknown fields; a duplicated field is refused.
    /// The identity and its endpoint must be JSON objects (serde would also
    /// take arrays of the values in field order; that form is refused).
    pub fn from_json(text: &str) -> Result<Self, DecodeError> {
        let malformed = |reason: String| DecodeError::Malformed {
            what: "DaemonProcess JSON",
            reason,
        };
        let json: DaemonProcessJson =
            serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
        let shape: serde_json::Value =
            serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
        if !shape.is_object() || !shape["ipc_endpoint"].is_object() {
            return Err(malformed(
                "the identity and its ipc_endpoint must be JSON objects".to_owned(),
            ));
        }
        let raw = hex::decode(&json.exe_sha256).map_err(|e| {
            DecodeError::Invalid(id_error(
                "exe_sha256",
                &json.exe_sha256,
                format!("is not hex: {e}"),
            ))
        })?;
        let identity = DaemonProcess {
            pid: json.pid,
            exe_path: json.exe_path,
            exe_sha256: hash_from_slice(&raw)?,
            boot_id: json.boot_id,
            ipc_endpoint: json.ipc_endpoint,
            started_at_unix_ms: json.started_at_unix_ms,
            idle_timeout_secs: json.idle_timeout_secs,
        };
        identity.validate()?;
        Ok(identity)
    }
}

/// A 32-byte hash from a slice, or an error naming the length.
pub fn hash_from_slice(bytes: &[u8]) -> Result<[u8; 32], ValidationError> {
    bytes.try_into().map_err(|_| {
        id_error(
            "exe_sha256",
            &hex::encode(bytes),
            format!("is {} bytes; a SHA-256 digest is 32", bytes.len()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> DaemonProcess {
        DaemonProcess {
            pid: 4242,
            exe_path: "/opt/zccache/1.11.20/zccache-backend".into(),
            exe_sha256: [0xab; 32],
            boot_id: "0d3c9a52-6c1e-4c2f-9a43-2f1d2a7b9e10".into(),
            ipc_endpoint: Endpoint::new(
                "shared",
                "/run/user/1000/running-process/broker/rpb-v1-0123456789abcdef-be-00112233445566778899aabbccddeeff.sock",
            )
            .unwrap(),
            started_at_unix_ms: 1_764_000_000_000,
            idle_timeout_secs: Some(30),
        }
    }

    #[test]
    fn protobuf_and_json_round_trip() {
        let id = sample();
        assert_eq!(DaemonProcess::from_bytes(&id.to_bytes()).unwrap(), id);
        assert_eq!(DaemonProcess::from_json(&id.to_json()).unwrap(), id);
        let mut none = sample();
        none.idle_timeout_secs = None;
        assert_eq!(DaemonProcess::from_bytes(&none.to_bytes()).unwrap(), none);
        assert_eq!(DaemonProcess::from_json(&none.to_json()).unwrap(), none);
    }

    #[test]
    fn refuses_short_hash_and_missing_endpoint() {
        let mut msg = sample().to_message();
        msg.exe_sha256.pop();
        let err = DaemonProcess::from_bytes(&msg.encode_to_vec()).unwrap_err();
        assert!(err.to_string().contains("31 bytes"), "{err}");
        let mut msg = sample().to_message();
        msg.ipc_endpoint = None;
        assert!(DaemonProcess::from_bytes(&msg.encode_to_vec()).is_err());
        let mut msg = sample().to_message();
        msg.pid = 0;
        assert!(DaemonProcess::from_bytes(&msg.encode_to_vec()).is_err());
    }
}
