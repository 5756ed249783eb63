"""Endpoint and DaemonProcess: the daemon identity of the contract (spec
section 6), in protobuf and JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import running_process as rp
from support.values import BOOT_ID, ENDPOINT_PATH, SHA, make_dp, make_endpoint
from support.wire import as_bytes, field_bytes, field_varint, fields_named, parse_message

# --- Endpoint ---------------------------------------------------------------


def test_endpoint_keywords_properties_and_fspath() -> None:
    ep = rp.Endpoint(namespace_id="shared", path="/run/x.sock")
    assert ep.namespace_id == "shared"
    assert ep.path == "/run/x.sock"
    assert os.fspath(ep) == "/run/x.sock"
    assert Path(ep) == Path("/run/x.sock")


def test_endpoint_accepts_pathlike() -> None:
    assert rp.Endpoint("shared", Path("/run/x.sock")).path == "/run/x.sock"


def test_endpoint_path_limit_is_sun_path() -> None:
    longest = "/" + "x" * 106
    assert rp.Endpoint("shared", longest).path == longest
    with pytest.raises(rp.InvalidIdentityError) as info:
        rp.Endpoint("shared", longest + "x")
    assert info.value.field == "path"
    assert "108" in info.value.reason


@pytest.mark.parametrize("path", ["", "relative.sock", "./x.sock", "/run/\0x.sock"])
def test_endpoint_bad_paths(path: str) -> None:
    with pytest.raises(rp.InvalidIdentityError) as info:
        rp.Endpoint("shared", path)
    assert info.value.field == "path"
    assert info.value.value == path


def test_endpoint_non_utf8_path() -> None:
    with pytest.raises(rp.InvalidIdentityError) as info:
        rp.Endpoint("shared", "/run/\udcff.sock")
    assert info.value.field == "path"
    assert "UTF-8" in info.value.reason


@pytest.mark.parametrize("namespace", ["", "a b", "tab\t", "é", "x" * 257, "\x00"])
def test_endpoint_bad_namespace(namespace: str) -> None:
    with pytest.raises(rp.InvalidIdentityError) as info:
        rp.Endpoint(namespace, "/run/x.sock")
    assert info.value.field == "namespace_id"
    assert info.value.value == namespace


def test_endpoint_namespace_limit() -> None:
    assert rp.Endpoint("x" * 256, "/x").namespace_id == "x" * 256


# --- DaemonProcess construction ----------------------------------------------------


def test_keyword_construction_and_properties() -> None:
    ep = make_endpoint()
    dp = rp.DaemonProcess(
        pid=4242,
        exe_path="/opt/zccache/bin",
        exe_sha256=SHA,
        boot_id=BOOT_ID,
        ipc_endpoint=ep,
        started_at_unix_ms=1_764_000_000_000,
        idle_timeout_secs=30,
    )
    assert dp.pid == 4242
    assert dp.exe_path == "/opt/zccache/bin"
    assert dp.exe_sha256 == SHA
    assert isinstance(dp.exe_sha256, bytes)
    assert dp.exe_sha256_hex == SHA.hex()
    assert dp.boot_id == BOOT_ID
    assert dp.ipc_endpoint == ep
    assert dp.started_at_unix_ms == 1_764_000_000_000
    assert dp.idle_timeout_secs == 30


def test_idle_timeout_defaults_to_none() -> None:
    dp = rp.DaemonProcess(
        pid=1,
        exe_path="/x",
        exe_sha256=bytes(32),
        boot_id="b",
        ipc_endpoint=make_endpoint(),
        started_at_unix_ms=0,
    )
    assert dp.idle_timeout_secs is None


def test_idle_timeout_zero_is_not_none() -> None:
    zero = make_dp(idle_timeout_secs=0)
    assert zero.idle_timeout_secs == 0
    assert zero != make_dp(idle_timeout_secs=None)


def test_exe_sha256_hex_is_lowercase() -> None:
    dp = make_dp(exe_sha256=bytes([0xAB]) * 32)
    assert dp.exe_sha256_hex == "ab" * 32


@pytest.mark.parametrize("length", [0, 1, 31, 33, 64])
def test_bad_hash_length(length: int) -> None:
    digest = bytes(range(length))
    with pytest.raises(rp.InvalidIdentityError) as info:
        make_dp(exe_sha256=digest)
    err = info.value
    assert err.field == "exe_sha256"
    assert err.value == digest.hex()
    assert f"{length} bytes" in err.reason
    assert isinstance(err, ValueError)


@pytest.mark.parametrize("pid", [0, 2**31, 2**32 - 1])
def test_bad_pid(pid: int) -> None:
    with pytest.raises(rp.InvalidIdentityError) as info:
        make_dp(pid=pid)
    assert info.value.field == "pid"
    assert info.value.value == str(pid)


@pytest.mark.parametrize("pid", [1, 2**31 - 1])
def test_pid_limits(pid: int) -> None:
    assert make_dp(pid=pid).pid == pid


@pytest.mark.parametrize(
    "exe_path", ["", "bin/zccache", "zccache", "./zccache", "/opt/\0x", "/" + "x" * 4096]
)
def test_bad_exe_path(exe_path: str) -> None:
    with pytest.raises(rp.InvalidIdentityError) as info:
        make_dp(exe_path=exe_path)
    assert info.value.field == "exe_path"
    assert info.value.value == exe_path


@pytest.mark.parametrize("boot_id", ["", "has space", "tab\t", "new\nline", "é", "x" * 129])
def test_bad_boot_id(boot_id: str) -> None:
    with pytest.raises(rp.InvalidIdentityError) as info:
        make_dp(boot_id=boot_id)
    assert info.value.field == "boot_id"
    assert info.value.value == boot_id


def test_started_at_and_idle_ranges() -> None:
    dp = make_dp(started_at_unix_ms=2**64 - 1, idle_timeout_secs=2**32 - 1)
    assert dp.started_at_unix_ms == 2**64 - 1
    assert dp.idle_timeout_secs == 2**32 - 1
    with pytest.raises(OverflowError):
        make_dp(started_at_unix_ms=2**64)
    with pytest.raises(OverflowError):
        make_dp(idle_timeout_secs=2**32)


def test_ipc_endpoint_must_be_an_endpoint() -> None:
    with pytest.raises(TypeError):
        make_dp(ipc_endpoint=("shared", ENDPOINT_PATH))


# --- protobuf ----------------------------------------------------------------------


@pytest.mark.parametrize("idle", [None, 0, 300, 2**32 - 1])
def test_bytes_round_trip(idle: Any) -> None:
    dp = make_dp(idle_timeout_secs=idle)
    data = dp.to_bytes()
    assert isinstance(data, bytes)
    restored = rp.DaemonProcess.from_bytes(data)
    assert restored == dp
    assert restored.idle_timeout_secs == idle


def test_to_bytes_uses_the_contract_field_numbers() -> None:
    dp = make_dp(idle_timeout_secs=30)
    data = dp.to_bytes()
    assert fields_named(data, 1) == [4242]
    assert fields_named(data, 2) == [b"/opt/zccache/1.11.20/zccache-backend"]
    assert fields_named(data, 3) == [SHA]
    (endpoint,) = fields_named(data, 4)
    assert dict(parse_message(as_bytes(endpoint))) == {
        1: b"private:zccache",
        2: ENDPOINT_PATH.encode(),
    }
    assert fields_named(data, 5) == [1_764_000_000_000]
    assert fields_named(data, 6) == [BOOT_ID.encode()]
    assert fields_named(data, 7) == [30]
    assert {n for n, _ in parse_message(data)} == set(range(1, 8))


def test_unset_idle_timeout_is_absent_and_zero_is_present() -> None:
    assert fields_named(make_dp(idle_timeout_secs=None).to_bytes(), 7) == []
    assert fields_named(make_dp(idle_timeout_secs=0).to_bytes(), 7) == [0]


def hand_built(**skip: bool) -> bytes:
    parts = {
        "pid": field_varint(1, 77),
        "exe_path": field_bytes(2, "/usr/bin/backend"),
        "exe_sha256": field_bytes(3, bytes(32)),
        "ipc_endpoint": field_bytes(4, field_bytes(1, "shared") + field_bytes(2, "/run/b.sock")),
        "started_at_unix_ms": field_varint(5, 123),
        "boot_id": field_bytes(6, "boot"),
        "idle_timeout_secs": field_varint(7, 9),
    }
    return b"".join(v for k, v in parts.items() if not skip.get(k))


def test_from_bytes_reads_a_hand_built_message() -> None:
    dp = rp.DaemonProcess.from_bytes(hand_built())
    assert dp == rp.DaemonProcess(
        pid=77,
        exe_path="/usr/bin/backend",
        exe_sha256=bytes(32),
        boot_id="boot",
        ipc_endpoint=rp.Endpoint("shared", "/run/b.sock"),
        started_at_unix_ms=123,
        idle_timeout_secs=9,
    )


def test_from_bytes_ignores_unknown_fields() -> None:
    dp = make_dp()
    extra = field_varint(30, 1) + field_bytes(20, b"future") + field_varint(1000, 5)
    assert rp.DaemonProcess.from_bytes(dp.to_bytes() + extra) == dp


def test_from_bytes_missing_endpoint() -> None:
    with pytest.raises(rp.DecodeError) as info:
        rp.DaemonProcess.from_bytes(hand_built(ipc_endpoint=True))
    assert info.value.what == "DaemonProcess"
    assert "ipc_endpoint" in info.value.reason


@pytest.mark.parametrize(
    ("skip", "field"),
    [("pid", "pid"), ("exe_path", "exe_path"), ("exe_sha256", "exe_sha256"), ("boot_id", "boot_id")],
)
def test_from_bytes_missing_required_field(skip: str, field: str) -> None:
    with pytest.raises(rp.InvalidIdentityError) as info:
        rp.DaemonProcess.from_bytes(hand_built(**{skip: True}))
    assert info.value.field == field


@pytest.mark.parametrize("length", [31, 33])
def test_from_bytes_bad_hash_length(length: int) -> None:
    data = hand_built(exe_sha256=True) + field_bytes(3, bytes(length))
    with pytest.raises(rp.InvalidIdentityError) as info:
        rp.DaemonProcess.from_bytes(data)
    assert info.value.field == "exe_sha256"
    assert f"{length} bytes" in info.value.reason


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff\xff",
        b"\xff" * 11,
        b"\x0a\x05ab",  # length-delimited where pid (varint) belongs
        b"\x12\x10/usr",  # exe_path claims 16 bytes, has 4
        b"\x08",  # tag without value
        b"\x00\x01",  # field number 0
    ],
)
def test_from_bytes_refuses_garbage(data: bytes) -> None:
    with pytest.raises(rp.DecodeError) as info:
        rp.DaemonProcess.from_bytes(data)
    assert info.value.what == "DaemonProcess"
    assert info.value.reason


@pytest.mark.parametrize("idle", [None, 300])
def test_from_bytes_refuses_truncation_inside_a_field(idle: Any) -> None:
    data = make_dp(idle_timeout_secs=idle).to_bytes()
    with pytest.raises(rp.DecodeError):
        rp.DaemonProcess.from_bytes(data[:-1])


def test_every_prefix_is_refused_or_differs() -> None:
    dp = make_dp()
    data = dp.to_bytes()
    for end in range(len(data)):
        try:
            decoded = rp.DaemonProcess.from_bytes(data[:end])
        except rp.RunningProcessError as err:
            assert isinstance(err, ValueError), (end, err)
        else:
            assert decoded != dp, end


# --- JSON --------------------------------------------------------------------------


@pytest.mark.parametrize("idle", [None, 0, 300])
def test_json_round_trip(idle: Any) -> None:
    dp = make_dp(idle_timeout_secs=idle)
    text = dp.to_json()
    assert isinstance(text, str)
    assert rp.DaemonProcess.from_json(text) == dp


def test_json_shape() -> None:
    dp = make_dp(idle_timeout_secs=30)
    text = dp.to_json()
    assert json.loads(text) == {
        "pid": 4242,
        "exe_path": "/opt/zccache/1.11.20/zccache-backend",
        "exe_sha256": list(SHA),
        "boot_id": BOOT_ID,
        "ipc_endpoint": {"namespace_id": "private:zccache", "path": ENDPOINT_PATH},
        "started_at_unix_ms": 1_764_000_000_000,
        "idle_timeout_secs": 30,
    }
    # Compact: no insignificant whitespace.
    assert text == json.dumps(json.loads(text), separators=(",", ":"))


def test_json_without_idle_timeout() -> None:
    parsed = json.loads(make_dp(idle_timeout_secs=None).to_json())
    assert parsed.get("idle_timeout_secs") is None


def test_json_large_numbers_survive() -> None:
    dp = make_dp(started_at_unix_ms=2**64 - 1, idle_timeout_secs=2**32 - 1)
    assert json.loads(dp.to_json())["started_at_unix_ms"] == 2**64 - 1
    assert rp.DaemonProcess.from_json(dp.to_json()) == dp


def test_json_non_ascii_paths_survive() -> None:
    dp = make_dp(exe_path="/opt/ünïcödé/✓", ipc_endpoint=rp.Endpoint("shared", "/run/é.sock"))
    assert json.loads(dp.to_json())["exe_path"] == "/opt/ünïcödé/✓"
    assert rp.DaemonProcess.from_json(dp.to_json()) == dp


def sample_json(**changes: Any) -> str:
    obj: dict[str, Any] = json.loads(make_dp().to_json())
    for key, value in changes.items():
        if value is ...:
            del obj[key]
        else:
            obj[key] = value
    return json.dumps(obj)


def test_from_json_ignores_unknown_fields() -> None:
    text = sample_json(future_field={"x": [1, 2]}, another=5)
    assert rp.DaemonProcess.from_json(text) == make_dp()
    obj = json.loads(make_dp().to_json())
    obj["ipc_endpoint"]["extra"] = "ignored"
    assert rp.DaemonProcess.from_json(json.dumps(obj)) == make_dp()


def test_from_json_accepts_missing_idle_timeout() -> None:
    dp = rp.DaemonProcess.from_json(sample_json(idle_timeout_secs=...))
    assert dp.idle_timeout_secs is None


def test_from_json_accepts_upper_case_hex() -> None:
    dp = rp.DaemonProcess.from_json(sample_json(exe_sha256=SHA.hex().upper()))
    assert dp.exe_sha256 == SHA


@pytest.mark.parametrize(
    "field", ["pid", "exe_path", "exe_sha256", "boot_id", "ipc_endpoint", "started_at_unix_ms"]
)
def test_from_json_rejects_missing_required_fields(field: str) -> None:
    with pytest.raises(rp.DecodeError) as info:
        rp.DaemonProcess.from_json(sample_json(**{field: ...}))
    assert "DaemonProcess" in info.value.what
    assert field in info.value.reason


def test_from_json_rejects_missing_endpoint_path() -> None:
    obj = json.loads(make_dp().to_json())
    del obj["ipc_endpoint"]["path"]
    with pytest.raises(rp.DecodeError) as info:
        rp.DaemonProcess.from_json(json.dumps(obj))
    assert "path" in info.value.reason


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "not json",
        "[]",
        "null",
        "42",
        '"string"',
        '{"pid": "4242"}',
    ],
)
def test_from_json_rejects_bad_json(text: str) -> None:
    with pytest.raises(rp.DecodeError) as info:
        rp.DaemonProcess.from_json(text)
    assert "DaemonProcess" in info.value.what
    assert info.value.reason


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"pid": "4242"}, rp.DecodeError),
        ({"pid": -1}, rp.DecodeError),
        ({"pid": 2**32}, rp.DecodeError),
        ({"started_at_unix_ms": 2**64}, rp.DecodeError),
        ({"idle_timeout_secs": -1}, rp.DecodeError),
        ({"exe_sha256": 5}, rp.DecodeError),
    ],
)
def test_from_json_rejects_wrong_types(changes: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        rp.DaemonProcess.from_json(sample_json(**changes))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"pid": 0}, "pid"),
        ({"pid": 2**31}, "pid"),
        ({"exe_path": "relative"}, "exe_path"),
        ({"boot_id": ""}, "boot_id"),
        ({"exe_sha256": "zz" * 32}, "exe_sha256"),
        ({"exe_sha256": "ab" * 31}, "exe_sha256"),
        ({"exe_sha256": "ab" * 33}, "exe_sha256"),
        ({"exe_sha256": "abc"}, "exe_sha256"),
        ({"ipc_endpoint": {"namespace_id": "", "path": "/x"}}, "namespace_id"),
        ({"ipc_endpoint": {"namespace_id": "s", "path": "x"}}, "path"),
        ({"ipc_endpoint": {"namespace_id": "s", "path": "/" + "x" * 107}}, "path"),
    ],
)
def test_from_json_validates(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(rp.InvalidIdentityError) as info:
        rp.DaemonProcess.from_json(sample_json(**changes))
    assert info.value.field == field
