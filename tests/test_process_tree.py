"""Helpers a backend forks that leave its process group and session (a
setsid() child, a double-forked grandchild re-parented to init) go with the
backend: on shutdown(), kill(), a failed launch, a pool stop, and when the
backend ends by itself while its launcher lives."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

import running_process as rp
from support.launch import BackendDirs, Launches, key_for
from support.procfs import process_running
from support.waits import HANG_GUARD, poll_until

pytestmark = pytest.mark.slow


def helpers_of(record: Path) -> list[int]:
    """The two helper pids the backend's helpers recorded, once both have."""
    found: list[int] = []

    def both() -> bool:
        text = record.read_text() if record.exists() else ""
        found[:] = [int(pid) for pid in re.findall(r"^helper (\d+)$", text, re.M)]
        return len(found) == 2

    poll_until(both, what="the backend's two helpers to start")
    return found


def assert_all_gone(pids: list[int]) -> None:
    poll_until(
        lambda: not any(process_running(pid) for pid in pids),
        what=lambda: f"helpers {[p for p in pids if process_running(p)]} to end",
    )


@pytest.fixture
def record(dirs: BackendDirs, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the backends' helpers record their pids."""
    path = dirs.root / "helpers"
    monkeypatch.setenv("V1_BACKEND_HELPERS", str(path))
    return path


@pytest.mark.parametrize("how", ["shutdown", "kill"])
def test_helpers_outside_the_process_group_end_with_the_backend(
    dirs: BackendDirs, launches: Launches, record: Path, how: str
) -> None:
    sd = dirs.sd()
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    helpers = helpers_of(record)
    assert all(process_running(pid) for pid in helpers)
    if how == "shutdown":
        handle.shutdown()
    else:
        handle.kill()
    assert_all_gone(helpers)


def test_helpers_of_a_launch_that_fails_verification_end_with_it(
    dirs: BackendDirs, launches: Launches, record: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The helpers start before the backend answers the probe, which it
    answers wrongly: the launch fails, and nothing of it is left."""
    monkeypatch.setenv("V1_BACKEND_MODE", "wrong-nonce")
    sd = dirs.sd()
    with pytest.raises(rp.ProbeError):
        launches.launch(dirs.launcher(), key_for(sd), sd)
    assert_all_gone(helpers_of(record))


def test_helpers_end_when_a_pool_in_another_process_stops_the_backend(
    dirs: BackendDirs, record: Path
) -> None:
    state = dirs.root / "state"
    launching = rp.BackendPool(dirs.launcher(), state)
    sd = dirs.sd()
    launching.get_or_launch(key_for(sd), sd)
    helpers = helpers_of(record)
    # Another launcher (as another process would be) stops it: the backend
    # is not its child.
    other = rp.BackendPool(dirs.launcher(), state)
    assert other.stop(key_for(sd))
    assert_all_gone(helpers)
    launching.stop_all()


def test_helpers_end_when_the_backend_ends_by_itself(
    dirs: BackendDirs, launches: Launches, record: Path
) -> None:
    """Not ended by the launcher: the reaper of the launching process ends
    what it left behind."""
    sd = dirs.sd()
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    helpers = helpers_of(record)
    os.kill(handle.pid, signal.SIGTERM)
    assert handle.wait(timeout=HANG_GUARD) == -signal.SIGTERM
    assert_all_gone(helpers)
