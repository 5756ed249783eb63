"""ServiceDefinition values: construction, validation, version policy and the
protobuf encoding (spec sections 3 and 4). Saving and loading files is in
test_service_store.py."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest

import running_process as rp
from support.values import make_sd
from support.wire import as_bytes, as_int, field_bytes, field_varint, fields_named, parse_message

# --- construction and properties --------------------------------------------


def test_keyword_construction_and_properties() -> None:
    sd = rp.ServiceDefinition(
        service_name="zccache",
        binary_path="/opt/zccache/1.11.20/zccache-backend",
        per_version_binary_dir="/opt/zccache",
        isolation=rp.Isolation.EXPLICIT,
        explicit_instance="ci-1",
        min_version="1.10.0",
        version_allow_list=["1.11.20", "1.12.0-rc.1"],
        labels={"team": "build", "a/b.c_d-e": "x y"},
    )
    assert sd.service_name == "zccache"
    assert sd.binary_path == "/opt/zccache/1.11.20/zccache-backend"
    assert sd.per_version_binary_dir == "/opt/zccache"
    assert sd.isolation == rp.Isolation.EXPLICIT
    assert sd.explicit_instance == "ci-1"
    assert sd.min_version == "1.10.0"
    assert sd.version_allow_list == ["1.11.20", "1.12.0-rc.1"]
    assert sd.labels == {"team": "build", "a/b.c_d-e": "x y"}
    sd.validate()


def test_defaults() -> None:
    sd = rp.ServiceDefinition(service_name="a", binary_path="/bin/a", per_version_binary_dir="/bin")
    assert sd.isolation == rp.Isolation.PRIVATE
    assert sd.explicit_instance == ""
    assert sd.min_version == ""
    assert sd.version_allow_list == []
    assert sd.labels == {}


def test_paths_accept_pathlike() -> None:
    sd = rp.ServiceDefinition(
        service_name="a",
        binary_path=Path("/opt/a/1.0.0/a"),
        per_version_binary_dir=Path("/opt/a"),
    )
    assert sd.binary_path == "/opt/a/1.0.0/a"
    assert sd.per_version_binary_dir == "/opt/a"
    assert isinstance(sd.binary_path, str)


def test_allow_list_accepts_a_tuple() -> None:
    sd = make_sd(version_allow_list=("1.11.20",))
    assert sd.version_allow_list == ["1.11.20"]


def test_labels_accept_any_mapping() -> None:
    # The stub types labels as Mapping[str, str], not only dict.
    sd = make_sd(labels=types.MappingProxyType({"team": "build"}))
    assert sd.labels == {"team": "build"}


def test_returned_collections_are_copies() -> None:
    sd = make_sd()
    labels = sd.labels
    labels["evil"] = "x"
    allow = sd.version_allow_list
    allow.append("9.9.9")
    assert "evil" not in sd.labels
    assert "9.9.9" not in sd.version_allow_list
    assert sd == make_sd()


def test_input_collections_are_copied() -> None:
    labels = {"team": "build"}
    allow = ["1.11.20"]
    sd = make_sd(labels=labels, version_allow_list=allow)
    labels["late"] = "x"
    allow.append("2.0.0")
    assert sd.labels == {"team": "build"}
    assert sd.version_allow_list == ["1.11.20"]


def test_label_order_does_not_matter() -> None:
    a = make_sd(labels={"a": "1", "b": "2", "c": "3"})
    b = make_sd(labels={"c": "3", "a": "1", "b": "2"})
    assert a == b
    assert hash(a) == hash(b)
    assert a.to_bytes() == b.to_bytes()


# --- validation -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["Zccache", "", "x" * 65, "zccaché", "a_b", "../etc"])
def test_bad_service_name(name: str) -> None:
    with pytest.raises(rp.InvalidNameError) as info:
        make_sd(service_name=name)
    assert info.value.kind == "service name"
    assert info.value.value == name


@pytest.mark.parametrize("field", ["binary_path", "per_version_binary_dir"])
@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("relative/bin", "absolute"),
        ("bin", "absolute"),
        ("./bin", "absolute"),
        ("~/bin", "absolute"),
        ("", "empty"),
        ("/opt/a\0b", "NUL"),
        ("/" + "x" * 4096, "4096"),
    ],
)
def test_bad_paths(field: str, value: str, hint: str) -> None:
    with pytest.raises(rp.InvalidServiceDefinitionError) as info:
        make_sd(**{field: value})
    err = info.value
    assert err.field == field
    assert err.value == value
    assert hint in err.reason
    assert isinstance(err, ValueError)


def test_relative_pathlike_is_refused() -> None:
    with pytest.raises(rp.InvalidServiceDefinitionError) as info:
        make_sd(per_version_binary_dir=Path("opt/zccache"))
    assert info.value.field == "per_version_binary_dir"
    assert info.value.value == "opt/zccache"


@pytest.mark.parametrize("field", ["binary_path", "per_version_binary_dir"])
def test_non_utf8_path_is_refused(field: str) -> None:
    # A file name byte that is not UTF-8 arrives in Python as a surrogate escape.
    with pytest.raises(rp.InvalidServiceDefinitionError) as info:
        make_sd(**{field: "/opt/\udcff"})
    assert info.value.field == field
    assert "UTF-8" in info.value.reason


def test_longest_path_is_accepted() -> None:
    path = "/" + "x" * 4095
    assert make_sd(binary_path=path).binary_path == path


@pytest.mark.parametrize("isolation", [rp.Isolation.PRIVATE, rp.Isolation.SHARED])
def test_explicit_instance_without_explicit_isolation(isolation: rp.Isolation) -> None:
    with pytest.raises(rp.InvalidServiceDefinitionError) as info:
        make_sd(isolation=isolation, explicit_instance="ci")
    err = info.value
    assert err.field == "explicit_instance"
    assert err.value == "ci"
    assert isolation.name in err.reason


def test_explicit_isolation_without_instance() -> None:
    with pytest.raises(rp.InvalidServiceDefinitionError) as info:
        make_sd(isolation=rp.Isolation.EXPLICIT)
    err = info.value
    assert err.field == "explicit_instance"
    assert err.value == ""
    assert "required" in err.reason


@pytest.mark.parametrize("name", ["CI", "c i", "x" * 65, "ci_1", "é"])
def test_explicit_instance_must_be_a_valid_name(name: str) -> None:
    with pytest.raises(rp.InvalidNameError) as info:
        make_sd(isolation=rp.Isolation.EXPLICIT, explicit_instance=name)
    assert info.value.kind == "instance name"
    assert info.value.value == name


@pytest.mark.parametrize("version", ["1.2", "01.2.3-RC1", "1.2.3+build", "01.2.3", "1.2.3-"])
def test_bad_min_version(version: str) -> None:
    with pytest.raises(rp.InvalidVersionError) as info:
        make_sd(min_version=version)
    assert info.value.value == version


@pytest.mark.parametrize("version", ["1.2", "01.2.3-RC1", "1.2.3+build", "01.2.3", "1.2.3-", ""])
def test_bad_allow_list_entry(version: str) -> None:
    with pytest.raises(rp.InvalidVersionError) as info:
        make_sd(version_allow_list=["1.11.20", version])
    assert info.value.value == version


def test_allow_list_size_limit() -> None:
    ok = [f"1.0.{i}" for i in range(256)]
    assert len(make_sd(version_allow_list=ok).version_allow_list) == 256
    with pytest.raises(rp.InvalidServiceDefinitionError) as info:
        make_sd(version_allow_list=ok + ["2.0.0"])
    assert info.value.field == "version_allow_list"
    assert "257" in info.value.reason


@pytest.mark.parametrize(
    "value",
    ["a\0b", "line\nbreak", "tab\there", "\x1b[31mred", "del\x7f", "c1\x85", "\r"],
)
def test_label_value_with_control_character(value: str) -> None:
    with pytest.raises(rp.InvalidServiceDefinitionError) as info:
        make_sd(labels={"team": "build", "note": value})
    err = info.value
    assert err.field == "labels"
    assert err.value == "note"
    assert "control" in err.reason


@pytest.mark.parametrize(
    "key",
    ["", "a b", "ä", "k=v", "a:b", "a\nb", "k\0", "x" * 129, "emoji😀"],
)
def test_bad_label_key(key: str) -> None:
    with pytest.raises(rp.InvalidServiceDefinitionError) as info:
        make_sd(labels={key: "v"})
    assert info.value.field == "labels"
    assert info.value.value == key


def test_label_key_and_value_limits() -> None:
    key = "K" * 128
    value = "v" * 1024
    assert make_sd(labels={key: value}).labels == {key: value}
    with pytest.raises(rp.InvalidServiceDefinitionError) as info:
        make_sd(labels={"big": "v" * 1025})
    assert info.value.field == "labels"
    assert info.value.value == "big"
    assert "1025" in info.value.reason


def test_label_value_limit_counts_bytes() -> None:
    with pytest.raises(rp.InvalidServiceDefinitionError) as info:
        make_sd(labels={"big": "é" * 513})  # 1026 bytes, 513 characters
    assert info.value.field == "labels"


def test_too_many_labels() -> None:
    labels = {f"k{i}": "v" for i in range(64)}
    assert len(make_sd(labels=labels).labels) == 64
    labels["k64"] = "v"
    with pytest.raises(rp.InvalidServiceDefinitionError) as info:
        make_sd(labels=labels)
    err = info.value
    assert err.field == "labels"
    assert err.value == ""
    assert "65" in err.reason


def test_wrong_argument_types_are_type_errors() -> None:
    kwargs: dict[str, Any] = {"isolation": 1}
    with pytest.raises(TypeError):
        make_sd(**kwargs)
    with pytest.raises(TypeError):
        make_sd(labels={"k": 1})
    with pytest.raises(TypeError):
        make_sd(version_allow_list="1.0.0")


# --- version policy -------------------------------------------------------------


def test_check_version_min_version_is_numeric() -> None:
    sd = make_sd(min_version="1.10.0", version_allow_list=[])
    for ok in ["1.10.0", "1.10.1", "1.11.0", "1.100.0", "2.0.0", "10.0.0", "1.10.0-rc1"]:
        sd.check_version(ok)
    for refused in ["1.9.0", "1.9.99", "1.2.0", "0.99.99", "1.1.0", "1.0.100"]:
        with pytest.raises(rp.VersionRefusedError) as info:
            sd.check_version(refused)
        err = info.value
        assert err.service_name == "zccache"
        assert err.version == refused
        assert "min_version" in err.reason
        assert "1.10.0" in err.reason


def test_check_version_without_policy_admits_any_valid_version() -> None:
    sd = make_sd(min_version="", version_allow_list=[])
    for version in ["0.0.0", "1.2.3-rc.1", "18446744073709551615.0.0"]:
        sd.check_version(version)


def test_check_version_allow_list_is_exact() -> None:
    sd = make_sd(min_version="", version_allow_list=["1.11.20", "1.12.0-rc.1"])
    sd.check_version("1.11.20")
    sd.check_version("1.12.0-rc.1")
    for refused in ["1.11.21", "1.11.2", "1.12.0", "1.12.0-rc.2", "1.11.20-rc1"]:
        with pytest.raises(rp.VersionRefusedError) as info:
            sd.check_version(refused)
        assert info.value.version == refused
        assert info.value.service_name == "zccache"
        assert "version_allow_list" in info.value.reason


def test_check_version_applies_min_version_and_allow_list() -> None:
    sd = make_sd(min_version="1.10.0", version_allow_list=["1.9.0", "1.11.20"])
    sd.check_version("1.11.20")
    with pytest.raises(rp.VersionRefusedError) as info:
        sd.check_version("1.9.0")  # listed, but below the floor
    assert "min_version" in info.value.reason
    with pytest.raises(rp.VersionRefusedError):
        sd.check_version("1.12.0")  # above the floor, not listed


@pytest.mark.parametrize("version", ["1.2", "01.2.3-RC1", "1.2.3+build", "01.2.3", "1.2.3-", ""])
def test_check_version_refuses_malformed_versions(version: str) -> None:
    sd = make_sd(min_version="", version_allow_list=[])
    with pytest.raises(rp.InvalidVersionError) as info:
        sd.check_version(version)
    assert info.value.value == version


def test_version_refused_is_not_a_malformed_input() -> None:
    sd = make_sd(min_version="2.0.0", version_allow_list=[])
    with pytest.raises(rp.VersionRefusedError) as info:
        sd.check_version("1.0.0")
    assert not isinstance(info.value, rp.InvalidVersionError)
    assert isinstance(info.value, rp.RunningProcessError)


# --- protobuf encoding ----------------------------------------------------------


@pytest.mark.parametrize(
    "sd",
    [
        make_sd(),
        make_sd(isolation=rp.Isolation.PRIVATE),
        make_sd(isolation=rp.Isolation.EXPLICIT, explicit_instance="ci"),
        make_sd(labels={}, version_allow_list=[], min_version=""),
        make_sd(labels={"k": ""}),
        make_sd(labels={"u": "ünïcödé ✓"}, binary_path="/opt/ünï/bin"),
    ],
)
def test_bytes_round_trip(sd: rp.ServiceDefinition) -> None:
    data = sd.to_bytes()
    assert isinstance(data, bytes)
    restored = rp.ServiceDefinition.from_bytes(data)
    assert restored == sd
    assert restored.to_bytes() == data


def test_to_bytes_uses_the_contract_field_numbers() -> None:
    sd = make_sd(
        isolation=rp.Isolation.EXPLICIT,
        explicit_instance="ci",
        labels={"b": "2", "a": "1"},
    )
    data = sd.to_bytes()
    assert fields_named(data, 1) == [b"zccache"]
    assert fields_named(data, 2) == [b"/opt/zccache/1.11.20/zccache-backend"]
    assert fields_named(data, 3) == [2]
    assert fields_named(data, 4) == [b"ci"]
    assert fields_named(data, 5) == [b"/opt/zccache"]
    assert fields_named(data, 6) == [b"1.10.0"]
    assert fields_named(data, 7) == [b"1.11.20", b"1.12.0-rc.1"]
    entries = [dict(parse_message(as_bytes(entry))) for entry in fields_named(data, 8)]
    # Map entries: key = 1, value = 2, sorted by key (deterministic encoding).
    assert [as_bytes(e[1]) for e in entries] == [b"a", b"b"]
    assert [as_bytes(e[2]) for e in entries] == [b"1", b"2"]
    assert {n for n, _ in parse_message(data)} <= set(range(1, 9))


def test_shared_isolation_is_wire_value_1() -> None:
    assert [as_int(v) for v in fields_named(make_sd().to_bytes(), 3)] == [1]


def test_from_bytes_reads_a_hand_built_message() -> None:
    entry = field_bytes(1, "team") + field_bytes(2, "build")
    data = (
        field_bytes(1, "zccache")
        + field_bytes(2, "/opt/zccache/bin")
        + field_varint(3, 1)
        + field_bytes(5, "/opt/zccache")
        + field_bytes(6, "1.10.0")
        + field_bytes(7, "1.11.20")
        + field_bytes(7, "1.11.21")
        + field_bytes(8, entry)
    )
    sd = rp.ServiceDefinition.from_bytes(data)
    assert sd == rp.ServiceDefinition(
        service_name="zccache",
        binary_path="/opt/zccache/bin",
        per_version_binary_dir="/opt/zccache",
        isolation=rp.Isolation.SHARED,
        min_version="1.10.0",
        version_allow_list=["1.11.20", "1.11.21"],
        labels={"team": "build"},
    )


def test_from_bytes_ignores_unknown_fields() -> None:
    sd = make_sd()
    extra = field_varint(20, 5) + field_bytes(21, b"future")
    assert rp.ServiceDefinition.from_bytes(sd.to_bytes() + extra) == sd


def test_from_bytes_refuses_unknown_isolation() -> None:
    data = field_bytes(1, "a") + field_bytes(2, "/a") + field_varint(3, 9) + field_bytes(5, "/")
    with pytest.raises(rp.DecodeError) as info:
        rp.ServiceDefinition.from_bytes(data)
    assert info.value.what == "ServiceDefinition"
    assert "9" in info.value.reason


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff\xff",
        b"\xff" * 11,
        b"\x0a\x05ab",  # string field claims 5 bytes, has 2
        b"\x0a",  # tag without value
        b"\x0b",  # wire type 3 (start group), never used
        b"\x00\x01",  # field number 0
    ],
)
def test_from_bytes_refuses_garbage(data: bytes) -> None:
    with pytest.raises(rp.DecodeError) as info:
        rp.ServiceDefinition.from_bytes(data)
    assert info.value.what == "ServiceDefinition"
    assert info.value.reason
    assert isinstance(info.value, ValueError)


def test_from_bytes_refuses_truncation_inside_a_field() -> None:
    data = make_sd().to_bytes()
    with pytest.raises(rp.DecodeError) as info:
        rp.ServiceDefinition.from_bytes(data[:-1])
    assert info.value.what == "ServiceDefinition"


def test_every_prefix_is_refused_or_differs() -> None:
    sd = make_sd()
    data = sd.to_bytes()
    for end in range(len(data)):
        try:
            decoded = rp.ServiceDefinition.from_bytes(data[:end])
        except rp.RunningProcessError as err:
            assert isinstance(err, ValueError), (end, err)
        else:
            assert decoded != sd, end


def test_from_bytes_validates_decoded_fields() -> None:
    data = field_bytes(1, "Upper") + field_bytes(2, "/a") + field_bytes(5, "/")
    with pytest.raises(rp.InvalidNameError) as info:
        rp.ServiceDefinition.from_bytes(data)
    assert info.value.value == "Upper"
    data = field_bytes(1, "a") + field_bytes(2, "rel") + field_bytes(5, "/")
    with pytest.raises(rp.InvalidServiceDefinitionError) as sd_info:
        rp.ServiceDefinition.from_bytes(data)
    assert sd_info.value.field == "binary_path"


def test_from_bytes_of_empty_input_is_refused() -> None:
    with pytest.raises(rp.RunningProcessError) as info:
        rp.ServiceDefinition.from_bytes(b"")
    assert isinstance(info.value, ValueError)
