"""Facts about this host and user: the per-user hash, the boot id, the socket
directory, and file hashing (spec sections 2 and 6)."""

from __future__ import annotations

import errno
import hashlib
import importlib
import importlib.util
import os
import re
from pathlib import Path

import pytest

import running_process as rp

CHUNK = 256 * 1024  # the core's read buffer size


def machine_id() -> str:
    for candidate in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            text = Path(candidate).read_text().strip()
        except OSError:
            continue
        if text:
            return text
    pytest.skip("this host has no machine id")


# --- user_sid_hash ----------------------------------------------------------------


def test_user_sid_hash_shape_and_stability() -> None:
    value = rp.user_sid_hash()
    assert re.fullmatch(r"[0-9a-f]{16}", value), value
    assert rp.user_sid_hash() == value
    # It is accepted wherever a per-user hash is expected.
    assert rp.shared_broker_socket_name(value) == f"rpb-v1-{value}-shared.sock"


def test_user_sid_hash_does_not_depend_on_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    before = rp.user_sid_hash()
    monkeypatch.setenv("HOME", "/nonexistent")
    monkeypatch.setenv("USER", "someone-else")
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    assert rp.user_sid_hash() == before


@pytest.mark.skipif(importlib.util.find_spec("blake3") is None, reason="blake3 package not installed")
def test_user_sid_hash_is_blake3_of_uid_and_machine_id() -> None:
    blake3 = importlib.import_module("blake3")
    text = f"{os.getuid()}:{machine_id()}"
    expected = blake3.blake3(text.encode()).digest()[:8].hex()
    assert rp.user_sid_hash() == expected


# --- boot_id --------------------------------------------------------------------


def test_boot_id_is_the_kernel_boot_id() -> None:
    expected = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    value = rp.boot_id()
    assert value == expected
    assert value == value.strip()
    assert "\n" not in value
    # A boot id is a valid DaemonProcess boot id.
    ep = rp.Endpoint("shared", "/run/x.sock")
    assert (
        rp.DaemonProcess(
            pid=1, exe_path="/x", exe_sha256=bytes(32), boot_id=value, ipc_endpoint=ep, started_at_unix_ms=0
        ).boot_id
        == value
    )


# --- socket_dir -------------------------------------------------------------------


def test_socket_dir_under_xdg_runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert rp.socket_dir() == str(tmp_path / "running-process" / "broker")
    # Not created by this call.
    assert not (tmp_path / "running-process").exists()


def test_socket_dir_follows_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1")
    assert rp.socket_dir() == "/run/user/1/running-process/broker"
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/2")
    assert rp.socket_dir() == "/run/user/2/running-process/broker"


@pytest.mark.parametrize("value", [None, "", "relative/run", "run", "./run"])
def test_socket_dir_fallback(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    else:
        monkeypatch.setenv("XDG_RUNTIME_DIR", value)
    assert rp.socket_dir() == f"/tmp/running-process-{os.getuid()}/broker"


# --- sha256_file ------------------------------------------------------------------


def pattern(size: int) -> bytes:
    """Deterministic, non-repeating-per-chunk content of ``size`` bytes."""
    block = hashlib.sha256(str(size).encode()).digest() * 8 + bytes(range(251))
    return (block * (size // len(block) + 1))[:size]


@pytest.mark.parametrize(
    "size",
    [0, 1, 55, 64, 1000, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 17, 3 * 1024 * 1024 + 7],
)
def test_sha256_file_matches_hashlib(tmp_path: Path, size: int) -> None:
    data = pattern(size)
    path = tmp_path / "blob"
    path.write_bytes(data)
    digest = rp.sha256_file(path)
    assert isinstance(digest, bytes)
    assert digest == hashlib.sha256(data).digest()
    assert rp.sha256_file(str(path)) == digest


def test_sha256_file_of_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.touch()
    assert rp.sha256_file(path).hex() == ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


def test_sha256_file_follows_symlinks(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"hello")
    link = tmp_path / "link"
    link.symlink_to(target)
    assert rp.sha256_file(link) == hashlib.sha256(b"hello").digest()


def test_sha256_file_missing(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(rp.FilesystemError) as info:
        rp.sha256_file(missing)
    err = info.value
    assert isinstance(err, OSError)
    assert isinstance(err, rp.RunningProcessError)
    assert err.errno == errno.ENOENT
    assert err.os_errno == errno.ENOENT
    assert err.path == str(missing)
    assert err.operation
    assert str(missing) in str(err)


def test_sha256_file_missing_is_caught_as_oserror(tmp_path: Path) -> None:
    try:
        rp.sha256_file(tmp_path / "missing")
    except OSError as err:
        assert err.errno == errno.ENOENT
    else:
        pytest.fail("no exception")


def test_sha256_file_of_a_directory(tmp_path: Path) -> None:
    with pytest.raises(rp.FilesystemError) as info:
        rp.sha256_file(tmp_path)
    assert info.value.errno == errno.EISDIR
    assert info.value.path == str(tmp_path)


def test_sha256_file_of_a_device() -> None:
    assert rp.sha256_file("/dev/null") == hashlib.sha256(b"").digest()
