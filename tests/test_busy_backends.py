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


def stalling_backend(
    dirs: BackendDirs, pool: rp.BackendPool, monkeypatch: pytest.MonkeyPatch
) -> tuple[rp.BackendHandle, rp.ServiceDefinition, rp.BackendKey]:
    """A ``stall-on-signal`` backend launched through ``pool``; later
    launches start ordinary echo backends."""
    monkeypatch.setenv("V1_BACKEND_MODE", "stall-on-signal")
    sd = dirs.sd()
    key = key_for(sd)
    handle = pool.get_or_launch(key, sd)
    monkeypatch.setenv("V1_BACKEND_MODE", "echo")
    return handle, sd, key


def test_a_busy_backend_is_retired_not_killed_and_left_to_its_clients(
    dirs: BackendDirs, pools: tuple[rp.BackendPool, rp.BackendPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = pools
    busy, sd, key = stalling_backend(dirs, first, monkeypatch)
    client = busy.connect()
    client.settimeout(HANG_GUARD)
    client.sendall(b"hello")
    assert receive(client, 5) == b"hello"
    stall(busy, signal.SIGUSR1)
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


@pytest.mark.parametrize("how", ["hung", "stopped"])
def test_a_backend_that_makes_no_progress_is_killed_and_replaced(
    dirs: BackendDirs, pools: tuple[rp.BackendPool, rp.BackendPool], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Blocked for good (hung), or SIGSTOPped while it would otherwise be
    working: no thread runs, so it is not busy, and is killed."""
    first, second = pools
    stuck, sd, key = stalling_backend(dirs, first, monkeypatch)
    if how == "hung":
        stall(stuck, signal.SIGUSR2)
    else:
        stall(stuck, signal.SIGUSR1)
        os.kill(stuck.pid, signal.SIGSTOP)
        poll_until(lambda: state_of(stuck.pid) in ("T", "t"), what="the backend to stop")
    fresh = second.get_or_launch(key, sd)
    assert fresh.pid != stuck.pid
    assert stuck.wait(timeout=HANG_GUARD) == -signal.SIGKILL
    assert [e.daemon.pid for e in second.list()] == [fresh.pid]
