use super::*;

// ---------------------------------------------------------------------------
// ServiceDefinition, protobuf

pub(crate) fn sd_fields() -> Vec<Vec<u8>> {
    vec![
        len_field(1, b"echo"),
        len_field(2, b"/opt/echo/1.0.0/echo"),
        uint_field(3, 1),
        len_field(5, b"/opt/echo/1.0.0"),
        len_field(6, b"1.0.0"),
        len_field(7, b"1.0.0"),
        len_field(8, &[len_field(1, b"team"), len_field(2, b"build")].concat()),
    ]
}

pub(crate) fn invalid_sd(err: DecodeError, field: &str) {
    match err {
        DecodeError::Invalid(ValidationError::ServiceDefinition { field: f, .. }) => {
            assert_eq!(f, field)
        }
        other => panic!("expected an invalid {field}, got {other:?}"),
    }
}

#[test]
fn service_definition_hand_built_encoding_decodes() {
    assert_eq!(
        ServiceDefinition::from_bytes(&sd_fields().concat()).unwrap(),
        service_definition()
    );
    assert_eq!(service_definition().to_bytes(), sd_fields().concat());
}

#[test]
fn service_definition_wire_and_enum_errors() {
    let with = |index: usize, field: Vec<u8>| {
        let mut fields = sd_fields();
        fields[index] = field;
        fields.concat()
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "isolation 3",
            with(2, uint_field(3, 3)),
            "isolation 3 is not a BrokerIsolation value",
        ),
        (
            "isolation -1",
            with(2, uint_field(3, u64::MAX)),
            "isolation -1 is not a BrokerIsolation value",
        ),
        (
            "isolation as bytes",
            with(2, len_field(3, b"\x01")),
            "invalid wire type",
        ),
        (
            "name as varint",
            with(0, uint_field(1, 5)),
            "invalid wire type",
        ),
        (
            "invalid UTF-8 name",
            with(0, len_field(1, b"ech\xff")),
            "not UTF-8",
        ),
        (
            "invalid UTF-8 allow-list entry",
            with(5, len_field(7, b"1.0.\xff")),
            "not UTF-8",
        ),
        (
            "invalid UTF-8 label key",
            with(
                6,
                len_field(8, &[len_field(1, b"te\xffam"), len_field(2, b"x")].concat()),
            ),
            "not UTF-8",
        ),
        (
            "label entry as varint",
            with(6, uint_field(8, 1)),
            "invalid wire type",
        ),
        (
            "label entry cut short",
            with(
                6,
                len_field(8, &[key(1, LEN), varint(9), b"team".to_vec()].concat()),
            ),
            "buffer underflow",
        ),
        (
            "varint overflow",
            with(2, [key(3, VARINT), vec![0x80; 10], vec![0]].concat()),
            "invalid varint",
        ),
        (
            "truncated",
            sd_fields().concat()[..10].to_vec(),
            "buffer underflow",
        ),
        (
            "field number 0",
            [sd_fields().concat(), key(0, VARINT)].concat(),
            "invalid tag value: 0",
        ),
    ];
    expect_malformed(
        "ServiceDefinition",
        &cases,
        16 * 1024,
        ServiceDefinition::from_bytes,
    );
}

#[test]
fn service_definition_rules_apply_to_decoded_values() {
    let decode =
        |fields: Vec<Vec<u8>>| ServiceDefinition::from_bytes(&fields.concat()).unwrap_err();
    let mut no_name = sd_fields();
    no_name.remove(0);
    match decode(no_name) {
        DecodeError::Invalid(ValidationError::Name { kind, value, .. }) => {
            assert_eq!((kind, value.as_str()), (NameKind::ServiceName, ""))
        }
        other => panic!("{other:?}"),
    }
    let mut relative = sd_fields();
    relative[1] = len_field(2, b"echo");
    invalid_sd(decode(relative), "binary_path");
    let mut explicit_without_name = sd_fields();
    explicit_without_name[2] = uint_field(3, 2);
    invalid_sd(decode(explicit_without_name), "explicit_instance");
    let mut empty_label_key = sd_fields();
    empty_label_key[6] = len_field(8, &len_field(2, b"build"));
    invalid_sd(decode(empty_label_key), "labels");
    let mut too_many_labels = sd_fields();
    too_many_labels.extend((0..MAX_LABELS).map(|i| {
        len_field(
            8,
            &[len_field(1, format!("k{i}").as_bytes()), len_field(2, b"v")].concat(),
        )
    }));
    invalid_sd(decode(too_many_labels), "labels");
    let mut long_allow_list = sd_fields();
    long_allow_list.extend((0..MAX_ALLOW_LIST).map(|_| len_field(7, b"1.0.0")));
    invalid_sd(decode(long_allow_list), "version_allow_list");
    let mut bad_version = sd_fields();
    bad_version[4] = len_field(6, b"01.0.0");
    assert!(matches!(
        decode(bad_version),
        DecodeError::Invalid(ValidationError::Version { .. })
    ));
}

#[test]
fn service_definition_duplicates_and_unknown_fields_follow_protobuf() {
    let bytes = [
        len_field(1, b"first"),
        sd_fields().concat(),
        // A repeated field appends; a map keeps the last value of a key.
        len_field(7, b"1.1.0"),
        len_field(
            8,
            &[len_field(1, b"team"), len_field(2, b"release")].concat(),
        ),
        // Unknown fields, inside a label entry too.
        uint_field(9, 1),
        len_field(100, b"later"),
        len_field(
            8,
            &[len_field(1, b"tier"), len_field(2, b"1"), uint_field(3, 7)].concat(),
        ),
    ]
    .concat();
    let decoded = ServiceDefinition::from_bytes(&bytes).unwrap();
    let mut expected = service_definition();
    expected.version_allow_list.push("1.1.0".parse().unwrap());
    expected.labels.insert("team".into(), "release".into());
    expected.labels.insert("tier".into(), "1".into());
    assert_eq!(decoded, expected);
    // A label entry without a value has the empty value.
    let bytes = [sd_fields().concat(), len_field(8, &len_field(1, b"flag"))].concat();
    assert_eq!(
        ServiceDefinition::from_bytes(&bytes).unwrap().labels["flag"],
        ""
    );
}
