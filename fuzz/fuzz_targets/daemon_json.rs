//! `DaemonProcess::from_json`: an accepted identity is valid, and survives
//! both of its encodings (JSON and protobuf) unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use running_process::DaemonProcess;

#[global_allocator]
static ALLOC: rp_fuzz::CappedAlloc = rp_fuzz::CappedAlloc;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(identity) = DaemonProcess::from_json(text) else {
        return;
    };
    identity.validate().expect("a decoded identity is valid");
    let json = identity.to_json();
    let again = DaemonProcess::from_json(&json).expect("re-encoded JSON decodes");
    assert_eq!(again, identity, "JSON round trip differs");
    assert_eq!(again.to_json(), json, "JSON encoding is not stable");
    let from_bytes = DaemonProcess::from_bytes(&identity.to_bytes())
        .expect("protobuf of a JSON identity decodes");
    assert_eq!(from_bytes, identity, "protobuf round trip differs");
});
