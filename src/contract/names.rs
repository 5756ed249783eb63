//! Names of the v1 contract: service and instance names, versions, and the
//! socket file names built from them.
//!
//! The rules are strict on purpose. Upper case is refused rather than folded,
//! so a case-only twin can never alias a real name; versions have no `+build`
//! part and no leading zeros, so two spellings never denote one version. This
//! module only checks and builds strings; it touches no file.

use std::cmp::Ordering;
use std::fmt;

use std::path::Path;

use crate::contract::error::{AllocError, NameKind, ValidationError};

/// Longest service or instance name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest version string accepted, in bytes.
pub const MAX_VERSION_LEN: usize = 128;
/// Length of a per-user hash: 8 bytes as lowercase hex.
pub const USER_SID_HASH_LEN: usize = 16;
/// Length of the random token of a backend endpoint: 16 bytes as lowercase hex.
pub const ENDPOINT_TOKEN_LEN: usize = 32;

fn name_error(kind: NameKind, value: &str, reason: impl Into<String>) -> ValidationError {
    ValidationError::Name {
        kind,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

fn check_name(kind: NameKind, name: &str) -> Result<(), ValidationError> {
    if name.is_empty() {
        return Err(name_error(kind, name, "must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(name_error(
            kind,
            name,
            format!(
                "is {} bytes long; at most {MAX_NAME_LEN} are allowed",
                name.len()
            ),
        ));
    }
    if let Some((at, c)) = name
        .char_indices()
        .find(|&(_, c)| !matches!(c, 'a'..='z' | '0'..='9' | '-'))
    {
        let reason = if c.is_ascii_uppercase() {
            format!("upper-case {c:?} at byte {at}: names are lower case and never folded")
        } else {
            format!("{c:?} at byte {at} is not allowed; use a-z, 0-9 and '-'")
        };
        return Err(name_error(kind, name, reason));
    }
    Ok(())
}

/// Checks a service name against `[a-z0-9-]{1,64}`.
pub fn validate_service_name(name: &str) -> Result<(), ValidationError> {
    check_name(NameKind::ServiceName, name)
}

/// Checks an explicit instance name against `[a-z0-9-]{1,64}`.
pub fn validate_instance_name(name: &str) -> Result<(), ValidationError> {
    check_name(NameKind::InstanceName, name)
}

fn check_lower_hex(kind: NameKind, value: &str, len: usize) -> Result<(), ValidationError> {
    if value.len() != len {
        return Err(name_error(
            kind,
            value,
            format!("must be exactly {len} lowercase hex characters"),
        ));
    }
    if !value
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(name_error(
            kind,
            value,
            format!("must be exactly {len} lowercase hex characters"),
        ));
    }
    Ok(())
}

/// Checks a per-user hash: 16 lowercase hex characters.
pub fn validate_user_sid_hash(hash: &str) -> Result<(), ValidationError> {
    check_lower_hex(NameKind::UserSidHash, hash, USER_SID_HASH_LEN)
}

/// A parsed version: `MAJOR.MINOR.PATCH` with an optional `-pre-release`.
///
/// Ordering compares the numeric triple only, then the pre-release text, so
/// that it is total; the version *policy* of the contract (see
/// [`crate::contract::service::ServiceDefinition::check_version`]) looks at the
/// numeric triple alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// Pre-release text after `-`, without the dash; empty when absent.
    pub pre: String,
}

impl Version {
    /// Parses and validates a version string.
    pub fn parse(value: &str) -> Result<Version, ValidationError> {
        let err = |reason: &str| ValidationError::Version {
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        if value.is_empty() {
            return Err(err("must not be empty"));
        }
        if value.len() > MAX_VERSION_LEN {
            return Err(err(&format!(
                "is {} bytes long; at most {MAX_VERSION_LEN} are allowed",
                value.len()
            )));
        }
        if value.contains('+') {
            return Err(err("build metadata ('+...') is not allowed"));
        }
        let (core, pre) = match value.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (value, None),
        };
        let mut parts = core.split('.');
        let mut numbers = [0u64; 3];
        for (i, slot) in numbers.iter_mut().enumerate() {
            let part = parts
                .next()
                .ok_or_else(|| err("must be MAJOR.MINOR.PATCH with an optional -pre-release"))?;
            *slot = parse_number(part).map_err(|why| {
                err(&format!(
                    "{} part {part:?} {why}",
                    ["major", "minor", "patch"][i]
                ))
            })?;
        }
        if parts.next().is_some() {
            return Err(err(
                "must be MAJOR.MINOR.PATCH with an optional -pre-release",
            ));
        }
        let pre = match pre {
            None => String::new(),
            Some(pre) => {
                check_pre_release(pre).map_err(|why| err(&why))?;
                pre.to_owned()
            }
        };
        Ok(Version {
            major: numbers[0],
            minor: numbers[1],
            patch: numbers[2],
            pre,
        })
    }

    /// The numeric `(major, minor, patch)` triple.
    pub fn triple(&self) -> (u64, u64, u64) {
        (self.major, self.minor, self.patch)
    }
}

fn parse_number(part: &str) -> Result<u64, &'static str> {
    if part.is_empty() {
        return Err("is empty");
    }
    if !part.bytes().all(|b| b.is_ascii_digit()) {
        return Err("must be decimal digits");
    }
    if part.len() > 1 && part.starts_with('0') {
        return Err("has a leading zero");
    }
    part.parse::<u64>().map_err(|_| "does not fit in 64 bits")
}

fn check_pre_release(pre: &str) -> Result<(), String> {
    if pre.is_empty() {
        return Err("pre-release after '-' must not be empty".to_owned());
    }
    if let Some(c) = pre
        .chars()
        .find(|&c| !matches!(c, 'a'..='z' | '0'..='9' | '.'))
    {
        return Err(if c.is_ascii_uppercase() {
            format!("pre-release has upper-case {c:?}; only a-z, 0-9 and '.' are allowed")
        } else {
            format!("pre-release has {c:?}; only a-z, 0-9 and '.' are allowed")
        });
    }
    if pre.split('.').any(str::is_empty) {
        return Err("pre-release has an empty dot-separated part".to_owned());
    }
    Ok(())
}

impl std::str::FromStr for Version {
    type Err = ValidationError;

    fn from_str(value: &str) -> Result<Version, ValidationError> {
        Version::parse(value)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if !self.pre.is_empty() {
            write!(f, "-{}", self.pre)?;
        }
        Ok(())
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.triple()
            .cmp(&other.triple())
            .then_with(|| self.pre.cmp(&other.pre))
    }
}

/// Checks a version string: `MAJOR.MINOR.PATCH` digits without leading zeros,
/// optionally `-` and a pre-release of `[a-z0-9.]+`; no `+build`.
pub fn validate_version(value: &str) -> Result<(), ValidationError> {
    Version::parse(value).map(|_| ())
}

const PREFIX: &str = "rpb-v1-";

/// File name of a backend endpoint:
/// `rpb-v1-{user_sid_hash}-be-{32 lowercase hex}.sock`.
pub fn backend_socket_name(
    user_sid_hash: &str,
    token_hex: &str,
) -> Result<String, ValidationError> {
    validate_user_sid_hash(user_sid_hash)?;
    check_lower_hex(NameKind::EndpointToken, token_hex, ENDPOINT_TOKEN_LEN)?;
    Ok(format!("{PREFIX}{user_sid_hash}-be-{token_hex}.sock"))
}

/// The compact backend socket file name, `rpb-v1-be-{32 hex}.sock`: the v1
/// name without the per-user hash (the directory is the user's own), for a
/// socket directory too long for the full name (see
/// [`COMPACT_BACKEND_SOCKET_NAME_LEN`]). Same prefix, same 128-bit token.
pub fn compact_backend_socket_name(token_hex: &str) -> Result<String, ValidationError> {
    check_lower_hex(NameKind::EndpointToken, token_hex, ENDPOINT_TOKEN_LEN)?;
    Ok(format!("{PREFIX}be-{token_hex}.sock"))
}

/// Whether `file_name` is a backend socket name as the allocator makes
/// them (`rpb-v1-{16 hex}-be-{32 hex}.sock`, or the compact
/// `rpb-v1-be-{32 hex}.sock`).
pub fn is_backend_socket_name(file_name: &str) -> bool {
    let Some(rest) = file_name
        .strip_prefix(PREFIX)
        .and_then(|r| r.strip_suffix(".sock"))
    else {
        return false;
    };
    if let Some(token) = rest.strip_prefix("be-") {
        return check_lower_hex(NameKind::EndpointToken, token, ENDPOINT_TOKEN_LEN).is_ok();
    }
    let Some((hash, token)) = rest.split_once("-be-") else {
        return false;
    };
    validate_user_sid_hash(hash).is_ok()
        && check_lower_hex(NameKind::EndpointToken, token, ENDPOINT_TOKEN_LEN).is_ok()
}

/// File name of the shared broker: `rpb-v1-{user_sid_hash}-shared.sock`.
pub fn shared_broker_socket_name(user_sid_hash: &str) -> Result<String, ValidationError> {
    validate_user_sid_hash(user_sid_hash)?;
    Ok(format!("{PREFIX}{user_sid_hash}-shared.sock"))
}

/// File name of a service's private broker:
/// `rpb-v1-{user_sid_hash}-svc-{service}.sock`.
pub fn service_broker_socket_name(
    user_sid_hash: &str,
    service_name: &str,
) -> Result<String, ValidationError> {
    validate_user_sid_hash(user_sid_hash)?;
    validate_service_name(service_name)?;
    Ok(format!("{PREFIX}{user_sid_hash}-svc-{service_name}.sock"))
}

/// File name of an explicit broker instance:
/// `rpb-v1-{user_sid_hash}-inst-{name}.sock`.
pub fn instance_broker_socket_name(
    user_sid_hash: &str,
    instance_name: &str,
) -> Result<String, ValidationError> {
    validate_user_sid_hash(user_sid_hash)?;
    validate_instance_name(instance_name)?;
    Ok(format!("{PREFIX}{user_sid_hash}-inst-{instance_name}.sock"))
}

/// Length of every backend socket file name (the random part is fixed size).
pub const BACKEND_SOCKET_NAME_LEN: usize =
    PREFIX.len() + USER_SID_HASH_LEN + "-be-".len() + ENDPOINT_TOKEN_LEN + ".sock".len();

/// Length of the compact backend socket file name (see
/// [`compact_backend_socket_name`]): 17 bytes shorter than the full one.
pub const COMPACT_BACKEND_SOCKET_NAME_LEN: usize =
    PREFIX.len() + "be-".len() + ENDPOINT_TOKEN_LEN + ".sock".len();

/// Longest Unix socket path in bytes: `sun_path` is 108 bytes and the last one
/// holds the terminating NUL.
pub const SUN_PATH_MAX: usize = 107;

/// Refuses a path that would not fit `sun_path`.
pub fn check_sun_path(path: &Path) -> Result<(), AllocError> {
    let length = path.as_os_str().len();
    if length > SUN_PATH_MAX {
        return Err(AllocError::PathTooLong {
            path: path.to_path_buf(),
            length,
            limit: SUN_PATH_MAX,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_the_v1_alphabet() {
        for ok in ["a", "zccache", "my-tool-2", &"x".repeat(64), "0", "-"] {
            validate_service_name(ok).unwrap();
            validate_instance_name(ok).unwrap();
        }
    }

    #[test]
    fn names_refuse_everything_else() {
        for bad in [
            "",
            "Zccache",
            "a_b",
            "a.b",
            "é",
            &"x".repeat(65),
            "a b",
            "a\0",
        ] {
            let err = validate_service_name(bad).unwrap_err();
            match err {
                ValidationError::Name { kind, value, .. } => {
                    assert_eq!(kind, NameKind::ServiceName);
                    assert_eq!(value, bad);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let err = validate_service_name("Abc").unwrap_err().to_string();
        assert!(err.contains("upper-case"), "{err}");
    }

    #[test]
    fn versions_follow_the_contract() {
        for ok in [
            "0.0.0",
            "1.2.3",
            "1.11.20",
            "1.2.3-rc1",
            "1.2.3-rc.1",
            "10.20.30-0",
        ] {
            Version::parse(ok).unwrap();
        }
        for bad in [
            "",
            "1.2",
            "1.2.3.4",
            "01.2.3",
            "1.02.3",
            "01.2.3-RC1",
            "1.2.3+build",
            "1.2.3-",
            "1.2.3-rc..1",
            "1.2.3-rc_1",
            "a.b.c",
            "1.2.-3",
            "99999999999999999999.0.0",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn version_order_is_numeric() {
        let v = |s| Version::parse(s).unwrap();
        assert!(v("1.10.0") > v("1.9.99"));
        assert!(v("2.0.0") > v("1.99.99"));
        assert_eq!(v("1.2.3").triple(), v("1.2.3-rc1").triple());
        assert_eq!(v("1.2.3-rc.1").to_string(), "1.2.3-rc.1");
    }

    #[test]
    fn socket_names_match_the_spec() {
        let h = "0123456789abcdef";
        let t = "00112233445566778899aabbccddeeff";
        assert_eq!(
            backend_socket_name(h, t).unwrap(),
            "rpb-v1-0123456789abcdef-be-00112233445566778899aabbccddeeff.sock"
        );
        assert_eq!(
            backend_socket_name(h, t).unwrap().len(),
            BACKEND_SOCKET_NAME_LEN
        );
        let compact = compact_backend_socket_name(t).unwrap();
        assert_eq!(compact, "rpb-v1-be-00112233445566778899aabbccddeeff.sock");
        assert_eq!(compact.len(), COMPACT_BACKEND_SOCKET_NAME_LEN);
        assert!(is_backend_socket_name(&compact));
        assert!(is_backend_socket_name(&backend_socket_name(h, t).unwrap()));
        assert!(!is_backend_socket_name("rpb-v1-be-0011.sock"));
        assert!(!is_backend_socket_name(
            "rpb-v1-be-00112233445566778899AABBCCDDEEFF.sock"
        ));
        assert_eq!(
            shared_broker_socket_name(h).unwrap(),
            "rpb-v1-0123456789abcdef-shared.sock"
        );
        assert_eq!(
            service_broker_socket_name(h, "zccache").unwrap(),
            "rpb-v1-0123456789abcdef-svc-zccache.sock"
        );
        assert_eq!(
            instance_broker_socket_name(h, "ci").unwrap(),
            "rpb-v1-0123456789abcdef-inst-ci.sock"
        );
        assert!(shared_broker_socket_name("0123456789ABCDEF").is_err());
        assert!(backend_socket_name(h, "short").is_err());
        assert!(service_broker_socket_name(h, "../x").is_err());
    }
}
