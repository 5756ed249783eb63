"""A backend's log is bounded: a backend on the SDK rotates it to
``<log>.1`` once it passes the launcher's ``max_log_bytes``, so at most
about twice the bound stays on disk however much it writes; a clean stop
removes both files, and ``gc`` counts the rotated part as a log."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import running_process as rp
from support.launch import BACKENDS, BackendDirs, Launches, install, key_for, python_script
from support.waits import poll_until

pytestmark = pytest.mark.slow

BOUND = 64 * 1024
WRITTEN = 3 * 256 * 1024


def test_an_sdk_backend_keeps_its_log_within_the_bound(dirs: BackendDirs, launches: Launches) -> None:
    chatty = install(dirs.version_dir / "chatty", python_script(BACKENDS / "chatty_backend.py"))
    sd = dirs.sd(chatty)
    handle = launches.launch(dirs.launcher(max_log_bytes=BOUND), key_for(sd), sd)
    log = Path(handle.log_path)
    rotated = Path(f"{log}.1")
    poll_until(lambda: "done" in log.read_text(errors="replace").splitlines(), what="the backend to finish")
    assert rotated.exists()
    kept = log.stat().st_size + rotated.stat().st_size
    assert kept < WRITTEN
    assert log.stat().st_size < BOUND and rotated.stat().st_size < 2 * 256 * 1024
    assert oct(rotated.stat().st_mode & 0o777) == oct(0o600)
    env = dict(
        entry.split("=", 1)
        for entry in Path(f"/proc/{handle.pid}/environ").read_text().split("\0")
        if "=" in entry
    )
    assert env[rp.ENV_LOG_FILE] == str(log) and env[rp.ENV_LOG_MAX_BYTES] == str(BOUND)
    handle.shutdown()
    assert not log.exists() and not rotated.exists()


def test_no_bound_sets_no_variable(dirs: BackendDirs, launches: Launches) -> None:
    sd = dirs.sd()
    handle = launches.launch(dirs.launcher(max_log_bytes=None), key_for(sd), sd)
    environ = Path(f"/proc/{handle.pid}/environ").read_bytes()
    assert rp.ENV_LOG_FILE.encode() not in environ
    assert rp.DEFAULT_MAX_LOG_BYTES == 16 << 20


def test_gc_removes_a_rotated_log_left_behind(dirs: BackendDirs) -> None:
    pool = rp.BackendPool(dirs.launcher(), dirs.root / "state")
    dirs.log_dir.mkdir(mode=0o700, exist_ok=True)
    left = dirs.log_dir / ("v1echo-1.0.0-" + "cd" * 16 + ".log.1")
    left.write_text("old\n")
    old = 1_000_000_000
    os.utime(left, (old, old))
    report = pool.gc()
    assert str(left) in report["logs"]
    assert not left.exists()
