use super::*;

// ---------------------------------------------------------------------------
// The fuzz seed corpus

/// Seeds per fuzz target: small valid inputs and edge cases, so that every
/// target starts past the checks that a random input rarely passes. Written
/// by `RP_WRITE_FUZZ_CORPUS=1 cargo test --test malformed fuzz_seed_corpus`.
pub(crate) fn seed_corpus() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let frame_bytes = |f: &FrameMsg| encode_frame(f, MAX_FRAME_BODY).unwrap();
    let probe_nonce: [u8; 32] = *b"running-process fuzz probe nonce";
    let fuzz_request = ProbeRequest::with_nonce(probe_nonce, &TraceContext::default());
    let request_frame = frame::decode_frame(&fuzz_request.bytes, MAX_FRAME_BODY).unwrap();
    let answer = probe::probe_response(&request_frame, &probe_nonce, &identity());
    let traced = TraceContext::new(
        7,
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "vendor=value",
    )
    .unwrap();
    let traced_request = ProbeRequest::with_nonce(probe_nonce, &traced);
    let mut explicit = service_definition();
    explicit.isolation = Isolation::Explicit;
    explicit.explicit_instance = "ci".into();
    let mut private = service_definition();
    private.isolation = Isolation::Private;
    private.min_version = None;
    private.version_allow_list = vec!["1.0.0-rc.1".parse().unwrap(), "2.0.0".parse().unwrap()];
    let mut fuzz_named = service_definition();
    fuzz_named.service_name = "fuzz".into();
    let mut no_idle = identity();
    no_idle.idle_timeout_secs = None;
    let mut explicit_manifest = manifest();
    explicit_manifest["instance"] = "explicit:ci".into();
    let mut private_manifest = manifest();
    private_manifest["instance"] = "private:echo".into();
    private_manifest["binary_stamp"] = serde_json::json!({
        "dev": 2049, "ino": 1234, "size": 4096, "mtime": [1_764_000_000, 5], "ctime": [1_764_000_000, 6]
    });

    vec![
        ("frame", "probe-request", fuzz_request.bytes.clone()),
        ("frame", "probe-response", answer.clone()),
        ("frame", "traced-request", traced_request.bytes.clone()),
        ("frame", "empty-body", vec![1, 0, 0, 0, 0]),
        ("frame", "declares-4gib", vec![1, 0xff, 0xff, 0xff, 0xff]),
        ("frame", "version-2", vec![2, 0, 0, 0, 0]),
        ("frame", "sample", frame_bytes(&sample_frame())),
        ("probe", "response", answer[HEADER_LEN..].to_vec()),
        (
            "probe",
            "request",
            fuzz_request.bytes[HEADER_LEN..].to_vec(),
        ),
        (
            "probe",
            "traced-request",
            traced_request.bytes[HEADER_LEN..].to_vec(),
        ),
        ("probe_socket", "response", answer.clone()),
        ("probe_socket", "request", fuzz_request.bytes.clone()),
        (
            "probe_socket",
            "declares-4gib",
            vec![1, 0xff, 0xff, 0xff, 0xff],
        ),
        (
            "probe_socket",
            "short-body",
            [header_declaring(40), vec![0; 10]].concat(),
        ),
        ("daemon_process", "identity", identity().to_bytes()),
        ("daemon_process", "no-idle-timeout", no_idle.to_bytes()),
        (
            "daemon_process",
            "unknown-fields",
            [
                identity().to_bytes(),
                uint_field(10, 1),
                len_field(11, b"x"),
            ]
            .concat(),
        ),
        (
            "daemon_process",
            "current-generation",
            DaemonProcess {
                exe_blake3: Some([0xcd; 32]),
                ..identity()
            }
            .to_bytes(),
        ),
        (
            "daemon_process",
            "split-endpoint",
            identity_with(
                4,
                &[
                    len_field(4, &len_field(1, b"shared")),
                    len_field(4, &len_field(2, SOCKET.as_bytes())),
                ]
                .concat(),
            ),
        ),
        ("daemon_json", "identity", identity().to_json().into_bytes()),
        (
            "daemon_json",
            "no-idle-timeout",
            no_idle.to_json().into_bytes(),
        ),
        (
            "daemon_json",
            "unknown-keys",
            json_with("later", serde_json::json!([1, {"a": null}])).into_bytes(),
        ),
        (
            "service_definition",
            "shared",
            service_definition().to_bytes(),
        ),
        ("service_definition", "explicit", explicit.to_bytes()),
        ("service_definition", "private", private.to_bytes()),
        ("servicedef_store", "fuzz-named", fuzz_named.to_bytes()),
        (
            "servicedef_store",
            "other-name",
            service_definition().to_bytes(),
        ),
        (
            "pool_manifest",
            "shared",
            serde_json::to_vec_pretty(&manifest()).unwrap(),
        ),
        (
            "pool_manifest",
            "explicit",
            explicit_manifest.to_string().into_bytes(),
        ),
        (
            "pool_manifest",
            "private-with-stamp",
            private_manifest.to_string().into_bytes(),
        ),
    ]
}

#[test]
fn fuzz_seed_corpus_is_current() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus");
    let write = std::env::var_os("RP_WRITE_FUZZ_CORPUS").is_some_and(|v| v == "1");
    for (target, name, bytes) in seed_corpus() {
        let path = corpus.join(target).join(format!("seed-{name}"));
        if write {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, &bytes).unwrap();
        } else {
            let committed = fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; regenerate with RP_WRITE_FUZZ_CORPUS=1 cargo test --test malformed",
                    path.display()
                )
            });
            assert!(committed == bytes, "{} is out of date", path.display());
        }
    }
}

#[test]
fn seed_corpus_entries_decode_as_intended() {
    // The valid seeds are valid: a target that starts from them begins past
    // the decoders' first checks.
    for (target, name, bytes) in seed_corpus() {
        let ok = match target {
            "frame" | "probe_socket" => frame::decode_frame(&bytes, MAX_FRAME_BODY).is_ok(),
            "probe" => frame::decode_body(&bytes).is_ok(),
            "daemon_process" => DaemonProcess::from_bytes(&bytes).is_ok(),
            "daemon_json" => DaemonProcess::from_json(std::str::from_utf8(&bytes).unwrap()).is_ok(),
            "service_definition" | "servicedef_store" => {
                ServiceDefinition::from_bytes(&bytes).is_ok()
            }
            "pool_manifest" => decode_pool_manifest(&bytes).is_ok(),
            other => panic!("unknown target {other}"),
        };
        let meant_invalid = matches!(name, "declares-4gib" | "version-2" | "short-body");
        assert_eq!(ok, !meant_invalid, "{target}/{name}");
    }
}
