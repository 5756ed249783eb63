//! `ServiceDefinition::from_bytes`: an accepted definition is valid, round
//! trips with a stable encoding, and everything derived from it works: its
//! broker instance key (and that key's id), and the version policy on its
//! own allow-list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use running_process::VersionRule;
use running_process::{BackendKey, BrokerInstanceKey, ServiceDefinition, ValidationError};

#[global_allocator]
static ALLOC: rp_fuzz::CappedAlloc = rp_fuzz::CappedAlloc;

fuzz_target!(|data: &[u8]| {
    let Ok(sd) = ServiceDefinition::from_bytes(data) else {
        return;
    };
    sd.validate().expect("a decoded definition is valid");
    let bytes = sd.to_bytes();
    let again = ServiceDefinition::from_bytes(&bytes).expect("re-encoded definition decodes");
    assert_eq!(again, sd, "round trip differs");
    assert_eq!(again.to_bytes(), bytes, "encoding is not stable");

    let instance =
        BrokerInstanceKey::from_service_definition(&sd).expect("instance of a valid definition");
    assert_eq!(
        BrokerInstanceKey::from_id(&instance.id()).expect("instance id parses"),
        instance
    );
    assert_eq!(instance.isolation(), sd.isolation);

    for listed in &sd.version_allow_list {
        let version = &listed.to_string();
        let key = BackendKey::for_service(&sd, version).expect("key for an allow-listed version");
        assert_eq!(key.service_version(), version);
        match sd.check_version(version) {
            Ok(()) => {}
            Err(ValidationError::VersionRefused {
                rule: VersionRule::MinVersion,
                ..
            }) => {
                let floor = sd.min_version.as_ref().expect("a floor refused it");
                assert!(listed.triple() < floor.triple());
            }
            Err(other) => panic!("allow-listed {version:?} refused: {other:?}"),
        }
    }
});
