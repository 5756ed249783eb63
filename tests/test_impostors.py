"""Same-user impostors against the verified launch and re-verification.

Every impostor is a real program (tests/backends/impostor_v1.py) started by
the test. It learns the endpoint path the way any process of the same user
can, from ``/proc/<pid>/environ`` of the backend, and then binds the path
before the backend, relays connections to the real backend, or answers with
the backend's identity copied from ``/proc`` and the right nonce. Each test
asserts the exact ``VerificationError`` (field, expected and actual values),
that the launcher killed and reaped its own backend, and that nothing else is
left: the impostor (the test's own child) is killed by the test.
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import running_process as rp
from support.hostile import Impostor, install_impostor_backend, launch_fails, same_identity
from support.launch import BackendDirs, Launches, install, install_fault_backend, key_for
from support.leftovers import assert_gone, assert_nothing_left_behind, snapshot
from support.procfs import process_running
from support.waits import HANG_GUARD, read_event
from support.wire import probe

pytestmark = pytest.mark.hostile


def launch_against(
    dirs: BackendDirs,
    launches: Launches,
    monkeypatch: pytest.MonkeyPatch,
    victim_role: str,
    mode: str,
) -> tuple[rp.VerificationError, Impostor, int, str]:
    """Launches impostor_v1.py as a backend in ``victim_role`` while an
    impostor in ``mode`` attacks it; returns the error, the impostor, the
    backend's pid and the endpoint path. The backend binds its endpoint
    itself (``Listener.BIND``), which leaves the impostor a moment to take
    the path first; a launcher-bound endpoint leaves none (see
    ``test_a_launcher_bound_endpoint_cannot_be_taken_before_the_backend_runs``)."""
    monkeypatch.setenv("HOSTILE_VICTIM", victim_role)
    sd = dirs.sd(install_impostor_backend(dirs), listener=rp.Listener.BIND)
    before = snapshot()
    impostor = Impostor(mode, dirs.socket_dir)
    try:
        err = launch_fails(dirs, launches, rp.VerificationError, sd)
        victim, path = impostor.ready()
    except BaseException:
        impostor.stop()
        raise
    # The launcher killed and reaped its own backend before raising.
    assert not process_running(victim)
    assert_gone(victim)
    # The impostor is untouched: it is not provably related to the launch.
    assert impostor.running()
    impostor.stop()
    # A side-bound victim leaves the socket it bound beside its endpoint (it
    # was killed); whether it got that far before the launcher refused the
    # impostor at the endpoint depends on timing.
    side = [os.path.basename(path) + ".real"] if victim_role == "side-bound" else []
    side = [name for name in side if (dirs.socket_dir / name).exists()]
    assert_nothing_left_behind(before, dirs, socket_files=side)
    for name in side:
        os.unlink(dirs.socket_dir / name)
    return err, impostor, victim, path


def test_a_squatter_bound_before_the_backend_is_refused_on_the_peer_pid(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch
) -> None:
    err, impostor, victim, _ = launch_against(dirs, launches, monkeypatch, "late-sdk", "squat")
    assert (err.field, err.expected, err.actual) == ("peer pid", str(victim), str(impostor.pid))


def test_a_copied_identity_from_another_pid_is_refused_on_the_peer_pid(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch
) -> None:
    err, impostor, victim, _ = launch_against(dirs, launches, monkeypatch, "late-sdk", "copy")
    assert (err.field, err.expected, err.actual) == ("peer pid", str(victim), str(impostor.pid))


def test_a_relay_to_the_real_backend_is_refused_on_the_peer_pid(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The backend answers probes at PATH.real with its true identity; the
    # relay in front of it would pass every other check.
    err, impostor, victim, _ = launch_against(dirs, launches, monkeypatch, "side-bound", "relay")
    assert (err.field, err.expected, err.actual) == ("peer pid", str(victim), str(impostor.pid))


@pytest.mark.parametrize("mode", ["steal-relay", "steal-copy"])
def test_an_impostor_in_front_of_a_verified_backend_answers_perfectly_and_is_refused(
    dirs: BackendDirs, launches: Launches, rust_example: Path, mode: str
) -> None:
    """The endpoint of a running, verified backend is taken over: its socket
    file renamed aside, the path bound by the impostor, which relays to the
    real backend or answers with its identity copied from /proc. An
    independent probe shows that the answer is right in every field the
    launcher compares, with the right nonce; only the peer credentials give
    it away, and ``verify()`` says so. Neither the backend nor the impostor
    is signalled by the failed verification."""
    binary = install(dirs.version_dir / "echo", rust_example.read_bytes())
    sd = dirs.sd(binary)
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    path = handle.endpoint.path
    with Impostor(mode, path) as impostor:
        victim, at = impostor.ready()
        assert (victim, at) == (handle.pid, path)
        answer = probe(path)
        assert answer.peer_pid == impostor.pid
        assert answer.peer_uid == os.geteuid()
        assert answer.nonce_ok
        assert same_identity(answer.identity, handle.daemon), (answer.identity, handle.daemon)

        with pytest.raises(rp.VerificationError) as info:
            handle.verify(timeout=HANG_GUARD)
        err = info.value
        assert (err.field, err.expected, err.actual) == ("peer pid", str(handle.pid), str(impostor.pid))
        assert handle.is_alive() and impostor.running()
        # The real backend still answers at the renamed path.
        assert probe(path + ".real").peer_pid == handle.pid

        assert handle.kill() == -9
    # The renamed socket file is the impostor's doing; nobody can tell it
    # apart from any other file in the directory.
    assert sorted(os.listdir(dirs.socket_dir)) == [os.path.basename(path) + ".real"]
    os.unlink(path + ".real")
    assert_gone(handle.pid)


@pytest.mark.parametrize("mode", ["squat", "copy", "plant-file", "plant-symlink"])
def test_a_launcher_bound_endpoint_cannot_be_taken_before_the_backend_runs(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """With the launcher binding the endpoint (the default,
    ``Listener.INHERIT``), the socket is there and listening before the
    backend runs a line of its own. An attacker who finds the path in /proc
    while the backend is held at a gate can neither bind it nor plant
    anything at it; once the gate opens, the launch verifies the real
    backend."""
    events, gate = dirs.root / "events", dirs.root / "gate"
    os.mkfifo(events, 0o600)
    os.mkfifo(gate, 0o600)
    monkeypatch.setenv("FAULT_MODE", "gate")
    monkeypatch.setenv("FAULT_EVENTS", str(events))
    monkeypatch.setenv("FAULT_GATE", str(gate))
    sd = dirs.sd(install_fault_backend(dirs))
    events_fd = os.open(events, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with ThreadPoolExecutor(1) as pool:
        launched = pool.submit(launches.launch, dirs.launcher(), key_for(sd), sd)
        try:
            word, pid = read_event(events_fd).split()
            assert word == "started"
        finally:
            os.close(events_fd)
        with Impostor(mode, dirs.socket_dir, str(dirs.root / "target")) as impostor:
            outcome, victim, path, error = impostor.line().split(" ")
        assert (outcome, victim) == ("failed", pid)
        assert error == ("OSError" if mode in ("squat", "copy") else "FileExistsError")
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode) and st.st_uid == os.geteuid()
        assert stat.S_IMODE(st.st_mode) == 0o600
        with open(gate, "w", encoding="ascii") as opened:
            opened.write("go\n")
        handle = launched.result(timeout=HANG_GUARD)
    assert (handle.pid, handle.endpoint.path) == (int(pid), path)
    handle.verify()
    assert not os.path.lexists(dirs.root / "target")
