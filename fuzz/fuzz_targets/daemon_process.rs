//! `DaemonProcess::from_bytes`: an accepted identity is valid, and survives
//! both of its encodings (protobuf and JSON) unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use running_process::DaemonProcess;

#[global_allocator]
static ALLOC: rp_fuzz::CappedAlloc = rp_fuzz::CappedAlloc;

fuzz_target!(|data: &[u8]| {
    let Ok(identity) = DaemonProcess::from_bytes(data) else {
        return;
    };
    identity.validate().expect("a decoded identity is valid");
    let bytes = identity.to_bytes();
    let again = DaemonProcess::from_bytes(&bytes).expect("re-encoded identity decodes");
    assert_eq!(again, identity, "protobuf round trip differs");
    assert_eq!(again.to_bytes(), bytes, "protobuf encoding is not stable");
    let json = identity.to_json();
    let from_json = DaemonProcess::from_json(&json).expect("JSON of a decoded identity decodes");
    assert_eq!(from_json, identity, "JSON round trip differs");
    assert_eq!(from_json.to_json(), json, "JSON encoding is not stable");
});
