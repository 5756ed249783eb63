//! Service definitions: what a backend is, where its binaries may come from,
//! and which versions it may run. The on-disk `.servicedef` store is
//! [`crate::store`].
//!
//! A [`ServiceDefinition`] is plain data (its fields mirror the v1 protobuf
//! message); [`ServiceDefinition::validate`] applies every rule of the
//! contract and is run on every way in (constructors in Python, decoding,
//! loading, saving). The launch-time rule that the canonical binary lies
//! inside the canonical allow-list root is the launcher's, not this module's:
//! it needs the file system as it is at launch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::contract::args::validate_args;
use crate::contract::error::{DecodeError, ValidationError, VersionRule};
use crate::contract::names::{validate_instance_name, validate_service_name, Version};
use crate::contract::proto::{BrokerIsolation, ServiceDefinitionMsg};

/// Extension of a service definition file.
pub const SERVICEDEF_EXTENSION: &str = "servicedef";
/// Largest `.servicedef` file that will be read.
pub const MAX_SERVICEDEF_BYTES: u64 = 1024 * 1024;
/// Longest path accepted in a definition (Linux `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Most labels a definition may carry.
pub const MAX_LABELS: usize = 64;
/// Longest label key, in bytes.
pub const MAX_LABEL_KEY_LEN: usize = 128;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_LEN: usize = 1024;
/// Most entries in a version allow-list.
pub const MAX_ALLOW_LIST: usize = 256;

/// Which broker instance serves a service (`BrokerIsolation` of the contract).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isolation {
    /// One broker per service (the default).
    #[default]
    Private = 0,
    /// One broker shared by all services of the user.
    Shared = 1,
    /// A named broker instance given by `explicit_instance`.
    Explicit = 2,
}

impl Isolation {
    /// The isolation with wire value `value`, if there is one.
    pub fn from_i32(value: i32) -> Option<Isolation> {
        match BrokerIsolation::try_from(value).ok()? {
            BrokerIsolation::PrivateBroker => Some(Isolation::Private),
            BrokerIsolation::SharedBroker => Some(Isolation::Shared),
            BrokerIsolation::ExplicitInstance => Some(Isolation::Explicit),
        }
    }

    /// Upper-case name, as in Python (`PRIVATE`, `SHARED`, `EXPLICIT`).
    pub fn name(self) -> &'static str {
        match self {
            Isolation::Private => "PRIVATE",
            Isolation::Shared => "SHARED",
            Isolation::Explicit => "EXPLICIT",
        }
    }
}

/// Who binds a backend's endpoint (this project's addition, protobuf field
/// 1002 of the definition; the current generation of the v1 contract binds
/// in the launcher by default, as [`Listener::Inherit`] does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Listener {
    /// The launcher creates, binds and listens on the endpoint inside its
    /// private directory before the spawn and hands the listening socket to
    /// the backend (`RUNNING_PROCESS_BROKER_LISTENER_FD`). The endpoint exists
    /// before the backend runs: no readiness polling, and no moment at which
    /// another process could bind the path.
    #[default]
    Inherit = 0,
    /// The backend binds the endpoint itself, as backends of the first
    /// generation of the contract (and daemons that own their endpoint) do;
    /// the launcher polls until it accepts.
    Bind = 1,
}

impl Listener {
    /// The listener mode with wire value `value`, if there is one.
    pub fn from_i32(value: i32) -> Option<Listener> {
        match value {
            0 => Some(Listener::Inherit),
            1 => Some(Listener::Bind),
            _ => None,
        }
    }

    /// Upper-case name, as in Python (`INHERIT`, `BIND`).
    pub fn name(self) -> &'static str {
        match self {
            Listener::Inherit => "INHERIT",
            Listener::Bind => "BIND",
        }
    }
}

/// Which environment a backend starts with (this project's addition,
/// protobuf field 1003 of the definition). Whatever the policy, the
/// launcher's scrub list is applied to every variable taken from the
/// caller, the contract's variables are the launcher's own, and
/// [`ServiceDefinition::env_set`] is applied last; the same definition gives
/// the same environment whoever launches it (but for what `Inherit` and
/// [`ServiceDefinition::env_allow`] take from the caller).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EnvPolicy {
    /// The caller's environment, minus the scrub list (loader, interpreter
    /// and shell injection variables by default).
    #[default]
    Inherit = 0,
    /// A login baseline, as the current generation of the v1 contract
    /// spawns daemons: `USER`, `LOGNAME`, `HOME`, `SHELL` from the password
    /// database and `PATH` rebuilt; `LANG`, `TZ`, `TMPDIR`,
    /// `XDG_RUNTIME_DIR` and `LC_*` carried over; `RUNNING_PROCESS_IS_DAEMON=1`;
    /// plus the names in `env_allow`.
    Baseline = 1,
    /// Nothing from the caller but the names in `env_allow`, as a service
    /// manager's unit does.
    Clean = 2,
}

impl EnvPolicy {
    /// The policy with wire value `value`, if there is one.
    pub fn from_i32(value: i32) -> Option<EnvPolicy> {
        match value {
            0 => Some(EnvPolicy::Inherit),
            1 => Some(EnvPolicy::Baseline),
            2 => Some(EnvPolicy::Clean),
            _ => None,
        }
    }

    /// Upper-case name, as in Python (`INHERIT`, `BASELINE`, `CLEAN`).
    pub fn name(self) -> &'static str {
        match self {
            EnvPolicy::Inherit => "INHERIT",
            EnvPolicy::Baseline => "BASELINE",
            EnvPolicy::Clean => "CLEAN",
        }
    }
}

/// Most entries of `env_allow`, and of `env_set`.
pub const MAX_ENV_ENTRIES: usize = 64;
/// Longest value of `env_set`, in bytes.
pub const MAX_ENV_VALUE_LEN: usize = 4096;

/// Whether `name` is a plain environment variable name: a letter or `_`,
/// then letters, digits and `_`, at most 128 bytes.
fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 128
}

/// Whether `name` is one the launcher sets itself (the contract's), never
/// taken from the caller nor from a definition.
pub fn is_contract_env_name(name: &str) -> bool {
    use crate::contract::env;
    name.starts_with("RUNNING_PROCESS_BROKER_V1_")
        || [
            env::ENV_EXE_DIGEST,
            env::ENV_LISTENER_FD,
            env::ENV_LISTEN_FDS,
            env::ENV_LISTEN_PID,
            env::ENV_LISTEN_FDNAMES,
            env::ENV_IS_DAEMON,
            env::ENV_LOG_FILE,
            env::ENV_LOG_MAX_BYTES,
        ]
        .contains(&name)
}

fn check_env(allow: &[String], set: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    for (field, len) in [("env_allow", allow.len()), ("env_set", set.len())] {
        if len > MAX_ENV_ENTRIES {
            return Err(sd_error(
                field,
                "",
                format!("has {len} entries; at most {MAX_ENV_ENTRIES} are allowed"),
            ));
        }
    }
    for entry in allow {
        let name = entry.strip_suffix('*').unwrap_or(entry);
        let prefix_ok =
            entry.ends_with('*') && !name.is_empty() && is_env_name(&format!("{name}A"));
        if !(is_env_name(name) || prefix_ok) {
            return Err(sd_error(
                "env_allow",
                entry,
                "must be a variable name (letters, digits, _) or a prefix ending in *",
            ));
        }
    }
    for (name, value) in set {
        if !is_env_name(name) {
            return Err(sd_error(
                "env_set",
                name,
                "must be a variable name (letters, digits and _, not starting with a digit)",
            ));
        }
        if is_contract_env_name(name) {
            return Err(sd_error(
                "env_set",
                name,
                "is set by the launcher (a contract variable)",
            ));
        }
        if value.contains('\0') || value.len() > MAX_ENV_VALUE_LEN {
            return Err(sd_error(
                "env_set",
                name,
                format!("value must hold no NUL byte and at most {MAX_ENV_VALUE_LEN} bytes"),
            ));
        }
    }
    Ok(())
}

/// A backend service: the v1 `ServiceDefinition` message as a Rust value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ServiceDefinition {
    pub service_name: String,
    /// Absolute path of the backend binary (UTF-8: the wire carries text).
    pub binary_path: PathBuf,
    /// Absolute path of the allow-list root the binary must lie in.
    pub per_version_binary_dir: PathBuf,
    pub isolation: Isolation,
    /// Instance name; set exactly when `isolation` is `Explicit`.
    pub explicit_instance: String,
    /// Lowest admitted version (compared on MAJOR.MINOR.PATCH).
    pub min_version: Option<Version>,
    /// Exact versions admitted; empty admits any.
    pub version_allow_list: Vec<Version>,
    pub labels: BTreeMap<String, String>,
    /// Command-line argument templates (this project's addition; see
    /// [`crate::contract::args`]). Empty: the backend is started without
    /// arguments, as the contract does.
    pub args: Vec<String>,
    /// Who binds the endpoint (see [`Listener`]).
    pub listener: Listener,
    /// Which environment the backend starts with (see [`EnvPolicy`]).
    pub env_policy: EnvPolicy,
    /// Variables taken from the caller under `Baseline` and `Clean` (names,
    /// or prefixes ending in `*`); ignored under `Inherit`, which takes them
    /// all. The scrub list still applies.
    pub env_allow: Vec<String>,
    /// Variables set to these values, whatever the policy, as a service
    /// manager's `Environment=` does (not the contract's own).
    pub env_set: BTreeMap<String, String>,
}

fn sd_error(field: &'static str, value: &str, reason: impl Into<String>) -> ValidationError {
    ValidationError::ServiceDefinition {
        field,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

fn check_abs_path(field: &'static str, path: &Path) -> Result<(), ValidationError> {
    let Some(value) = path.to_str() else {
        return Err(sd_error(
            field,
            &path.to_string_lossy(),
            "must be UTF-8 (the wire format carries it as text)",
        ));
    };
    if value.is_empty() {
        return Err(sd_error(field, value, "must not be empty"));
    }
    if value.len() > MAX_PATH_LEN {
        return Err(sd_error(
            field,
            value,
            format!(
                "is {} bytes; at most {MAX_PATH_LEN} are allowed",
                value.len()
            ),
        ));
    }
    if value.contains('\0') {
        return Err(sd_error(field, value, "contains a NUL byte"));
    }
    if !value.starts_with('/') {
        return Err(sd_error(field, value, "must be an absolute path"));
    }
    Ok(())
}

fn check_allow_list_len(len: usize) -> Result<(), ValidationError> {
    if len > MAX_ALLOW_LIST {
        return Err(sd_error(
            "version_allow_list",
            "",
            format!("has {len} entries; at most {MAX_ALLOW_LIST} are allowed"),
        ));
    }
    Ok(())
}

fn check_label(key: &str, value: &str) -> Result<(), ValidationError> {
    if key.is_empty() || key.len() > MAX_LABEL_KEY_LEN {
        return Err(sd_error(
            "labels",
            key,
            format!("label keys must be 1 to {MAX_LABEL_KEY_LEN} bytes"),
        ));
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
    {
        return Err(sd_error(
            "labels",
            key,
            "label keys may use A-Z, a-z, 0-9, '.', '_', '-' and '/'",
        ));
    }
    if value.len() > MAX_LABEL_VALUE_LEN {
        return Err(sd_error(
            "labels",
            key,
            format!(
                "value is {} bytes; at most {MAX_LABEL_VALUE_LEN} are allowed",
                value.len()
            ),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(sd_error(
            "labels",
            key,
            "value contains a control character",
        ));
    }
    Ok(())
}

impl ServiceDefinition {
    /// Applies every rule of the contract to this definition.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_service_name(&self.service_name)?;
        check_abs_path("binary_path", &self.binary_path)?;
        check_abs_path("per_version_binary_dir", &self.per_version_binary_dir)?;
        match self.isolation {
            Isolation::Explicit => {
                if self.explicit_instance.is_empty() {
                    return Err(sd_error(
                        "explicit_instance",
                        "",
                        "is required when isolation is EXPLICIT",
                    ));
                }
                validate_instance_name(&self.explicit_instance)?;
            }
            other => {
                if !self.explicit_instance.is_empty() {
                    return Err(sd_error(
                        "explicit_instance",
                        &self.explicit_instance,
                        format!(
                            "must be empty unless isolation is EXPLICIT (it is {})",
                            other.name()
                        ),
                    ));
                }
            }
        }
        check_allow_list_len(self.version_allow_list.len())?;
        if self.labels.len() > MAX_LABELS {
            return Err(sd_error(
                "labels",
                "",
                format!(
                    "has {} labels; at most {MAX_LABELS} are allowed",
                    self.labels.len()
                ),
            ));
        }
        for (key, value) in &self.labels {
            check_label(key, value)?;
        }
        validate_args(&self.args)?;
        check_env(&self.env_allow, &self.env_set)
    }

    /// Applies the version policy: `version` must be valid, not below
    /// `min_version` (compared on the numeric MAJOR.MINOR.PATCH triple, as the
    /// v1 contract does), and in `version_allow_list` when that is non-empty.
    pub fn check_version(&self, version: &str) -> Result<(), ValidationError> {
        let wanted = Version::parse(version)?;
        let refused = |rule: VersionRule, reason: String| ValidationError::VersionRefused {
            service_name: self.service_name.clone(),
            version: version.to_owned(),
            rule,
            reason,
        };
        if let Some(floor) = &self.min_version {
            if wanted.triple() < floor.triple() {
                return Err(refused(
                    VersionRule::MinVersion,
                    format!("below min_version {floor}"),
                ));
            }
        }
        if !self.version_allow_list.is_empty() && !self.version_allow_list.contains(&wanted) {
            let listed: Vec<String> = self
                .version_allow_list
                .iter()
                .map(Version::to_string)
                .collect();
            return Err(refused(
                VersionRule::AllowList,
                format!("not in version_allow_list [{}]", listed.join(", ")),
            ));
        }
        Ok(())
    }

    /// The wire message of this definition.
    pub fn to_message(&self) -> ServiceDefinitionMsg {
        ServiceDefinitionMsg {
            service_name: self.service_name.clone(),
            binary_path: self.binary_path.to_string_lossy().into_owned(),
            isolation: self.isolation as i32,
            explicit_instance: self.explicit_instance.clone(),
            per_version_binary_dir: self.per_version_binary_dir.to_string_lossy().into_owned(),
            min_version: self
                .min_version
                .as_ref()
                .map(Version::to_string)
                .unwrap_or_default(),
            version_allow_list: self
                .version_allow_list
                .iter()
                .map(Version::to_string)
                .collect(),
            labels: self.labels.clone(),
            args: self.args.clone(),
            listener: self.listener as i32,
            env_policy: self.env_policy as i32,
            env_allow: self.env_allow.clone(),
            env_set: self.env_set.clone(),
        }
    }

    /// A definition from its wire message, validated.
    pub fn from_message(msg: ServiceDefinitionMsg) -> Result<Self, DecodeError> {
        let isolation =
            Isolation::from_i32(msg.isolation).ok_or_else(|| DecodeError::Malformed {
                what: "ServiceDefinition",
                reason: format!("isolation {} is not a BrokerIsolation value", msg.isolation),
            })?;
        let listener = Listener::from_i32(msg.listener).ok_or_else(|| DecodeError::Malformed {
            what: "ServiceDefinition",
            reason: format!("listener {} is not a listener mode", msg.listener),
        })?;
        let env_policy =
            EnvPolicy::from_i32(msg.env_policy).ok_or_else(|| DecodeError::Malformed {
                what: "ServiceDefinition",
                reason: format!("env_policy {} is not an environment policy", msg.env_policy),
            })?;
        check_env(&msg.env_allow, &msg.env_set)?;
        let sd = Self::from_text(
            msg.service_name,
            msg.binary_path,
            msg.per_version_binary_dir,
            isolation,
            msg.explicit_instance,
            &msg.min_version,
            &msg.version_allow_list,
            msg.labels,
            msg.args,
        )?;
        Ok(ServiceDefinition {
            listener,
            env_policy,
            env_allow: msg.env_allow,
            env_set: msg.env_set,
            ..sd
        })
    }

    /// A validated definition from its fields as text (an empty
    /// `min_version` for none), as the wire and the Python constructor give
    /// them. Rules are applied in the order of the fields, so the first
    /// problem reported is the same whichever way a definition comes in.
    #[allow(clippy::too_many_arguments)]
    pub fn from_text(
        service_name: String,
        binary_path: impl Into<PathBuf>,
        per_version_binary_dir: impl Into<PathBuf>,
        isolation: Isolation,
        explicit_instance: String,
        min_version: &str,
        version_allow_list: &[String],
        labels: BTreeMap<String, String>,
        args: Vec<String>,
    ) -> Result<Self, ValidationError> {
        let mut sd = ServiceDefinition {
            service_name,
            binary_path: binary_path.into(),
            per_version_binary_dir: per_version_binary_dir.into(),
            isolation,
            explicit_instance,
            min_version: None,
            version_allow_list: Vec::new(),
            labels: BTreeMap::new(),
            args: Vec::new(),
            listener: Listener::default(),
            env_policy: EnvPolicy::default(),
            env_allow: Vec::new(),
            env_set: BTreeMap::new(),
        };
        // Name, paths and isolation first, as `validate` orders them.
        sd.validate()?;
        if !min_version.is_empty() {
            sd.min_version = Some(Version::parse(min_version)?);
        }
        check_allow_list_len(version_allow_list.len())?;
        sd.version_allow_list = version_allow_list
            .iter()
            .map(|v| Version::parse(v))
            .collect::<Result<_, _>>()?;
        sd.labels = labels;
        sd.args = args;
        sd.validate()?;
        Ok(sd)
    }

    /// Protobuf encoding (deterministic: labels sorted by key).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_message().encode_to_vec()
    }

    /// Decodes and validates a protobuf encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let msg = ServiceDefinitionMsg::decode(bytes).map_err(|e| DecodeError::Malformed {
            what: "ServiceDefinition",
            reason: e.to_string(),
        })?;
        Self::from_message(msg)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> ServiceDefinition {
        ServiceDefinition {
            service_name: "zccache".into(),
            binary_path: "/opt/zccache/1.11.20/zccache-backend".into(),
            per_version_binary_dir: "/opt/zccache/1.11.20".into(),
            isolation: Isolation::Shared,
            min_version: Some("1.10.0".parse().unwrap()),
            version_allow_list: vec!["1.11.20".parse().unwrap()],
            labels: [("team".to_owned(), "build".to_owned())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn validates_isolation_rules() {
        sample().validate().unwrap();
        let mut sd = sample();
        sd.explicit_instance = "ci".into();
        assert!(sd.validate().is_err());
        sd.isolation = Isolation::Explicit;
        sd.validate().unwrap();
        sd.explicit_instance.clear();
        assert!(sd.validate().is_err());
        let mut sd = sample();
        sd.binary_path = "relative/bin".into();
        assert!(sd.validate().is_err());
    }

    #[test]
    fn version_policy() {
        let sd = sample();
        sd.check_version("1.11.20").unwrap();
        assert!(matches!(
            sd.check_version("1.9.0"),
            Err(ValidationError::VersionRefused { .. })
        ));
        assert!(matches!(
            sd.check_version("1.11.21"),
            Err(ValidationError::VersionRefused { .. })
        ));
        let mut open = sample();
        open.version_allow_list.clear();
        open.check_version("1.10.0-rc1").unwrap();
        open.check_version("2.0.0").unwrap();
        assert!(open.check_version("1.9.99").is_err());
        assert!(matches!(
            open.check_version("1.2"),
            Err(ValidationError::Version { .. })
        ));
    }

    #[test]
    fn bytes_round_trip_and_refuse_garbage() {
        let sd = sample();
        assert_eq!(ServiceDefinition::from_bytes(&sd.to_bytes()).unwrap(), sd);
        let bytes = sd.to_bytes();
        assert!(ServiceDefinition::from_bytes(&bytes[..bytes.len() - 3]).is_err());
        assert!(ServiceDefinition::from_bytes(b"\xff\xff\xff").is_err());
        let mut msg = sd.to_message();
        msg.isolation = 9;
        assert!(ServiceDefinition::from_bytes(&msg.encode_to_vec()).is_err());
    }
}
