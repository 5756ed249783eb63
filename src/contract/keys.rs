//! Keys: which broker instance serves a service ([`BrokerInstanceKey`]) and
//! which backend a request wants ([`BackendKey`]).
//!
//! Both are validated at construction, so a key that exists names only valid
//! services, instances and versions; they are the map keys of the registry and
//! pool.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::contract::error::{AllocError, NameKind, ValidationError};
use crate::contract::names::check_sun_path;
use crate::contract::names::{
    instance_broker_socket_name, service_broker_socket_name, shared_broker_socket_name,
    validate_instance_name, validate_service_name, validate_version,
};
use crate::contract::service::{Isolation, ServiceDefinition};

/// A broker instance: the shared one, a service's private one, or a named one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BrokerInstanceKey {
    Shared,
    Private(String),
    Explicit(String),
}

impl BrokerInstanceKey {
    /// The shared broker of the user.
    pub fn shared() -> Self {
        BrokerInstanceKey::Shared
    }

    /// The private broker of `service_name`.
    pub fn private(service_name: &str) -> Result<Self, ValidationError> {
        validate_service_name(service_name)?;
        Ok(BrokerInstanceKey::Private(service_name.to_owned()))
    }

    /// The broker instance named `name`.
    pub fn explicit(name: &str) -> Result<Self, ValidationError> {
        validate_instance_name(name)?;
        Ok(BrokerInstanceKey::Explicit(name.to_owned()))
    }

    /// The instance a (valid) service definition asks for.
    pub fn from_service_definition(sd: &ServiceDefinition) -> Result<Self, ValidationError> {
        sd.validate()?;
        Ok(match sd.isolation {
            Isolation::Shared => BrokerInstanceKey::Shared,
            Isolation::Private => BrokerInstanceKey::Private(sd.service_name.clone()),
            Isolation::Explicit => BrokerInstanceKey::Explicit(sd.explicit_instance.clone()),
        })
    }

    /// Parses an instance id (`shared`, `private:<service>`, `explicit:<name>`).
    pub fn from_id(id: &str) -> Result<Self, ValidationError> {
        let bad = |reason: &str| ValidationError::Name {
            kind: NameKind::InstanceId,
            value: id.to_owned(),
            reason: reason.to_owned(),
        };
        if id == "shared" {
            return Ok(BrokerInstanceKey::Shared);
        }
        let inner = match id.split_once(':') {
            Some(("private", name)) => Self::private(name),
            Some(("explicit", name)) => Self::explicit(name),
            _ => {
                return Err(bad(
                    "must be 'shared', 'private:<service>' or 'explicit:<name>'",
                ))
            }
        };
        // Report the id the caller gave, with the inner rule as the reason.
        inner.map_err(|e| match e {
            ValidationError::Name { kind, reason, .. } => bad(&format!("{kind}: {reason}")),
            other => other,
        })
    }

    /// The isolation this instance stands for.
    pub fn isolation(&self) -> Isolation {
        match self {
            BrokerInstanceKey::Shared => Isolation::Shared,
            BrokerInstanceKey::Private(_) => Isolation::Private,
            BrokerInstanceKey::Explicit(_) => Isolation::Explicit,
        }
    }

    /// The service or instance name, if any.
    pub fn name(&self) -> Option<&str> {
        match self {
            BrokerInstanceKey::Shared => None,
            BrokerInstanceKey::Private(n) | BrokerInstanceKey::Explicit(n) => Some(n),
        }
    }

    /// The instance id of the contract.
    pub fn id(&self) -> String {
        self.to_string()
    }

    /// File name of this instance's broker socket.
    pub fn socket_name(&self, user_sid_hash: &str) -> Result<String, ValidationError> {
        match self {
            BrokerInstanceKey::Shared => shared_broker_socket_name(user_sid_hash),
            BrokerInstanceKey::Private(s) => service_broker_socket_name(user_sid_hash, s),
            BrokerInstanceKey::Explicit(n) => instance_broker_socket_name(user_sid_hash, n),
        }
    }

    /// Full path of this instance's broker socket in `socket_dir`; an error if
    /// it would not fit in `sun_path`.
    pub fn socket_path(
        &self,
        user_sid_hash: &str,
        socket_dir: &Path,
    ) -> Result<PathBuf, AllocError> {
        let path = socket_dir.join(self.socket_name(user_sid_hash)?);
        check_sun_path(&path)?;
        Ok(path)
    }
}

impl fmt::Display for BrokerInstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokerInstanceKey::Shared => f.write_str("shared"),
            BrokerInstanceKey::Private(s) => write!(f, "private:{s}"),
            BrokerInstanceKey::Explicit(n) => write!(f, "explicit:{n}"),
        }
    }
}

/// One backend: a service at a version, served by a broker instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    instance: BrokerInstanceKey,
    service_name: String,
    service_version: String,
}

impl BackendKey {
    /// A validated backend key.
    pub fn new(
        instance: BrokerInstanceKey,
        service_name: &str,
        service_version: &str,
    ) -> Result<Self, ValidationError> {
        validate_service_name(service_name)?;
        validate_version(service_version)?;
        Ok(BackendKey {
            instance,
            service_name: service_name.to_owned(),
            service_version: service_version.to_owned(),
        })
    }

    /// The key of `sd` at `version` (the instance follows the definition's
    /// isolation). The version must be valid; the version *policy* is checked
    /// at launch.
    pub fn for_service(sd: &ServiceDefinition, version: &str) -> Result<Self, ValidationError> {
        Self::new(
            BrokerInstanceKey::from_service_definition(sd)?,
            &sd.service_name,
            version,
        )
    }

    pub fn instance(&self) -> &BrokerInstanceKey {
        &self.instance
    }

    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    pub fn service_version(&self) -> &str {
        &self.service_version
    }
}

/// Parses the text [`BackendKey`] displays as: `instance/service@version`
/// (`shared/zccache@1.11.20`, `private:zccache/zccache@1.11.20`).
impl FromStr for BackendKey {
    type Err = ValidationError;

    fn from_str(text: &str) -> Result<Self, ValidationError> {
        let malformed = || ValidationError::Name {
            kind: NameKind::BackendKey,
            value: text.to_owned(),
            reason: "must be instance/service@version, e.g. shared/zccache@1.11.20".to_owned(),
        };
        let (rest, version) = text.rsplit_once('@').ok_or_else(malformed)?;
        let (instance, service) = rest.split_once('/').ok_or_else(malformed)?;
        if instance.is_empty() || service.is_empty() || version.is_empty() {
            return Err(malformed());
        }
        BackendKey::new(BrokerInstanceKey::from_id(instance)?, service, version)
    }
}

impl fmt::Display for BackendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}@{}",
            self.instance, self.service_name, self.service_version
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_keys_parse_what_they_display() {
        for key in [
            BackendKey::new(BrokerInstanceKey::shared(), "zccache", "1.11.20").unwrap(),
            BackendKey::new(
                BrokerInstanceKey::private("zccache").unwrap(),
                "zccache",
                "2.0.0-rc.1",
            )
            .unwrap(),
            BackendKey::new(BrokerInstanceKey::explicit("ci").unwrap(), "echo", "1.0.0").unwrap(),
        ] {
            assert_eq!(key.to_string().parse::<BackendKey>().unwrap(), key);
        }
        for bad in [
            "",
            "shared",
            "shared/echo",
            "echo@1.0.0",
            "/echo@1.0.0",
            "shared/@1.0.0",
            "shared/echo@",
        ] {
            match bad.parse::<BackendKey>() {
                Err(ValidationError::Name {
                    kind: NameKind::BackendKey,
                    value,
                    ..
                }) => {
                    assert_eq!(value, bad)
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(matches!(
            "nowhere/echo@1.0.0".parse::<BackendKey>(),
            Err(ValidationError::Name {
                kind: NameKind::InstanceId,
                ..
            })
        ));
        assert!(matches!(
            "shared/Echo@1.0.0".parse::<BackendKey>(),
            Err(ValidationError::Name {
                kind: NameKind::ServiceName,
                ..
            })
        ));
    }

    #[test]
    fn ids_round_trip() {
        for key in [
            BrokerInstanceKey::shared(),
            BrokerInstanceKey::private("zccache").unwrap(),
            BrokerInstanceKey::explicit("ci-1").unwrap(),
        ] {
            assert_eq!(BrokerInstanceKey::from_id(&key.id()).unwrap(), key);
        }
        for bad in [
            "",
            "Shared",
            "private:",
            "private:A",
            "explicit:a b",
            "other:x",
            "shared:x",
        ] {
            assert!(BrokerInstanceKey::from_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn socket_paths() {
        let h = "0123456789abcdef";
        let dir = Path::new("/run/user/1/running-process/broker");
        assert_eq!(
            BrokerInstanceKey::private("zccache")
                .unwrap()
                .socket_path(h, dir)
                .unwrap(),
            dir.join("rpb-v1-0123456789abcdef-svc-zccache.sock")
        );
        let long = PathBuf::from(format!("/{}", "d".repeat(90)));
        assert!(matches!(
            BrokerInstanceKey::shared().socket_path(h, &long),
            Err(AllocError::PathTooLong { .. })
        ));
    }

    #[test]
    fn backend_keys_validate() {
        let inst = BrokerInstanceKey::shared();
        let key = BackendKey::new(inst.clone(), "zccache", "1.11.20").unwrap();
        assert_eq!(key.to_string(), "shared/zccache@1.11.20");
        assert!(BackendKey::new(inst.clone(), "Zccache", "1.0.0").is_err());
        assert!(BackendKey::new(inst, "zccache", "1.0").is_err());
    }
}
