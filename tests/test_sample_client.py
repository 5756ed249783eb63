"""The sample build-tool client, run as a real program twice: the first run
launches the backend, the second adopts it."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources

import pytest

import running_process as rp
from support.launch import BackendDirs, install


def test_sample_client_launches_then_reuses(dirs: BackendDirs, monkeypatch: pytest.MonkeyPatch) -> None:
    # The client uses the default socket directory: keep it short.
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(dirs.root))
    source = resources.files("running_process.examples").joinpath("echo_backend.py").read_bytes()
    binary = install(dirs.version_dir / "echo", f"#!{sys.executable}\n".encode() + source)
    sd = dirs.sd(binary, service_name="echo")
    definition = sd.save(dirs.root / "defs")
    state = dirs.root / "state"
    env_dirs = ["--definition", definition, "--version", "1.0.0", "--state-dir", str(state)]
    run = [sys.executable, "-m", "running_process.examples.build_tool_client", *env_dirs]
    pool = rp.BackendPool(rp.CommandBackendLauncher.for_current_user(), state)
    try:
        first = subprocess.run([*run, "hello"], capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        assert first.stdout == "hello\n"
        (entry,) = pool.list()
        second = subprocess.run([*run, "again"], capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        assert second.stdout == "again\n"
        (same,) = pool.list()
        assert same.daemon.pid == entry.daemon.pid  # adopted, not relaunched
    finally:
        pool.stop_all()


def test_the_installed_example_backend_launches_as_it_is(
    dirs: BackendDirs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example echo backend is installed as an executable whose ``#!``
    names the installing interpreter: launched straight from the scripts
    directory, with that directory absent from PATH, it is verified and
    echoes."""
    import os
    import socket
    import sysconfig

    bindir = sysconfig.get_path("scripts")
    binary = os.path.join(bindir, "running-process-echo-backend")
    if not os.path.exists(binary):
        pytest.skip(f"the package's scripts are not installed in {bindir}")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(dirs.root))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    sd = rp.ServiceDefinition(
        service_name="echo", binary_path=binary, per_version_binary_dir=bindir, isolation=rp.Isolation.PRIVATE
    )
    sd.check_binary()
    key = rp.BackendKey.for_service(sd, "1.0.0")
    with rp.CommandBackendLauncher.for_current_user().launch(key, sd) as handle:
        assert handle.daemon.exe_path == os.path.realpath(binary)
        with handle.connect() as conn:
            conn.sendall(b"hello")
            conn.shutdown(socket.SHUT_WR)
            assert conn.recv(64) == b"hello"
