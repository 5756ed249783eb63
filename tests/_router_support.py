"""Helpers and fixtures for the registry and router tests (test_router.py,
test_registry.py).

Every backend is a real process on a real Unix socket, started through a
``CommandBackendLauncher`` (directly, or wrapped by a Python launcher). The
``kit`` fixture remembers every router and handle a test made and, in its
teardown, shuts the routers down and kills the handles; the ``launches``
fixture it builds on then kills any child process that is still left.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, Union

import pytest

import running_process as rp
from _launch_support import (
    HANG_GUARD,
    BackendDirs,
    Launches,
    Snapshot,
    children,
    files_in,
    poll_until,
)

T = TypeVar("T")

Outcome = Union[rp.Negotiated, rp.Refused]


# --- outcomes ------------------------------------------------------------------------


def negotiated(outcome: Outcome) -> rp.Negotiated:
    assert isinstance(outcome, rp.Negotiated), f"expected Negotiated, got {outcome!r}"
    return outcome


def refused(outcome: Outcome, code: rp.ErrorCode) -> rp.Refused:
    assert isinstance(outcome, rp.Refused), f"expected Refused({code.name}), got {outcome!r}"
    assert outcome.code == code, f"expected {code.name}, got {outcome!r}"
    return outcome


def code_of(outcome: Outcome) -> Optional[rp.ErrorCode]:
    """The refusal's code, None for a Negotiated."""
    return outcome.code if isinstance(outcome, rp.Refused) else None


# --- launchers written in Python ---------------------------------------------------------


class DelegatingLauncher(rp.BackendLauncher):
    """Counts its calls and hands them to a CommandBackendLauncher; every
    handle it returns is also given to ``launches`` for teardown."""

    def __init__(self, inner: rp.CommandBackendLauncher, launches: Launches) -> None:
        self.inner = inner
        self.launches = launches
        self.lock = threading.Lock()
        self.calls = 0
        self.traces: list[Optional[rp.TraceContext]] = []

    def launch(
        self,
        key: rp.BackendKey,
        service_definition: rp.ServiceDefinition,
        trace_context: Optional[rp.TraceContext] = None,
    ) -> rp.BackendHandle:
        with self.lock:
            self.calls += 1
            self.traces.append(trace_context)
        handle = self.inner.launch(key, service_definition, trace_context)
        with self.lock:
            self.launches.handles.append(handle)
        return handle


class FailingLauncher(rp.BackendLauncher):
    """Raises on every call, and counts the calls."""

    def __init__(self, message: str = "this launcher always fails") -> None:
        self.message = message
        self.lock = threading.Lock()
        self.calls = 0

    def launch(
        self,
        key: rp.BackendKey,
        service_definition: rp.ServiceDefinition,
        trace_context: Optional[rp.TraceContext] = None,
    ) -> rp.BackendHandle:
        with self.lock:
            self.calls += 1
        raise RuntimeError(self.message)


class ScriptedLauncher(DelegatingLauncher):
    """Fails or launches for real, call by call, as ``plan`` says (True:
    launch); fails once the plan is used up."""

    def __init__(self, inner: rp.CommandBackendLauncher, launches: Launches, plan: Iterable[bool]) -> None:
        super().__init__(inner, launches)
        self.plan = list(plan)

    def launch(
        self,
        key: rp.BackendKey,
        service_definition: rp.ServiceDefinition,
        trace_context: Optional[rp.TraceContext] = None,
    ) -> rp.BackendHandle:
        with self.lock:
            step = self.calls
            real = step < len(self.plan) and self.plan[step]
            if not real:
                self.calls += 1
        if not real:
            raise RuntimeError(f"scripted failure at call {step + 1}")
        return super().launch(key, service_definition, trace_context)


# --- routers and handles that are always cleaned up ---------------------------------------


@dataclass
class Kit:
    """Makes routers and remembers them (and any handle) for teardown."""

    launches: Launches
    routers: list[rp.HelloRouter] = field(default_factory=list)

    def router(self, launcher: Any, catalog: Any, **options: Any) -> rp.HelloRouter:
        router = rp.HelloRouter(launcher, catalog, **options)
        self.routers.append(router)
        return router

    def track(self, handle: rp.BackendHandle) -> rp.BackendHandle:
        self.launches.handles.append(handle)
        return handle

    def route(self, router: rp.HelloRouter, service: str, version: str, **kwargs: Any) -> Outcome:
        """``router.route``, remembering the handle of a Negotiated."""
        outcome = router.route(service, version, **kwargs)
        if isinstance(outcome, rp.Negotiated):
            self.track(outcome.handle)
        return outcome


@pytest.fixture
def kit(launches: Launches) -> Iterator[Kit]:
    """Shuts down every router's backends and kills every handle seen, then
    (through ``launches``) any child process left."""
    state = Kit(launches=launches)
    try:
        yield state
    finally:
        for router in state.routers:
            try:
                router.shutdown_all()
            except Exception:  # pragma: no cover - teardown must go on
                pass
        # ``launches`` kills the remembered handles and any other new child.


# --- definitions -----------------------------------------------------------------------------


def catalog_of(*sds: rp.ServiceDefinition) -> dict[str, rp.ServiceDefinition]:
    return {sd.service_name: sd for sd in sds}


def services(dirs: BackendDirs, *names: str) -> dict[str, rp.ServiceDefinition]:
    """Definitions of the same v1 backend under several service names."""
    return {name: dirs.sd(service_name=name) for name in names}


def spawn_counting_exit3(dirs: BackendDirs) -> tuple[Path, Path]:
    """A backend that appends a line to a counter file and exits with status
    3 at once; returns (binary, counter file)."""
    counter = dirs.root / "spawns"
    counter.write_bytes(b"")
    binary = dirs.version_dir / "exit3"
    binary.write_bytes(f"#!/bin/sh\necho spawned >> {counter}\nexit 3\n".encode())
    os.chmod(binary, 0o755)
    return binary, counter


def spawn_count(counter: Path) -> int:
    return counter.read_bytes().count(b"spawned\n")


# --- threads ---------------------------------------------------------------------------------


def concurrently(n: int, fn: Callable[[int], T]) -> list[T]:
    """Runs ``fn(0) .. fn(n-1)`` on ``n`` threads released together; their
    results in order. A hang becomes a failure after a generous guard."""
    barrier = threading.Barrier(n)

    def run(i: int) -> T:
        barrier.wait(timeout=HANG_GUARD)
        return fn(i)

    pool = ThreadPoolExecutor(max_workers=n)
    try:
        futures = [pool.submit(run, i) for i in range(n)]
        return [f.result(timeout=4 * HANG_GUARD) for f in futures]
    finally:
        pool.shutdown(wait=False)


def spin_until(condition: Callable[[], bool], timeout: float = HANG_GUARD, what: str = "condition") -> None:
    """Like ``poll_until`` without sleeping between checks (only yielding the
    CPU), for a condition whose first moment matters: a test that must act
    right after a backend's death shows through its pidfd."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        os.sched_yield()


# --- nothing left behind -----------------------------------------------------------------


def fds_but_pidfds() -> dict[int, str]:
    """This process's open descriptors and their targets, without pidfds: a
    ``BackendHandle`` keeps its backend's pidfd until the handle itself is
    dropped, and tests keep their handles to the end."""
    out: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target != "anon_inode:[pidfd]":
            out[int(name)] = target
    return out


def snapshot() -> Snapshot:
    """Child processes and open descriptors (pidfds not counted) now."""
    return Snapshot(children=children(), fds=len(fds_but_pidfds()))


def assert_clean(before: Snapshot, dirs: BackendDirs, kept_logs: Iterable[str] = ()) -> None:
    """Once every backend is gone: no new child process (running or zombie),
    no file in the socket directory, no log file but those of backends that
    were killed (a killed backend's log is kept for diagnosis), and as many
    open descriptors as before (pidfds aside, see :func:`fds_but_pidfds`;
    polled, so descriptors being closed by other threads can settle)."""
    new = {pid: state for pid, state in children().items() if pid not in before.children}
    assert new == {}, f"child processes left behind (pid: state): {new}"
    assert files_in(dirs.socket_dir) == [], f"files left in the socket directory: {files_in(dirs.socket_dir)}"
    allowed = sorted(os.path.basename(p) for p in kept_logs)
    logs = files_in(dirs.log_dir)
    assert [name for name in logs if name not in allowed] == [], f"log files left: {logs} (allowed {allowed})"
    poll_until(
        lambda: len(fds_but_pidfds()) == before.fds,
        timeout=10.0,
        what=lambda: f"open descriptors to settle ({before.fds} before, now {fds_but_pidfds()})",
    )


def sock_files(dirs: BackendDirs) -> list[str]:
    return [name for name in files_in(dirs.socket_dir) if name.endswith(".sock")]


__all__ = [
    "Kit",
    "DelegatingLauncher",
    "FailingLauncher",
    "ScriptedLauncher",
    "Outcome",
    "assert_clean",
    "catalog_of",
    "fds_but_pidfds",
    "code_of",
    "concurrently",
    "kit",
    "negotiated",
    "refused",
    "services",
    "snapshot",
    "sock_files",
    "spawn_count",
    "spawn_counting_exit3",
    "spin_until",
]
