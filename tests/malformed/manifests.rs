use super::*;

// ---------------------------------------------------------------------------
// Pool manifests

pub(crate) fn manifest() -> serde_json::Value {
    serde_json::json!({
        "manifest_version": 1,
        "instance": "shared",
        "service_name": "echo",
        "service_version": "1.0.0",
        "daemon": json_identity(),
        "launched_by_pid": 1,
    })
}

pub(crate) fn manifest_error(value: &serde_json::Value) -> String {
    decode_pool_manifest(value.to_string().as_bytes()).unwrap_err()
}

#[test]
fn pool_manifest_decodes_and_refuses_wrong_versions() {
    let key = BackendKey::new(BrokerInstanceKey::shared(), "echo", "1.0.0").unwrap();
    assert_eq!(
        decode_pool_manifest(manifest().to_string().as_bytes()).unwrap(),
        (key, identity())
    );
    for version in [0u64, 2, u64::from(u32::MAX)] {
        let mut m = manifest();
        m["manifest_version"] = version.into();
        assert_eq!(
            manifest_error(&m),
            format!("manifest version {version} is not 1")
        );
    }
    let mut m = manifest();
    m["manifest_version"] = (1u64 << 32).into();
    assert!(manifest_error(&m).contains("invalid value: integer"));
}

#[test]
fn pool_manifest_refuses_malformed_content() {
    let text = manifest().to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty", String::new(), "EOF while parsing"),
        (
            "truncated",
            text[..text.len() / 2].to_owned(),
            "EOF while parsing",
        ),
        (
            "not UTF-8",
            "{\"instance\":\"\u{fffd}\"}".replace('\u{fffd}', "\u{1}"),
            "control character",
        ),
        (
            "duplicate key",
            text.replacen("{", "{\"instance\":\"shared\",", 1),
            "duplicate field `instance`",
        ),
        (
            "missing daemon",
            text.replacen("\"daemon\"", "\"demon\"", 1),
            "missing field `daemon`",
        ),
    ];
    for (name, text, reason) in cases {
        let err = decode_pool_manifest(text.as_bytes()).expect_err(name);
        assert!(err.contains(reason), "{name}: {err}");
    }
    let invalid_utf8 = [b"{\"instance\":\"".as_slice(), b"\xff\"}"].concat();
    assert!(decode_pool_manifest(&invalid_utf8)
        .unwrap_err()
        .contains("invalid unicode code point"));

    let mut m = manifest();
    m["instance"] = "private:".into();
    assert!(
        manifest_error(&m).contains("invalid"),
        "{}",
        manifest_error(&m)
    );
    let mut m = manifest();
    m["service_version"] = "1.0".into();
    assert!(manifest_error(&m).contains("invalid version"));
    let mut m = manifest();
    m["daemon"]["pid"] = 0.into();
    assert!(manifest_error(&m).contains("pid"));
    let mut m = manifest();
    m["daemon"] = "not an object".into();
    assert!(manifest_error(&m).contains("must be JSON objects"));
    // The daemon object is read through a generic JSON value, where a
    // duplicated key keeps its last value (the identity JSON decoder alone
    // refuses it). Pinned so that a change either way is deliberate.
    let duplicated = manifest()
        .to_string()
        .replacen("\"pid\":4242", "\"pid\":1,\"pid\":4242", 1);
    assert_eq!(
        decode_pool_manifest(duplicated.as_bytes()).unwrap().1,
        identity()
    );
    // Unknown keys are ignored (newer writers add fields).
    let mut m = manifest();
    m["written_by"] = "a later version".into();
    assert!(decode_pool_manifest(m.to_string().as_bytes()).is_ok());
}
