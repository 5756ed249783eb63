"""Helpers for the hostile-environment tests (test_hostile_env.py,
test_impostors.py, test_hostile_pool.py): another user's objects, and
impostor and bystander programs started by the test.

The independent prober is :func:`support.wire.probe`; the "nothing left
behind" checks (which allow for what the test itself planted) are in
:mod:`support.leftovers`.

Tests run as root in CI, so "another user" is uid/gid ``OTHER_UID`` given
with ``os.chown``; paths owned by us or root are trusted by the security
model.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Optional, TypeVar, Union

import pytest

import running_process as rp

from .launch import BACKENDS, BackendDirs, Launches, install, key_for, python_script
from .procfs import proc_stat
from .values import OTHER_UID
from .waits import HANG_GUARD

IMPOSTOR = BACKENDS / "impostor_v1.py"
BYSTANDER = BACKENDS / "hostile_bystander.py"


def give_away(path: Path) -> None:
    """Makes ``path`` (not followed if a symlink) another user's."""
    os.lchown(path, OTHER_UID, OTHER_UID)


def install_impostor_backend(dirs: BackendDirs, name: str = "victim") -> Path:
    """impostor_v1.py as a launchable script backend in the version root;
    ``HOSTILE_VICTIM`` in the launch environment picks its role."""
    return install(dirs.version_dir / name, python_script(IMPOSTOR))


# --- programs the test starts ------------------------------------------------------------


P = TypeVar("P", bound="Program")


class Program:
    """A helper program started by the test (its own child), always killed
    and reaped by ``stop()``."""

    def __init__(self, argv: list[str], *, new_session: bool = False) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=new_session,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def line(self, timeout: float = HANG_GUARD) -> str:
        """The next line of its output (fails if it ends or stays silent)."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"pid {self.pid} printed nothing within {timeout} s")
        text = self.proc.stdout.readline()
        if not text:
            self.proc.wait(timeout=HANG_GUARD)
            assert self.proc.stderr is not None
            raise AssertionError(
                f"pid {self.pid} ended with {self.proc.returncode}: {self.proc.stderr.read()}"
            )
        return text.rstrip("\n")

    def running(self) -> bool:
        """Alive, not a zombie, not stopped."""
        info = proc_stat(self.pid)
        return self.proc.poll() is None and info is not None and info[0] not in ("Z", "T", "t")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=HANG_GUARD)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self: P) -> P:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()


class Impostor(Program):
    """impostor_v1.py in one of its attacker modes (see its docstring)."""

    def __init__(self, mode: str, where: Union[Path, str], arg: Optional[str] = None) -> None:
        argv = [sys.executable, str(IMPOSTOR), mode, str(where)]
        if arg is not None:
            argv.append(arg)
        super().__init__(argv)

    def ready(self) -> tuple[int, str]:
        """Waits until it has acted; returns the victim's pid and the
        endpoint path."""
        word, pid, path = self.line().split(" ", 2)
        assert word == "ready", word
        return int(pid), path


class Bystander(Program):
    """hostile_bystander.py: an unrelated live process that reports every
    signal it receives."""

    def __init__(self) -> None:
        super().__init__([sys.executable, str(BYSTANDER)], new_session=True)
        assert self.line() == "ready"

    def signals(self) -> list[str]:
        """The signals received so far (complete up to this call)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("sync\n")
        self.proc.stdin.flush()
        seen = []
        while (text := self.line()) != "synced":
            seen.append(text)
        return seen

    def assert_untouched(self) -> None:
        """Never signalled: alive, not stopped, nothing caught."""
        assert self.running(), f"bystander {self.pid}: {proc_stat(self.pid)}"
        assert self.signals() == []


def same_identity(a: rp.DaemonProcess, b: rp.DaemonProcess) -> bool:
    """Equal on every field a launcher compares."""
    return (a.pid, a.exe_path, a.exe_sha256, a.boot_id, a.ipc_endpoint) == (
        b.pid,
        b.exe_path,
        b.exe_sha256,
        b.boot_id,
        b.ipc_endpoint,
    )


# --- failed launches ----------------------------------------------------------------------

E = TypeVar("E", bound=BaseException)


def launch_fails(
    dirs: BackendDirs,
    launches: Launches,
    expected: type[E],
    sd: rp.ServiceDefinition,
    key: Optional[rp.BackendKey] = None,
    **launcher_options: Any,
) -> E:
    """Launches with a launcher of its own and expects exactly ``expected``.

    The launcher (which may keep descriptors of its own, such as directory
    watches, for later launches) is gone when this returns, and the error
    carries no traceback, so descriptor counts afterwards see only what the
    failed launch itself left open.
    """
    launcher = dirs.launcher(**launcher_options)
    with pytest.raises(expected) as info:
        launches.launch(launcher, key if key is not None else key_for(sd), sd)
    err = info.value
    assert type(err) is expected, repr(err)
    err.__traceback__ = None
    del info, launcher
    return err


_T = TypeVar("_T")


def as_user(uid: int, action: Any, timeout: float = HANG_GUARD) -> Any:
    """Runs ``action()`` in a forked child that has dropped to ``uid`` (gid
    ``uid``, no supplementary groups), as another local user would, and
    returns what it returned; an exception in the child is raised here as
    ``AssertionError`` with its ``repr``. Needs root."""
    import pickle

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            outcome: tuple[str, Any] = ("ok", action())
        except BaseException as e:  # reported to the parent
            outcome = ("error", repr(e))
        try:
            os.write(write_end, pickle.dumps(outcome))
        finally:
            os._exit(0)
    os.close(write_end)
    data = b""
    try:
        while True:
            ready, _, _ = select.select([read_end], [], [], timeout)
            assert ready, f"the action as uid {uid} hung"
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    kind, value = pickle.loads(data)
    if kind == "error":
        raise AssertionError(f"as uid {uid}: {value}")
    return value
