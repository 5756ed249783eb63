"""A recorded backend that gives no probe answer in time: busy (its threads
keep running, the probe waits in its backlog) is retired, never signalled,
and left to finish with its clients; hung (stopped for good) is killed as
before. Either way the caller gets a fresh verified backend."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import running_process as rp
from support.launch import BackendDirs, key_for
from support.procfs import process_running, state_of
from support.waits import HANG_GUARD, poll_until

pytestmark = pytest.mark.hostile


@pytest.fixture
def pools(dirs: BackendDirs) -> Iterator[tuple[rp.BackendPool, rp.BackendPool]]:
    """Two pools on one state directory, as two processes would have: the
    second remembers no proof, so it verifies with a full probe."""
    state = dirs.root / "state"
    first = rp.BackendPool(dirs.launcher(), state, verify_timeout=1.0)
    second = rp.BackendPool(dirs.launcher(), state, verify_timeout=1.0)
    try:
        yield first, second
    finally:
        first.stop_all(timeout=5.0)


def stall(handle: rp.BackendHandle, signum: int) -> None:
    """Stalls a ``stall-on-signal`` backend and waits until it says so."""
    word = "busy" if signum == signal.SIGUSR1 else "hung"
    os.kill(handle.pid, signum)
    poll_until(
        lambda: word in Path(handle.log_path).read_text().splitlines(),
        what=f"the backend to be {word}",
    )


def receive(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        assert chunk, "the backend closed the connection"
        data += chunk
    return data


def records(state: Path) -> list[dict[str, object]]:
    return sorted(
        (json.loads(p.read_text()) for p in state.glob("*.json")),
        key=lambda m: bool(m.get("retired")),
    )


def test_a_busy_backend_is_retired_not_killed_and_left_to_its_clients(
    dirs: BackendDirs, pools: tuple[rp.BackendPool, rp.BackendPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = pools
    monkeypatch.setenv("V1_BACKEND_MODE", "stall-on-signal")
    sd = dirs.sd()
    key = key_for(sd)
    busy = first.get_or_launch(key, sd)
    client = busy.connect()
    client.settimeout(HANG_GUARD)
    client.sendall(b"hello")
    assert receive(client, 5) == b"hello"
    stall(busy, signal.SIGUSR1)
    monkeypatch.setenv("V1_BACKEND_MODE", "echo")
    fresh = second.get_or_launch(key, sd)
    assert fresh.pid != busy.pid
    fresh.verify()
    # Its client's session goes on.
    with client:
        client.sendall(b"still served")
        assert receive(client, 12) == b"still served"
    # Not signalled: still running (not ended, not stopped), as our child
    # it would be reaped at once if it had died.
    assert process_running(busy.pid) and state_of(busy.pid) not in ("T", "t", "Z")
    entries = {entry.daemon.pid: entry for entry in second.list()}
    assert entries[busy.pid].retired and entries[busy.pid].alive
    assert not entries[fresh.pid].retired
    assert "retired=True" in repr(entries[busy.pid])
    assert [bool(m.get("retired")) for m in records(Path(second.state_dir))] == [False, True]
    # No longer handed out, by either pool.
    assert second.get_or_launch(key, sd).pid == fresh.pid
    assert first.get_or_launch(key, sd).pid == fresh.pid
    # stop ends both: the retired one with SIGTERM.
    assert second.stop(key)
    poll_until(lambda: not process_running(busy.pid), what="the retired backend to end")
    assert list(Path(second.state_dir).glob("*.json")) == []


def test_a_hung_backend_is_killed_and_replaced(
    dirs: BackendDirs, pools: tuple[rp.BackendPool, rp.BackendPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = pools
    monkeypatch.setenv("V1_BACKEND_MODE", "stall-on-signal")
    sd = dirs.sd()
    key = key_for(sd)
    hung = first.get_or_launch(key, sd)
    stall(hung, signal.SIGUSR2)
    monkeypatch.setenv("V1_BACKEND_MODE", "echo")
    fresh = second.get_or_launch(key, sd)
    assert fresh.pid != hung.pid
    poll_until(lambda: not process_running(hung.pid), what="the hung backend to be killed")
    assert hung.wait(timeout=5.0) == -signal.SIGKILL
    assert [e.daemon.pid for e in second.list()] == [fresh.pid]


def test_a_stopped_backend_is_hung_not_busy(
    dirs: BackendDirs, pools: tuple[rp.BackendPool, rp.BackendPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGSTOP freezes every thread of a backend that would otherwise be
    working: no progress, so it is hung, and killed."""
    first, second = pools
    monkeypatch.setenv("V1_BACKEND_MODE", "stall-on-signal")
    sd = dirs.sd()
    key = key_for(sd)
    stopped = first.get_or_launch(key, sd)
    stall(stopped, signal.SIGUSR1)
    os.kill(stopped.pid, signal.SIGSTOP)
    poll_until(lambda: state_of(stopped.pid) in ("T", "t"), what="the backend to stop")
    monkeypatch.setenv("V1_BACKEND_MODE", "echo")
    fresh = second.get_or_launch(key, sd)
    assert fresh.pid != stopped.pid
    assert stopped.wait(timeout=5.0) == -signal.SIGKILL
    assert [e.daemon.pid for e in second.list()] == [fresh.pid]
