"""Malformed input through the public decoders: ``DaemonProcess.from_bytes``
and ``from_json``, ``ServiceDefinition.from_bytes``, the ``.servicedef`` store
(``load``, ``load_file``) and ``running-process servicedef validate``.

Each case names the exact exception class and its attributes. Duplicated
protobuf fields follow protobuf (last value wins, repeated fields append, map
keys keep the last value, embedded messages merge); JSON refuses duplicated
keys. Unknown fields are ignored in both. The Rust side of the same rules,
with frames and probes, is ``tests/malformed.rs``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

import running_process as rp
from support.procfs import fd_targets
from support.values import make_dp, make_endpoint, make_sd
from support.wire import EGROUP, I32, I64, SGROUP, field_bytes, field_varint, tag, varint

# --- protobuf helpers ----------------------------------------------------------


def endpoint_bytes(namespace: bytes, path: bytes) -> bytes:
    return field_bytes(1, namespace) + field_bytes(2, path)


def dp_fields() -> list[bytes]:
    """The fields of ``make_dp()``, by hand, in field order."""
    dp = make_dp()
    return [
        field_varint(1, dp.pid),
        field_bytes(2, dp.exe_path),
        field_bytes(3, dp.exe_sha256),
        field_bytes(4, endpoint_bytes(dp.ipc_endpoint.namespace_id.encode(), dp.ipc_endpoint.path.encode())),
        field_varint(5, dp.started_at_unix_ms),
        field_bytes(6, dp.boot_id),
        field_varint(7, 300),
    ]


def dp_with(number: int, replacement: bytes) -> bytes:
    fields = dp_fields()
    fields[number - 1] = replacement
    return b"".join(fields)


def test_hand_built_identity_is_the_sample() -> None:
    assert rp.DaemonProcess.from_bytes(b"".join(dp_fields())) == make_dp()


# --- DaemonProcess.from_bytes ----------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (dp_with(1, tag(1, 0) + b"\xff" * 10 + b"\x01"), "invalid varint"),
        (b"".join(dp_fields()) + tag(1, 0) + b"\x80", "invalid varint"),
        (dp_with(1, field_bytes(1, b"\x01")), "invalid wire type"),
        (dp_with(2, field_varint(2, 1)), "invalid wire type"),
        (dp_with(4, tag(4, I32) + b"\0\0\0\0"), "invalid wire type"),
        (dp_with(2, field_bytes(2, b"/opt/\xff")), "not UTF-8"),
        (dp_with(6, field_bytes(6, b"\xed\xa0\x80")), "not UTF-8"),
        (dp_with(4, field_bytes(4, endpoint_bytes(b"shared", b"/run/\xc0\xaf.sock"))), "not UTF-8"),
        (dp_with(3, tag(3, 2) + varint(2**63)), "buffer underflow"),
        (b"".join(dp_fields()) + tag(0, 0), "invalid tag value: 0"),
        (b"".join(dp_fields()) + varint(1 << 3 | 6), "invalid wire type value: 6"),
        (b"".join(dp_fields()) + tag(20, EGROUP), "unexpected end group tag"),
        (b"".join(dp_fields()) + tag(20, SGROUP) * 101, "recursion limit reached"),
    ],
    ids=[
        "varint-overflow",
        "varint-cut-short",
        "pid-as-bytes",
        "path-as-varint",
        "endpoint-as-fixed32",
        "utf8-exe-path",
        "utf8-surrogate-boot-id",
        "utf8-overlong-endpoint-path",
        "length-2-pow-63",
        "field-number-0",
        "wire-type-6",
        "lone-end-group",
        "groups-101-deep",
    ],
)
def test_identity_wire_errors_are_decode_errors(data: bytes, reason: str) -> None:
    with pytest.raises(rp.DecodeError) as info:
        rp.DaemonProcess.from_bytes(data)
    assert info.value.what == "DaemonProcess"
    assert reason in info.value.reason


def test_identity_truncated_inside_every_field_is_a_decode_error() -> None:
    data = make_dp().to_bytes()
    boundaries = set()
    at = 0
    for field in dp_fields():
        at += len(field)
        boundaries.add(at)
    for cut in range(1, len(data)):
        if cut in boundaries:
            continue
        with pytest.raises(rp.DecodeError):
            rp.DaemonProcess.from_bytes(data[:cut])


def test_identity_duplicated_fields_take_the_last_value() -> None:
    data = field_varint(1, 1) + field_bytes(3, b"\0" * 31) + b"".join(dp_fields())
    assert rp.DaemonProcess.from_bytes(data) == make_dp()
    # The last value is validated like any other.
    with pytest.raises(rp.InvalidIdentityError) as info:
        rp.DaemonProcess.from_bytes(b"".join(dp_fields()) + field_varint(1, 0))
    assert info.value.field == "pid"
    assert info.value.value == "0"


def test_identity_endpoint_given_twice_is_merged() -> None:
    endpoint = make_endpoint()
    split = field_bytes(4, field_bytes(1, endpoint.namespace_id)) + field_bytes(
        4, field_bytes(2, endpoint.path)
    )
    assert rp.DaemonProcess.from_bytes(dp_with(4, split)) == make_dp()


def test_identity_pid_from_a_wider_varint_keeps_the_low_32_bits() -> None:
    assert rp.DaemonProcess.from_bytes(dp_with(1, field_varint(1, 2**32 + 4242))) == make_dp()


def test_identity_unknown_fields_are_ignored_inside_the_endpoint_too() -> None:
    endpoint = make_endpoint()
    inner = endpoint_bytes(endpoint.namespace_id.encode(), endpoint.path.encode()) + field_varint(3, 1)
    data = (
        dp_with(4, field_bytes(4, inner))
        + field_bytes(12, b"\xff not UTF-8, but unknown")
        + tag(10, I64)
        + b"\0" * 8
        + tag(11, SGROUP)
        + field_varint(1, 1)
        + tag(11, EGROUP)
    )
    assert rp.DaemonProcess.from_bytes(data) == make_dp()


# --- DaemonProcess.from_json -----------------------------------------------------


def dp_json() -> dict[str, Any]:
    value: dict[str, Any] = json.loads(make_dp().to_json())
    return value


def test_json_duplicated_keys_are_refused() -> None:
    text = make_dp().to_json()
    with pytest.raises(rp.DecodeError) as info:
        rp.DaemonProcess.from_json(text.replace("{", '{"pid":1,', 1))
    assert info.value.what == "DaemonProcess JSON"
    assert "duplicate field `pid`" in info.value.reason
    with pytest.raises(rp.DecodeError) as info:
        rp.DaemonProcess.from_json(text.replace('"namespace_id"', '"path":"/x","namespace_id"', 1))
    assert "duplicate field `path`" in info.value.reason


def test_json_arrays_in_field_order_are_refused() -> None:
    dp = make_dp()
    positional = json.dumps(
        [dp.pid, dp.exe_path, dp.exe_sha256_hex, dp.boot_id, dp_json()["ipc_endpoint"], 1, 300]
    )
    endpoint_array = dict(dp_json(), ipc_endpoint=[dp.ipc_endpoint.namespace_id, dp.ipc_endpoint.path])
    for text in (positional, json.dumps(endpoint_array)):
        with pytest.raises(rp.DecodeError) as info:
            rp.DaemonProcess.from_json(text)
        assert info.value.what == "DaemonProcess JSON"
        assert "must be JSON objects" in info.value.reason


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('"/\\ud800/x"', "unexpected end of hex escape"),
        ('"/\\udc00"', "lone leading surrogate in hex escape"),
        ('"/\\q"', "invalid escape"),
        ('"/\x01"', "control character"),
    ],
    ids=["high-surrogate-alone", "low-surrogate-alone", "bad-escape", "raw-control-character"],
)
def test_json_string_escapes_that_are_not_text(text: str, reason: str) -> None:
    document = make_dp().to_json().replace(json.dumps(make_dp().exe_path), text, 1)
    with pytest.raises(rp.DecodeError) as info:
        rp.DaemonProcess.from_json(document)
    assert reason in info.value.reason


def test_json_nested_10000_deep_is_refused_without_overflowing_the_stack() -> None:
    document = '{"later":' + "[" * 10_000 + "]" * 10_000 + "," + make_dp().to_json()[1:]
    with pytest.raises(rp.DecodeError) as info:
        rp.DaemonProcess.from_json(document)
    assert "recursion limit exceeded" in info.value.reason


@pytest.mark.parametrize("surrogate", ["\ud800", "\udfff", "\udcff"], ids=["high", "low", "surrogateescape"])
def test_json_python_string_that_is_not_utf8_is_a_decode_error(surrogate: str) -> None:
    # A str holding a lone surrogate has no UTF-8 form, so it is no JSON
    # text: the same typed error as any other undecodable document.
    document = make_dp().to_json().replace(make_dp().boot_id, surrogate, 1)
    with pytest.raises(rp.DecodeError) as info:
        rp.DaemonProcess.from_json(document)
    assert type(info.value) is rp.DecodeError
    assert not isinstance(info.value, UnicodeError)
    assert info.value.what == "DaemonProcess JSON"
    assert "surrogates not allowed" in info.value.reason
    # The document without the surrogate decodes.
    assert rp.DaemonProcess.from_json(make_dp().to_json()) == make_dp()


@pytest.mark.parametrize(
    ("change", "error", "field"),
    [
        ({"pid": 2**31}, rp.InvalidIdentityError, "pid"),
        ({"exe_sha256": "ab" * 31}, rp.InvalidIdentityError, "exe_sha256"),
        ({"exe_sha256": "zz" * 32}, rp.InvalidIdentityError, "exe_sha256"),
        ({"pid": 2**32}, rp.DecodeError, None),
        ({"pid": -1}, rp.DecodeError, None),
        ({"pid": 4242.5}, rp.DecodeError, None),
        ({"idle_timeout_secs": -5}, rp.DecodeError, None),
    ],
)
def test_json_values_out_of_range(
    change: dict[str, Any], error: type[rp.RunningProcessError], field: Any
) -> None:
    with pytest.raises(error) as info:
        rp.DaemonProcess.from_json(json.dumps(dict(dp_json(), **change)))
    if field is None:
        assert isinstance(info.value, rp.DecodeError)
        assert info.value.what == "DaemonProcess JSON"
    else:
        assert isinstance(info.value, rp.InvalidIdentityError)
        assert info.value.field == field


# --- ServiceDefinition.from_bytes ------------------------------------------------


def sd_fields() -> list[bytes]:
    """``make_sd()`` by hand, in field order."""
    return [
        field_bytes(1, "zccache"),
        field_bytes(2, "/opt/zccache/1.11.20/zccache-backend"),
        field_varint(3, 1),
        field_bytes(5, "/opt/zccache"),
        field_bytes(6, "1.10.0"),
        field_bytes(7, "1.11.20"),
        field_bytes(7, "1.12.0-rc.1"),
        field_bytes(8, field_bytes(1, "team") + field_bytes(2, "build")),
        field_bytes(8, field_bytes(1, "tier") + field_bytes(2, "dev tools")),
    ]


def test_hand_built_definition_is_the_sample() -> None:
    assert rp.ServiceDefinition.from_bytes(b"".join(sd_fields())) == make_sd()


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (field_varint(3, 2**64 - 1), "isolation -1 is not a BrokerIsolation value"),
        (field_varint(3, 3), "isolation 3 is not a BrokerIsolation value"),
        (field_bytes(3, b"\x01"), "invalid wire type"),
        (field_varint(1, 1), "invalid wire type"),
        (field_bytes(7, b"1.0.\xff"), "not UTF-8"),
        (field_bytes(8, field_bytes(1, b"te\xffam") + field_bytes(2, "x")), "not UTF-8"),
        (field_bytes(8, tag(1, 2) + varint(9) + b"team"), "buffer underflow"),
        (tag(3, 0) + b"\x80" * 10 + b"\x00", "invalid varint"),
    ],
    ids=[
        "isolation-minus-1",
        "isolation-3",
        "isolation-as-bytes",
        "name-as-varint",
        "utf8-allow-list",
        "utf8-label-key",
        "label-entry-cut-short",
        "varint-overflow",
    ],
)
def test_definition_wire_errors_are_decode_errors(extra: bytes, reason: str) -> None:
    with pytest.raises(rp.DecodeError) as info:
        rp.ServiceDefinition.from_bytes(b"".join(sd_fields()) + extra)
    assert info.value.what == "ServiceDefinition"
    assert reason in info.value.reason


def test_definition_duplicates_follow_protobuf() -> None:
    data = (
        field_bytes(1, "first")
        + b"".join(sd_fields())
        + field_bytes(7, "2.0.0")
        + field_bytes(8, field_bytes(1, "team") + field_bytes(2, "release"))
        + field_bytes(100, "unknown")
    )
    sd = rp.ServiceDefinition.from_bytes(data)
    assert sd.service_name == "zccache"
    assert sd.version_allow_list == ["1.11.20", "1.12.0-rc.1", "2.0.0"]
    assert sd.labels == {"team": "release", "tier": "dev tools"}


def test_definition_limits_apply_to_decoded_values() -> None:
    labels = b"".join(field_bytes(8, field_bytes(1, f"k{i}") + field_bytes(2, "v")) for i in range(64))
    with pytest.raises(rp.InvalidServiceDefinitionError) as info:
        rp.ServiceDefinition.from_bytes(b"".join(sd_fields()) + labels)
    assert info.value.field == "labels"
    with pytest.raises(rp.InvalidServiceDefinitionError) as info:
        rp.ServiceDefinition.from_bytes(b"".join(sd_fields()) + field_bytes(8, field_bytes(2, "no key")))
    assert info.value.field == "labels"


# --- the .servicedef store -------------------------------------------------------


def test_store_garbage_and_truncated_files(private_dir: Path) -> None:
    path = private_dir / "zccache.servicedef"
    before = fd_targets()
    for content in (b"\xff\xff\xff", make_sd().to_bytes()[:12]):
        path.write_bytes(content)
        with pytest.raises(rp.DecodeError) as info:
            rp.ServiceDefinition.load_file(path)
        assert info.value.what == "ServiceDefinition"
    assert fd_targets() == before
    assert sorted(os.listdir(private_dir)) == ["zccache.servicedef"]


def test_store_empty_file_is_a_definition_without_a_name(private_dir: Path) -> None:
    (private_dir / "zccache.servicedef").write_bytes(b"")
    with pytest.raises(rp.InvalidNameError) as info:
        rp.ServiceDefinition.load("zccache", private_dir)
    assert (info.value.kind, info.value.value) == ("service name", "")


def test_store_refuses_a_4_gib_file_before_reading(private_dir: Path) -> None:
    path = private_dir / "zccache.servicedef"
    with open(path, "wb") as handle:
        handle.truncate(4 << 30)  # sparse: no disk space used
    with pytest.raises(rp.DecodeError) as info:
        rp.ServiceDefinition.load("zccache", private_dir)
    assert str(4 << 30) in info.value.reason
    assert str(path) in info.value.what


def run_with_watchdog(call: Callable[[], object], unblock: Callable[[], None]) -> BaseException:
    """Runs ``call`` on a thread and returns what it raised; if it is still
    running after 30 s, ``unblock`` releases it and the test fails."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            raised.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(30)
    if thread.is_alive():
        unblock()
        thread.join(30)
        pytest.fail("the call blocked")
    assert len(raised) == 1, "the call did not raise"
    return raised[0]


def test_store_refuses_a_fifo_without_waiting_for_a_writer(private_dir: Path) -> None:
    path = private_dir / "zccache.servicedef"
    os.mkfifo(path, 0o600)
    before = fd_targets()

    def unblock() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)

    error = run_with_watchdog(lambda: rp.ServiceDefinition.load("zccache", private_dir), unblock)
    assert isinstance(error, rp.FilesystemError)
    assert error.operation == "open"  # refused once opened, before any read
    assert error.path == str(path)
    assert fd_targets() == before


def test_cli_validate_reports_a_malformed_file_in_one_line(private_dir: Path) -> None:
    path = private_dir / "zccache.servicedef"
    path.write_bytes(b"".join(sd_fields()) + tag(3, 0) + b"\xff" * 10 + b"\x01")
    result = subprocess.run(
        [sys.executable, "-m", "running_process", "servicedef", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("running-process: DecodeError: "), lines
    assert "invalid varint" in lines[0]
    assert "Traceback" not in result.stderr
