"""The cross-process pool: one verified backend per key for every process,
manifests that are trusted only after verification, and replacement of
anything that does not verify."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import running_process as rp
from support.launch import BackendDirs, key_for
from support.procfs import process_running
from support.waits import poll_until


class PoolKit:
    def __init__(self, dirs: BackendDirs) -> None:
        self.dirs = dirs
        self.state_dir = dirs.root / "state"
        self.launcher = dirs.launcher()
        self.pool = rp.BackendPool(self.launcher, self.state_dir)
        self.sd = dirs.sd()
        self.key = key_for(self.sd)
        self.pids: set[int] = set()

    def get(self) -> rp.BackendHandle:
        handle = self.pool.get_or_launch(self.key, self.sd, rp.TraceContext.new_root())
        self.pids.add(handle.pid)
        return handle

    def manifest(self) -> Path:
        (path,) = self.state_dir.glob("*.json")
        return path

    def log_count(self) -> int:
        return len(list(self.dirs.log_dir.glob("*.log"))) if self.dirs.log_dir.exists() else 0


@pytest.fixture
def kit(dirs: BackendDirs) -> Iterator[PoolKit]:
    kit = PoolKit(dirs)
    try:
        yield kit
    finally:
        kit.pool.stop_all(timeout=10.0)
        for pid in kit.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_second_request_adopts_the_recorded_backend(kit: PoolKit) -> None:
    first = kit.get()
    second = kit.get()
    assert second.pid == first.pid
    assert second.daemon == first.daemon
    assert kit.log_count() == 1  # one spawn
    manifest = kit.manifest()
    assert manifest.stat().st_mode & 0o777 == 0o600
    assert kit.state_dir.stat().st_mode & 0o777 == 0o700
    recorded = json.loads(manifest.read_text())
    assert recorded["daemon"]["pid"] == first.pid
    assert recorded["service_version"] == kit.key.service_version


def test_eight_processes_racing_get_one_backend(kit: PoolKit) -> None:
    code = f"""
import sys
import time
import running_process as rp
sd = rp.ServiceDefinition.from_bytes(bytes.fromhex(sys.argv[1]))
launcher = rp.CommandBackendLauncher.for_current_user(
    socket_dir={str(kit.dirs.socket_dir)!r}, log_dir={str(kit.dirs.log_dir)!r}, ready_timeout=60.0)
pool = rp.BackendPool(launcher, {str(kit.state_dir)!r})
sys.stdin.readline()  # start together
handle = pool.get_or_launch(rp.BackendKey.for_service(sd, "1.0.0"), sd)
print(handle.pid, flush=True)
"""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, kit.sd.to_bytes().hex()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    pids = set()
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        pids.add(int(out.strip()))
    kit.pids |= pids
    assert len(pids) == 1
    assert kit.log_count() == 1  # exactly one spawn
    # The backend outlived its launching process and still verifies.
    assert kit.get().pid in pids


def test_a_killed_backend_is_relaunched(kit: PoolKit) -> None:
    first = kit.get()
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    second = kit.get()
    assert second.pid != first.pid


def test_a_manifest_naming_an_unrelated_live_process_is_replaced_and_the_process_untouched(
    kit: PoolKit,
) -> None:
    first = kit.get()
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        manifest = kit.manifest()
        recorded = json.loads(manifest.read_text())
        recorded["daemon"]["pid"] = bystander.pid  # as if the pid were reused
        manifest.write_text(json.dumps(recorded))
        replacement = kit.get()
        assert replacement.pid not in (first.pid, bystander.pid)
        assert bystander.poll() is None and process_running(bystander.pid)
        assert json.loads(kit.manifest().read_text())["daemon"]["pid"] == replacement.pid
    finally:
        bystander.kill()
        bystander.wait()
        first.kill()


def test_a_manifest_from_another_boot_is_replaced(kit: PoolKit) -> None:
    first = kit.get()
    manifest = kit.manifest()
    recorded = json.loads(manifest.read_text())
    recorded["daemon"]["boot_id"] = "00000000-0000-0000-0000-000000000000"
    manifest.write_text(json.dumps(recorded))
    try:
        assert kit.get().pid != first.pid
    finally:
        first.kill()


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"manifest_version": 1}', b"\x00" * 100])
def test_a_garbage_manifest_is_replaced_with_a_warning(
    kit: PoolKit, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    first = kit.get()
    kit.manifest().write_bytes(content)
    caplog.set_level(logging.WARNING, logger="running_process")
    rp.refresh_logging()
    try:
        second = kit.get()
        assert second.pid != first.pid
        assert any("ignoring manifest" in r.getMessage() for r in caplog.records)
    finally:
        first.kill()


def test_list_and_stop(kit: PoolKit) -> None:
    handle = kit.get()
    (entry,) = kit.pool.list()
    assert entry.key == kit.key and entry.daemon.pid == handle.pid and entry.alive
    assert kit.pool.stop(kit.key, timeout=10.0) is True
    poll_until(lambda: not process_running(handle.pid), what="the backend to stop")
    assert kit.pool.list() == []
    assert list(kit.state_dir.iterdir()) == []  # no manifest, no lock file
    assert not os.path.exists(handle.endpoint.path)
    assert kit.pool.stop(kit.key) is False


def test_stop_never_signals_a_process_that_does_not_verify(kit: PoolKit) -> None:
    first = kit.get()
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        manifest = kit.manifest()
        recorded = json.loads(manifest.read_text())
        recorded["daemon"]["pid"] = bystander.pid
        manifest.write_text(json.dumps(recorded))
        assert kit.pool.stop(kit.key) is False
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
        first.kill()


def test_insecure_state_dir_is_refused(dirs: BackendDirs) -> None:
    state = dirs.root / "loose"
    state.mkdir()
    os.chmod(state, 0o755)
    pool = rp.BackendPool(dirs.launcher(), state)
    sd = dirs.sd()
    with pytest.raises(rp.InsecureDirectoryError):
        pool.get_or_launch(key_for(sd), sd)


def test_get_verifies_without_launching(kit: PoolKit) -> None:
    assert kit.pool.get(kit.key) is None  # nothing recorded: no launch
    assert kit.log_count() == 0
    handle = kit.get()
    found = kit.pool.get(kit.key)
    assert found is not None and found.pid == handle.pid and found.daemon == handle.daemon
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        manifest = kit.manifest()
        recorded = json.loads(manifest.read_text())
        recorded["daemon"]["pid"] = bystander.pid
        manifest.write_text(json.dumps(recorded))
        assert kit.pool.get(kit.key) is None  # does not verify, and no launch
        assert kit.log_count() == 1
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
        handle.kill()


@pytest.mark.slow  # waits out a wall-clock delay
def test_a_fresh_binary_is_recorded_with_its_stamp_once_it_has_settled(
    kit: PoolKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A launch while the binary is too fresh for its stamp to vouch for the
    digest records no stamp; the first adoption once it has settled records
    it, so later adopters take the recorded digest."""
    with monkeypatch.context() as fresh:
        fresh.setenv(rp.ENV_SETTLE_MS, str(3600 * 1000))
        first = kit.get()
        assert json.loads(kit.manifest().read_text())["binary_stamp"] is None
        # Still fresh for an adopter: nothing to record.
        assert kit.get().pid == first.pid
        assert json.loads(kit.manifest().read_text())["binary_stamp"] is None
    script = kit.dirs.script
    settled = os.stat(script).st_ctime + 2
    poll_until(lambda: time.time() > settled, what="the binary to settle")
    assert kit.get().pid == first.pid
    recorded = json.loads(kit.manifest().read_text())["binary_stamp"]
    st = os.stat(script)
    assert (recorded["dev"], recorded["ino"], recorded["ctime"]) == (
        st.st_dev,
        st.st_ino,
        [st.st_ctime_ns // 10**9, st.st_ctime_ns % 10**9],
    )
    assert kit.get().pid == first.pid
    names = sorted(p.name for p in kit.state_dir.iterdir())
    assert names == sorted([kit.manifest().name, kit.manifest().name.replace(".json", ".lock")])
