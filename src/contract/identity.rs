//! Who a backend is: its [`Endpoint`] and its [`DaemonProcess`] identity
//! (pid, executable path and hash, boot id, endpoint), in the protobuf
//! encoding of the contract and in JSON, in both generations of the
//! contract (SHA-256 and BLAKE3 executable hashes).
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

/// Why an endpoint path is not plain, or `None`: a path is refused when it
/// has a control character (a newline would forge lines in logs and
/// listings), a `.` or `..` segment (it would bind somewhere other than
/// where it appears to), or a trailing `/` (it names no socket file).
pub fn endpoint_path_problem(path: &str) -> Option<String> {
    if let Some(c) = path.chars().find(|c| c.is_control()) {
        return Some(format!(
            "contains the control character {:?}; a socket path must be printable",
            c
        ));
    }
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Some("contains a '.' or '..' segment; a socket path must be plain".to_owned());
    }
    if path.ends_with('/') {
        return Some("ends with '/'; it must name the socket file".to_owned());
    }
    None
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

/// The algorithm an identity names its executable's hash with.
///
/// The contract has two generations: the first (running-process 4.5.x)
/// carries a SHA-256 in field 3; the current one (4.10.x) carries
/// `exe_hash_algorithm = "blake3"` and the BLAKE3 digest in fields 8 and 9,
/// with field 3 kept as a legacy SHA-256 slot (a real digest, or zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlgorithm {
    Sha256,
    Blake3,
}

impl HashAlgorithm {
    /// The name on the wire and in JSON (`"sha256"` is this project's name
    /// for the first generation; the wire has no name for it).
    pub fn as_str(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Blake3 => "blake3",
        }
    }
}

impl std::fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name of the only algorithm field 8 may carry.
pub const BLAKE3_ALGORITHM: &str = "blake3";

/// The JSON form of an identity file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JsonForm {
    /// The current generation (4.10.x): `exe_hash_algorithm`, `exe_hash` and
    /// `legacy_exe_sha256`, digests as arrays of 32 integers.
    Current,
    /// The first generation (4.5.x): `exe_sha256` as an array of 32 integers.
    Legacy,
}

/// The identity of a running backend (the v1 `DaemonProcess` message), of
/// either generation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DaemonProcess {
    pub pid: u32,
    pub exe_path: String,
    /// SHA-256 of the executable: the hash of a first-generation identity,
    /// the legacy slot of a current one (all zeros when the peer sends none,
    /// as a BLAKE3-only peer does).
    pub exe_sha256: [u8; 32],
    /// BLAKE3 of the executable, for an identity of the current generation.
    pub exe_blake3: Option<[u8; 32]>,
    pub boot_id: String,
    pub ipc_endpoint: Endpoint,
    pub started_at_unix_ms: u64,
    pub idle_timeout_secs: Option<u32>,
}

/// How a digest is written in JSON: 64 hex digits (this project's first
/// form) or an array of 32 integers (serde's form of `[u8; 32]`, used by
/// both generations of the contract).
#[derive(Deserialize)]
#[serde(untagged)]
enum JsonDigest {
    Hex(String),
    Bytes(Vec<u16>),
}

impl JsonDigest {
    fn decode(self, field: &'static str) -> Result<[u8; 32], ValidationError> {
        match self {
            JsonDigest::Hex(text) => {
                let raw = hex::decode(&text)
                    .map_err(|e| id_error(field, &text, format!("is not hex: {e}")))?;
                digest_from_slice(field, &raw)
            }
            JsonDigest::Bytes(values) => {
                let raw = values
                    .iter()
                    .map(|&v| u8::try_from(v))
                    .collect::<Result<Vec<u8>, _>>()
                    .map_err(|_| id_error(field, &format!("{values:?}"), "has a value over 255"))?;
                digest_from_slice(field, &raw)
            }
        }
    }
}

/// Every JSON form an identity may come in; which keys are present says
/// which form it is.
#[derive(Deserialize)]
struct AnyJson {
    pid: u32,
    exe_path: String,
    #[serde(default)]
    exe_sha256: Option<JsonDigest>,
    #[serde(default)]
    exe_hash_algorithm: Option<String>,
    #[serde(default)]
    exe_hash: Option<JsonDigest>,
    #[serde(default)]
    legacy_exe_sha256: Option<JsonDigest>,
    boot_id: String,
    ipc_endpoint: Endpoint,
    started_at_unix_ms: u64,
    #[serde(default)]
    idle_timeout_secs: Option<u32>,
}

/// The current generation's JSON, keys in its order.
#[derive(Serialize)]
struct CurrentJson<'a> {
    pid: u32,
    exe_path: &'a str,
    exe_hash_algorithm: &'static str,
    exe_hash: &'a [u8; 32],
    legacy_exe_sha256: &'a [u8; 32],
    boot_id: &'a str,
    ipc_endpoint: &'a Endpoint,
    started_at_unix_ms: u64,
    idle_timeout_secs: Option<u32>,
}

/// The first generation's JSON, keys in its order.
#[derive(Serialize)]
struct LegacyJson<'a> {
    pid: u32,
    exe_path: &'a str,
    exe_sha256: &'a [u8; 32],
    boot_id: &'a str,
    ipc_endpoint: &'a Endpoint,
    started_at_unix_ms: u64,
    idle_timeout_secs: Option<u32>,
}

impl DaemonProcess {
    /// Applies the identity rules: pid in `1..=i32::MAX`, absolute executable
    /// path, printable boot id, valid endpoint. (A first-generation identity
    /// whose SHA-256 is all zeros decodes, as the contract allows it, but
    /// names no hash: verification refuses it, see
    /// [`crate::contract::probe::compare_hashes`].)
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

    /// The algorithm of the identity's executable hash: BLAKE3 for the
    /// current generation, SHA-256 for the first.
    pub fn exe_hash_algorithm(&self) -> HashAlgorithm {
        match self.exe_blake3 {
            Some(_) => HashAlgorithm::Blake3,
            None => HashAlgorithm::Sha256,
        }
    }

    /// The identity's executable hash, of [`Self::exe_hash_algorithm`].
    pub fn exe_hash(&self) -> [u8; 32] {
        self.exe_blake3.unwrap_or(self.exe_sha256)
    }

    /// The SHA-256, if the identity carries a real one (not the zeros of a
    /// BLAKE3-only identity).
    pub fn real_sha256(&self) -> Option<[u8; 32]> {
        (self.exe_sha256 != [0; 32]).then_some(self.exe_sha256)
    }

    /// The executable hash as 64 lowercase hex digits.
    pub fn exe_sha256_hex(&self) -> String {
        hex::encode(self.exe_sha256)
    }

    /// The wire message of this identity. For the current generation field 3
    /// is left out: [`Self::to_bytes`] appends it after the others.
    pub fn to_message(&self) -> DaemonProcessMsg {
        let (algorithm, hash, sha256) = match self.exe_blake3 {
            Some(blake3) => (BLAKE3_ALGORITHM.to_owned(), blake3.to_vec(), Vec::new()),
            None => (String::new(), Vec::new(), self.exe_sha256.to_vec()),
        };
        DaemonProcessMsg {
            pid: self.pid,
            exe_path: self.exe_path.clone(),
            exe_sha256: sha256,
            ipc_endpoint: Some(self.ipc_endpoint.to_message()),
            started_at_unix_ms: self.started_at_unix_ms,
            boot_id: self.boot_id.clone(),
            idle_timeout_secs: self.idle_timeout_secs,
            exe_hash_algorithm: algorithm,
            exe_hash: hash,
        }
    }

    /// An identity from its wire message, validated. Field 8 decides the
    /// generation: empty, the hash is field 3's SHA-256 (and field 9 must be
    /// empty); `"blake3"`, the hash is field 9's 32 bytes and field 3, if
    /// present, the legacy SHA-256; any other algorithm is refused.
    pub fn from_message(msg: DaemonProcessMsg) -> Result<Self, DecodeError> {
        let (exe_sha256, exe_blake3) = match msg.exe_hash_algorithm.as_str() {
            "" => {
                if !msg.exe_hash.is_empty() {
                    return Err(id_error(
                        "exe_hash",
                        &hex::encode(&msg.exe_hash),
                        "is set but exe_hash_algorithm is empty",
                    )
                    .into());
                }
                (digest_from_slice("exe_sha256", &msg.exe_sha256)?, None)
            }
            BLAKE3_ALGORITHM => {
                let legacy = if msg.exe_sha256.is_empty() {
                    [0; 32]
                } else {
                    digest_from_slice("legacy_exe_sha256", &msg.exe_sha256)?
                };
                (legacy, Some(digest_from_slice("exe_hash", &msg.exe_hash)?))
            }
            other => return Err(unsupported_algorithm(other).into()),
        };
        let endpoint = msg.ipc_endpoint.ok_or_else(|| DecodeError::Malformed {
            what: "DaemonProcess",
            reason: "ipc_endpoint is missing".to_owned(),
        })?;
        let identity = DaemonProcess {
            pid: msg.pid,
            exe_path: msg.exe_path,
            exe_sha256,
            exe_blake3,
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

    /// Protobuf encoding, as a probe answer carries it. A first-generation
    /// identity is the plain message; a current one is the message in tag
    /// order 1, 2, 4, 5, 6, [7], 8, 9 followed by field 3 (the legacy SHA-256,
    /// zeros if there is none), so that probers of both generations read it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = self.to_message().encode_to_vec();
        if self.exe_blake3.is_some() {
            bytes.extend_from_slice(&[0x1a, 0x20]);
            bytes.extend_from_slice(&self.exe_sha256);
        }
        bytes
    }

    /// Decodes and validates a protobuf encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let msg = DaemonProcessMsg::decode(bytes).map_err(|e| DecodeError::Malformed {
            what: "DaemonProcess",
            reason: e.to_string(),
        })?;
        Self::from_message(msg)
    }

    /// Compact JSON in the form of the identity's own generation (see
    /// [`Self::to_json_form`]).
    pub fn to_json(&self) -> String {
        let form = match self.exe_blake3 {
            Some(_) => JsonForm::Current,
            None => JsonForm::Legacy,
        };
        // The identity's own form always exists.
        self.to_json_form(form, false).unwrap_or_default()
    }

    /// JSON in the given generation's form, pretty-printed if asked (as
    /// identity files are written). The current form needs a BLAKE3 hash and
    /// the legacy form a real SHA-256; an identity without one is refused
    /// with an error naming the missing field.
    pub fn to_json_form(&self, form: JsonForm, pretty: bool) -> Result<String, ValidationError> {
        let render = |value: &dyn erased::Render| value.render(pretty);
        match form {
            JsonForm::Current => {
                let blake3 = self.exe_blake3.as_ref().ok_or_else(|| {
                    id_error(
                        "exe_hash",
                        "",
                        "is missing: a first-generation identity has no BLAKE3 hash to write in \
                         the current form",
                    )
                })?;
                Ok(render(&CurrentJson {
                    pid: self.pid,
                    exe_path: &self.exe_path,
                    exe_hash_algorithm: BLAKE3_ALGORITHM,
                    exe_hash: blake3,
                    legacy_exe_sha256: &self.exe_sha256,
                    boot_id: &self.boot_id,
                    ipc_endpoint: &self.ipc_endpoint,
                    started_at_unix_ms: self.started_at_unix_ms,
                    idle_timeout_secs: self.idle_timeout_secs,
                }))
            }
            JsonForm::Legacy => {
                if self.exe_blake3.is_some() && self.real_sha256().is_none() {
                    return Err(id_error(
                        "exe_sha256",
                        &self.exe_sha256_hex(),
                        "is all zeros: a BLAKE3-only identity cannot be written in the \
                         first generation's form",
                    ));
                }
                Ok(render(&LegacyJson {
                    pid: self.pid,
                    exe_path: &self.exe_path,
                    exe_sha256: &self.exe_sha256,
                    boot_id: &self.boot_id,
                    ipc_endpoint: &self.ipc_endpoint,
                    started_at_unix_ms: self.started_at_unix_ms,
                    idle_timeout_secs: self.idle_timeout_secs,
                }))
            }
        }
    }

    /// Decodes and validates any of the three JSON forms: the current
    /// generation's (`exe_hash_algorithm`, `exe_hash`, optional
    /// `legacy_exe_sha256`), the first generation's (`exe_sha256` as 32
    /// integers) and this project's first (`exe_sha256` as hex). Unknown
    /// fields are ignored, as protobuf ignores unknown fields; a duplicated
    /// field, a mix of two generations' hash fields, an algorithm other than
    /// BLAKE3 or a digest that is not 32 bytes is refused, each naming the
    /// field. The identity and its endpoint must be JSON objects (serde would
    /// also take arrays of the values in field order; that form is refused).
    pub fn from_json(text: &str) -> Result<Self, DecodeError> {
        let malformed = |reason: String| DecodeError::Malformed {
            what: "DaemonProcess JSON",
            reason,
        };
        let shape: serde_json::Value =
            serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
        if !shape.is_object() || !shape["ipc_endpoint"].is_object() {
            return Err(malformed(
                "the identity and its ipc_endpoint must be JSON objects".to_owned(),
            ));
        }
        let json: AnyJson = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
        let (exe_sha256, exe_blake3) = match (json.exe_hash_algorithm, json.exe_sha256) {
            (Some(algorithm), None) => {
                if algorithm != BLAKE3_ALGORITHM {
                    return Err(unsupported_algorithm(&algorithm).into());
                }
                let hash = json
                    .exe_hash
                    .ok_or_else(|| malformed("missing field `exe_hash`".to_owned()))?
                    .decode("exe_hash")?;
                let legacy = match json.legacy_exe_sha256 {
                    Some(legacy) => legacy.decode("legacy_exe_sha256")?,
                    None => [0; 32],
                };
                (legacy, Some(hash))
            }
            (None, Some(sha256)) => {
                if json.exe_hash.is_some() || json.legacy_exe_sha256.is_some() {
                    return Err(id_error(
                        "exe_hash_algorithm",
                        "",
                        "is missing but exe_hash or legacy_exe_sha256 is given",
                    )
                    .into());
                }
                (sha256.decode("exe_sha256")?, None)
            }
            (Some(_), Some(_)) => {
                return Err(id_error(
                    "exe_sha256",
                    "",
                    "is given beside exe_hash_algorithm: an identity has one generation's \
                     hash fields (legacy_exe_sha256 is the current one's SHA-256)",
                )
                .into())
            }
            (None, None) => {
                return Err(malformed(
                    "missing field `exe_hash_algorithm` (current generation) or `exe_sha256` \
                     (first generation): the identity names no executable hash"
                        .to_owned(),
                ))
            }
        };
        let identity = DaemonProcess {
            pid: json.pid,
            exe_path: json.exe_path,
            exe_sha256,
            exe_blake3,
            boot_id: json.boot_id,
            ipc_endpoint: json.ipc_endpoint,
            started_at_unix_ms: json.started_at_unix_ms,
            idle_timeout_secs: json.idle_timeout_secs,
        };
        identity.validate()?;
        Ok(identity)
    }
}

/// Serializing to a string, compact or pretty, for either JSON struct.
mod erased {
    pub(super) trait Render {
        fn render(&self, pretty: bool) -> String;
    }

    impl<T: serde::Serialize> Render for T {
        fn render(&self, pretty: bool) -> String {
            // Plain strings, integers and arrays cannot fail to serialize.
            if pretty {
                serde_json::to_string_pretty(self).unwrap_or_default()
            } else {
                serde_json::to_string(self).unwrap_or_default()
            }
        }
    }
}

fn unsupported_algorithm(name: &str) -> ValidationError {
    id_error(
        "exe_hash_algorithm",
        name,
        format!("is not supported; the contract defines only {BLAKE3_ALGORITHM:?}"),
    )
}

/// A 32-byte digest from a slice, or an error naming `field` and the length.
pub fn digest_from_slice(field: &'static str, bytes: &[u8]) -> Result<[u8; 32], ValidationError> {
    bytes.try_into().map_err(|_| {
        id_error(
            field,
            &hex::encode(bytes),
            format!("is {} bytes; a digest is 32", bytes.len()),
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
            exe_blake3: None,
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

    fn ints(byte: u8) -> String {
        format!("[{}]", vec![byte.to_string(); 32].join(","))
    }

    fn endpoint_json() -> &'static str {
        r#"{"namespace_id":"default","path":"/tmp/zccache-u/sock-v1.15.8"}"#
    }

    #[test]
    fn reads_all_three_json_forms() {
        let ep = endpoint_json();
        // The current generation (4.10.x), as zccache writes it: BLAKE3-only.
        let current = format!(
            r#"{{"pid":7,"exe_path":"/z/zccache-daemon","exe_hash_algorithm":"blake3",
            "exe_hash":{},"legacy_exe_sha256":{},"boot_id":"b","ipc_endpoint":{ep},
            "started_at_unix_ms":5,"idle_timeout_secs":null}}"#,
            ints(0xcd),
            ints(0)
        );
        let id = DaemonProcess::from_json(&current).unwrap();
        assert_eq!(id.exe_hash_algorithm(), HashAlgorithm::Blake3);
        assert_eq!(id.exe_blake3, Some([0xcd; 32]));
        assert_eq!(id.real_sha256(), None);
        // 4.10.0-4.10.3 files lack the legacy slot.
        let early = current.replace(&format!(r#""legacy_exe_sha256":{},"#, ints(0)), "");
        assert_ne!(early, current);
        assert_eq!(DaemonProcess::from_json(&early).unwrap(), id);
        // The first generation (4.5.5): integers in exe_sha256.
        let first = format!(
            r#"{{"pid":7,"exe_path":"/z/d","exe_sha256":{},"boot_id":"b",
            "ipc_endpoint":{ep},"started_at_unix_ms":5,"idle_timeout_secs":3}}"#,
            ints(0xab)
        );
        let old = DaemonProcess::from_json(&first).unwrap();
        assert_eq!(old.exe_hash_algorithm(), HashAlgorithm::Sha256);
        assert_eq!((old.exe_sha256, old.exe_blake3), ([0xab; 32], None));
        // This project's first form: hex.
        let hex_form = first.replace(&ints(0xab), &format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(DaemonProcess::from_json(&hex_form).unwrap(), old);
    }

    #[test]
    fn writes_each_generation_in_its_own_key_order() {
        let mut id = sample();
        id.exe_blake3 = Some([0xcd; 32]);
        let text = id.to_json();
        let keys = [
            "\"pid\"",
            "\"exe_path\"",
            "\"exe_hash_algorithm\":\"blake3\"",
            "\"exe_hash\"",
            "\"legacy_exe_sha256\"",
            "\"boot_id\"",
            "\"ipc_endpoint\"",
            "\"started_at_unix_ms\"",
            "\"idle_timeout_secs\"",
        ];
        let at: Vec<usize> = keys.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(!text.contains("\"exe_sha256\""), "{text}");
        assert!(text.contains(&ints(0xcd).replace(' ', "")), "{text}");
        assert_eq!(DaemonProcess::from_json(&text).unwrap(), id);
        let legacy = id.to_json_form(JsonForm::Legacy, true).unwrap();
        assert!(legacy.contains("\"exe_sha256\": [\n"), "{legacy}");
        assert!(!legacy.contains("exe_hash"), "{legacy}");
        let back = DaemonProcess::from_json(&legacy).unwrap();
        assert_eq!(back.exe_blake3, None);
        assert_eq!(back.exe_sha256, id.exe_sha256);
        // A form that would have to invent a digest is refused.
        let first = sample();
        let err = first.to_json_form(JsonForm::Current, false).unwrap_err();
        assert!(err.to_string().contains("exe_hash"), "{err}");
        let mut blake3_only = id.clone();
        blake3_only.exe_sha256 = [0; 32];
        let err = blake3_only
            .to_json_form(JsonForm::Legacy, false)
            .unwrap_err();
        assert!(err.to_string().contains("exe_sha256"), "{err}");
    }

    #[test]
    fn json_hash_fields_are_checked_and_named() {
        let ep = endpoint_json();
        let with = |hash_fields: &str| {
            format!(
                r#"{{"pid":7,"exe_path":"/z/d",{hash_fields},"boot_id":"b",
                "ipc_endpoint":{ep},"started_at_unix_ms":5}}"#
            )
        };
        let short = format!("[{}]", vec!["1"; 31].join(","));
        for (fields, named) in [
            (
                format!(r#""exe_hash_algorithm":"sha256","exe_hash":{}"#, ints(1)),
                "exe_hash_algorithm",
            ),
            (
                format!(r#""exe_hash_algorithm":"","exe_hash":{}"#, ints(1)),
                "exe_hash_algorithm",
            ),
            (r#""exe_hash_algorithm":"blake3""#.to_owned(), "exe_hash"),
            (
                format!(r#""exe_hash_algorithm":"blake3","exe_hash":{short}"#),
                "exe_hash",
            ),
            (
                format!(
                    r#""exe_hash_algorithm":"blake3","exe_hash":{},"legacy_exe_sha256":{short}"#,
                    ints(1)
                ),
                "legacy_exe_sha256",
            ),
            (
                format!(
                    r#""exe_hash_algorithm":"blake3","exe_hash":{},"exe_sha256":{}"#,
                    ints(1),
                    ints(2)
                ),
                "exe_sha256",
            ),
            (format!(r#""exe_hash":{}"#, ints(1)), "exe_hash_algorithm"),
            (
                format!(r#""exe_sha256":[{}]"#, vec!["256"; 32].join(",")),
                "exe_sha256",
            ),
            (String::new(), "exe_hash_algorithm"),
        ] {
            let text = with(&fields).replace(",,", ",");
            let err = DaemonProcess::from_json(&text).unwrap_err().to_string();
            assert!(err.contains(named), "{fields}: {err}");
        }
    }
}
