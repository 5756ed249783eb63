use super::*;

// ---- the environment contract -------------------------------------------
#[test]
fn env_contract_is_read_and_validated() {
    let mut vars = with(ENV_INSTANCE, "private:zccache");
    vars.push((
        ENV_TRACEPARENT,
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
    ));
    vars.push((ENV_TRACESTATE, "a=b".to_owned()));
    vars.push((ENV_IDLE_TIMEOUT_SECS, "45".to_owned()));
    let config = from_vars(&vars).unwrap();
    assert_eq!(config.service_name(), "zccache");
    assert_eq!(config.service_version(), "1.11.20");
    assert_eq!(
        config.endpoint(),
        &Endpoint::new("shared", "/tmp/rpsx/s/b.sock").unwrap()
    );
    assert_eq!(
        config.instance(),
        &BrokerInstanceKey::private("zccache").unwrap()
    );
    assert_eq!(config.trace().tracestate(), "a=b");
    assert_eq!(config.idle_timeout_secs(), NonZeroU32::new(45));

    let minimal = from_vars(&valid_env()).unwrap();
    assert_eq!(minimal.trace(), &TraceContext::default());
    assert_eq!(minimal.idle_timeout_secs(), None);
    // Optional variables that are set but empty count as unset.
    let mut empty = valid_env();
    for name in [ENV_TRACEPARENT, ENV_TRACESTATE, ENV_IDLE_TIMEOUT_SECS] {
        empty.push((name, String::new()));
    }
    assert_eq!(from_vars(&empty).unwrap(), minimal);
}

#[test]
fn missing_env_variables_are_named() {
    for (name, _) in valid_env() {
        let vars: Vec<_> = valid_env()
            .into_iter()
            .filter(|(n, _)| *n != name)
            .collect();
        match from_vars(&vars).unwrap_err() {
            ServerError::MissingEnv { name: missing } => assert_eq!(missing, name),
            err => panic!("{name}: {err}"),
        }
    }
}

#[test]
fn invalid_env_variables_are_named_with_value_and_reason() {
    let long_path = format!("/tmp/{}.sock", "p".repeat(120));
    let cases: Vec<(&'static str, &str)> = vec![
        (ENV_SERVICE_NAME, "ZCache"),
        (ENV_SERVICE_NAME, ""),
        (ENV_SERVICE_VERSION, "1.2"),
        (ENV_SERVICE_VERSION, "01.2.3"),
        (ENV_BACKEND_PIPE, "relative/b.sock"),
        (ENV_BACKEND_PIPE, &long_path),
        (ENV_BACKEND_PIPE, "/tmp/rpsx/s/../b.sock"),
        (ENV_BACKEND_PIPE, "/tmp/rpsx/../../etc/b.sock"),
        (ENV_BACKEND_PIPE, "/tmp/rpsx/./s/b.sock"),
        (ENV_BACKEND_PIPE, "/tmp/rpsx/s/.."),
        (ENV_BACKEND_PIPE, "/tmp/rpsx/s/b.sock\n"),
        (ENV_BACKEND_PIPE, "/tmp/rpsx/s/b\n.sock"),
        (ENV_BACKEND_PIPE, "/tmp/rpsx/s/b\t.sock"),
        (ENV_BACKEND_PIPE, "/tmp/rpsx/s/b\x1b[2J.sock"),
        (ENV_BACKEND_PIPE, "/tmp/rpsx/s/b\x7f.sock"),
        (ENV_BACKEND_PIPE, "/tmp/rpsx/s/b\u{85}.sock"),
        (ENV_BACKEND_PIPE, "/tmp/rpsx/s/"),
        (ENV_BACKEND_NAMESPACE, "has space"),
        (ENV_BACKEND_NAMESPACE, ""),
        (ENV_INSTANCE, "private:"),
        (ENV_INSTANCE, "other"),
        (ENV_TRACEPARENT, "00-zz"),
        (ENV_IDLE_TIMEOUT_SECS, "0"),
        (ENV_IDLE_TIMEOUT_SECS, "ten"),
        (ENV_IDLE_TIMEOUT_SECS, "-1"),
        (ENV_IDLE_TIMEOUT_SECS, "4294967296"),
    ];
    for (name, value) in cases {
        match from_vars(&with(name, value)).unwrap_err() {
            ServerError::InvalidEnv {
                name: got,
                value: got_value,
                reason,
            } => {
                assert_eq!(got, name, "{value:?}");
                assert_eq!(got_value, value);
                assert!(!reason.is_empty());
            }
            err => panic!("{name}={value:?}: {err}"),
        }
    }

    // A tracestate without a traceparent is the tracestate's fault.
    match from_vars(&with(ENV_TRACESTATE, "a=b")).unwrap_err() {
        ServerError::InvalidEnv { name, reason, .. } => {
            assert_eq!(name, ENV_TRACESTATE);
            assert!(reason.contains("traceparent"), "{reason}");
        }
        err => panic!("{err}"),
    }

    // Not UTF-8.
    let err = ServerConfig::from_lookup(|name| {
        if name == ENV_SERVICE_NAME {
            Some(std::os::unix::ffi::OsStringExt::from_vec(vec![0x7a, 0xff]))
        } else {
            valid_env()
                .into_iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| OsString::from(v))
        }
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            ServerError::InvalidEnv {
                name: ENV_SERVICE_NAME,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(ENV_SERVICE_NAME), "{err}");
}
