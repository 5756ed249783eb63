"""pytest fixtures for suites that launch running_process backends.

Registered through the ``pytest11`` entry point (``running_process``); load
it by hand with ``-p running_process.pytest_plugin`` where the entry point is
not installed.

Fixtures:

``rp_launcher``
    A :class:`CommandBackendLauncher` for the current user whose socket and
    log directories live in a short private directory (``/tmp/rpXXXXXXXX``,
    mode 0700), removed at teardown.
``rp_pool``
    A :class:`BackendPool` over ``rp_launcher`` with a private state
    directory; ``stop_all()`` at teardown.
``backend_factory``
    ``backend_factory(service_definition, version, *, trace_context=None,
    idle_timeout_secs=None, ready_timeout=None, managed=True)`` launches and
    verifies a backend and returns its :class:`BackendHandle`. Every handle
    is shut down at teardown (SIGTERM, then SIGKILL). A handle launched with
    ``managed=False`` is the test's to shut down: if it still runs at
    teardown the plugin kills it and the test errors in teardown, naming the
    service, pid and endpoint. The same holds for a backend the test
    launched directly with ``rp_launcher.launch(...)`` and left running.
``rp_shared_backend_factory``
    Session scoped: ``factory(service_definition, version, *,
    trace_context=None)`` returns the backend of that key through a
    :class:`BackendPool` shared by every pytest-xdist worker of the run, so
    all workers get one backend (one pid). Each worker counts itself in at
    session start and out at session end (a counter file under ``flock`` in
    the directory the workers share); the last one out stops the pool's
    backends and removes its directories. Without xdist the backends are
    stopped at the end of the session.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol

import pytest

from ._native import (
    BackendHandle,
    BackendKey,
    BackendPool,
    CommandBackendLauncher,
    ServiceDefinition,
    TraceContext,
)

__all__ = [
    "BackendFactory",
    "SharedBackendFactory",
    "backend_factory",
    "rp_launcher",
    "rp_pool",
    "rp_shared_backend_factory",
]

#: Seconds a backend gets to end after SIGTERM at teardown before SIGKILL.
SHUTDOWN_TIMEOUT = 10.0
#: Seconds a launch may take before it fails (a hang guard, not a pace).
READY_TIMEOUT = 30.0


class BackendFactory(Protocol):
    """The type of the ``backend_factory`` fixture."""

    def __call__(
        self,
        service_definition: ServiceDefinition,
        version: str,
        *,
        trace_context: Optional[TraceContext] = None,
        idle_timeout_secs: Optional[int] = None,
        ready_timeout: Optional[float] = None,
        managed: bool = True,
    ) -> BackendHandle: ...


class SharedBackendFactory(Protocol):
    """The type of the ``rp_shared_backend_factory`` fixture."""

    def __call__(
        self,
        service_definition: ServiceDefinition,
        version: str,
        *,
        trace_context: Optional[TraceContext] = None,
    ) -> BackendHandle: ...


# --- private directories ---------------------------------------------------------


def _short_private_dir() -> Path:
    """``/tmp/rpXXXXXXXX`` with mode 0700: short enough for socket paths."""
    path = Path(tempfile.mkdtemp(prefix="rp", dir="/tmp"))
    os.chmod(path, 0o700)
    return path


def _launcher_for(root: Path, **options: Any) -> CommandBackendLauncher:
    settings: dict[str, Any] = {
        "socket_dir": str(root / "s"),
        "log_dir": str(root / "logs"),
        "ready_timeout": READY_TIMEOUT,
    }
    settings.update(options)
    return CommandBackendLauncher.for_current_user(**settings)


def _describe(service: str, pid: int, endpoint: str) -> str:
    return f"service {service!r} pid {pid} endpoint {endpoint}"


def _leak_failure(leaks: list[str]) -> None:
    if leaks:
        pytest.fail(
            "running_process: the test leaked "
            f"{len(leaks)} backend(s), killed at teardown: " + "; ".join(leaks),
            pytrace=False,
        )


def _stop(handle: BackendHandle) -> None:
    """Shut down, then kill whatever still runs; never raises."""
    with contextlib.suppress(Exception):
        if handle.is_alive():
            handle.shutdown(timeout=SHUTDOWN_TIMEOUT)
    with contextlib.suppress(Exception):
        if handle.is_alive():
            handle.kill()


# --- function-scoped fixtures ----------------------------------------------------


@pytest.fixture
def _rp_root() -> Iterator[Path]:
    root = _short_private_dir()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def rp_launcher(_rp_root: Path) -> Iterator[CommandBackendLauncher]:
    """A launcher whose socket and log directories are private to the test.

    At teardown any backend launched from it that still runs (a direct
    ``rp_launcher.launch(...)`` the test did not shut down) is killed and
    the test errors, naming it.
    """
    launcher = _launcher_for(_rp_root)
    yield launcher
    killed = launcher.kill_children()
    _leak_failure(
        [_describe(key.service_name, daemon.pid, daemon.ipc_endpoint.path) for key, daemon in killed]
    )


@pytest.fixture
def rp_pool(rp_launcher: CommandBackendLauncher, _rp_root: Path) -> Iterator[BackendPool]:
    """A pool over ``rp_launcher`` with a private state directory;
    ``stop_all()`` at teardown."""
    pool = BackendPool(rp_launcher, state_dir=str(_rp_root / "state"))
    try:
        yield pool
    finally:
        pool.stop_all(timeout=SHUTDOWN_TIMEOUT)


@dataclass
class _Launched:
    handle: BackendHandle
    managed: bool


@dataclass
class _Factory:
    launcher: CommandBackendLauncher
    root: Path
    launched: list[_Launched] = field(default_factory=list)

    def __call__(
        self,
        service_definition: ServiceDefinition,
        version: str,
        *,
        trace_context: Optional[TraceContext] = None,
        idle_timeout_secs: Optional[int] = None,
        ready_timeout: Optional[float] = None,
        managed: bool = True,
    ) -> BackendHandle:
        launcher = self.launcher
        if idle_timeout_secs is not None or ready_timeout is not None:
            options: dict[str, Any] = {}
            if idle_timeout_secs is not None:
                options["idle_timeout_secs"] = idle_timeout_secs
            if ready_timeout is not None:
                options["ready_timeout"] = ready_timeout
            launcher = _launcher_for(self.root, **options)
        key = BackendKey.for_service(service_definition, version)
        trace = trace_context if trace_context is not None else TraceContext.new_root()
        handle = launcher.launch(key, service_definition, trace)
        self.launched.append(_Launched(handle, managed))
        return handle

    def teardown(self) -> list[str]:
        """Stops every handle; descriptions of unmanaged ones left running."""
        leaks: list[str] = []
        for item in self.launched:
            handle = item.handle
            if not item.managed and handle.is_alive():
                leaks.append(_describe(handle.service_name, handle.pid, handle.endpoint.path))
                with contextlib.suppress(Exception):
                    handle.kill()
            _stop(handle)
        return leaks


@pytest.fixture
def backend_factory(rp_launcher: CommandBackendLauncher, _rp_root: Path) -> Iterator[BackendFactory]:
    """``backend_factory(service_definition, version, *, trace_context=None,
    idle_timeout_secs=None, ready_timeout=None, managed=True)``: a verified
    handle, stopped at teardown. ``None`` options keep ``rp_launcher``'s."""
    factory = _Factory(rp_launcher, _rp_root)
    yield factory
    _leak_failure(factory.teardown())


# --- the session-shared backend (pytest-xdist) -------------------------------------

_STATE_FILE = "running-process-shared.json"


def _worker_id(config: pytest.Config) -> Optional[str]:
    workerinput: Optional[dict[str, Any]] = getattr(config, "workerinput", None)
    if workerinput is None:
        return None
    worker = workerinput.get("workerid")
    return str(worker) if worker is not None else None


def _shared_dir(config: pytest.Config) -> Optional[Path]:
    """The directory all xdist workers of the run share (the controller's
    basetemp: each worker's basetemp is ``<it>/<worker id>``), or None
    outside xdist."""
    if _worker_id(config) is None:
        return None
    basetemp = config.option.basetemp
    if not basetemp:  # pragma: no cover - xdist always sets it
        return None
    return Path(basetemp).parent


@contextlib.contextmanager
def _locked_state(shared: Path) -> Iterator[dict[str, Any]]:
    """The shared JSON state under an exclusive ``flock``; written back."""
    shared.mkdir(parents=True, exist_ok=True)
    fd = os.open(shared / (_STATE_FILE + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = shared / _STATE_FILE
        try:
            state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            state = {"workers": 0, "root": None}
        yield state
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        os.close(fd)  # releases the lock


def _stop_shared(root: Path) -> None:
    with contextlib.suppress(Exception):
        BackendPool(_launcher_for(root), state_dir=str(root / "state")).stop_all(timeout=SHUTDOWN_TIMEOUT)
    shutil.rmtree(root, ignore_errors=True)


def pytest_sessionstart(session: pytest.Session) -> None:
    shared = _shared_dir(session.config)
    if shared is not None:
        with _locked_state(shared) as state:
            state["workers"] = int(state["workers"]) + 1


def pytest_sessionfinish(session: pytest.Session) -> None:
    shared = _shared_dir(session.config)
    if shared is None:
        return
    root: Optional[str] = None
    with _locked_state(shared) as state:
        state["workers"] = int(state["workers"]) - 1
        if state["workers"] <= 0:
            # The last worker out, still under the lock: a late
            # get_or_launch cannot race the stop.
            root = state["root"]
            state["root"] = None
            if root is not None:
                _stop_shared(Path(root))


@dataclass
class _SharedFactory:
    config: pytest.Config
    pool: Optional[BackendPool] = None
    root: Optional[Path] = None

    def _get_pool(self) -> BackendPool:
        if self.pool is None:
            shared = _shared_dir(self.config)
            if shared is None:
                self.root = _short_private_dir()
                root = self.root
            else:
                with _locked_state(shared) as state:
                    if state["root"] is None:
                        state["root"] = str(_short_private_dir())
                    root = Path(state["root"])
            self.pool = BackendPool(_launcher_for(root), state_dir=str(root / "state"))
        return self.pool

    def __call__(
        self,
        service_definition: ServiceDefinition,
        version: str,
        *,
        trace_context: Optional[TraceContext] = None,
    ) -> BackendHandle:
        key = BackendKey.for_service(service_definition, version)
        trace = trace_context if trace_context is not None else TraceContext.new_root()
        return self._get_pool().get_or_launch(key, service_definition, trace)


@pytest.fixture(scope="session")
def rp_shared_backend_factory(pytestconfig: pytest.Config) -> Iterator[SharedBackendFactory]:
    """``factory(service_definition, version, *, trace_context=None)``: the
    one backend of that key for every xdist worker of the run, stopped when
    the last worker ends (at session end without xdist)."""
    factory = _SharedFactory(pytestconfig)
    yield factory
    if factory.root is not None:  # not under xdist: this process is the last
        _stop_shared(factory.root)
