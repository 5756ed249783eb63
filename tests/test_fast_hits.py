"""Kernel-attested re-verification: a backend this process fully verified is
adopted again (a pool hit) on the kernel's word (peer credentials, start
time and state, executable stamp) without the probe round trip, within
``full_probe_interval``; and every impostor the full probe refuses is still
refused. The backend is the standard-library v1 peer, which logs each probe
it answers, so the tests see which path a hit took. (A binary rewritten
after the backend was proven: test_hostile_pool.py's
test_a_manifest_for_a_binary_modified_since_is_replaced_by_the_new_binary,
whose pool launched the backend and so had proven it.)"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator

import pytest

import running_process as rp
from support.hostile import Impostor
from support.launch import BackendDirs, echo
from support.leftovers import assert_gone
from support.pool import Kit
from support.procfs import children, proc_stat
from support.waits import HANG_GUARD, poll_until


def probes_answered(handle: rp.BackendHandle) -> int:
    with open(handle.log_path, encoding="utf-8", errors="replace") as log:
        return sum(1 for line in log if line.strip() == "probe answered")


MakePool = Callable[..., Kit]


@pytest.fixture
def make_pool(dirs: BackendDirs) -> Iterator[MakePool]:
    """Pools over the test's tree, each with a launcher of its own; every
    backend they handed out is killed at teardown."""
    before = set(children())
    made: list[Kit] = []

    def make(interval: float = 3600.0, verify_timeout: float = 5.0) -> Kit:
        kit = Kit(dirs, verify_timeout=verify_timeout, full_probe_interval=interval)
        made.append(kit)
        return kit

    yield make
    for pool in made:
        for handle in pool.handles:
            handle.kill()
    left = {pid: st for pid, st in children().items() if pid not in before}
    assert left == {}, f"child processes left behind: {left}"


def test_hits_after_a_full_verification_take_no_probe(make_pool: MakePool) -> None:
    kit = make_pool()
    first = kit.get()
    launched = probes_answered(first)
    assert launched >= 1
    for _ in range(5):
        hit = kit.get()
        assert hit.pid == first.pid
        assert echo(hit, b"hit") == b"hit"
    # The hits connected (the backend saw connections that closed without a
    # byte) but asked nothing.
    assert probes_answered(first) == launched
    # An explicit verify() always probes.
    first.verify()
    assert probes_answered(first) == launched + 1


def test_with_a_zero_interval_every_hit_probes(make_pool: MakePool) -> None:
    kit = make_pool(interval=0.0)
    first = kit.get()
    launched = probes_answered(first)
    for n in range(1, 4):
        assert kit.get().pid == first.pid
        assert probes_answered(first) == launched + n


def test_a_launcher_that_did_not_verify_the_backend_probes_once(make_pool: MakePool) -> None:
    """What is proven belongs to the launcher that proved it: a pool over
    another launcher (as in another process) probes on its first hit, and
    not on the next ones."""
    first = make_pool().get()
    launched = probes_answered(first)
    other = make_pool()
    assert other.get().pid == first.pid
    assert probes_answered(first) == launched + 1
    assert other.get().pid == first.pid
    assert probes_answered(first) == launched + 1


@pytest.mark.parametrize("mode", ["steal-relay", "steal-copy"])
def test_an_impostor_in_front_of_an_attested_backend_is_still_refused(make_pool: MakePool, mode: str) -> None:
    """The endpoint of a backend this process proved is taken over: the
    kernel names the impostor as the listener, so the hit takes the full
    path, which refuses it; the impostor is never signalled and a fresh
    backend is launched."""
    kit = make_pool()
    first = kit.get()
    path = first.endpoint.path
    with Impostor(mode, path) as impostor:
        assert impostor.ready() == (first.pid, path)
        replacement = kit.get()
        assert replacement.pid not in (first.pid, impostor.pid)
        assert replacement.endpoint.path != path
        replacement.verify()
        assert impostor.running()
        assert first.wait(timeout=HANG_GUARD) == -9
    os.unlink(path + ".real")
    assert_gone(first.pid)


def test_a_stopped_attested_backend_is_not_handed_out(make_pool: MakePool) -> None:
    """A SIGSTOPped backend passes every kernel check but its state: the hit
    takes the full probe, which times out, and a fresh backend replaces it
    (the stopped one, provably the recorded process, is killed)."""
    kit = make_pool(verify_timeout=0.5)
    first = kit.get()
    os.kill(first.pid, signal.SIGSTOP)
    poll_until(lambda: (proc_stat(first.pid) or ("?",))[0] == "T", what="the backend to stop")
    replacement = kit.get()
    assert replacement.pid != first.pid
    assert echo(replacement, b"fresh") == b"fresh"
    assert first.wait(timeout=HANG_GUARD) == -9


def test_a_backend_that_ended_is_replaced(make_pool: MakePool) -> None:
    kit = make_pool()
    first = kit.get()
    first.kill()
    replacement = kit.get()
    assert replacement.pid != first.pid
    assert echo(replacement, b"again") == b"again"
