"""The backend SDK through real launches: the example backends (Python and
Rust) are launched and verified, serve application connections untouched,
end on SIGTERM or when idle, and answer a v1 probe written independently of
the package."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

import running_process as rp
from _launch_support import (  # noqa: F401 (fixtures)
    BackendDirs,
    Launches,
    dirs,
    echo,
    install,
    key_for,
    launches,
    rust_example,
)
from _support import as_bytes, field_bytes, field_varint, parse_message

def python_example() -> bytes:
    source = resources.files("running_process.examples").joinpath("echo_backend.py").read_bytes()
    return f"#!{sys.executable}\n".encode() + source


def install_backend(dirs: BackendDirs, content: bytes, name: str = "echo") -> Path:
    return install(dirs.version_dir / name, content)


@pytest.mark.parametrize("kind", ["python", "rust"])
def test_example_backend_launches_verifies_and_echoes(
    kind: str, dirs: BackendDirs, launches: Launches, request: pytest.FixtureRequest
) -> None:
    if kind == "python":
        binary = install_backend(dirs, python_example())
    else:
        binary = install_backend(dirs, Path(request.getfixturevalue("rust_example")).read_bytes())
    sd = dirs.sd(binary)
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    assert handle.daemon.exe_path == str(binary)
    assert handle.daemon.exe_sha256 == hashlib.sha256(binary.read_bytes()).digest()
    # Bytes that start like a frame header but are no probe reach the
    # application untouched.
    payload = b"\x01\x05\x00\x00\x00hello, not a probe" * 100
    assert echo(handle, payload) == payload
    handle.verify()
    assert handle.shutdown(timeout=30.0) == 0  # SIGTERM handled gracefully
    assert not os.path.exists(handle.endpoint.path)


def test_idle_backend_ends_itself_and_removes_its_socket(dirs: BackendDirs, launches: Launches) -> None:
    sd = dirs.sd(install_backend(dirs, python_example()))
    handle = launches.launch(dirs.launcher(idle_timeout_secs=1), key_for(sd), sd)
    assert handle.wait(timeout=60.0) == 0
    assert not os.path.exists(handle.endpoint.path)


def test_open_connection_keeps_an_idle_backend_alive(dirs: BackendDirs, launches: Launches) -> None:
    sd = dirs.sd(install_backend(dirs, python_example()))
    handle = launches.launch(dirs.launcher(idle_timeout_secs=1), key_for(sd), sd)
    conn = handle.connect()
    conn.sendall(b"x")
    assert conn.recv(1) == b"x"  # the application holds this connection now
    # Well past the idle timeout, the open connection keeps it alive ...
    assert handle.wait(timeout=3.0) is None
    handle.verify()
    conn.close()
    # ... and once it closes, the backend goes idle and ends.
    assert handle.wait(timeout=60.0) == 0


def test_sdk_backend_answers_an_independent_v1_probe(dirs: BackendDirs, launches: Launches) -> None:
    sd = dirs.sd(install_backend(dirs, python_example()))
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    nonce = os.urandom(32)
    request_id = int.from_bytes(nonce[:8], "little")
    traceparent = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    body = (
        field_varint(1, 1)  # envelope_version (kind REQUEST = 0 is implicit)
        + field_varint(3, 0xB232)  # payload_protocol
        + field_bytes(4, nonce)
        + field_varint(5, request_id)
        + field_bytes(8, traceparent)
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(30)
        conn.connect(handle.endpoint.path)
        conn.sendall(b"\x01" + struct.pack("<I", len(body)) + body)
        header = conn.recv(5, socket.MSG_WAITALL)
        assert header[0] == 1
        (length,) = struct.unpack("<I", header[1:])
        response = dict(parse_message(conn.recv(length, socket.MSG_WAITALL)))
    assert response[1] == 1 and response[2] == 1 and response[3] == 0xB232
    assert response[5] == request_id
    assert response[8] == traceparent
    payload = as_bytes(response[4])
    assert payload[:32] == nonce
    identity = rp.DaemonProcess.from_bytes(payload[32:])
    assert identity.pid == handle.pid
    assert identity.exe_sha256 == handle.daemon.exe_sha256
    assert identity.ipc_endpoint == handle.endpoint
    assert identity.idle_timeout_secs == 30


def test_from_env_names_the_missing_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNING_PROCESS_BROKER_V1_")}
    code = (
        "import running_process as rp\n"
        "try:\n"
        "    rp.BackendServer.from_env()\n"
        "except rp.BackendServerError as e:\n"
        "    print(e.variable)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == rp.ENV_SERVICE_NAME
