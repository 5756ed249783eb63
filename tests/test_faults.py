"""Faults: a launcher killed in the middle of a launch, and a backend that
stops answering because it was stopped (SIGSTOP).

Each test uses real processes, sockets, files and signals, waits on events
(a FIFO the backend writes to, lines from a helper process, states in
``/proc``) rather than on time, and checks what is left afterwards: no stray
process or zombie, no socket file, no lock held, no half-written manifest.

The helpers the fault modules share are in the ``support`` package.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Optional

import pytest

import running_process as rp
from support.launch import BACKENDS, BackendDirs, echo, install_fault_backend, install_rust_echo, key_for
from support.leftovers import files_in
from support.procfs import parent_of, pending_signals, start_ticks, state_of
from support.waits import HANG_GUARD, poll_until, read_event

pytestmark = pytest.mark.slow

SUBREAPER = BACKENDS / "fault_subreaper.py"
POOL_CLIENT = BACKENDS / "fault_pool_client.py"

# A verification timeout short enough to keep the tests quick; a stopped
# backend never answers, however long we wait.
SHORT_VERIFY = 0.5


# --- processes -------------------------------------------------------------------------------


def stop_and_wait(pid: int) -> None:
    """SIGSTOP, then wait until ``/proc`` shows the process stopped."""
    os.kill(pid, signal.SIGSTOP)
    poll_until(lambda: state_of(pid) == "T", what=f"pid {pid} to show as stopped")


class Lines:
    """The lines a child process writes, read on a thread so that waiting
    for one can have a deadline."""

    def __init__(self, stream: Optional[IO[str]]) -> None:
        assert stream is not None
        self._lines: queue.Queue[Optional[str]] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def expect(self, prefix: str, timeout: float = HANG_GUARD) -> str:
        """The next line starting with ``prefix`` (other lines are kept in
        ``seen``); fails on end of output or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(left, 0.0))
            except queue.Empty:
                raise AssertionError(
                    f"no line starting with {prefix!r} within {timeout} s; seen {self.seen}"
                ) from None
            if line is None:
                raise AssertionError(f"output ended before a line starting with {prefix!r}; seen {self.seen}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line


@dataclass
class Cleanup:
    """Processes a test started or learnt about, ended at teardown whatever
    happened. Pids are held as pidfds from the moment they are known, so a
    pid reused later can never be signalled."""

    pidfds: dict[int, int] = field(default_factory=dict)
    popens: list[subprocess.Popen[str]] = field(default_factory=list)

    def watch(self, pid: int) -> None:
        if pid not in self.pidfds:
            self.pidfds[pid] = os.pidfd_open(pid)

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        proc = subprocess.Popen(args, text=True, **kwargs)
        self.popens.append(proc)
        return proc

    def finish(self) -> None:
        for fd in self.pidfds.values():
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            finally:
                os.close(fd)
        # Their parents (still alive) reap them; only then end the parents,
        # so no orphan is left to a pid 1 that may not reap. Our own
        # children are reaped below, with their Popen.
        me = os.getpid()
        for pid in self.pidfds:
            try:
                poll_until(
                    lambda: state_of(pid) is None or (state_of(pid) == "Z" and parent_of(pid) == me),
                    timeout=10.0,
                )
            except AssertionError:  # pragma: no cover - teardown goes on
                pass
        for proc in self.popens:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.fixture
def cleanup() -> Iterator[Cleanup]:
    state = Cleanup()
    try:
        yield state
    finally:
        state.finish()


# --- the pool in other processes ---------------------------------------------------------------


def client_config(dirs: BackendDirs, sd: rp.ServiceDefinition, state_dir: Path, **extra: Any) -> str:
    config: dict[str, Any] = {
        "socket_dir": str(dirs.socket_dir),
        "log_dir": str(dirs.log_dir),
        "state_dir": str(state_dir),
        "service_definition": sd.to_bytes().hex(),
        "version": "1.0.0",
    }
    config.update(extra)
    return json.dumps(config)


def manifest_path(state_dir: Path) -> Path:
    (path,) = state_dir.glob("*.json")
    return path


def read_manifest(state_dir: Path) -> dict[str, Any]:
    recorded: dict[str, Any] = json.loads(manifest_path(state_dir).read_text())
    return recorded


def lock_is_held(state_dir: Path) -> bool:
    """Whether another open file holds the key's ``flock``."""
    (path,) = state_dir.glob("*.lock")
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock taken here
    return False


def open_gate(path: Path) -> None:
    """Writes a line to a FIFO once its reader has it open."""
    fds: list[int] = []

    def writer_opened() -> bool:
        try:
            fds.append(os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))
        except OSError as e:
            assert e.errno == errno.ENXIO, e  # no reader yet
            return False
        return True

    poll_until(writer_opened, what=f"a reader on {path}")
    try:
        os.write(fds[0], b"go\n")
    finally:
        os.close(fds[0])


# --- 1. the launcher killed in the middle of a launch -------------------------------------------


def test_launcher_killed_mid_launch_leaves_no_lock_and_its_orphan_idles_out(
    dirs: BackendDirs, cleanup: Cleanup
) -> None:
    sd = dirs.sd(install_fault_backend(dirs))
    key = key_for(sd)
    state_dir = dirs.root / "state"
    events, gate = dirs.root / "events", dirs.root / "gate"
    os.mkfifo(events, 0o600)
    os.mkfifo(gate, 0o600)
    events_fd = os.open(events, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        # The launching client runs below a subreaper, which then adopts the
        # backend the client leaves behind and reports how it ends.
        env = dict(os.environ, FAULT_MODE="gate", FAULT_EVENTS=str(events), FAULT_GATE=str(gate))
        config = client_config(dirs, sd, state_dir, idle_timeout_secs=1, ready_timeout=120.0)
        harness = cleanup.popen(
            [sys.executable, str(SUBREAPER), sys.executable, str(POOL_CLIENT), config],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        out = Lines(harness.stdout)
        launcher_pid = int(out.expect("child ").split()[1])
        cleanup.watch(launcher_pid)
        event = read_event(events_fd)
        assert event.startswith("started "), event
        orphan = int(event.split()[1])
        cleanup.watch(orphan)
    finally:
        os.close(events_fd)

    # Mid-launch: the backend runs, has not taken over the listener its
    # launcher bound for it, and its launcher waits for it holding the key's
    # lock.
    assert parent_of(orphan) == launcher_pid
    assert lock_is_held(state_dir)
    (bound,) = files_in(dirs.socket_dir)
    assert stat.S_ISSOCK(os.lstat(dirs.socket_dir / bound).st_mode)

    os.kill(launcher_pid, signal.SIGKILL)
    assert out.expect(f"reaped {launcher_pid} ") == f"reaped {launcher_pid} -9"
    # The lock died with its holder, and nothing was recorded.
    assert not lock_is_held(state_dir)
    assert list(state_dir.glob("*.json")) == []
    assert sorted(p.name for p in state_dir.iterdir()) == [f"{manifest_stem(state_dir)}.lock"]
    # The orphan now belongs to the subreaper. Let it serve: unused, it must
    # end itself after its idle timeout, and take its socket file with it.
    poll_until(lambda: parent_of(orphan) == harness.pid, what="the orphan to be re-parented")
    open_gate(gate)

    # Another process asks for the same key: it gets a fresh, verified backend.
    pool = rp.BackendPool(dirs.launcher(), state_dir)
    handle = pool.get_or_launch(key, sd)
    try:
        assert handle.pid != orphan
        handle.verify()
        assert echo(handle, b"served after the crash") == b"served after the crash"
        recorded = read_manifest(state_dir)
        assert recorded["daemon"]["pid"] == handle.pid
        assert recorded["process"]["uid"] == os.geteuid()

        # The orphan binds, is never used, and exits 0 on its idle timeout.
        assert out.expect(f"reaped {orphan} ", timeout=60.0) == f"reaped {orphan} 0"
        assert harness.wait(timeout=HANG_GUARD) == 0  # nothing else was left below it
        assert files_in(dirs.socket_dir) == [os.path.basename(handle.endpoint.path)]
        # The orphan's log is the only trace of it: its launcher died before
        # it could remove it (the log holds the backend's own output).
        orphan_logs = [n for n in files_in(dirs.log_dir) if n != os.path.basename(handle.log_path)]
        assert len(orphan_logs) == 1 and orphan_logs[0].startswith(f"{sd.service_name}-1.0.0-")
    finally:
        handle.shutdown(timeout=10.0)
    assert pool.stop(key) is False  # nothing running any more
    assert files_in(state_dir) == []
    assert files_in(dirs.socket_dir) == []
    assert state_of(handle.pid) is None


def manifest_stem(state_dir: Path) -> str:
    (lock,) = state_dir.glob("*.lock")
    return lock.stem


# --- 2. a stopped backend: the router -------------------------------------------------------------


def test_router_replaces_and_kills_a_stopped_backend(
    dirs: BackendDirs, rust_example: Path, cleanup: Cleanup
) -> None:
    sd = dirs.sd(install_rust_echo(dirs, rust_example))
    router = rp.HelloRouter(
        dirs.launcher(), {sd.service_name: sd}, reverify="always", verify_timeout=SHORT_VERIFY
    )
    with router:
        first = router.get_backend(sd.service_name, "1.0.0")
        cleanup.watch(first.pid)
        stop_and_wait(first.pid)
        second = router.get_backend(sd.service_name, "1.0.0")
        cleanup.watch(second.pid)
        assert second.pid != first.pid
        # The stopped one was killed and reaped (it is the router's child).
        assert first.wait(timeout=HANG_GUARD) == -signal.SIGKILL
        assert state_of(first.pid) is None
        assert not os.path.exists(first.endpoint.path)
        current = router.registry.get(key_for(sd))
        assert current is not None and current.pid == second.pid
        assert router.launch_count == 2
        assert echo(second, b"still served") == b"still served"
    assert state_of(second.pid) is None
    assert files_in(dirs.socket_dir) == []


# --- 2. a stopped backend: the pool, across processes ----------------------------------------------


@dataclass
class Holder:
    """A client process that launched the key's backend through the pool and
    keeps running (so it reaps that backend when it ends)."""

    proc: subprocess.Popen[str]
    backend: int

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("exit\n")
        self.proc.stdin.flush()
        assert self.proc.wait(timeout=HANG_GUARD) == 0


def start_holder(dirs: BackendDirs, sd: rp.ServiceDefinition, state_dir: Path, cleanup: Cleanup) -> Holder:
    proc = cleanup.popen(
        [sys.executable, str(POOL_CLIENT), client_config(dirs, sd, state_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    pid = int(Lines(proc.stdout).expect("backend ").split()[1])
    cleanup.watch(pid)
    return Holder(proc, pid)


def test_pool_kills_a_stopped_backend_it_can_prove_and_replaces_it(
    dirs: BackendDirs, rust_example: Path, cleanup: Cleanup, caplog: pytest.LogCaptureFixture
) -> None:
    sd = dirs.sd(install_rust_echo(dirs, rust_example))
    key = key_for(sd)
    state_dir = dirs.root / "state"
    holder = start_holder(dirs, sd, state_dir, cleanup)
    recorded = read_manifest(state_dir)
    assert recorded["daemon"]["pid"] == holder.backend
    mark = recorded["process"]
    assert mark["uid"] == os.geteuid()
    assert mark["start_ticks"] == start_ticks(holder.backend)
    old_endpoint = recorded["daemon"]["ipc_endpoint"]["path"]

    stop_and_wait(holder.backend)
    caplog.set_level(logging.INFO, logger="running_process")
    rp.refresh_logging()
    pool = rp.BackendPool(dirs.launcher(), state_dir, verify_timeout=SHORT_VERIFY)
    assert pool.verify_timeout == SHORT_VERIFY
    replacement = pool.get_or_launch(key, sd)
    cleanup.watch(replacement.pid)
    try:
        assert replacement.pid != holder.backend
        # Killed through a pidfd, then reaped by its parent, the holder.
        poll_until(lambda: state_of(holder.backend) is None, what="the stopped backend to be gone")
        assert not os.path.exists(old_endpoint)
        assert read_manifest(state_dir)["daemon"]["pid"] == replacement.pid
        messages = [r.getMessage() for r in caplog.records]
        assert any(f"killed pid {holder.backend}, the recorded backend of {key}" in m for m in messages), (
            messages
        )
        replacement.verify()
        assert echo(replacement, b"replaced") == b"replaced"
        holder.release()
    finally:
        replacement.shutdown(timeout=10.0)
    assert pool.stop(key) is False
    assert files_in(state_dir) == []
    assert files_in(dirs.socket_dir) == []


def test_pool_stop_kills_a_stopped_backend_it_can_prove(
    dirs: BackendDirs, rust_example: Path, cleanup: Cleanup
) -> None:
    sd = dirs.sd(install_rust_echo(dirs, rust_example))
    state_dir = dirs.root / "state"
    holder = start_holder(dirs, sd, state_dir, cleanup)
    endpoint = read_manifest(state_dir)["daemon"]["ipc_endpoint"]["path"]
    stop_and_wait(holder.backend)
    pool = rp.BackendPool(dirs.launcher(), state_dir, verify_timeout=SHORT_VERIFY)
    assert pool.stop(key_for(sd)) is True
    poll_until(lambda: state_of(holder.backend) is None, what="the stopped backend to be gone")
    assert not os.path.exists(endpoint)
    assert files_in(state_dir) == []
    holder.release()


# --- what cannot be proven is never signalled ---------------------------------------------------------


def tamper_reused_pid(recorded: dict[str, Any]) -> None:
    recorded["process"]["start_ticks"] += 1


def tamper_older_format(recorded: dict[str, Any]) -> None:
    del recorded["process"]


def tamper_other_uid(recorded: dict[str, Any]) -> None:
    recorded["process"]["uid"] = 65534


def tamper_other_executable(recorded: dict[str, Any]) -> None:
    recorded["process"]["exe"]["ino"] += 1


def tamper_other_boot(recorded: dict[str, Any]) -> None:
    recorded["daemon"]["boot_id"] = "00000000-0000-0000-0000-000000000000"


TAMPERING = {
    "older format without the process record": tamper_older_format,
    "start time differs (pid reused)": tamper_reused_pid,
    "uid differs": tamper_other_uid,
    "executable differs": tamper_other_executable,
    "another boot": tamper_other_boot,
}


@pytest.mark.parametrize("how", list(TAMPERING))
def test_a_stopped_backend_that_cannot_be_proven_is_never_signalled(
    dirs: BackendDirs, rust_example: Path, cleanup: Cleanup, how: str
) -> None:
    sd = dirs.sd(install_rust_echo(dirs, rust_example))
    key = key_for(sd)
    state_dir = dirs.root / "state"
    pool = rp.BackendPool(dirs.launcher(), state_dir, verify_timeout=SHORT_VERIFY)
    first = pool.get_or_launch(key, sd)
    cleanup.watch(first.pid)
    try:
        stop_and_wait(first.pid)
        recorded = read_manifest(state_dir)
        TAMPERING[how](recorded)
        path = manifest_path(state_dir)
        path.write_text(json.dumps(recorded))

        assert pool.stop(key) is False
        assert pending_signals(first.pid) == (0, 0)
        path.write_text(json.dumps(recorded))  # stop() removed it
        second = pool.get_or_launch(key, sd)
        cleanup.watch(second.pid)
        assert second.pid != first.pid
        # Replaced, but neither killed nor sent anything.
        assert state_of(first.pid) == "T"
        assert pending_signals(first.pid) == (0, 0)
        second.shutdown(timeout=10.0)
    finally:
        first.kill()
    assert pool.stop(key) is False


def test_a_manifest_naming_a_stopped_bystander_never_signals_it(
    dirs: BackendDirs, rust_example: Path, cleanup: Cleanup
) -> None:
    """The pid of a manifest is reused by an unrelated process, which does
    not answer either: the start time tells them apart."""
    sd = dirs.sd(install_rust_echo(dirs, rust_example))
    key = key_for(sd)
    state_dir = dirs.root / "state"
    pool = rp.BackendPool(dirs.launcher(), state_dir, verify_timeout=SHORT_VERIFY)
    first = pool.get_or_launch(key, sd)
    bystander = cleanup.popen(["sleep", "600"])
    try:
        stop_and_wait(bystander.pid)
        recorded = read_manifest(state_dir)
        recorded["daemon"]["pid"] = bystander.pid  # the recorded mark stays the backend's
        manifest_path(state_dir).write_text(json.dumps(recorded))
        second = pool.get_or_launch(key, sd)
        assert second.pid not in (first.pid, bystander.pid)
        assert state_of(bystander.pid) == "T"
        assert pending_signals(bystander.pid) == (0, 0)
        second.shutdown(timeout=10.0)
    finally:
        first.kill()
    assert pool.stop(key) is False


def mark_of(pid: int) -> dict[str, Any]:
    """What the pool records to recognise ``pid`` later, read from ``/proc``
    the same way."""
    exe = os.stat(f"/proc/{pid}/exe")
    return {
        "start_ticks": start_ticks(pid),
        "uid": os.geteuid(),
        "exe": {
            "dev": exe.st_dev,
            "ino": exe.st_ino,
            "size": exe.st_size,
            "mtime": [exe.st_mtime_ns // 1_000_000_000, exe.st_mtime_ns % 1_000_000_000],
            "ctime": [exe.st_ctime_ns // 1_000_000_000, exe.st_ctime_ns % 1_000_000_000],
        },
    }


@pytest.mark.parametrize(
    "bystander_kind",
    ["stopped sleep", "stopped backend of another key", "stopped backend of another key, its endpoint too"],
)
def test_a_manifest_forging_a_bystanders_own_mark_never_gets_it_signalled(
    dirs: BackendDirs, rust_example: Path, cleanup: Cleanup, bystander_kind: str
) -> None:
    """A manifest rewritten to name a bystander with the bystander's own start
    time, uid and executable stamp: the pool must not be turned into a way to
    kill it. Whichever step the verification fails at (the bystander does
    not own the recorded endpoint; or, named with its own endpoint, does not
    answer the probe), the bystander was not started for this key at that
    endpoint, as its environment shows, so it is never signalled."""
    sd = dirs.sd(install_rust_echo(dirs, rust_example))
    key = key_for(sd)
    state_dir = dirs.root / "state"
    pool = rp.BackendPool(dirs.launcher(), state_dir, verify_timeout=SHORT_VERIFY)
    first = pool.get_or_launch(key, sd)
    cleanup.watch(first.pid)
    other: Optional[rp.BackendHandle] = None
    try:
        if bystander_kind == "stopped sleep":
            bystander = cleanup.popen(["sleep", "600"]).pid
        else:
            # A backend of the very same binary, for another key.
            other_sd = dirs.sd(sd.binary_path, service_name="other")
            other = dirs.launcher().launch(key_for(other_sd), other_sd)
            bystander = other.pid
        cleanup.watch(bystander)
        stop_and_wait(bystander)
        recorded = read_manifest(state_dir)
        recorded["daemon"]["pid"] = bystander
        recorded["process"] = mark_of(bystander)
        if bystander_kind.endswith("its endpoint too"):
            assert other is not None
            recorded["daemon"]["ipc_endpoint"]["path"] = other.endpoint.path
        path = manifest_path(state_dir)
        path.write_text(json.dumps(recorded))

        assert pool.stop(key) is False
        path.write_text(json.dumps(recorded))
        second = pool.get_or_launch(key, sd)
        assert second.pid not in (first.pid, bystander)
        assert state_of(bystander) == "T"
        assert pending_signals(bystander) == (0, 0)
        second.shutdown(timeout=10.0)
    finally:
        first.kill()
        if other is not None:
            other.kill()
    assert pool.stop(key) is False


def test_a_request_refused_on_our_side_never_kills_the_recorded_backend(
    dirs: BackendDirs, rust_example: Path
) -> None:
    """A caller whose definition names a binary that cannot be used fails,
    and the healthy backend others share is left running: only a failure of
    the backend itself leads to a kill."""
    sd = dirs.sd(install_rust_echo(dirs, rust_example))
    key = key_for(sd)
    state_dir = dirs.root / "state"
    pool = rp.BackendPool(dirs.launcher(), state_dir, verify_timeout=SHORT_VERIFY)
    first = pool.get_or_launch(key, sd)
    try:
        recorded = read_manifest(state_dir)
        missing = dirs.sd(binary=str(dirs.version_dir / "not-installed"))
        with pytest.raises(rp.BinaryPolicyError) as info:
            pool.get_or_launch(key, missing)
        assert info.value.variant == "CanonicalizeBinary"
        assert first.is_alive()
        first.verify()
        assert read_manifest(state_dir) == recorded
        assert pool.get_or_launch(key, sd).pid == first.pid
    finally:
        first.shutdown(timeout=10.0)
    assert pool.stop(key) is False


def test_an_older_manifest_of_a_healthy_backend_is_still_adopted(
    dirs: BackendDirs, rust_example: Path
) -> None:
    sd = dirs.sd(install_rust_echo(dirs, rust_example))
    key = key_for(sd)
    state_dir = dirs.root / "state"
    pool = rp.BackendPool(dirs.launcher(), state_dir)
    first = pool.get_or_launch(key, sd)
    try:
        recorded = read_manifest(state_dir)
        tamper_older_format(recorded)
        manifest_path(state_dir).write_text(json.dumps(recorded))
        again = rp.BackendPool(dirs.launcher(), state_dir).get_or_launch(key, sd)
        assert again.pid == first.pid
        assert "process" not in read_manifest(state_dir)  # adopted as is, not rewritten
    finally:
        first.shutdown(timeout=10.0)
    assert pool.stop(key) is False


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_pool_verify_timeout_must_be_positive(dirs: BackendDirs, value: float) -> None:
    with pytest.raises(ValueError, match="verify_timeout"):
        rp.BackendPool(dirs.launcher(), dirs.root / "state", verify_timeout=value)
