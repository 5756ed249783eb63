"""Helpers and fixtures for the launcher tests (test_launcher*.py).

Every backend these tests start is a real process listening on a real Unix
socket in a short private directory. Each test that launches asks for the
``launches`` fixture, which kills every handle it handed out (and, as a last
resort, any new child process of the test process) in its teardown, whatever
the test did.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import signal
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import pytest

import running_process as rp

V1_BACKEND = Path(__file__).parent / "backends" / "v1_backend.py"
SERVICE = "v1echo"
VERSION = "1.0.0"
W3C_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
W3C_TRACESTATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"

# Generous bounds that only exist to turn a hang into a failure.
HANG_GUARD = 30.0
READY_TIMEOUT = 30.0


def new_launcher(**kwargs: Any) -> rp.CommandBackendLauncher:
    """``CommandBackendLauncher.for_current_user(**kwargs)``."""
    return rp.CommandBackendLauncher.for_current_user(**kwargs)


# --- backend installation ----------------------------------------------------


def v1_script() -> bytes:
    """The v1 test backend with this interpreter in its ``#!`` line."""
    return f"#!{sys.executable}\n".encode() + V1_BACKEND.read_bytes()


def install(path: Path, content: bytes, mode: int = 0o755) -> Path:
    """Writes ``content`` to ``path`` and sets ``mode`` exactly (no umask)."""
    path.write_bytes(content)
    os.chmod(path, mode)
    return path


@dataclass
class BackendDirs:
    """A private tree: ``root`` (0700, short path) holding the per-version
    allow-list root ``version_dir`` (0755) with the v1 backend ``script``
    (0755) in it, and where the launcher's socket and log directories go
    (not created)."""

    root: Path
    version_dir: Path
    script: Path
    socket_dir: Path
    log_dir: Path

    def sd(self, binary: Optional[Union[Path, str]] = None, **overrides: Any) -> rp.ServiceDefinition:
        """A SHARED definition of the backend (``binary`` replaces the script)."""
        fields: dict[str, Any] = {
            "service_name": SERVICE,
            "binary_path": str(self.script if binary is None else binary),
            "per_version_binary_dir": str(self.version_dir),
            "isolation": rp.Isolation.SHARED,
        }
        fields.update(overrides)
        return rp.ServiceDefinition(**fields)

    def launcher(self, **kwargs: Any) -> rp.CommandBackendLauncher:
        """A launcher for the current user using this tree's directories."""
        options: dict[str, Any] = {
            "socket_dir": str(self.socket_dir),
            "log_dir": str(self.log_dir),
            "ready_timeout": READY_TIMEOUT,
        }
        options.update(kwargs)
        return new_launcher(**options)


@pytest.fixture
def dirs(short_dir: Path) -> BackendDirs:
    version_dir = short_dir / VERSION
    version_dir.mkdir()
    os.chmod(version_dir, 0o755)
    script = install(version_dir / "backend", v1_script())
    return BackendDirs(
        root=short_dir,
        version_dir=version_dir,
        script=script,
        socket_dir=short_dir / "s",
        log_dir=short_dir / "logs",
    )


def key_for(sd: rp.ServiceDefinition, version: str = VERSION) -> rp.BackendKey:
    return rp.BackendKey.for_service(sd, version)


# --- processes -----------------------------------------------------------------


def proc_stat(pid: int) -> Optional[tuple[str, int]]:
    """``(state, ppid)`` of ``pid`` from ``/proc/<pid>/stat``, or None once
    the process is gone (reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(b")") + 2 :].split()
    return rest[0].decode(), int(rest[1])


def children(parent: Optional[int] = None) -> dict[int, str]:
    """Child processes of ``parent`` (default: the test process): pid ->
    state letter (``Z``: zombie)."""
    me = os.getpid() if parent is None else parent
    found: dict[int, str] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        info = proc_stat(int(name))
        if info is not None and info[1] == me:
            found[int(name)] = info[0]
    return found


def process_running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    info = proc_stat(pid)
    return info is not None and info[0] != "Z"


def poll_until(
    condition: Callable[[], bool],
    timeout: float = HANG_GUARD,
    what: Union[str, Callable[[], str]] = "condition",
) -> None:
    """Polls ``condition`` until it holds; fails after ``timeout`` seconds
    (``what``, or what it returns at that moment, names what was awaited).

    The interval only paces the polling; correctness never depends on it.
    """
    deadline = time.monotonic() + timeout
    interval = 0.0005
    while not condition():
        if time.monotonic() > deadline:
            text = what if isinstance(what, str) else what()
            raise AssertionError(f"timed out after {timeout} s waiting for {text}")
        time.sleep(interval)
        interval = min(interval * 2, 0.02)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def fd_targets(pid: int) -> dict[int, str]:
    """The descriptors of ``pid`` and what they point at."""
    out: dict[int, str] = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except FileNotFoundError:
            pass
    return out


def environ_of(pid: int) -> list[tuple[str, str]]:
    """The environment a process was started with, in order, duplicates kept."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        raw = f.read()
    pairs: list[tuple[str, str]] = []
    for entry in raw.split(b"\0"):
        if entry:
            name, _, value = entry.decode("utf-8", "surrogateescape").partition("=")
            pairs.append((name, value))
    return pairs


def env_lines(log_path: str) -> list[str]:
    """The ``env NAME=value`` lines the v1 backend printed (prefix removed)."""
    with open(log_path, encoding="utf-8", errors="replace") as f:
        return [line[4:].rstrip("\n") for line in f if line.startswith("env ")]


# --- nothing left behind ---------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What the test process had before a launch."""

    children: dict[int, str]
    fds: int


def snapshot() -> Snapshot:
    return Snapshot(children=children(), fds=fd_count())


def files_in(path: Union[Path, str]) -> list[str]:
    """Names in ``path``; empty if it does not exist."""
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def assert_nothing_left_behind(before: Snapshot, dirs: BackendDirs) -> None:
    """After a failed launch: no new child process (running or zombie), no
    files in the socket or log directory, and as many open descriptors as
    before.

    The descriptor count is polled for a moment: the reaper thread of a killed
    backend closes the pidfd it shares just after recording the exit.
    """
    new = {pid: state for pid, state in children().items() if pid not in before.children}
    assert new == {}, f"child processes left behind (pid: state): {new}"
    zombies = {
        pid for pid, state in children().items() if state == "Z" and before.children.get(pid) != "Z"
    }
    assert zombies == set(), f"zombie children: {zombies}"
    assert files_in(dirs.socket_dir) == [], "files left in the socket directory"
    assert files_in(dirs.log_dir) == [], "files left in the log directory"
    try:
        poll_until(lambda: fd_count() == before.fds, timeout=5.0, what="descriptors to settle")
    except AssertionError:
        raise AssertionError(
            f"open descriptors: {before.fds} before, {fd_count()} after: "
            f"{ {int(n): _readlink(n) for n in os.listdir('/proc/self/fd')} }"
        ) from None


def _readlink(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


# --- launches that always get cleaned up --------------------------------------------


@dataclass
class Launches:
    """Launches backends and remembers every handle, for teardown."""

    handles: list[rp.BackendHandle] = field(default_factory=list)

    def launch(
        self,
        launcher: rp.CommandBackendLauncher,
        key: rp.BackendKey,
        sd: rp.ServiceDefinition,
        trace: Optional[rp.TraceContext] = None,
    ) -> rp.BackendHandle:
        handle = launcher.launch(key, sd, trace if trace is not None else rp.TraceContext.new_root())
        self.handles.append(handle)
        return handle


@pytest.fixture
def launches() -> Iterator[Launches]:
    """Kills every launched backend at teardown, then any child process the
    test left (a backend a buggy launch failed to clean up)."""
    before = set(children())
    state = Launches()
    try:
        yield state
    finally:
        try:
            for handle in state.handles:
                try:
                    handle.kill()
                except Exception:  # pragma: no cover - teardown must go on
                    pass
        finally:
            for pid in set(children()) - before:
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except OSError as e:  # reaped by the launcher meanwhile
                    assert e.errno in (errno.ESRCH, errno.ECHILD), e


def mode_of(path: Union[Path, str]) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def rust_example() -> Path:
    """The Rust example backend, built by cargo if this checkout has not yet."""
    binary = REPO / "target" / "debug" / "rp-echo-backend"
    if not binary.exists():
        subprocess.run(["cargo", "build", "--quiet", "--bin", "rp-echo-backend"], cwd=REPO, check=True)
    return binary


def echo(handle: rp.BackendHandle, payload: bytes) -> bytes:
    """Sends ``payload`` to an echo backend and returns all it sends back."""
    with handle.connect() as conn:
        conn.settimeout(HANG_GUARD)
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)
