"""Sample values shared by the tests: well-formed names, hashes, trace
contexts, service definitions and daemon identities (not this machine's),
and small file-system helpers."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Union

import pytest

import running_process as rp

# A well-formed per-user hash and endpoint token (not this machine's).
HASH = "0123456789abcdef"
TOKEN = "00112233445566778899aabbccddeeff"

# The example of the W3C Trace Context recommendation.
W3C_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
W3C_TRACESTATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"

BOOT_ID = "0d3c9a52-6c1e-4c2f-9a43-2f1d2a7b9e10"
ENDPOINT_PATH = (
    "/run/user/1000/running-process/broker/rpb-v1-0123456789abcdef-be-00112233445566778899aabbccddeeff.sock"
)
SHA = bytes(range(32))

# Length of every backend socket file name: rpb-v1-{16}-be-{32}.sock
BACKEND_NAME_LEN = rp.BACKEND_SOCKET_NAME_LEN

NOBODY_UID = 65534
# "Another user" of the hostile-environment tests (tests run as root in CI).
OTHER_UID = 4242

# Giving a directory to another user (os.chown) needs root.
requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def make_sd(**overrides: Any) -> rp.ServiceDefinition:
    """A valid service definition using every field; ``overrides`` replace fields."""
    fields: dict[str, Any] = {
        "service_name": "zccache",
        "binary_path": "/opt/zccache/1.11.20/zccache-backend",
        "per_version_binary_dir": "/opt/zccache",
        "isolation": rp.Isolation.SHARED,
        "explicit_instance": "",
        "min_version": "1.10.0",
        "version_allow_list": ["1.11.20", "1.12.0-rc.1"],
        "labels": {"team": "build", "tier": "dev tools"},
    }
    fields.update(overrides)
    return rp.ServiceDefinition(**fields)


def make_endpoint(**overrides: Any) -> rp.Endpoint:
    fields: dict[str, Any] = {"namespace_id": "private:zccache", "path": ENDPOINT_PATH}
    fields.update(overrides)
    return rp.Endpoint(**fields)


def make_dp(**overrides: Any) -> rp.DaemonProcess:
    """A valid daemon identity using every field; ``overrides`` replace fields."""
    fields: dict[str, Any] = {
        "pid": 4242,
        "exe_path": "/opt/zccache/1.11.20/zccache-backend",
        "exe_sha256": SHA,
        "boot_id": BOOT_ID,
        "ipc_endpoint": make_endpoint(),
        "started_at_unix_ms": 1_764_000_000_000,
        "idle_timeout_secs": 300,
    }
    fields.update(overrides)
    return rp.DaemonProcess(**fields)


def mode_of(path: Union[str, os.PathLike[str]]) -> int:
    """Permission bits of ``path`` (symlinks not followed)."""
    return stat.S_IMODE(os.lstat(path).st_mode)


def entries(path: Path) -> list[str]:
    """Sorted names in a directory."""
    return sorted(os.listdir(path))
