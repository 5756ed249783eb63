"""A stateful model of the HelloRouter and the BackendPool, driven by
hypothesis through random interleavings of requests (valid and refused),
external SIGKILLs, clean exits (SIGTERM), stops, and evictions under the
router's cap on live backends, with real processes and sockets throughout.

After every step the model is checked against the processes themselves
(``/proc``) and against what the router and the pool report:

- at most one live backend per key, and every child process of the test is
  a backend the model knows and has not killed, stopped or evicted;
- a handle handed out verifies, and its identity is the live process's (pid,
  executable, digest, endpoint, the contract's environment);
- a killed backend is never handed out again;
- the router's registry and the pool's manifests name what the model
  expects, and their liveness agrees with ``/proc``;
- no zombie child, and no socket file of a backend once it has been reaped;
  no file in the socket directory or the pool's state directory that
  nobody accounts for.

Nothing depends on the wall clock: every backend ends because a step ended
it, and each step waits for the events it caused (a pidfd, the reaping seen
in ``/proc``) with a guard that only turns a hang into a failure. Backends
are launched with an idle timeout (the contract's environment carries it)
far longer than any run, so none idles out; a clean exit of a backend that
neither the router nor the pool ended, as an idle exit is, is a SIGTERM the
test sends: the backend shuts down gracefully (status 0, socket file
removed) on the same path as when it idles out. So the model knows the fate
of every backend at every step, and a backend that ends unasked is a
failure.
"""

from __future__ import annotations

import gc
import json
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

import running_process as rp
from support.launch import install_stripped
from support.leftovers import Holdings, files_in, settled_leaks
from support.procfs import environ_of, exe_of, proc_stat
from support.waits import poll_until

pytestmark = pytest.mark.soak

EC = rp.ErrorCode
# Passed to every backend and checked in its environment; long enough never
# to fire during a run (see the module docstring).
IDLE_TIMEOUT_SECS = 24 * 3600
LIVE_CAP = 2
# Only turns a hang into a failure.
GUARD = 30.0
VERSION_DIR = "1.0.0"

SETTINGS = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# --- the catalog ----------------------------------------------------------------------------

# Router services: plain, an allow-list, a floor.
ROUTER_POLICIES: dict[str, dict[str, object]] = {
    "ra": {},
    "rb": {"version_allow_list": ["1.0.0"]},
    "rc": {"min_version": "1.0.0"},
}
# (service, version, the refusal expected or None for a backend).
ROUTER_REQUESTS: list[tuple[str, str, Optional[rp.ErrorCode]]] = [
    ("ra", "1.0.0", None),
    ("ra", "2.0.0", None),
    ("rb", "1.0.0", None),
    ("rc", "1.0.0", None),
    ("rb", "2.0.0", EC.VERSION_BLOCKED),
    ("rc", "0.9.0", EC.VERSION_UNSUPPORTED),
    ("ra", "1.0", EC.VERSION_UNSUPPORTED),
    ("ra", "01.0.0", EC.VERSION_UNSUPPORTED),
    ("Ra", "1.0.0", EC.SERVICE_UNKNOWN),
    ("zz", "1.0.0", EC.SERVICE_UNKNOWN),
]

# Pool services (distinct from the router's, so "one live backend per key"
# holds across both): plain, and an allow-list.
POOL_POLICIES: dict[str, dict[str, object]] = {
    "pa": {},
    "pb": {"version_allow_list": ["1.0.0"]},
    # The definition of "pa" after its 1.0.0 was blocked.
    "pa-blocking": {"version_allow_list": ["9.9.9"]},
}
POOL_KEYS: list[tuple[str, str]] = [("pa", "1.0.0"), ("pa", "2.0.0"), ("pb", "1.0.0")]
# (key's service, key's version, definition, the error class expected).
POOL_REFUSALS: list[tuple[str, str, str, type[rp.RunningProcessError]]] = [
    ("pb", "2.0.0", "pb", rp.VersionRefusedError),
    # A recorded backend is not handed out once its version is refused...
    ("pa", "1.0.0", "pa-blocking", rp.VersionRefusedError),
    # ...nor for a definition of another service.
    ("pa", "1.0.0", "pb", rp.InvalidServiceDefinitionError),
]


@dataclass(frozen=True)
class Setup:
    """What every example shares: the backend binary, installed once."""

    root: Path
    version_dir: Path
    binary: Path
    digest: bytes

    def sd(self, policy_name: str, service_name: Optional[str] = None) -> rp.ServiceDefinition:
        policy = {**ROUTER_POLICIES, **POOL_POLICIES}[policy_name]
        return rp.ServiceDefinition(
            service_name=service_name or policy_name.split("-")[0],
            binary_path=str(self.binary),
            per_version_binary_dir=str(self.version_dir),
            isolation=rp.Isolation.SHARED,
            **policy,  # type: ignore[arg-type]
        )


def shared_key(service: str, version: str) -> rp.BackendKey:
    return rp.BackendKey(rp.BrokerInstanceKey.shared(), service, version)


def recv_exact(conn: socket.socket, n: int) -> bytes:
    """Up to ``n`` bytes: fewer only if the peer closed first."""
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


# --- the model -------------------------------------------------------------------------------


@dataclass
class Backend:
    """A backend the model has seen, by its endpoint (unique per launch)."""

    system: str  # "router" or "pool"
    key: str  # "service@version"
    pid: int
    endpoint: str
    log_path: str
    # The handle of the launch: the backend is our child, and this handle
    # knows its exit status.
    handle: rp.BackendHandle
    # How the model ended it: None (running), "killed" (SIGKILL), "exited"
    # (SIGTERM: a clean exit, as an idle exit is), "stopped" (by the router
    # or the pool), "evicted" (by the router's cap).
    fate: Optional[str] = None


class RouterPoolMachine(RuleBasedStateMachine):
    setup: Setup  # set by the test before running the machine
    counts: Counter[str]

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="e", dir=self.setup.root))
        os.chmod(self.dir, 0o700)
        self.socket_dir = self.dir / "s"
        self.log_dir = self.dir / "l"
        self.state_dir = self.dir / "st"
        self.me = os.getpid()
        self.launcher = rp.CommandBackendLauncher.for_current_user(
            idle_timeout_secs=IDLE_TIMEOUT_SECS,
            ready_timeout=GUARD,
            socket_dir=str(self.socket_dir),
            log_dir=str(self.log_dir),
        )
        catalog = {name: self.setup.sd(name) for name in ROUTER_POLICIES}
        self.router = rp.HelloRouter(self.launcher, catalog, max_live_backends=LIVE_CAP, shutdown_grace=GUARD)
        self.pool = rp.BackendPool(self.launcher, self.state_dir)
        self.backends: dict[str, Backend] = {}
        # The router's registry, least recently used first: key -> endpoint.
        self.registry: OrderedDict[str, str] = OrderedDict()
        self.launches = 0
        # The pool's manifests (key -> endpoint) and lock files (keys).
        self.manifests: dict[str, str] = {}
        self.locks: set[str] = set()
        # Lock files a refused pool request leaves behind (see
        # test_a_refused_pool_request_leaves_no_lock_file).
        self.refused_locks: set[str] = set()

    # --- helpers ---------------------------------------------------------------------------

    def running(self, b: Backend) -> bool:
        """Whether ``b``'s process runs (not a zombie, not reaped)."""
        state = proc_stat(b.pid)
        return state is not None and state[1] == self.me and state[0] != "Z"

    def reaped(self, b: Backend) -> bool:
        state = proc_stat(b.pid)
        return state is None or state[1] != self.me

    def live_backends(self) -> list[Backend]:
        """Backends the model has not ended and whose process runs."""
        return [b for b in self.backends.values() if b.fate is None and self.running(b)]

    def ended_unasked(self, b: Backend) -> None:
        """``b`` is gone though no step ended it: a failure, whatever its
        exit status."""
        raise AssertionError(
            f"{b.key} pid {b.pid} ended (status {b.handle.returncode}) though nothing ended it"
        )

    def check_handle(self, handle: rp.BackendHandle, b: Backend) -> None:
        """The handed-out handle is the live process: a request echoed, then
        verified, with the expected identity."""
        assert b.fate is None, f"a {b.fate} backend was handed out: {b.key} pid {b.pid}"
        assert handle.pid == b.pid and handle.endpoint.path == b.endpoint
        daemon = handle.daemon
        assert daemon.pid == b.pid
        assert daemon.exe_path == str(self.setup.binary)
        assert daemon.exe_sha256 == self.setup.digest
        assert daemon.idle_timeout_secs == IDLE_TIMEOUT_SECS
        payload = f"{b.key} {b.endpoint}".encode()
        with handle.connect() as conn:
            conn.settimeout(GUARD)
            conn.sendall(payload)
            assert recv_exact(conn, len(payload)) == payload, f"{b.key} pid {b.pid} did not echo"
            handle.verify(timeout=GUARD)
            assert exe_of(b.pid) == str(self.setup.binary)
            env = environ_of(b.pid)
            service, version = b.key.split("@")
            assert env[rp.ENV_SERVICE_NAME] == service
            assert env[rp.ENV_SERVICE_VERSION] == version
            assert env[rp.ENV_BACKEND_PIPE] == b.endpoint
            assert env[rp.ENV_IDLE_TIMEOUT_SECS] == str(IDLE_TIMEOUT_SECS)
            assert stat.S_ISSOCK(os.lstat(b.endpoint).st_mode)
            conn.shutdown(socket.SHUT_WR)
            assert conn.recv(1) == b""
        self.counts["handles verified"] += 1

    def new_or_same(self, system: str, key: str, prior: Optional[str], handle: rp.BackendHandle) -> Backend:
        """Records what a request handed out: the backend the model expected,
        or a new one, which is only right if the expected one is gone."""
        endpoint = handle.endpoint.path
        if prior is not None and endpoint == prior:
            b = self.backends[endpoint]
            assert b.fate is None, f"a {b.fate} backend was handed out again: {b.key} pid {b.pid}"
            return b
        assert endpoint not in self.backends, f"a {self.backends[endpoint].fate} backend was handed out again"
        if prior is not None:
            old = self.backends[prior]
            assert not self.running(old), f"{key}: a second backend while pid {old.pid} runs"
            if old.fate is None:
                self.ended_unasked(old)
            self.counts[f"{system}: {old.fate} backend replaced"] += 1
        state = proc_stat(handle.pid)
        assert state is not None and state[1] == self.me, "a new backend that is not our child"
        b = Backend(system, key, handle.pid, endpoint, handle.log_path, handle)
        self.backends[endpoint] = b
        return b

    @initialize(
        router_key=st.sampled_from([r[:2] for r in ROUTER_REQUESTS if r[2] is None]),
        pool_key=st.sampled_from(POOL_KEYS),
    )
    def start(self, router_key: tuple[str, str], pool_key: tuple[str, str]) -> None:
        """Every example starts with a router backend and a pool backend."""
        self.route((*router_key, None))
        self.pool_get_or_launch(*pool_key)

    # --- the router ------------------------------------------------------------------------

    def route_refused(self, service: str, version: str, refusal: rp.ErrorCode) -> None:
        """A request the router must refuse, with nothing spawned or changed."""
        children = set(Holdings.now().children)
        sockets = files_in(self.socket_dir)
        outcome = self.router.route(service, version, rp.TraceContext.new_root())
        assert isinstance(outcome, rp.Refused), outcome
        assert outcome.code == refusal, outcome
        assert outcome.retry_after_ms == 0
        assert self.router.launch_count == self.launches
        assert set(Holdings.now().children) <= children
        assert set(files_in(self.socket_dir)) <= set(sockets)
        self.counts["router refusals"] += 1

    @rule(
        request=st.one_of(
            st.sampled_from([r for r in ROUTER_REQUESTS if r[2] is None]),
            st.sampled_from([r for r in ROUTER_REQUESTS if r[2] is not None]),
        )
    )
    def route(self, request: tuple[str, str, Optional[rp.ErrorCode]]) -> None:
        """A request to the router, valid or not."""
        service, version, refusal = request
        if refusal is not None:
            self.route_refused(service, version, refusal)
            return
        was_running = {k: self.running(self.backends[e]) for k, e in self.registry.items()}
        outcome = self.router.route(service, version, rp.TraceContext.new_root())
        assert isinstance(outcome, rp.Negotiated), outcome
        key = f"{service}@{version}"
        assert outcome.daemon_version == version
        prior = self.registry.get(key)
        b = self.new_or_same("router", key, prior, outcome.handle)
        if b.endpoint != prior:
            self.launches += 1
            self.registry.pop(key, None)
            self.registry[key] = b.endpoint
            # Beyond the cap, the least recently used other backend goes.
            while len(self.registry) > LIVE_CAP:
                lru = next(k for k in self.registry if k != key)
                evicted = self.backends[self.registry.pop(lru)]
                # Shut down gracefully and reaped before the request returned.
                assert not self.running(evicted), f"evicted {lru} pid {evicted.pid} still runs"
                if evicted.fate is None:
                    if not was_running[lru]:
                        self.ended_unasked(evicted)
                    assert evicted.handle.returncode in (0, -signal.SIGTERM), evicted.handle.returncode
                    assert not os.path.lexists(evicted.log_path), "a cleanly evicted backend's log was kept"
                    evicted.fate = "evicted"
                    self.counts["evictions"] += 1
        else:
            self.registry.move_to_end(key)
            self.counts["router hits"] += 1
        assert self.router.launch_count == self.launches
        self.check_handle(outcome.handle, b)

    @rule(request=st.sampled_from([r for r in ROUTER_REQUESTS if r[2] is None]))
    def route_again(self, request: tuple[str, str, Optional[rp.ErrorCode]]) -> None:
        """A valid request to the router (a rule of its own, so that the
        router is asked often: hits and evictions need repeated requests)."""
        self.route(request)

    @rule(which=st.sampled_from(["router", "pool"]), now=st.integers(min_value=0, max_value=2))
    def stop_all(self, which: str, now: int) -> None:
        """``router.shutdown_all()`` or ``pool.stop_all()``, one time in three
        this rule is drawn, so that state builds up between them."""
        if now != 0:
            return
        if which == "pool":
            self.pool_stop_all()
        else:
            self.router_shutdown_all()

    def router_shutdown_all(self) -> None:
        live = {e for e in self.registry.values() if self.backends[e].fate is None}
        self.router.shutdown_all()
        for endpoint in live:
            b = self.backends[endpoint]
            # Gracefully, and reaped before shutdown_all returned.
            assert not self.running(b)
            assert b.handle.returncode in (0, -signal.SIGTERM), b.handle.returncode
            assert not os.path.lexists(b.log_path), "a cleanly stopped backend's log was kept"
            b.fate = "stopped"
        self.registry.clear()
        assert len(self.router.registry) == 0

    @rule()
    def prune_registry(self) -> None:
        dead = sorted(k for k, e in self.registry.items() if self.backends[e].fate is not None)
        pruned = sorted(str(k).split("/")[-1] for k in self.router.registry.prune_stale())
        assert pruned == dead, (pruned, dead)
        for key in pruned:
            self.registry.pop(key)

    # --- the pool --------------------------------------------------------------------------

    @rule(
        request=st.one_of(st.sampled_from(POOL_KEYS), st.sampled_from(POOL_REFUSALS)),
        look_only=st.booleans(),
    )
    def pool_request(
        self,
        request: Union[tuple[str, str], tuple[str, str, str, type[rp.RunningProcessError]]],
        look_only: bool,
    ) -> None:
        """``get_or_launch`` (or, with ``look_only``, ``get``) for a key, or a
        request the pool must refuse."""
        if len(request) == 4:
            self.pool_refused(*request)
            return
        service, version = request[:2]
        if look_only:
            self.pool_get(service, version)
            return
        self.pool_get_or_launch(service, version)

    def pool_get_or_launch(self, service: str, version: str) -> None:
        key = f"{service}@{version}"
        handle = self.pool.get_or_launch(shared_key(service, version), self.setup.sd(service))
        prior = self.manifests.get(key)
        b = self.new_or_same("pool", key, prior, handle)
        self.counts["pool hits" if b.endpoint == prior else "pool launches"] += 1
        self.manifests[key] = b.endpoint
        self.locks.add(key)
        self.check_handle(handle, b)

    def pool_refused(
        self, service: str, version: str, definition: str, error: type[rp.RunningProcessError]
    ) -> None:
        """A request the pool must refuse, with nothing spawned or recorded."""
        sd = self.setup.sd(definition, service_name=definition.split("-")[0])
        children = set(Holdings.now().children)
        sockets = files_in(self.socket_dir)
        logs = files_in(self.log_dir)
        manifests = sorted(name for name in files_in(self.state_dir) if name.endswith(".json"))
        with pytest.raises(error) as info:
            self.pool.get_or_launch(shared_key(service, version), sd)
        if isinstance(info.value, rp.VersionRefusedError):
            assert (info.value.service_name, info.value.version) == (service, version)
            assert info.value.rule == "version_allow_list"
        else:
            assert isinstance(info.value, rp.InvalidServiceDefinitionError)
            assert info.value.field == "service_name"
        assert set(Holdings.now().children) <= children
        assert set(files_in(self.socket_dir)) <= set(sockets)
        assert set(files_in(self.log_dir)) <= set(logs)
        assert sorted(name for name in files_in(self.state_dir) if name.endswith(".json")) == manifests
        key = f"{service}@{version}"
        if key not in self.locks:
            self.refused_locks.add(key)
        self.counts["pool refusals"] += 1

    def pool_get(self, service: str, version: str) -> None:
        """Verification only: the recorded backend if it runs, never a launch."""
        key = f"{service}@{version}"
        children = set(Holdings.now().children)
        handle = self.pool.get(shared_key(service, version))
        assert set(Holdings.now().children) <= children
        endpoint = self.manifests.get(key)
        if handle is None:
            if endpoint is not None:
                b = self.backends[endpoint]
                assert not self.running(b), f"pool.get({key}) missed running pid {b.pid}"
                if b.fate is None:
                    self.ended_unasked(b)
            return
        assert endpoint is not None, f"pool.get({key}) found a backend nobody recorded"
        b = self.backends[endpoint]
        assert handle.endpoint.path == endpoint and b.fate is None
        self.check_handle(handle, b)

    @rule(request=st.sampled_from(POOL_KEYS))
    def pool_stop(self, request: tuple[str, str]) -> None:
        service, version = request
        key = f"{service}@{version}"
        stopped = self.pool.stop(shared_key(service, version), timeout=GUARD)
        endpoint = self.manifests.pop(key, None)
        self.locks.discard(key)
        self.refused_locks.discard(key)
        if endpoint is None:
            assert stopped is False
            return
        b = self.backends[endpoint]
        if stopped:
            assert b.fate is None, f"pool.stop stopped a {b.fate} backend"
            b.fate = "stopped"
            poll_until(lambda: self.reaped(b), what=f"stopped pid {b.pid} to be reaped")
            assert b.handle.wait(timeout=GUARD) in (0, -signal.SIGTERM), b.handle.returncode
        else:
            assert not self.running(b)
            if b.fate is None:
                self.ended_unasked(b)

    def pool_stop_all(self) -> None:
        recorded = [self.backends[e] for e in self.manifests.values()]
        ours = [b for b in recorded if b.fate is None]
        stopped = self.pool.stop_all(timeout=GUARD)
        assert stopped == len(ours), (stopped, ours)
        for b in ours:
            poll_until(lambda: self.reaped(b), what=f"pid {b.pid} to be reaped")
            assert b.handle.wait(timeout=GUARD) in (0, -signal.SIGTERM)
            b.fate = "stopped"
        for b in recorded:
            assert not self.running(b)
        self.manifests.clear()
        self.locks.clear()
        # Lock files of refused requests have no manifest; stop_all does not
        # know them (see test_a_refused_pool_request_leaves_no_lock_file).

    # --- faults ----------------------------------------------------------------------------

    def pick_live(self, index: int) -> Optional[Backend]:
        """The ``index``-th live backend (modulo), in an order that does not
        depend on random endpoints; None if none runs. Never a precondition
        or a strategy: hypothesis requires data generation to depend on the
        steps alone."""
        live = sorted(self.live_backends(), key=lambda b: (b.system, b.key, b.pid))
        return live[index % len(live)] if live else None

    def signal_and_wait(self, b: Backend, sig: signal.Signals) -> None:
        """Sends ``sig`` from outside through a pidfd opened while the
        process is provably the backend, and waits for the exit the pidfd
        reports, then for the launcher's reaper thread to reap it (nothing
        here touches the handle)."""
        pidfd = os.pidfd_open(b.pid)
        try:
            # With the pidfd open, the pid names one process: ours, as it
            # has our endpoint.
            assert environ_of(b.pid).get(rp.ENV_BACKEND_PIPE) == b.endpoint, f"pid {b.pid} is not {b.key}"
            signal.pidfd_send_signal(pidfd, sig)
            assert select.select([pidfd], [], [], GUARD)[0] == [pidfd], (
                f"pid {b.pid} still runs after {sig.name}"
            )
        finally:
            os.close(pidfd)
        poll_until(lambda: self.reaped(b), timeout=GUARD, what=f"pid {b.pid} to be reaped after {sig.name}")

    @rule(index=st.integers(min_value=0, max_value=15))
    def sigkill(self, index: int) -> None:
        """SIGKILL from outside (as the OOM killer would)."""
        b = self.pick_live(index)
        if b is None:
            return
        self.signal_and_wait(b, signal.SIGKILL)
        b.fate = "killed"
        self.counts["sigkills"] += 1

    @rule(index=st.integers(min_value=0, max_value=15))
    def clean_exit(self, index: int) -> None:
        """A backend ends by itself, cleanly, behind the router's and the
        pool's backs, as it does when it idles out: here on a SIGTERM the
        test sends, so that when it happens is a step, not a moment."""
        b = self.pick_live(index)
        if b is None:
            return
        self.signal_and_wait(b, signal.SIGTERM)
        assert b.handle.wait(timeout=GUARD) == 0, f"{b.key} pid {b.pid} ended with {b.handle.returncode}"
        b.fate = "exited"
        self.counts["clean exits"] += 1

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def processes_agree_with_the_model(self) -> None:
        # Zombies are reaped at once by the launcher's reaper threads.
        poll_until(lambda: Holdings.now().zombies() == [], timeout=GUARD, what="zombies to be reaped")
        by_endpoint = {}
        per_key: dict[str, list[int]] = {}
        for pid, state in Holdings.now().children.items():
            env = environ_of(pid)
            if not env:  # gone meanwhile, or a zombie
                continue
            endpoint = env.get(rp.ENV_BACKEND_PIPE)
            assert endpoint in self.backends, f"child {pid} ({exe_of(pid)}) is no backend the model knows"
            b = self.backends[endpoint]
            assert b.pid == pid
            if state != "Z" and self.running(b):
                assert b.fate is None, f"a {b.fate} backend still runs: {b.key} pid {pid}"
                by_endpoint[endpoint] = b
                per_key.setdefault(b.key, []).append(pid)
        doubles = {key: pids for key, pids in per_key.items() if len(pids) > 1}
        assert doubles == {}, f"more than one live backend for a key: {doubles}"

    @invariant()
    def router_view_agrees(self) -> None:
        items = {str(k).split("/")[-1]: h for k, h in self.router.registry.items()}
        assert {k: h.endpoint.path for k, h in items.items()} == dict(self.registry)
        for key, handle in items.items():
            b = self.backends[handle.endpoint.path]
            # Death is final: running before and after the pidfd's answer
            # pins it; not running before means it cannot say alive.
            before = self.running(b)
            alive = handle.is_alive()
            after = self.running(b)
            assert not (before and after) or alive, f"{key}: pidfd says dead, /proc says running"
            assert before or not alive, f"{key}: pidfd says alive, /proc says gone"

    @invariant()
    def pool_view_agrees(self) -> None:
        def listed() -> dict[str, rp.PoolEntry]:
            return {f"{e.key.service_name}@{e.key.service_version}": e for e in self.pool.list()}

        recorded = {k: self.backends[e] for k, e in self.manifests.items()}
        before = {k: self.running(b) for k, b in recorded.items()}
        entries = listed()
        after = {k: self.running(b) for k, b in recorded.items()}
        assert {k: e.daemon.ipc_endpoint.path for k, e in entries.items()} == self.manifests
        for key, entry in entries.items():
            assert entry.daemon.pid == recorded[key].pid
            # Death is final: running before and after the pool's look pins
            # its answer; not running before means it cannot say alive.
            assert not (before[key] and after[key]) or entry.alive, f"pool: {key} dead, /proc: running"
            if entry.alive and not before[key]:
                # The one disagreement allowed: ``alive`` checks the bare pid,
                # which another process may have taken since (see
                # test_pool_list_reports_a_recycled_pid_as_alive).
                now = proc_stat(entry.daemon.pid)
                assert now is not None and now[1] != self.me, (
                    f"pool: {key} alive, /proc: {now} {exe_of(entry.daemon.pid)}"
                )
                self.counts["pool.list: a recycled pid reported alive"] += 1
        found: dict[str, set[str]] = {}
        for name in files_in(self.state_dir):
            stem, _, suffix = name.rpartition(".")
            service, _, version = stem.rsplit("-", 1)[0].partition("-")
            found.setdefault(suffix, set()).add(f"{service}@{version}")
        assert found.get("json", set()) == set(self.manifests), found
        locks = found.get("lock", set())
        assert self.locks <= locks <= self.locks | self.refused_locks, (locks, self.locks)
        assert set(found) <= {"json", "lock"}, found

    @invariant()
    def no_socket_file_outlives_its_backend(self) -> None:
        for name in files_in(self.socket_dir):
            path = str(self.socket_dir / name)
            assert path in self.backends, f"a socket file nobody accounts for: {name}"
        for b in self.backends.values():
            if self.reaped(b):
                # Removed by the reaper thread right after the reap.
                poll_until(
                    lambda: not os.path.lexists(b.endpoint),
                    timeout=GUARD,
                    what=f"the socket file of reaped backend {b.key} pid {b.pid} ({b.fate or 'ended'}) to go",
                )

    # --- teardown -------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            self.router.shutdown_all()
            self.pool.stop_all(timeout=GUARD)
            still = [b for b in self.backends.values() if self.running(b)]
            assert still == [], f"backends still running after shutdown_all and stop_all: {still}"
            for b in self.backends.values():
                poll_until(lambda: self.reaped(b), what=f"pid {b.pid} to be reaped")
            poll_until(
                lambda: files_in(self.socket_dir) == [],
                timeout=GUARD,
                what=lambda: f"the socket directory to be empty: {files_in(self.socket_dir)}",
            )
            # Only the lock files of refused requests stay (see
            # test_a_refused_pool_request_leaves_no_lock_file).
            refused = {f"{k.replace('@', '-')}-" for k in self.refused_locks}
            state = [
                n
                for n in files_in(self.state_dir)
                if not (n.endswith(".lock") and n[: n.rindex("-") + 1] in refused)
            ]
            assert state == [], f"left in the state directory after stop_all: {state}"
            # Logs are kept only for backends that did not end cleanly on
            # request; none is left by a refused request.
            tokens = {b.endpoint.rsplit("-be-", 1)[1].removesuffix(".sock") for b in self.backends.values()}
            strays = [
                n for n in files_in(self.log_dir) if n.rsplit("-", 1)[1].removesuffix(".log") not in tokens
            ]
            assert strays == [], f"log files of no backend: {strays}"
        finally:
            for b in self.backends.values():
                if b.handle.is_alive():
                    b.handle.kill()
            self.backends.clear()
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def setup(rust_example: Path) -> Iterator[Setup]:
    root = Path(tempfile.mkdtemp(prefix="rp", dir="/tmp"))
    os.chmod(root, 0o700)
    try:
        version_dir = root / VERSION_DIR
        version_dir.mkdir()
        os.chmod(version_dir, 0o755)
        binary = install_stripped(rust_example, version_dir / "rp-echo")
        yield Setup(root=root, version_dir=version_dir, binary=binary, digest=rp.sha256_file(binary))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_router_and_pool_state_machine(setup: Setup) -> None:
    counts: Counter[str] = Counter()

    class Machine(RouterPoolMachine):
        pass

    Machine.setup = setup
    Machine.counts = counts
    gc.collect()
    before = Holdings.now()
    run_state_machine_as_test(Machine, settings=SETTINGS)
    gc.collect()
    leaks = settled_leaks(before, check_threads=True)
    print("state machine: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    assert leaks == {}, f"the test process leaked: {leaks}"
    # The model was exercised: every kind of event happened.
    for event in (
        "router hits",
        "evictions",
        "sigkills",
        "clean exits",
        "pool hits",
        "pool launches",
        "router: exited backend replaced",
        "pool: exited backend replaced",
    ):
        assert counts[event] > 0, f"no {event} in any example: {dict(counts)}"


# --- what the model found, one case each ------------------------------------------------------


@dataclass
class PoolKit:
    launcher: rp.CommandBackendLauncher
    pool: rp.BackendPool
    socket_dir: Path
    state_dir: Path


@pytest.fixture
def pool_kit(setup: Setup) -> Iterator[PoolKit]:
    """A launcher (no idle timeout) and a pool in a fresh directory; every
    backend of the pool stopped at the end."""
    root = Path(tempfile.mkdtemp(prefix="k", dir=setup.root))
    os.chmod(root, 0o700)
    launcher = rp.CommandBackendLauncher.for_current_user(
        idle_timeout_secs=None, ready_timeout=GUARD, socket_dir=str(root / "s"), log_dir=str(root / "l")
    )
    kit = PoolKit(launcher, rp.BackendPool(launcher, root / "st"), root / "s", root / "st")
    try:
        yield kit
    finally:
        kit.pool.stop_all(timeout=GUARD)
        shutil.rmtree(root, ignore_errors=True)


def test_socket_file_of_a_sigkilled_backend_goes_when_it_is_reaped(setup: Setup, pool_kit: PoolKit) -> None:
    """Nobody touches the handle after the SIGKILL: the reaping alone must
    take the socket file the killed backend could not remove itself."""
    sd = setup.sd("ra")
    me = os.getpid()
    handle = pool_kit.launcher.launch(shared_key("ra", "1.0.0"), sd)
    pid, endpoint = handle.pid, handle.endpoint.path
    try:
        assert stat.S_ISSOCK(os.lstat(endpoint).st_mode)
        os.kill(pid, signal.SIGKILL)  # our unreaped child: the pid cannot be anyone else's
        poll_until(lambda: (proc_stat(pid) or ("", 0))[1] != me, what=f"pid {pid} to be reaped")
        poll_until(lambda: not os.path.lexists(endpoint), timeout=10.0, what="the socket file to go")
        assert files_in(pool_kit.socket_dir) == []
        assert handle.returncode == -signal.SIGKILL
    finally:
        handle.kill()


def test_pool_hands_out_no_recorded_backend_its_definition_now_refuses(
    setup: Setup, pool_kit: PoolKit
) -> None:
    """A recorded backend is handed out only to a request the definition
    admits: a version blocked since, or a definition of another service, is
    refused as a launch would refuse it, and the backend is left alone."""
    key = shared_key("pa", "1.0.0")
    handle = pool_kit.pool.get_or_launch(key, setup.sd("pa"))
    children = set(Holdings.now().children)
    sockets = files_in(pool_kit.socket_dir)
    with pytest.raises(rp.VersionRefusedError) as blocked:
        pool_kit.pool.get_or_launch(key, setup.sd("pa-blocking"))
    assert (blocked.value.service_name, blocked.value.version) == ("pa", "1.0.0")
    assert blocked.value.rule == "version_allow_list"
    with pytest.raises(rp.InvalidServiceDefinitionError) as other:
        pool_kit.pool.get_or_launch(key, setup.sd("pb"))
    assert other.value.field == "service_name" and other.value.value == "pb"
    assert set(Holdings.now().children) == children
    assert files_in(pool_kit.socket_dir) == sockets
    # Untouched: still running, still recorded, still handed out as before.
    assert handle.is_alive()
    assert pool_kit.pool.get_or_launch(key, setup.sd("pa")).endpoint == handle.endpoint


def test_a_refused_pool_request_leaves_no_lock_file(setup: Setup, pool_kit: PoolKit) -> None:
    with pytest.raises(rp.VersionRefusedError):
        pool_kit.pool.get_or_launch(shared_key("pb", "2.0.0"), setup.sd("pb"))
    assert pool_kit.pool.stop_all() == 0
    assert files_in(pool_kit.state_dir) == []


def test_pool_list_does_not_report_a_recycled_pid_as_alive(setup: Setup, pool_kit: PoolKit) -> None:
    handle = pool_kit.pool.get_or_launch(shared_key("pa", "1.0.0"), setup.sd("pa"))
    assert handle.kill() == -signal.SIGKILL
    # As if the system had given the backend's pid to another process.
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        (manifest,) = pool_kit.state_dir.glob("*.json")
        recorded = json.loads(manifest.read_text())
        recorded["daemon"]["pid"] = bystander.pid
        manifest.write_text(json.dumps(recorded))
        (entry,) = pool_kit.pool.list()
        assert entry.daemon.pid == bystander.pid
        assert entry.alive is False
    finally:
        bystander.kill()
        bystander.wait()
