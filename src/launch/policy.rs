//! Step 1 of a launch: the rules a request must meet before anything is
//! spawned or adopted, checked before any side effect.

use super::error::LaunchError;
use crate::contract::error::ValidationError;
use crate::contract::keys::{BackendKey, BrokerInstanceKey};
use crate::contract::service::ServiceDefinition;

/// The rules a key and its definition must meet before anything is spawned
/// or adopted: a valid definition for the key's service and instance, and a
/// version the definition admits.
pub(super) fn check_policy(key: &BackendKey, sd: &ServiceDefinition) -> Result<(), LaunchError> {
    sd.validate()?;
    if key.service_name() != sd.service_name {
        return Err(ValidationError::ServiceDefinition {
            field: "service_name",
            value: sd.service_name.clone(),
            reason: format!("the backend key is for service {:?}", key.service_name()),
        }
        .into());
    }
    let wanted_instance = BrokerInstanceKey::from_service_definition(sd)?;
    if key.instance() != &wanted_instance {
        return Err(ValidationError::ServiceDefinition {
            field: "isolation",
            value: sd.isolation.name().to_owned(),
            reason: format!(
                "the definition asks for instance {wanted_instance} but the key names {}",
                key.instance()
            ),
        }
        .into());
    }
    sd.check_version(key.service_version())?;
    Ok(())
}
