use super::*;

// ---------------------------------------------------------------------------
// DaemonProcess, JSON

pub(crate) fn json_identity() -> serde_json::Value {
    serde_json::from_str(&identity().to_json()).unwrap()
}

pub(crate) fn json_with(field: &str, value: serde_json::Value) -> String {
    let mut json = json_identity();
    json[field] = value;
    json.to_string()
}

#[test]
fn daemon_json_refuses_duplicate_keys() {
    let text = identity().to_json();
    let duplicated = text.replacen("{", "{\"pid\":1,", 1);
    malformed(
        DaemonProcess::from_json(&duplicated).unwrap_err(),
        "DaemonProcess JSON",
        "duplicate field `pid`",
    );
    let nested = text.replacen("\"namespace_id\"", "\"path\":\"/x\",\"namespace_id\"", 1);
    malformed(
        DaemonProcess::from_json(&nested).unwrap_err(),
        "DaemonProcess JSON",
        "duplicate field `path`",
    );
}

#[test]
fn daemon_json_malformed_text() {
    let text = identity().to_json();
    let nested_unknown = format!(
        "{{\"extra\":{}{},{}",
        "[".repeat(10_000),
        "]".repeat(10_000),
        &text[1..]
    );
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty", String::new(), "EOF while parsing"),
        (
            "truncated",
            text[..text.len() - 1].to_owned(),
            "EOF while parsing",
        ),
        (
            "trailing characters",
            format!("{text} x"),
            "trailing characters",
        ),
        (
            "two objects",
            format!("{text}{text}"),
            "trailing characters",
        ),
        (
            "an empty array",
            "[]".to_owned(),
            "must be JSON objects",
        ),
        (
            "an array of the values in field order",
            format!(
                "[4242,\"/opt/echo/1.0.0/echo\",\"{}\",\"{BOOT_ID}\",{{\"namespace_id\":\"shared\",\"path\":\"{SOCKET}\"}},1,30]",
                hex::encode(HASH)
            ),
            "must be JSON objects",
        ),
        (
            "an endpoint as an array",
            json_with("ipc_endpoint", serde_json::json!(["shared", SOCKET])),
            "must be JSON objects",
        ),
        (
            "pid as string",
            json_with("pid", "4242".into()),
            "invalid type: string",
        ),
        (
            "pid negative",
            json_with("pid", (-1).into()),
            "invalid value: integer `-1`",
        ),
        (
            "pid over u32",
            json_with("pid", (1u64 << 32).into()),
            "invalid value: integer",
        ),
        (
            "pid float",
            json_with("pid", 4242.5.into()),
            "invalid type: floating point",
        ),
        (
            "pid null",
            json_with("pid", serde_json::Value::Null),
            "invalid type: null",
        ),
        (
            "missing pid",
            text.replacen("\"pid\":4242,", "", 1),
            "missing field `pid`",
        ),
        (
            "missing endpoint path",
            text.replacen(&format!(",\"path\":\"{SOCKET}\""), "", 1),
            "missing field `path`",
        ),
        (
            // Escapes that are not a Unicode scalar value (the JSON way to
            // smuggle invalid UTF-8 into a string).
            "high surrogate without its pair",
            json_with("exe_path", "PLACEHOLDER".into()).replace("PLACEHOLDER", "/\\ud800/x"),
            "unexpected end of hex escape",
        ),
        (
            "low surrogate alone",
            json_with("exe_path", "PLACEHOLDER".into()).replace("PLACEHOLDER", "/\\udc00"),
            "lone leading surrogate in hex escape",
        ),
        (
            "bad escape",
            json_with("exe_path", "PLACEHOLDER".into()).replace("PLACEHOLDER", "/\\q"),
            "invalid escape",
        ),
        (
            "raw control character",
            json_with("exe_path", "PLACEHOLDER".into()).replace("PLACEHOLDER", "/\u{1}"),
            "control character",
        ),
        (
            "nested 10,000 deep",
            nested_unknown,
            "recursion limit exceeded",
        ),
        (
            "idle timeout negative",
            json_with("idle_timeout_secs", (-5).into()),
            "invalid value",
        ),
    ];
    let cases: Vec<(&str, Vec<u8>, &str)> = cases
        .into_iter()
        .map(|(name, text, reason)| (name, text.into_bytes(), reason))
        .collect();
    expect_malformed("DaemonProcess JSON", &cases, 64 * 1024, |text| {
        DaemonProcess::from_json(std::str::from_utf8(text).unwrap())
    });
}

#[test]
fn daemon_json_field_rules_and_unknown_keys() {
    let decode = |text: String| DaemonProcess::from_json(&text).unwrap_err();
    invalid_identity(
        decode(json_with("exe_sha256", "zz".repeat(32).into())),
        "exe_sha256",
    );
    invalid_identity(
        decode(json_with("exe_sha256", "ab".repeat(31).into())),
        "exe_sha256",
    );
    invalid_identity(decode(json_with("exe_sha256", "abc".into())), "exe_sha256");
    invalid_identity(decode(json_with("pid", 0.into())), "pid");
    invalid_identity(decode(json_with("pid", (1u64 << 31).into())), "pid");
    invalid_identity(decode(json_with("exe_path", "echo".into())), "exe_path");
    invalid_identity(decode(json_with("boot_id", "".into())), "boot_id");
    invalid_identity(
        decode(json_with(
            "ipc_endpoint",
            serde_json::json!({"namespace_id": "shared", "path": "x.sock"}),
        )),
        "path",
    );
    // Unknown keys are ignored, at the top and inside the endpoint; a null
    // idle timeout is none.
    let mut json = json_identity();
    json["later"] = serde_json::json!({"a": [1, 2, {"b": null}]});
    json["ipc_endpoint"]["later"] = 1.into();
    assert_eq!(
        DaemonProcess::from_json(&json.to_string()).unwrap(),
        identity()
    );
    json["idle_timeout_secs"] = serde_json::Value::Null;
    assert_eq!(
        DaemonProcess::from_json(&json.to_string())
            .unwrap()
            .idle_timeout_secs,
        None
    );
}
