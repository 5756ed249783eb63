"""Leftovers of ended backends: a clean stop takes its log with it (unless
asked to keep it), and ``BackendPool.gc`` / ``running-process gc`` remove
dead records, unused lock files, interrupted writes, logs nobody has open
and sockets nobody listens on, in the user's own private directories only,
never anything in use."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import running_process as rp
from running_process import cli
from support.launch import BackendDirs
from support.leftovers import files_in
from support.pool import Kit
from support.procfs import process_running
from support.values import NOBODY_UID, requires_root
from support.waits import poll_until


@pytest.fixture
def kit(dirs: BackendDirs) -> Iterator[Kit]:
    k = Kit(dirs)
    try:
        yield k
    finally:
        k.pool.stop_all(timeout=1.0)
        for handle in k.handles:
            handle.kill()


def logs(kit: Kit) -> list[str]:
    return files_in(kit.dirs.log_dir)


def test_a_clean_stop_removes_the_backends_log(kit: Kit) -> None:
    kit.get()
    assert len(logs(kit)) == 1
    assert kit.pool.stop(kit.key)
    assert logs(kit) == []


def test_keep_log_keeps_it(kit: Kit) -> None:
    kit.get()
    (log,) = logs(kit)
    assert kit.pool.stop(kit.key, keep_log=True)
    assert logs(kit) == [log]
    kit.get()
    assert kit.pool.stop_all(keep_log=True) == 1
    assert len(logs(kit)) == 2


def test_a_backend_that_had_to_be_killed_keeps_its_log(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("V1_BACKEND_MODE", "ignore-term")
    handle = kit.get()
    assert kit.pool.stop(kit.key, timeout=0.5)
    assert not process_running(handle.pid)
    assert len(logs(kit)) == 1


def gone_backend(kit: Kit) -> rp.BackendHandle:
    """A pool backend killed behind the pool's back: its record, lock file,
    socket file and log stay."""
    handle = kit.get()
    os.kill(handle.pid, signal.SIGKILL)
    poll_until(lambda: not process_running(handle.pid), what="the killed backend to end")
    return handle


def test_gc_removes_what_a_gone_backend_left_and_nothing_else(kit: Kit, dirs: BackendDirs) -> None:
    handle = gone_backend(kit)
    record = kit.manifest()
    endpoint = Path(handle.daemon.ipc_endpoint.path)
    assert len(logs(kit)) == 1
    # Another key's live backend, whose files must all stay.
    other_sd = dirs.sd(service_name="other")
    other = kit.pool.get_or_launch(rp.BackendKey.for_service(other_sd, "1.0.0"), other_sd)
    kit.handles.append(other)
    # An unused lock file and an interrupted write.
    stray_lock = kit.state_dir / "unused-0000.lock"
    stray_lock.write_text("")
    stray_tmp = kit.state_dir / ".x.json.00ff.tmp"
    stray_tmp.write_text("{")
    preview = kit.pool.gc(dry_run=True, min_age=0)
    assert preview["records"] == [str(record)]
    assert set(preview["locks"]) == {str(record.with_suffix(".lock")), str(stray_lock)}
    assert preview["temporary"] == [str(stray_tmp)]
    assert len(preview["logs"]) == 1 and os.path.basename(handle.log_path) in preview["logs"][0]
    assert record.exists() and stray_lock.exists() and len(logs(kit)) == 2  # a dry run removes nothing
    report = kit.pool.gc(min_age=0)
    assert {k: sorted(v) if isinstance(v, list) else v for k, v in report.items()} == {
        k: sorted(v) if isinstance(v, list) else v for k, v in preview.items()
    }
    assert not record.exists() and not stray_lock.exists() and not stray_tmp.exists()
    assert not endpoint.exists()
    assert logs(kit) == [os.path.basename(other.log_path)]
    # The live backend is untouched and still verifies.
    assert process_running(other.pid) and Path(other.daemon.ipc_endpoint.path).exists()
    other.verify()
    assert kit.pool.gc(min_age=0) == {
        "records": [], "locks": [], "temporary": [], "logs": [], "sockets": [], "bytes": 0,
    }  # fmt: skip


def test_gc_leaves_young_files_alone(kit: Kit) -> None:
    gone_backend(kit)
    report = kit.pool.gc(min_age=3600)
    assert all(report[kind] == [] for kind in ("records", "locks", "temporary", "logs", "sockets"))
    assert kit.manifest().exists() and len(logs(kit)) == 1


def test_gc_leaves_a_key_whose_lock_is_held(kit: Kit) -> None:
    gone_backend(kit)
    record = kit.manifest()
    with open(record.with_suffix(".lock"), "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        report = kit.pool.gc(min_age=0)
        assert report["records"] == [] and record.exists()
    assert kit.pool.gc(min_age=0)["records"] == [str(record)]


def test_gc_keeps_a_log_that_a_process_has_open(kit: Kit) -> None:
    gone_backend(kit)
    (log,) = logs(kit)
    with open(kit.dirs.log_dir / log, "a"):
        assert kit.pool.gc(min_age=0)["logs"] == []
        assert logs(kit) == [log]
    assert len(kit.pool.gc(min_age=0)["logs"]) == 1


def test_gc_removes_a_socket_nothing_listens_on_but_not_one_in_use(kit: Kit, short_dir: Path) -> None:
    kit.get()  # creates the socket directory
    socket_dir = kit.dirs.socket_dir
    stale = socket_dir / "stale.sock"
    listening = socket_dir / "live.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(listening))
        live.listen()
        report = kit.pool.gc(min_age=0)
        assert report["sockets"] == [str(stale)]
        assert listening.exists() and not stale.exists()


@requires_root
def test_gc_never_touches_another_users_files(kit: Kit) -> None:
    gone_backend(kit)
    (log,) = logs(kit)
    theirs = kit.dirs.log_dir / "theirs-1.0.0-00.log"
    theirs.write_text("not ours")
    os.chown(theirs, NOBODY_UID, NOBODY_UID)
    os.chown(kit.dirs.log_dir / log, NOBODY_UID, NOBODY_UID)
    report = kit.pool.gc(min_age=0)
    assert report["logs"] == []
    assert sorted(logs(kit)) == sorted([log, theirs.name])


def test_gc_command(kit: Kit, capsys: pytest.CaptureFixture[str]) -> None:
    gone_backend(kit)
    state = ("--state-dir", str(kit.state_dir))
    assert cli.main(["gc", "--dry-run", "--min-age", "0", *state]) == 0
    out = capsys.readouterr().out
    assert out.startswith("would remove 1 records, 1 locks, 0 temporary")
    assert kit.manifest().exists()
    assert cli.main(["gc", "--min-age", "0", "--json", *state]) == 0
    assert '"records"' in capsys.readouterr().out
    assert list(kit.state_dir.glob("*.json")) == []
    assert cli.main(["gc", "--min-age", "-1", *state]) == cli.EXIT_USAGE


def age(*paths: Path) -> None:
    """Sets the times of ``paths`` two hours back."""
    old = time.time() - 7200
    for path in paths:
        os.utime(path, (old, old), follow_symlinks=False)


def test_a_pool_collects_by_itself_once_leftovers_pile_up(kit: Kit, dirs: BackendDirs) -> None:
    """After a launch, a log directory of more than 128 files makes the
    pool collect (once per ten minutes at most): the old logs of ended
    backends go, a live backend's log stays."""
    handle = gone_backend(kit)
    record = kit.manifest()
    age(record, record.with_suffix(".lock"), Path(handle.log_path))
    piled = [dirs.log_dir / f"v1echo-1.0.0-{i:032x}.log" for i in range(128)]
    for path in piled:
        path.write_text("ended\n")
    age(*piled)

    def launch_other(name: str) -> rp.BackendHandle:
        sd = dirs.sd(service_name=name)
        handle = kit.pool.get_or_launch(rp.BackendKey.for_service(sd, "1.0.0"), sd)
        kit.handles.append(handle)
        return handle

    live = launch_other("other")
    assert logs(kit) == [os.path.basename(live.log_path)]
    assert not record.exists()
    # Piled up again: not before ten minutes for this pool.
    for path in piled:
        path.write_text("ended\n")
    age(*piled)
    launch_other("third")
    assert len(logs(kit)) == 130
