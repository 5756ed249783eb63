//! The pool manifest decoder (`fuzzing::decode_pool_manifest`): an accepted
//! manifest, written again the way the pool writes one, decodes to the same
//! key and identity.
#![no_main]

use libfuzzer_sys::fuzz_target;
use running_process::fuzzing::decode_pool_manifest;
use running_process::BrokerInstanceKey;

#[global_allocator]
static ALLOC: rp_fuzz::CappedAlloc = rp_fuzz::CappedAlloc;

fuzz_target!(|data: &[u8]| {
    let Ok((key, daemon)) = decode_pool_manifest(data) else {
        return;
    };
    daemon.validate().expect("a decoded identity is valid");
    assert_eq!(
        BrokerInstanceKey::from_id(&key.instance().id()).expect("instance id parses"),
        *key.instance()
    );
    let daemon_json: serde_json::Value =
        serde_json::from_str(&daemon.to_json()).expect("identity JSON is JSON");
    let rewritten = serde_json::json!({
        "manifest_version": 1,
        "instance": key.instance().id(),
        "service_name": key.service_name(),
        "service_version": key.service_version(),
        "daemon": daemon_json,
        "launched_by_pid": 1,
    });
    let bytes = serde_json::to_vec_pretty(&rewritten).expect("serialises");
    let again = decode_pool_manifest(&bytes).expect("a rewritten manifest decodes");
    assert_eq!(again, (key, daemon), "manifest round trip differs");
});
