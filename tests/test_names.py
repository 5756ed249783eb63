"""Service names, instance names, versions and socket file names (spec section 2)."""

from __future__ import annotations

from typing import Callable

import pytest

import running_process as rp
from support.values import HASH, TOKEN

NameValidator = Callable[[str], None]

NAME_VALIDATORS: list[tuple[NameValidator, str]] = [
    (rp.validate_service_name, "service name"),
    (rp.validate_instance_name, "instance name"),
]

GOOD_NAMES = ["a", "0", "-", "zccache", "my-tool-2", "x" * 64, "a1-b2-c3"]

BAD_NAMES = [
    "",  # empty
    "Zccache",  # upper case is refused, never folded
    "ZCCACHE",
    "zcCache",
    "x" * 65,  # one byte too long
    "é",  # non-ASCII
    "zccaché",
    "ｚccache",  # full-width letter
    "a_b",
    "a.b",
    "a b",
    "a/b",
    "../x",
    "a:b",
    "a\0",
    "a\n",
]


@pytest.mark.parametrize(("validate", "kind"), NAME_VALIDATORS)
@pytest.mark.parametrize("name", GOOD_NAMES)
def test_valid_names_are_accepted(validate: NameValidator, kind: str, name: str) -> None:
    validate(name)


@pytest.mark.parametrize(("validate", "kind"), NAME_VALIDATORS)
@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_names_raise_typed_error(validate: NameValidator, kind: str, name: str) -> None:
    with pytest.raises(rp.InvalidNameError) as info:
        validate(name)
    err = info.value
    assert err.kind == kind
    assert err.value == name
    assert err.reason
    assert isinstance(err, ValueError)
    assert isinstance(err, rp.RunningProcessError)


@pytest.mark.parametrize(("validate", "kind"), NAME_VALIDATORS)
def test_upper_case_reason_says_upper_case(validate: NameValidator, kind: str) -> None:
    with pytest.raises(rp.InvalidNameError) as info:
        validate("Zccache")
    assert "upper-case" in info.value.reason


@pytest.mark.parametrize(("validate", "kind"), NAME_VALIDATORS)
def test_empty_name_reason(validate: NameValidator, kind: str) -> None:
    with pytest.raises(rp.InvalidNameError) as info:
        validate("")
    assert "empty" in info.value.reason


@pytest.mark.parametrize(("validate", "kind"), NAME_VALIDATORS)
def test_too_long_name_reason_gives_the_length(validate: NameValidator, kind: str) -> None:
    with pytest.raises(rp.InvalidNameError) as info:
        validate("x" * 65)
    assert "65" in info.value.reason
    assert "64" in info.value.reason


def test_name_limit_counts_bytes_not_characters() -> None:
    # 32 two-byte characters are 64 bytes but are refused for being non-ASCII.
    with pytest.raises(rp.InvalidNameError):
        rp.validate_service_name("é" * 32)


GOOD_VERSIONS = [
    "0.0.0",
    "1.2.3",
    "1.11.20",
    "10.20.30",
    "1.2.3-rc1",
    "1.2.3-rc.1",
    "1.2.3-0",
    "1.2.3-a.b.c",
    "18446744073709551615.0.0",  # u64::MAX
    "1.0.0-" + "a" * 122,  # exactly 128 bytes
]

BAD_VERSIONS = [
    "",
    "1",
    "1.2",
    "1.2.3.4",
    "01.2.3",  # leading zeros
    "1.02.3",
    "1.2.03",
    "00.0.0",
    "01.2.3-RC1",
    "1.2.3-RC1",  # upper-case pre-release
    "1.2.3+build",
    "1.2.3-rc1+build",
    "1.2.3-",  # empty pre-release
    "1.2.3-rc..1",
    "1.2.3-rc.",
    "1.2.3-.rc",
    "1.2.3-rc_1",
    "1.2.3-rc-1",
    "a.b.c",
    "1.2.-3",
    "-1.2.3",
    "v1.2.3",
    " 1.2.3",
    "1.2.3 ",
    "1..3",
    "1.2.3\n",
    "١.٢.٣",  # Arabic-Indic digits
    "18446744073709551616.0.0",  # u64::MAX + 1
    "1.0.0-" + "a" * 123,  # 129 bytes
]


@pytest.mark.parametrize("version", GOOD_VERSIONS)
def test_valid_versions_are_accepted(version: str) -> None:
    rp.validate_version(version)


@pytest.mark.parametrize("version", BAD_VERSIONS)
def test_invalid_versions_raise_typed_error(version: str) -> None:
    with pytest.raises(rp.InvalidVersionError) as info:
        rp.validate_version(version)
    err = info.value
    assert err.value == version
    assert err.reason
    assert isinstance(err, ValueError)


@pytest.mark.parametrize(
    ("version", "hint"),
    [
        ("1.2.3+build", "build"),
        ("01.2.3", "leading zero"),
        ("1.2.3-", "empty"),
        ("1.2.3-RC1", "upper-case"),
    ],
)
def test_version_reasons_name_the_problem(version: str, hint: str) -> None:
    with pytest.raises(rp.InvalidVersionError) as info:
        rp.validate_version(version)
    assert hint in info.value.reason


# --- socket file names -----------------------------------------------------


def test_backend_socket_name() -> None:
    assert (
        rp.backend_socket_name(HASH, TOKEN)
        == "rpb-v1-0123456789abcdef-be-00112233445566778899aabbccddeeff.sock"
    )


def test_shared_broker_socket_name() -> None:
    assert rp.shared_broker_socket_name(HASH) == "rpb-v1-0123456789abcdef-shared.sock"


def test_service_broker_socket_name() -> None:
    assert rp.service_broker_socket_name(HASH, "zccache") == "rpb-v1-0123456789abcdef-svc-zccache.sock"


def test_instance_broker_socket_name() -> None:
    assert rp.instance_broker_socket_name(HASH, "ci-1") == "rpb-v1-0123456789abcdef-inst-ci-1.sock"


BAD_HASHES = [
    "",
    "0123456789ABCDEF",  # upper case
    "0123456789abcde",  # 15
    "0123456789abcdef0",  # 17
    "0123456789abcdeg",  # not hex
    "0123456789abcde/",
    "０123456789abcde",
]

BUILDERS: list[tuple[str, Callable[[str], str]]] = [
    ("backend", lambda h: rp.backend_socket_name(h, TOKEN)),
    ("shared", rp.shared_broker_socket_name),
    ("service", lambda h: rp.service_broker_socket_name(h, "zccache")),
    ("instance", lambda h: rp.instance_broker_socket_name(h, "ci")),
]


@pytest.mark.parametrize("bad_hash", BAD_HASHES)
@pytest.mark.parametrize(("which", "build"), BUILDERS)
def test_builders_refuse_bad_user_sid_hash(which: str, build: Callable[[str], str], bad_hash: str) -> None:
    with pytest.raises(rp.InvalidNameError) as info:
        build(bad_hash)
    assert info.value.kind == "user sid hash"
    assert info.value.value == bad_hash


@pytest.mark.parametrize(
    "token",
    [
        "",
        TOKEN[:31],
        TOKEN + "0",
        TOKEN.upper(),
        "g" * 32,
        "../" + TOKEN[3:],
    ],
)
def test_backend_socket_name_refuses_bad_token(token: str) -> None:
    with pytest.raises(rp.InvalidNameError) as info:
        rp.backend_socket_name(HASH, token)
    assert info.value.kind == "endpoint token"
    assert info.value.value == token


@pytest.mark.parametrize("name", BAD_NAMES)
def test_service_broker_socket_name_refuses_bad_service(name: str) -> None:
    with pytest.raises(rp.InvalidNameError) as info:
        rp.service_broker_socket_name(HASH, name)
    assert info.value.kind == "service name"
    assert info.value.value == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_instance_broker_socket_name_refuses_bad_instance(name: str) -> None:
    with pytest.raises(rp.InvalidNameError) as info:
        rp.instance_broker_socket_name(HASH, name)
    assert info.value.kind == "instance name"
    assert info.value.value == name


def test_the_backend_socket_name_length_is_the_contracts() -> None:
    # "rpb-v1-" + 16 hex + "-be-" + 32 hex + ".sock"
    assert rp.BACKEND_SOCKET_NAME_LEN == 7 + 16 + 4 + 32 + 5 == len(rp.backend_socket_name(HASH, TOKEN))
