"""HelloRouter in one process, through real launches: reuse, single flight,
replacement of dead or failing backends, the spawn budget, the caps on
concurrent launches and live backends, request validation before any side
effect, the catalog, and the Python launcher interface.

Each test ends by checking that nothing is left behind once its backends are
shut down: no child process or zombie, no socket file, no log file but those
of backends that were killed, no extra descriptor.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

import running_process as rp
from support.launch import SERVICE, VERSION, BackendDirs, Launches, echo, install, key_for
from support.leftovers import assert_nothing_left_behind, snapshot
from support.procfs import children, fd_count, proc_stat
from support.router import (
    DelegatingLauncher,
    FailingLauncher,
    Kit,
    ScriptedLauncher,
    catalog_of,
    code_of,
    concurrently,
    negotiated,
    refused,
    services,
    sock_files,
    spawn_count,
    spawn_counting_exit3,
)
from support.values import W3C_TRACEPARENT
from support.waits import HANG_GUARD, poll_until, spin_until

EC = rp.ErrorCode
CLEAN_END = (0, -signal.SIGTERM)


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


def registry_pids(router: rp.HelloRouter) -> dict[str, int]:
    """``str(key) -> pid`` of the router's registry."""
    return {str(key): handle.pid for key, handle in router.registry.items()}


# --- ErrorCode, Negotiated, Refused ------------------------------------------------------

ALL_CODES = [
    ("UNSPECIFIED", 0),
    ("VERSION_UNSUPPORTED", 1),
    ("SERVICE_UNKNOWN", 2),
    ("BACKEND_SPAWN_FAILED", 3),
    ("RATE_LIMITED", 4),
    ("SHUTTING_DOWN", 5),
    ("PEER_REJECTED", 6),
    ("INTERNAL", 7),
    ("VERSION_BLOCKED", 8),
    ("FD_PRESSURE", 9),
]


@pytest.mark.parametrize(("name", "value"), ALL_CODES)
def test_error_code_members_equal_and_hash_as_their_ints(name: str, value: int) -> None:
    code = getattr(rp.ErrorCode, name)
    assert isinstance(code, rp.ErrorCode)
    assert code.name == name
    assert code.value == value
    assert int(code) == value
    assert code == value and value == code
    assert hash(code) == hash(value)
    by_int: dict[object, str] = {value: "found"}
    by_code: dict[object, str] = {code: "found"}
    assert by_int[code] == "found"
    assert by_code[value] == "found"
    for other_name, other_value in ALL_CODES:
        if other_name != name:
            assert code != other_value
            assert code != getattr(rp.ErrorCode, other_name)


def test_rate_limited_is_four() -> None:
    assert rp.ErrorCode.RATE_LIMITED == 4
    assert hash(rp.ErrorCode.RATE_LIMITED) == hash(4)
    assert rp.ErrorCode.RATE_LIMITED.name == "RATE_LIMITED"
    assert rp.ErrorCode.RATE_LIMITED.value == 4
    assert rp.ErrorCode.RATE_LIMITED != 3


def test_negotiated_exposes_handle_endpoint_and_the_requested_version(dirs: BackendDirs, kit: Kit) -> None:
    before = snapshot()
    sd = dirs.sd()
    router = kit.router(dirs.launcher(), catalog_of(sd))
    # A version other than the directory's name: the answer names the request.
    outcome = negotiated(kit.route(router, SERVICE, "1.4.2"))
    assert isinstance(outcome.handle, rp.BackendHandle)
    assert outcome.endpoint == outcome.handle.endpoint
    assert outcome.daemon_version == "1.4.2"
    assert outcome.handle.service_version == "1.4.2"
    assert outcome.handle.service_name == SERVICE
    assert outcome.handle.key == key_for(sd, "1.4.2")
    assert outcome.handle.is_alive()
    outcome.handle.verify()
    assert echo(outcome.handle, b"ping") == b"ping"
    router.shutdown_all()
    assert outcome.handle.returncode in CLEAN_END
    assert len(router.registry) == 0
    assert_nothing_left_behind(before, dirs, ignore_pidfds=True)


# --- single flight and reuse ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["v1", "rust"])
def test_sixteen_threads_one_launch_one_pid(
    kind: str, dirs: BackendDirs, kit: Kit, request: pytest.FixtureRequest
) -> None:
    if kind == "rust":
        binary: Optional[Path] = install(
            dirs.version_dir / "echo", Path(request.getfixturevalue("rust_example")).read_bytes()
        )
    else:
        binary = None
    sd = dirs.sd(binary)
    before = snapshot()
    router = kit.router(dirs.launcher(), catalog_of(sd))
    outcomes = concurrently(16, lambda _: kit.route(router, SERVICE, VERSION))
    pids = {negotiated(o).handle.pid for o in outcomes}
    assert len(pids) == 1, f"one backend for all, got pids {pids}"
    assert router.launch_count == 1
    assert {o.endpoint.path for o in map(negotiated, outcomes)} == {negotiated(outcomes[0]).endpoint.path}
    assert registry_pids(router) == {str(key_for(sd)): pids.pop()}
    assert len(sock_files(dirs)) == 1
    handle = negotiated(outcomes[0]).handle
    handle.verify()
    assert echo(handle, b"single flight") == b"single flight"
    # Later requests reuse it.
    assert negotiated(kit.route(router, SERVICE, VERSION)).handle.pid == handle.pid
    assert router.launch_count == 1
    router.shutdown_all()
    assert handle.returncode in CLEAN_END
    assert_nothing_left_behind(before, dirs, ignore_pidfds=True)


def test_sigkilled_backend_is_replaced_on_the_next_request(dirs: BackendDirs, kit: Kit) -> None:
    sd = dirs.sd()
    before = snapshot()
    router = kit.router(dirs.launcher(), catalog_of(sd))
    old = negotiated(kit.route(router, SERVICE, VERSION)).handle
    assert router.launch_count == 1
    os.kill(old.pid, signal.SIGKILL)
    assert old.wait(timeout=HANG_GUARD) == -signal.SIGKILL
    assert registry_pids(router) == {str(key_for(sd)): old.pid}
    new = negotiated(kit.route(router, SERVICE, VERSION)).handle
    assert new.pid != old.pid
    assert router.launch_count == 2
    assert not os.path.exists(old.endpoint.path)
    assert registry_pids(router) == {str(key_for(sd)): new.pid}
    new.verify()
    # And the replacement is reused.
    assert negotiated(kit.route(router, SERVICE, VERSION)).handle.pid == new.pid
    assert router.launch_count == 2
    router.shutdown_all()
    assert new.returncode in CLEAN_END
    assert_nothing_left_behind(before, dirs, ignore_pidfds=True, kept_logs=[old.log_path])


ROUNDS = 20


def test_next_request_removes_the_socket_file_of_a_backend_that_just_died(
    dirs: BackendDirs, kit: Kit
) -> None:
    """The v1 backend never removes its socket file; the router must when a
    request finds it dead, also right after the death shows through the
    pidfd (before the reaper thread may have recorded the exit). Several
    rounds, because that window is short."""
    sd = dirs.sd()
    before = snapshot()
    router = kit.router(dirs.launcher(), catalog_of(sd))
    current = negotiated(kit.route(router, SERVICE, VERSION)).handle
    killed: list[rp.BackendHandle] = []
    left_behind: list[str] = []
    for _ in range(ROUNDS):
        old = current
        os.kill(old.pid, signal.SIGKILL)
        spin_until(lambda: not old.is_alive(), what="the killed backend to be seen dead")
        current = negotiated(kit.route(router, SERVICE, VERSION)).handle
        assert current.pid != old.pid
        if os.path.exists(old.endpoint.path):
            left_behind.append(old.endpoint.path)
        # Reaped in any case; waiting also cleans up what the router left.
        assert old.wait(timeout=HANG_GUARD) == -signal.SIGKILL
        killed.append(old)
    assert router.launch_count == ROUNDS + 1
    assert left_behind == [], (
        f"the router left the socket file of {len(left_behind)} of {ROUNDS} dead backends"
    )
    router.shutdown_all()
    assert current.returncode in CLEAN_END
    assert_nothing_left_behind(before, dirs, ignore_pidfds=True, kept_logs=[h.log_path for h in killed])


# --- the spawn budget -----------------------------------------------------------------------


def test_python_launcher_that_always_fails_is_rate_limited_on_the_fourth_request(
    dirs: BackendDirs, kit: Kit
) -> None:
    before = snapshot()
    launcher = FailingLauncher("launcher-broke-7731")
    router = kit.router(launcher, catalog_of(dirs.sd()))
    for attempt in range(1, 4):
        r = refused(router.route(SERVICE, VERSION), EC.BACKEND_SPAWN_FAILED)
        assert "launcher-broke-7731" in r.reason
        assert r.retry_after_ms == 0
        assert launcher.calls == attempt
    limited = refused(router.route(SERVICE, VERSION), EC.RATE_LIMITED)
    assert 0 < limited.retry_after_ms <= 30_000
    assert launcher.calls == 3, "nothing may be attempted for a RATE_LIMITED request"
    assert router.launch_count == 3
    # Still limited, still nothing attempted.
    refused(router.route(SERVICE, VERSION), EC.RATE_LIMITED)
    assert launcher.calls == 3
    # The budget is per key: another version of the service is attempted.
    refused(router.route(SERVICE, "1.0.1"), EC.BACKEND_SPAWN_FAILED)
    assert launcher.calls == 4
    assert len(router.registry) == 0
    assert_nothing_left_behind(before, dirs, ignore_pidfds=True)


def test_command_launcher_whose_backend_exits_at_once_is_rate_limited_on_the_fourth_request(
    dirs: BackendDirs, kit: Kit
) -> None:
    binary, counter = spawn_counting_exit3(dirs)
    before = snapshot()
    router = kit.router(dirs.launcher(), catalog_of(dirs.sd(binary)))
    for attempt in range(1, 4):
        r = refused(router.route(SERVICE, VERSION), EC.BACKEND_SPAWN_FAILED)
        assert "exit status 3" in r.reason
        assert r.retry_after_ms == 0
        assert spawn_count(counter) == attempt
    procs = set(children())
    limited = refused(router.route(SERVICE, VERSION), EC.RATE_LIMITED)
    assert 0 < limited.retry_after_ms <= 30_000
    assert spawn_count(counter) == 3, "a backend was spawned for a RATE_LIMITED request"
    assert set(children()) <= procs, "a new child process appeared"
    assert router.launch_count == 3
    assert len(router.registry) == 0
    assert_nothing_left_behind(before, dirs, ignore_pidfds=True)


def test_spawn_budget_comes_back_after_the_window(dirs: BackendDirs, kit: Kit) -> None:
    launcher = FailingLauncher()
    router = kit.router(launcher, catalog_of(dirs.sd()), budget_window=1.0)
    outcomes: list[Any] = []

    def route_once() -> Optional[rp.ErrorCode]:
        outcome = router.route(SERVICE, VERSION)
        outcomes.append(outcome)
        return code_of(outcome)

    # Failed attempts until the budget is spent (three, unless the machine
    # stalls for longer than the window between them).
    poll_until(lambda: route_once() == EC.RATE_LIMITED, what="a RATE_LIMITED answer")
    codes = [code_of(o) for o in outcomes]
    assert codes[:3] == [EC.BACKEND_SPAWN_FAILED] * 3
    assert codes[-1] == EC.RATE_LIMITED
    assert set(codes[:-1]) == {EC.BACKEND_SPAWN_FAILED}
    assert launcher.calls == len(codes) - 1
    limited = outcomes[-1]
    assert isinstance(limited, rp.Refused)
    assert 0 < limited.retry_after_ms <= 1_000
    calls = launcher.calls
    # Once the window has passed, a request is attempted again.
    del outcomes[:]
    poll_until(lambda: route_once() == EC.BACKEND_SPAWN_FAILED, what="the budget to come back")
    assert {code_of(o) for o in outcomes[:-1]} <= {EC.RATE_LIMITED}
    assert launcher.calls == calls + 1


def test_a_success_resets_the_spawn_budget(dirs: BackendDirs, launches: Launches, kit: Kit) -> None:
    before = snapshot()
    launcher = ScriptedLauncher(dirs.launcher(), launches, [False, False, True])
    # A window no run of this test can outlast.
    router = kit.router(launcher, catalog_of(dirs.sd()), budget_window=3600.0)
    refused(router.route(SERVICE, VERSION), EC.BACKEND_SPAWN_FAILED)
    refused(router.route(SERVICE, VERSION), EC.BACKEND_SPAWN_FAILED)
    handle = negotiated(kit.route(router, SERVICE, VERSION)).handle
    assert launcher.calls == 3
    handle.kill()
    # Three attempts were charged, but the success refunded them: three more
    # failures are attempted before the key is limited again.
    for attempt in range(4, 7):
        refused(router.route(SERVICE, VERSION), EC.BACKEND_SPAWN_FAILED)
        assert launcher.calls == attempt
    refused(router.route(SERVICE, VERSION), EC.RATE_LIMITED)
    assert launcher.calls == 6
    assert len(router.registry) == 0
    assert_nothing_left_behind(before, dirs, ignore_pidfds=True, kept_logs=[handle.log_path])


# --- validation before any side effect ----------------------------------------------------


@pytest.mark.parametrize(
    ("service", "version", "overrides", "code"),
    [
        pytest.param("Zcc", VERSION, {}, EC.SERVICE_UNKNOWN, id="bad-name"),
        pytest.param("", VERSION, {}, EC.SERVICE_UNKNOWN, id="empty-name"),
        pytest.param(SERVICE, "1.2", {}, EC.VERSION_UNSUPPORTED, id="bad-version"),
        pytest.param(SERVICE, "1.0.0+build", {}, EC.VERSION_UNSUPPORTED, id="build-metadata"),
        pytest.param("nosuch", VERSION, {}, EC.SERVICE_UNKNOWN, id="unknown-service"),
        pytest.param(SERVICE, VERSION, {"min_version": "2.0.0"}, EC.VERSION_UNSUPPORTED, id="below-min"),
        pytest.param(
            SERVICE, "1.0.1", {"version_allow_list": ["1.0.0"]}, EC.VERSION_BLOCKED, id="not-allowed"
        ),
    ],
)
def test_malformed_requests_are_refused_and_nothing_is_spawned(
    service: str,
    version: str,
    overrides: dict[str, Any],
    code: rp.ErrorCode,
    dirs: BackendDirs,
    launches: Launches,
    kit: Kit,
) -> None:
    before = snapshot()
    launcher = DelegatingLauncher(dirs.launcher(), launches)
    router = kit.router(launcher, catalog_of(dirs.sd(**overrides)))
    r = refused(router.route(service, version), code)
    assert r.retry_after_ms == 0
    assert r.reason
    with pytest.raises(rp.RefusedError) as info:
        router.get_backend(service, version)
    assert info.value.code == code
    assert launcher.calls == 0
    assert router.launch_count == 0
    assert len(router.registry) == 0
    # Not even the launcher's directories were created.
    assert not dirs.socket_dir.exists()
    assert not dirs.log_dir.exists()
    assert_nothing_left_behind(before, dirs, ignore_pidfds=True)


def test_unknown_service_reason_names_it(dirs: BackendDirs, kit: Kit) -> None:
    launcher = FailingLauncher()
    router = kit.router(launcher, catalog_of(dirs.sd()))
    assert "nosuch" in refused(router.route("nosuch", VERSION), EC.SERVICE_UNKNOWN).reason
    assert launcher.calls == 0


# --- get_backend and RefusedError -----------------------------------------------------------


def test_get_backend_returns_the_handle_route_would(dirs: BackendDirs, kit: Kit) -> None:
    before = snapshot()
    router = kit.router(dirs.launcher(), catalog_of(dirs.sd()))
    handle = kit.track(router.get_backend(SERVICE, VERSION))
    assert isinstance(handle, rp.BackendHandle)
    handle.verify()
    assert negotiated(kit.route(router, SERVICE, VERSION)).handle.pid == handle.pid
    assert kit.track(router.get_backend(SERVICE, VERSION)).pid == handle.pid
    assert router.launch_count == 1
    router.shutdown_all()
    assert handle.returncode in CLEAN_END
    assert_nothing_left_behind(before, dirs, ignore_pidfds=True)


def test_get_backend_raises_refused_error_with_code_reason_and_retry_after(
    dirs: BackendDirs, kit: Kit
) -> None:
    launcher = FailingLauncher("nope-4411")
    router = kit.router(launcher, catalog_of(dirs.sd()))
    with pytest.raises(rp.RefusedError) as unknown:
        router.get_backend("nosuch", VERSION)
    err = unknown.value
    assert isinstance(err, rp.RunningProcessError)
    assert isinstance(err.code, rp.ErrorCode)
    assert err.code == EC.SERVICE_UNKNOWN
    assert "nosuch" in err.reason
    assert err.retry_after_ms == 0
    assert "SERVICE_UNKNOWN" in str(err)
    for _ in range(3):
        with pytest.raises(rp.RefusedError) as failed:
            router.get_backend(SERVICE, VERSION)
        assert failed.value.code == EC.BACKEND_SPAWN_FAILED
        assert "nope-4411" in failed.value.reason
        assert failed.value.retry_after_ms == 0
    with pytest.raises(rp.RefusedError) as limited:
        router.get_backend(SERVICE, VERSION)
    assert limited.value.code == EC.RATE_LIMITED
    assert 0 < limited.value.retry_after_ms <= 30_000
    assert "RATE_LIMITED" in str(limited.value)
    assert launcher.calls == 3


def test_refused_error_pickles_with_its_attributes(dirs: BackendDirs, kit: Kit) -> None:
    launcher = FailingLauncher()
    router = kit.router(launcher, catalog_of(dirs.sd()))
    for _ in range(3):
        refused(router.route(SERVICE, VERSION), EC.BACKEND_SPAWN_FAILED)
    with pytest.raises(rp.RefusedError) as info:
        router.get_backend(SERVICE, VERSION)
    err = info.value
    assert err.code == EC.RATE_LIMITED and err.retry_after_ms > 0
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is rp.RefusedError
    assert copy.code == EC.RATE_LIMITED
    assert copy.reason == err.reason
    assert copy.retry_after_ms == err.retry_after_ms
    assert str(copy) == str(err)
    assert launcher.calls == 3


# --- the cap on live backends ---------------------------------------------------------------


def test_live_backend_cap_shuts_the_other_backend_down_gracefully(dirs: BackendDirs, kit: Kit) -> None:
    catalog = services(dirs, "alpha", "beta")
    before = snapshot()
    router = kit.router(dirs.launcher(), catalog, max_live_backends=1)
    alpha = negotiated(kit.route(router, "alpha", VERSION)).handle
    beta = negotiated(kit.route(router, "beta", VERSION)).handle
    assert alpha.wait(timeout=HANG_GUARD) in CLEAN_END
    assert alpha.returncode in CLEAN_END
    assert not os.path.exists(alpha.endpoint.path)
    assert not os.path.exists(alpha.log_path), "a graceful shutdown removes the log"
    assert beta.is_alive()
    beta.verify()
    assert len(router.registry) == 1
    assert key_for(catalog["beta"]) in router.registry
    assert key_for(catalog["alpha"]) not in router.registry
    assert registry_pids(router) == {str(key_for(catalog["beta"])): beta.pid}
    assert router.launch_count == 2
    router.shutdown_all()
    assert beta.returncode in CLEAN_END
    assert_nothing_left_behind(before, dirs, ignore_pidfds=True)


def test_live_backend_cap_evicts_the_least_recently_used(dirs: BackendDirs, kit: Kit) -> None:
    catalog = services(dirs, "alpha", "beta", "gamma")
    before = snapshot()
    router = kit.router(dirs.launcher(), catalog, max_live_backends=2)
    alpha = negotiated(kit.route(router, "alpha", VERSION)).handle
    beta = negotiated(kit.route(router, "beta", VERSION)).handle
    # alpha is used again: beta is now the least recently used.
    assert negotiated(kit.route(router, "alpha", VERSION)).handle.pid == alpha.pid
    gamma = negotiated(kit.route(router, "gamma", VERSION)).handle
    assert beta.wait(timeout=HANG_GUARD) in CLEAN_END
    assert alpha.is_alive() and gamma.is_alive()
    assert registry_pids(router) == {
        str(key_for(catalog["alpha"])): alpha.pid,
        str(key_for(catalog["gamma"])): gamma.pid,
    }
    assert not os.path.exists(beta.endpoint.path)
    assert router.launch_count == 3
    router.shutdown_all()
    assert alpha.returncode in CLEAN_END and gamma.returncode in CLEAN_END
    assert_nothing_left_behind(before, dirs, ignore_pidfds=True)


# --- the global cap on concurrent launches ----------------------------------------------------


class GateLauncher(rp.BackendLauncher):
    """Fails every launch, after waiting (at most ``patience`` seconds) for a
    second launch to be running at the same time; records the peak."""

    def __init__(self, patience: float) -> None:
        self.patience = patience
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.entered = 0
        self.two_in = threading.Event()

    def launch(
        self,
        key: rp.BackendKey,
        service_definition: rp.ServiceDefinition,
        trace_context: Optional[rp.TraceContext] = None,
    ) -> rp.BackendHandle:
        with self.lock:
            self.active += 1
            self.entered += 1
            self.peak = max(self.peak, self.active)
            if self.entered >= 2:
                self.two_in.set()
        try:
            self.two_in.wait(timeout=self.patience)
        finally:
            with self.lock:
                self.active -= 1
        raise RuntimeError("gate")


@pytest.mark.parametrize(("cap", "patience", "peak"), [(1, 1.0, 1), (2, HANG_GUARD, 2)])
def test_max_concurrent_launches_caps_launches_across_keys(
    cap: int, patience: float, peak: int, dirs: BackendDirs, kit: Kit
) -> None:
    launcher = GateLauncher(patience)
    router = kit.router(launcher, services(dirs, "alpha", "beta"), max_concurrent_launches=cap)
    names = ["alpha", "beta"]
    outcomes = concurrently(2, lambda i: router.route(names[i], VERSION))
    for outcome in outcomes:
        refused(outcome, EC.BACKEND_SPAWN_FAILED)
    assert launcher.entered == 2
    assert launcher.peak == peak


# --- re-verification of hits ---------------------------------------------------------------------


def squat(path: str) -> socket.socket:
    """Replaces the socket at ``path`` by a plain listener of this process."""
    os.unlink(path)
    squatter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    squatter.bind(path)
    squatter.listen(16)
    squatter.setblocking(False)
    return squatter


def pending_connections(listener: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


@pytest.mark.parametrize("policy", ["always", 0.0])
def test_reverify_replaces_a_backend_whose_socket_was_taken_over(
    policy: Any, dirs: BackendDirs, kit: Kit
) -> None:
    sd = dirs.sd()
    before = snapshot()
    router = kit.router(dirs.launcher(), catalog_of(sd), reverify=policy)
    old = negotiated(kit.route(router, SERVICE, VERSION)).handle
    # A healthy hit passes the re-verification and is reused.
    assert negotiated(kit.route(router, SERVICE, VERSION)).handle.pid == old.pid
    assert router.launch_count == 1
    squatted = old.endpoint.path
    squatter = squat(squatted)
    try:
        new = negotiated(kit.route(router, SERVICE, VERSION))
        assert new.handle.pid != old.pid
        assert router.launch_count == 2
        # The old backend was removed and killed.
        assert old.returncode == -signal.SIGKILL
        assert registry_pids(router) == {str(key_for(sd)): new.handle.pid}
        # The squatter was probed (that is how it was caught), never handed out.
        assert pending_connections(squatter) >= 1
        assert new.endpoint.path != squatted
        new.handle.verify()
        assert echo(new.handle, b"not the squatter") == b"not the squatter"
        assert pending_connections(squatter) == 0
        # The replacement is reused and still passes.
        assert negotiated(kit.route(router, SERVICE, VERSION)).handle.pid == new.handle.pid
        assert router.launch_count == 2
        router.shutdown_all()
        assert new.handle.returncode in CLEAN_END
    finally:
        squatter.close()
    assert_nothing_left_behind(before, dirs, ignore_pidfds=True, kept_logs=[old.log_path])


@pytest.mark.parametrize("policy", [None, "never", 3600.0])
def test_reverify_never_hands_out_a_live_hit_without_probing(
    policy: Any, dirs: BackendDirs, kit: Kit
) -> None:
    sd = dirs.sd()
    before = snapshot()
    options = {} if policy is None else {"reverify": policy}
    router = kit.router(dirs.launcher(), catalog_of(sd), **options)
    first = negotiated(kit.route(router, SERVICE, VERSION)).handle
    squatter = squat(first.endpoint.path)
    try:
        for _ in range(3):
            assert negotiated(kit.route(router, SERVICE, VERSION)).handle.pid == first.pid
        assert router.launch_count == 1
        # No probe reached the endpoint: the fast path is the pidfd only.
        assert pending_connections(squatter) == 0
        router.shutdown_all()
        assert first.returncode in CLEAN_END
    finally:
        squatter.close()
    assert_nothing_left_behind(before, dirs, ignore_pidfds=True)


# --- launchers written in Python ---------------------------------------------------------------


def test_backend_launcher_is_the_interface_of_every_launcher(dirs: BackendDirs) -> None:
    assert isinstance(dirs.launcher(), rp.BackendLauncher)
    assert isinstance(FailingLauncher(), rp.BackendLauncher)
    with pytest.raises(TypeError):
        rp.BackendLauncher()  # type: ignore[abstract]


def test_python_launcher_delegating_to_a_command_launcher_serves_eight_threads_with_one_launch(
    dirs: BackendDirs, launches: Launches, kit: Kit
) -> None:
    sd = dirs.sd()
    before = snapshot()
    launcher = DelegatingLauncher(dirs.launcher(), launches)
    trace = rp.TraceContext(traceparent=W3C_TRACEPARENT)
    router = kit.router(launcher, catalog_of(sd))
    outcomes = concurrently(8, lambda _: kit.route(router, SERVICE, VERSION, trace_context=trace))
    pids = {negotiated(o).handle.pid for o in outcomes}
    assert len(pids) == 1
    assert launcher.calls == 1
    assert router.launch_count == 1
    assert launches.handles[0].pid in pids
    seen = launcher.traces[0]
    assert seen is not None and seen.traceparent == W3C_TRACEPARENT
    negotiated(outcomes[0]).handle.verify()
    router.shutdown_all()
    assert negotiated(outcomes[0]).handle.returncode in CLEAN_END
    assert_nothing_left_behind(before, dirs, ignore_pidfds=True)


class ReturnsNotAHandle(rp.BackendLauncher):
    def __init__(self, value: object) -> None:
        self.value = value
        self.calls = 0

    def launch(
        self,
        key: rp.BackendKey,
        service_definition: rp.ServiceDefinition,
        trace_context: Optional[rp.TraceContext] = None,
    ) -> Any:
        self.calls += 1
        return self.value


@pytest.mark.parametrize("value", [42, None, "handle"], ids=["int", "None", "str"])
def test_python_launcher_returning_something_else_than_a_handle_is_refused(
    value: object, dirs: BackendDirs, kit: Kit
) -> None:
    launcher = ReturnsNotAHandle(value)
    router = kit.router(launcher, catalog_of(dirs.sd()))
    r = refused(router.route(SERVICE, VERSION), EC.BACKEND_SPAWN_FAILED)
    assert "BackendHandle" in r.reason
    assert type(value).__name__ in r.reason
    assert launcher.calls == 1
    assert len(router.registry) == 0


def test_plain_object_with_a_launch_method_is_a_launcher(
    dirs: BackendDirs, launches: Launches, kit: Kit
) -> None:
    class Duck:
        def __init__(self) -> None:
            self.inner = dirs.launcher()

        def launch(
            self, key: rp.BackendKey, sd: rp.ServiceDefinition, trace: Optional[rp.TraceContext]
        ) -> rp.BackendHandle:
            return launches.launch(self.inner, key, sd, trace)

    before = snapshot()
    router = kit.router(Duck(), catalog_of(dirs.sd()))
    handle = negotiated(kit.route(router, SERVICE, VERSION)).handle
    assert handle.pid == launches.handles[0].pid
    router.shutdown_all()
    assert_nothing_left_behind(before, dirs, ignore_pidfds=True)


def test_launcher_without_a_launch_method_is_a_type_error(dirs: BackendDirs) -> None:
    with pytest.raises(TypeError):
        rp.HelloRouter(object(), catalog_of(dirs.sd()))


# --- the catalog ------------------------------------------------------------------------------


def test_servicedef_directory_catalog_is_read_on_each_request(
    dirs: BackendDirs, launches: Launches, kit: Kit
) -> None:
    defs = dirs.root / "defs"
    dirs.sd().save(defs)
    before = snapshot()
    launcher = DelegatingLauncher(dirs.launcher(), launches)
    router = kit.router(launcher, defs)
    first = negotiated(kit.route(router, SERVICE, VERSION)).handle
    assert first.key == key_for(dirs.sd())
    refused(router.route("nosuch", VERSION), EC.SERVICE_UNKNOWN)
    # An edited definition takes effect on the next request, before the hit.
    dirs.sd(min_version="2.0.0").save(defs)
    refused(router.route(SERVICE, VERSION), EC.VERSION_UNSUPPORTED)
    dirs.sd(version_allow_list=["1.0.1"]).save(defs)
    refused(router.route(SERVICE, VERSION), EC.VERSION_BLOCKED)
    assert first.is_alive()
    assert launcher.calls == 1
    dirs.sd(min_version="1.0.0").save(defs)
    assert negotiated(kit.route(router, SERVICE, VERSION)).handle.pid == first.pid
    assert router.launch_count == 1
    # The directory may also be given as a string.
    as_text = kit.router(launcher, str(defs))
    refused(as_text.route(SERVICE, "0.9.0"), EC.VERSION_UNSUPPORTED)
    refused(as_text.route("nosuch", VERSION), EC.SERVICE_UNKNOWN)
    assert launcher.calls == 1
    router.shutdown_all()
    assert first.returncode in CLEAN_END
    assert_nothing_left_behind(before, dirs, ignore_pidfds=True)


def test_refused_requests_do_not_charge_the_spawn_budget(dirs: BackendDirs, kit: Kit) -> None:
    defs = dirs.root / "defs"
    dirs.sd(min_version="2.0.0").save(defs)
    launcher = FailingLauncher()
    router = kit.router(launcher, defs)
    for _ in range(5):
        refused(router.route(SERVICE, VERSION), EC.VERSION_UNSUPPORTED)
    dirs.sd().save(defs)
    for attempt in range(1, 4):
        refused(router.route(SERVICE, VERSION), EC.BACKEND_SPAWN_FAILED)
        assert launcher.calls == attempt
    refused(router.route(SERVICE, VERSION), EC.RATE_LIMITED)
    assert launcher.calls == 3


@pytest.mark.parametrize("damage", ["corrupt-file", "insecure-dir"])
def test_unreadable_catalog_is_internal_and_nothing_is_spawned(
    damage: str, dirs: BackendDirs, kit: Kit
) -> None:
    defs = dirs.root / "defs"
    path = Path(dirs.sd().save(defs))
    if damage == "corrupt-file":
        path.write_bytes(b"\xff\xff\xff")
    else:
        os.chmod(defs, 0o777)
    launcher = FailingLauncher()
    router = kit.router(launcher, defs)
    r = refused(router.route(SERVICE, VERSION), EC.INTERNAL)
    assert str(defs) in r.reason
    assert launcher.calls == 0
    assert router.launch_count == 0


def test_catalog_key_must_match_the_service_name(dirs: BackendDirs) -> None:
    with pytest.raises(ValueError, match="service_name"):
        rp.HelloRouter(FailingLauncher(), {"other": dirs.sd()})


@pytest.mark.parametrize(
    "catalog",
    [42, 4.5, None, ["not", "a", "mapping"], {SERVICE: "not a definition"}],
    ids=["int", "float", "None", "list", "bad-value"],
)
def test_catalog_of_the_wrong_type_is_a_type_error(catalog: Any) -> None:
    with pytest.raises(TypeError):
        rp.HelloRouter(FailingLauncher(), catalog)


@pytest.mark.parametrize(
    ("policy", "error"),
    [("sometimes", ValueError), ("", ValueError), (-1.0, ValueError), (object(), TypeError)],
    ids=["sometimes", "empty", "negative", "object"],
)
def test_bad_reverify_policy_is_refused(policy: Any, error: type[Exception], dirs: BackendDirs) -> None:
    with pytest.raises(error):
        rp.HelloRouter(FailingLauncher(), catalog_of(dirs.sd()), reverify=policy)


# --- the router and its registry -------------------------------------------------------------------


def test_router_registry_is_the_live_registry(dirs: BackendDirs, kit: Kit) -> None:
    sd = dirs.sd()
    before = snapshot()
    router = kit.router(dirs.launcher(), catalog_of(sd))
    first = negotiated(kit.route(router, SERVICE, VERSION)).handle
    registry = router.registry
    assert key_for(sd) in registry and len(registry) == 1
    got = registry.get(key_for(sd))
    assert got is not None and got.pid == first.pid
    # An entry removed by the caller is a miss: the backend itself keeps
    # running, and the next request launches a new one.
    removed = registry.remove(key_for(sd))
    assert removed is not None and removed.pid == first.pid
    assert first.is_alive()
    assert len(router.registry) == 0
    second = negotiated(kit.route(router, SERVICE, VERSION)).handle
    assert second.pid != first.pid
    assert router.launch_count == 2
    assert first.shutdown(timeout=HANG_GUARD) in CLEAN_END
    router.shutdown_all()
    assert second.returncode in CLEAN_END
    assert_nothing_left_behind(before, dirs, ignore_pidfds=True)


def test_router_is_a_context_manager_that_shuts_backends_down(dirs: BackendDirs, kit: Kit) -> None:
    catalog = services(dirs, "alpha", "beta")
    before = snapshot()
    with kit.router(dirs.launcher(), catalog) as router:
        alpha = kit.track(router.get_backend("alpha", VERSION))
        beta = kit.track(router.get_backend("beta", VERSION))
        assert alpha.is_alive() and beta.is_alive()
    assert alpha.returncode in CLEAN_END
    assert beta.returncode in CLEAN_END
    assert len(router.registry) == 0
    assert_nothing_left_behind(before, dirs, ignore_pidfds=True)


def test_leaving_the_router_on_an_exception_shuts_down_and_propagates(dirs: BackendDirs, kit: Kit) -> None:
    before = snapshot()
    router = kit.router(dirs.launcher(), catalog_of(dirs.sd()))
    handles: list[rp.BackendHandle] = []
    with pytest.raises(KeyError, match="boom"), router:
        handles.append(kit.track(router.get_backend(SERVICE, VERSION)))
        raise KeyError("boom")
    assert handles[0].returncode in CLEAN_END
    assert len(router.registry) == 0
    assert_nothing_left_behind(before, dirs, ignore_pidfds=True)


def test_dropping_the_router_and_its_handles_closes_every_descriptor(
    dirs: BackendDirs, launches: Launches
) -> None:
    # No ``kit`` here: it would keep the handles (and their pidfds) alive.
    gc.collect()
    fds = fd_count()
    router = rp.HelloRouter(dirs.launcher(), catalog_of(dirs.sd()))
    try:
        outcome = negotiated(router.route(SERVICE, VERSION))
        pid = outcome.handle.pid
        assert negotiated(router.route(SERVICE, VERSION)).handle.pid == pid
    finally:
        router.shutdown_all()
    assert proc_stat(pid) is None, "the backend was not reaped"
    del outcome, router
    gc.collect()
    poll_until(lambda: fd_count() == fds, timeout=10.0, what=lambda: f"{fds} descriptors, not {fd_count()}")
    assert_nothing_left_behind(snapshot(), dirs, ignore_pidfds=True)
