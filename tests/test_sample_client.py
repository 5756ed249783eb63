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
