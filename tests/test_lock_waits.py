"""Waiting for a key's lock is bounded: a holder that is stopped (SIGSTOP,
Ctrl-Z) loses the key after a short grace instead of wedging it for every
other caller, a holder that keeps running past the limit gives a typed
``KeyBusyError`` naming it, and a holder resumed after losing the key
removes only its own lock file. The holders are real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import running_process as rp
from support.launch import BackendDirs
from support.pool import Kit
from support.procfs import process_running
from support.waits import HANG_GUARD

pytestmark = pytest.mark.hostile

HOLD = (
    "import fcntl, sys, time\n"
    "f = open(sys.argv[1], 'a')\n"
    "fcntl.flock(f, fcntl.LOCK_EX)\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
)


class Holder:
    """Another process holding a lock file exclusively until it is told
    to go (its stdin closes) or killed."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == "locked\n"

    def end(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(HANG_GUARD)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def kit(dirs: BackendDirs) -> Iterator[Kit]:
    # A short ready timeout keeps the lock's wait limit short.
    k = Kit(dirs, verify_timeout=0.5, ready_timeout=1.0)
    try:
        yield k
    finally:
        k.pool.stop_all(timeout=1.0)
        for handle in k.handles:
            handle.kill()


def lock_path(kit: Kit) -> Path:
    """The key's lock file path (learnt from a first launch, then cleared)."""
    kit.get()
    (path,) = kit.state_dir.glob("*.lock")
    assert kit.pool.stop(kit.key)
    return path


def test_a_stopped_holder_loses_the_key(kit: Kit) -> None:
    path = lock_path(kit)
    holder = Holder(path)
    try:
        os.kill(holder.proc.pid, signal.SIGSTOP)
        handle = kit.get()  # takes the key over after the grace
        assert process_running(handle.pid)
        handle.verify()
        # The resumed holder's lock file is gone from the path; a new one
        # is the key's now.
        assert path.exists()
        os.kill(holder.proc.pid, signal.SIGCONT)
        assert kit.pool.stop(kit.key)
    finally:
        holder.end()


def test_stop_is_not_wedged_by_a_stopped_holder(kit: Kit) -> None:
    kit.get()
    (path,) = kit.state_dir.glob("*.lock")
    holder = Holder(path)
    try:
        os.kill(holder.proc.pid, signal.SIGSTOP)
        assert kit.pool.stop(kit.key) is True
    finally:
        holder.end()


def test_a_running_holder_past_the_limit_is_a_typed_error_naming_it(kit: Kit) -> None:
    path = lock_path(kit)
    holder = Holder(path)
    try:
        with pytest.raises(rp.KeyBusyError) as info:
            kit.get()
        err = info.value
        assert err.holder_pid == holder.proc.pid
        assert err.holder_state in ("S", "R")
        assert err.path == str(path)
        assert err.waited > 0
        assert f"pid {holder.proc.pid}" in str(err)
        assert isinstance(err, rp.BackendLaunchError)
        assert kit.launcher.live_children() == []  # nothing was spawned
    finally:
        holder.end()
    kit.get().verify()  # released: the key works again


def test_a_dead_holder_never_wedges_the_key(kit: Kit) -> None:
    path = lock_path(kit)
    holder = Holder(path)
    holder.proc.kill()
    holder.end()
    kit.get().verify()
