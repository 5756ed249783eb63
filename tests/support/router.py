"""Helpers for the registry and router tests (test_router.py,
test_registry.py): outcomes, launchers written in Python, routers that are
always cleaned up (the ``kit`` fixture of test_router.py), definitions and
threads released together.

Every backend is a real process on a real Unix socket, started through a
``CommandBackendLauncher`` (directly, or wrapped by a Python launcher).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, Union

import running_process as rp

from .launch import BackendDirs, Launches
from .leftovers import files_in
from .waits import HANG_GUARD

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


def sock_files(dirs: BackendDirs) -> list[str]:
    return [name for name in files_in(dirs.socket_dir) if name.endswith(".sock")]
