"""Hardening of the launch path and the SDK: each test pins a failure mode
that once existed (a deadlock, a leftover process, a panic, an unsafe path)."""

from __future__ import annotations

import os
import socket
import sys
from importlib import resources
from pathlib import Path

import pytest

import running_process as rp
from support.launch import BackendDirs, Launches, install, key_for
from support.leftovers import snapshot
from support.waits import poll_until


def python_backend(body: str) -> bytes:
    return f"#!{sys.executable}\n{body}".encode()


def test_sigterm_is_graceful_while_python_threads_use_the_server_with_info_logging(
    dirs: BackendDirs, launches: Launches
) -> None:
    # A Rust log record needs the GIL; it must never be emitted while a lock
    # is held that a GIL-holding Python thread waits for.
    body = (
        "import logging, threading\n"
        "import running_process as rp\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "rp.refresh_logging()\n"
        "server = rp.BackendServer.from_env()\n"
        "def poll():\n"
        "    while server.shutdown_reason is None:\n"
        "        server.open_connections\n"
        "threading.Thread(target=poll, daemon=True).start()\n"
        "while server.accept() is not None:\n"
        "    pass\n"
    )
    sd = dirs.sd(install(dirs.version_dir / "busy", python_backend(body)))
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    assert handle.shutdown(timeout=60.0) == 0


def test_a_failed_launch_takes_the_backends_helpers_with_it(dirs: BackendDirs, launches: Launches) -> None:
    marker = f"rp-helper-{os.getpid()}-{id(dirs)}"
    script = f"#!/bin/sh\nexec -a {marker} sleep 777 &\necho started helper >&2\nexit 3\n"
    sd = dirs.sd(install(dirs.version_dir / "forks", script.encode()))
    with pytest.raises(rp.BackendExitedError) as caught:
        launches.launch(dirs.launcher(), key_for(sd), sd)
    assert caught.value.returncode == 3

    def helper_gone() -> bool:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read().split(b"\0")[0] == marker.encode():
                        return False
            except OSError:
                continue
        return True

    poll_until(helper_gone, timeout=30.0, what="the helper to be killed")


def test_zero_idle_timeout_is_refused_when_the_launcher_is_made() -> None:
    with pytest.raises(ValueError, match="idle_timeout_secs"):
        rp.CommandBackendLauncher.for_current_user(idle_timeout_secs=0)


def test_a_world_writable_directory_inside_the_root_is_refused(dirs: BackendDirs) -> None:
    inner = dirs.version_dir / "bin"
    inner.mkdir()
    os.chmod(inner, 0o777)
    binary = install(inner / "backend", dirs.script.read_bytes())
    sd = dirs.sd(binary)
    before = snapshot()
    with pytest.raises(rp.BinaryPolicyError) as caught:
        dirs.launcher().launch(key_for(sd), sd)
    assert caught.value.variant == "InsecurePermissions"
    assert caught.value.path == str(inner)
    assert snapshot().children == before.children


@pytest.mark.slow  # waits out a wall-clock delay
def test_extra_connection_closed_calls_cannot_break_the_server(dirs: BackendDirs, launches: Launches) -> None:
    body = (
        "import running_process as rp\n"
        "server = rp.BackendServer.from_env()\n"
        "for _ in range(3):\n"
        "    server.connection_closed()\n"
        "conn = server.accept()\n"
        "assert conn is not None\n"
        "conn.sendall(b'ok %d' % server.open_connections)\n"
        "conn.close()\n"
        "server.wait_for_shutdown()\n"
    )
    sd = dirs.sd(install(dirs.version_dir / "extra", python_backend(body)))
    handle = launches.launch(dirs.launcher(idle_timeout_secs=1), key_for(sd), sd)
    with handle.connect() as conn:
        assert conn.recv(16) == b"ok 1"
    # The idle timeout still works after the bogus calls.
    assert handle.wait(timeout=60.0) == 0


@pytest.mark.slow  # waits out a wall-clock delay
def test_accepted_connections_can_be_duplicated(dirs: BackendDirs, launches: Launches) -> None:
    body = (
        "import running_process as rp\n"
        "server = rp.BackendServer.from_env()\n"
        "conn = server.accept()\n"
        "assert conn is not None\n"
        "copy = conn.dup()\n"
        "conn.close()\n"
        "copy.sendall(b'from the copy')\n"
        "copy.close()\n"
        "server.wait_for_shutdown()\n"
    )
    sd = dirs.sd(install(dirs.version_dir / "dup", python_backend(body)))
    handle = launches.launch(dirs.launcher(idle_timeout_secs=1), key_for(sd), sd)
    with handle.connect() as conn:
        conn.settimeout(60)
        assert conn.recv(64) == b"from the copy"
    assert handle.wait(timeout=60.0) == 0


def test_the_example_backend_source_ships_with_the_package() -> None:
    source = resources.files("running_process.examples").joinpath("echo_backend.py").read_text()
    assert "BackendServer.from_env()" in source


def test_connect_to_a_backend_socket_path_is_a_unix_socket(dirs: BackendDirs, launches: Launches) -> None:
    sd = dirs.sd()
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    with handle.connect() as conn:
        assert conn.family == socket.AF_UNIX
    assert Path(handle.endpoint.path).is_socket()
