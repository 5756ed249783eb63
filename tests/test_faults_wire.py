"""Faults on the wire: peers that close a connection in the middle of a
frame, and slowloris peers that send one byte per second.

Both directions are covered: rude peers against our backend SDK (the Rust
example backend and the Python example), which must keep serving everyone
else and leak no descriptor; and rude backends against the launcher, whose
verification must fail with a typed error (at once for a cut answer, at its
deadline for a trickled one) and leave nothing behind.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

import running_process as rp
from support.launch import (
    BackendDirs,
    Launches,
    echo,
    install_fault_backend,
    install_python_echo,
    install_rust_echo,
    key_for,
)
from support.leftovers import assert_nothing_left_behind, snapshot
from support.procfs import fd_count, state_of
from support.waits import HANG_GUARD, poll_until
from support.wire import probe_request

pytestmark = pytest.mark.slow

# More slowloris peers than the SDK classifies at once (MAX_CLASSIFYING, 64).
SLOW_PEERS = 70


def connect(handle: rp.BackendHandle) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(HANG_GUARD)
    conn.connect(handle.endpoint.path)
    return conn


@pytest.fixture(params=["rust", "python"])
def sdk_backend(request: pytest.FixtureRequest, dirs: BackendDirs, launches: Launches) -> rp.BackendHandle:
    """A launched example backend of the SDK, Rust or Python."""
    if request.param == "rust":
        binary = install_rust_echo(dirs, request.getfixturevalue("rust_example"))
    else:
        binary = install_python_echo(dirs)
    sd = dirs.sd(binary)
    return launches.launch(dirs.launcher(), key_for(sd), sd)


def settled_fd_count(handle: rp.BackendHandle) -> int:
    """The backend's descriptor count once a served client and a probe have
    come and gone (threads and buffers warmed up)."""
    handle.verify(timeout=HANG_GUARD)
    assert echo(handle, b"warm up") == b"warm up"
    last = [-1]

    def stable() -> bool:
        now = fd_count(handle.pid)
        same = now == last[0]
        last[0] = now
        return same

    poll_until(stable, what="the backend's descriptors to settle")
    return last[0]


def assert_still_serving(handle: rp.BackendHandle, rounds: int = 3) -> None:
    for i in range(rounds):
        handle.verify(timeout=HANG_GUARD)
        payload = f"client {i} is served".encode() * 50
        assert echo(handle, payload) == payload


def assert_fds_return_to(handle: rp.BackendHandle, baseline: int) -> None:
    """No descriptor leaked. At most the baseline: the baseline may include
    the server's end of the warm-up connection, closed just after the
    client saw its answer."""
    poll_until(
        lambda: fd_count(handle.pid) <= baseline,
        what=lambda: f"backend descriptors back to {baseline} (now {fd_count(handle.pid)})",
    )


def assert_clean_shutdown(handle: rp.BackendHandle) -> None:
    rc = handle.shutdown(timeout=HANG_GUARD)
    assert rc == 0, Path(handle.log_path).read_text(errors="replace")[:3000]
    assert state_of(handle.pid) is None
    assert not os.path.exists(handle.endpoint.path)


# --- 3. peers that close mid-frame, against the SDK ------------------------------------------


def half_a_probe() -> bytes:
    request = probe_request()
    return request[: 5 + (len(request) - 5) // 2]


RUDE_PEERS: dict[str, Callable[[], bytes]] = {
    "nothing": lambda: b"",
    "3 bytes of a header": lambda: probe_request()[:3],
    "a header alone": lambda: probe_request()[:5],
    "half a probe": half_a_probe,
    "a whole probe, answer never read": probe_request,
    "a header declaring 16 MiB": lambda: b"\x01" + struct.pack("<I", 16 << 20) + b"x" * 10,
    "half an application message": lambda: b"GET /half-a-requ",
}


def test_sdk_peers_closing_mid_frame_do_not_disturb_others(sdk_backend: rp.BackendHandle) -> None:
    handle = sdk_backend
    baseline = settled_fd_count(handle)
    for _ in range(3):
        rude = []
        for make in RUDE_PEERS.values():
            conn = connect(handle)
            conn.sendall(make())
            rude.append(conn)
        # While they hang in the middle of their frames, others are served ...
        assert_still_serving(handle)
        # ... and after they all close mid-frame, too.
        for conn in rude:
            conn.close()
        assert_still_serving(handle)
    assert handle.is_alive()
    assert_fds_return_to(handle, baseline)
    assert_clean_shutdown(handle)


# --- 4. slowloris peers, against the SDK ------------------------------------------------------------


class Slowloris:
    """``count`` connections, each sending ``payload`` one byte per second
    on its own thread until stopped."""

    def __init__(self, handle: rp.BackendHandle, count: int, payload: bytes) -> None:
        self.stop = threading.Event()
        self.sent = [0] * count
        self.failures: list[BaseException] = []
        self.conns = [connect(handle) for _ in range(count)]
        self.threads = [
            threading.Thread(target=self._trickle, args=(i, payload), daemon=True) for i in range(count)
        ]
        for thread in self.threads:
            thread.start()

    def _trickle(self, i: int, payload: bytes) -> None:
        try:
            for byte in payload:
                if self.stop.is_set():
                    return
                self.conns[i].sendall(bytes([byte]))
                self.sent[i] += 1
                self.stop.wait(1.0)  # the fault's pace, not a synchronisation
        except BaseException as e:  # pragma: no cover - reported by the test
            self.failures.append(e)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=HANG_GUARD)
        for conn in self.conns:
            conn.close()


@pytest.fixture
def slowloris_factory() -> Iterator[Callable[[rp.BackendHandle, int, bytes], Slowloris]]:
    made: list[Slowloris] = []

    def make(handle: rp.BackendHandle, count: int, payload: bytes) -> Slowloris:
        made.append(Slowloris(handle, count, payload))
        return made[-1]

    try:
        yield make
    finally:
        for peers in made:
            peers.close()


@pytest.mark.parametrize("payload", ["probe", "application"])
def test_sdk_serves_probes_and_clients_while_slowloris_peers_trickle(
    sdk_backend: rp.BackendHandle,
    slowloris_factory: Callable[[rp.BackendHandle, int, bytes], Slowloris],
    payload: str,
) -> None:
    handle = sdk_backend
    baseline = settled_fd_count(handle)
    data = probe_request() if payload == "probe" else b"GET / HTTP/1.1\r\n" * 8
    peers = slowloris_factory(handle, SLOW_PEERS, data)
    poll_until(lambda: all(n >= 1 for n in peers.sent), what="every slowloris peer to start")
    # Probes and clients are served, round after round, until every peer has
    # trickled three bytes: well past the SDK's classification window, so the
    # peers are held both by the classifier and by the application.
    rounds = 0
    while not all(n >= 3 for n in peers.sent):
        assert_still_serving(handle, rounds=1)
        rounds += 1
    assert rounds >= 1
    # They were trickling the whole time: none finished, none was cut off.
    assert peers.failures == []
    assert all(thread.is_alive() for thread in peers.threads)
    assert all(n < len(data) for n in peers.sent)
    peers.close()
    assert_still_serving(handle)
    assert_fds_return_to(handle, baseline)
    assert_clean_shutdown(handle)


# --- 3 and 4. rude backends, against the launcher -------------------------------------------------


def warmed_launcher(
    dirs: BackendDirs, launches: Launches, sd: rp.ServiceDefinition, ready_timeout: float
) -> rp.CommandBackendLauncher:
    """A launcher that has launched (and shut down) the backend once, in its
    ordinary mode, so that what a launcher keeps for reuse (allocators,
    cached digests, directory watches) exists before the snapshot a test
    compares against."""
    launcher = dirs.launcher(ready_timeout=ready_timeout)
    assert os.environ.get("FAULT_MODE") is None
    handle = launches.launch(launcher, key_for(sd), sd)
    assert handle.shutdown(timeout=HANG_GUARD) == 0
    return launcher


@pytest.mark.parametrize(
    ("cut", "pattern"),
    [
        ("0", r"after 0 of 5 bytes"),
        ("3", r"after 3 of 5 bytes"),
        ("half", r"after (\d+) of (\d+) bytes"),
    ],
)
def test_launch_fails_at_once_when_the_probe_answer_is_cut(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch, cut: str, pattern: str
) -> None:
    sd = dirs.sd(install_fault_backend(dirs))
    ready_timeout = 120.0
    launcher = warmed_launcher(dirs, launches, sd, ready_timeout)
    monkeypatch.setenv("FAULT_MODE", "cut-probe")
    monkeypatch.setenv("FAULT_CUT", cut)
    before = snapshot()
    started = time.monotonic()
    with pytest.raises(rp.BackendLaunchError) as info:
        launches.launch(launcher, key_for(sd), sd)
    elapsed = time.monotonic() - started
    err = info.value
    assert type(err) is rp.ProbeError, repr(err)
    found = re.search(f"peer closed the connection {pattern}", err.reason)
    assert found, err.reason
    if cut == "half":
        received, expected = int(found.group(1)), int(found.group(2))
        assert 0 < received < expected
    # A closed connection ends the verification; it never waits for the timeout.
    assert elapsed < ready_timeout
    assert_nothing_left_behind(before, dirs)


def test_launch_gives_up_on_a_trickled_probe_answer_at_its_deadline(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch
) -> None:
    sd = dirs.sd(install_fault_backend(dirs))
    ready_timeout = 6.0
    launcher = warmed_launcher(dirs, launches, sd, ready_timeout)
    monkeypatch.setenv("FAULT_MODE", "trickle-probe")
    before = snapshot()
    started = time.monotonic()
    with pytest.raises(rp.BackendLaunchError) as info:
        launches.launch(launcher, key_for(sd), sd)
    elapsed = time.monotonic() - started
    err = info.value
    assert type(err) is rp.NotReadyError, repr(err)
    assert err.timeout == ready_timeout
    # The answer was being trickled when the deadline came ...
    assert "trickling" in err.log_tail, err.log_tail
    # ... and the trickle could not stretch it.
    assert ready_timeout <= elapsed < ready_timeout + HANG_GUARD
    assert state_of(err.pid) is None  # killed and reaped
    assert_nothing_left_behind(before, dirs)
