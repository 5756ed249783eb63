"""The cross-process pool in a hostile environment: a state directory that
is someone else's, loose or a symlink; objects planted where its manifests
and lock files go; manifests that name a reused pid, another boot, a binary
modified since, a stolen endpoint, or an impostor running other code.

Each test asserts the exact typed error or outcome, that the pool never
signals a process it cannot prove is its backend (a bystander that reports
every signal it receives), that a replacement backend is launched and fully
verified, and that nothing is left behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

import running_process as rp
from support.hostile import IMPOSTOR, Bystander, Impostor, give_away
from support.launch import BackendDirs, install, key_for, v1_script
from support.leftovers import assert_gone, assert_nothing_left_behind, files_in, snapshot
from support.pool import Kit
from support.procfs import children, process_running, start_ticks
from support.values import OTHER_UID, mode_of, requires_root
from support.waits import HANG_GUARD, poll_until

pytestmark = pytest.mark.hostile


@pytest.fixture
def kit(dirs: BackendDirs) -> Iterator[Kit]:
    before = set(children())
    kit = Kit(dirs)
    try:
        yield kit
    finally:
        try:
            kit.pool.stop_all(timeout=10.0)
        except rp.RunningProcessError:
            pass  # a test left the state directory unusable on purpose
        for handle in kit.handles:
            handle.kill()
        # Only the pool's backends could be new children, and all are gone.
        left = {pid: st for pid, st in children().items() if pid not in before}
        assert left == {}, f"child processes left behind: {left}"


# --- the state directory ------------------------------------------------------------------


def refused_state_dir(dirs: BackendDirs, state: Path) -> rp.InsecureDirectoryError:
    pool = rp.BackendPool(dirs.launcher(), state)
    sd = dirs.sd()
    before = snapshot()
    with pytest.raises(rp.InsecureDirectoryError) as info:
        pool.get_or_launch(key_for(sd), sd)
    assert type(info.value) is rp.InsecureDirectoryError
    assert_nothing_left_behind(before, dirs)
    # Refused before the socket and log directories were even made.
    assert not dirs.socket_dir.exists() and not dirs.log_dir.exists()
    # get() and stop() refuse or find nothing; nothing is created either way.
    assert pool.get(key_for(sd)) is None
    with pytest.raises(rp.InsecureDirectoryError):
        pool.stop(key_for(sd))
    return info.value


@requires_root
def test_a_state_dir_owned_by_another_user_is_refused_and_left_alone(dirs: BackendDirs) -> None:
    state = dirs.root / "state"
    state.mkdir(mode=0o700)
    give_away(state)
    err = refused_state_dir(dirs, state)
    assert err.path == str(state)
    assert f"uid {OTHER_UID}" in err.reason
    assert os.lstat(state).st_uid == OTHER_UID and mode_of(state) == 0o700
    assert files_in(state) == []


@pytest.mark.parametrize("mode", [0o750, 0o705, 0o701, 0o770, 0o777, 0o1777], ids=oct)
def test_a_loose_state_dir_is_refused_and_not_repaired(dirs: BackendDirs, mode: int) -> None:
    state = dirs.root / "state"
    state.mkdir()
    os.chmod(state, mode)
    err = refused_state_dir(dirs, state)
    assert err.path == str(state)
    assert f"{mode:04o}" in err.reason
    assert mode_of(state) == mode
    assert files_in(state) == []


def test_a_symlinked_state_dir_is_refused_and_its_target_untouched(dirs: BackendDirs) -> None:
    target = dirs.root / "elsewhere"
    target.mkdir(mode=0o700)
    state = dirs.root / "state"
    state.symlink_to(target)
    err = refused_state_dir(dirs, state)
    assert err.path == str(state)
    assert "symbolic link" in err.reason
    assert files_in(target) == []
    assert os.readlink(state) == str(target)


@requires_root
def test_the_default_state_dir_under_a_planted_parent_is_refused(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``$XDG_RUNTIME_DIR/running-process`` made by another user: the default
    socket, log and state directories hang from it, and nothing is created
    inside."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(short_dir))
    planted = short_dir / "running-process"
    planted.mkdir(mode=0o700)
    give_away(planted)
    version_dir = short_dir / "1.0.0"
    version_dir.mkdir(mode=0o755)
    os.chmod(version_dir, 0o755)
    script = install(version_dir / "backend", v1_script())
    sd = rp.ServiceDefinition(
        service_name="v1echo",
        binary_path=str(script),
        per_version_binary_dir=str(version_dir),
        isolation=rp.Isolation.SHARED,
    )
    pool = rp.BackendPool(rp.CommandBackendLauncher.for_current_user(ready_timeout=HANG_GUARD))
    before = snapshot()
    with pytest.raises(rp.InsecureDirectoryError) as info:
        pool.get_or_launch(key_for(sd), sd)
    assert info.value.path == str(planted)
    assert f"uid {OTHER_UID}" in info.value.reason
    assert_nothing_left_behind(before)
    assert files_in(planted) == []
    assert os.lstat(planted).st_uid == OTHER_UID


# --- objects planted in the state directory -------------------------------------------------


def names_of(kit: Kit) -> tuple[Path, Path]:
    """The manifest and lock file paths of the kit's key (learnt from a
    launch that is then stopped, which removes both)."""
    kit.get()
    manifest = kit.manifest()
    lock = manifest.with_suffix(".lock")
    assert lock.exists()
    assert kit.pool.stop(kit.key, timeout=HANG_GUARD) is True
    assert files_in(kit.state_dir) == []
    # stop() ends the backend through a handle adopted from the manifest,
    # which cannot see the exit status, so the log is kept; not ours here.
    for name in files_in(kit.dirs.log_dir):
        os.unlink(kit.dirs.log_dir / name)
    return manifest, lock


def test_a_symlink_planted_at_the_manifest_path_is_replaced_never_followed(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    manifest, _ = names_of(kit)
    target = kit.dirs.root / "precious"
    target.write_bytes(b"not a manifest\n")
    os.chmod(target, 0o644)
    manifest.symlink_to(target)
    caplog.set_level(logging.WARNING, logger="running_process")
    rp.refresh_logging()
    handle = kit.get()
    handle.verify()
    assert any("cannot read manifest" in r.getMessage() for r in caplog.records)
    # The new manifest replaced the link itself; the target is as it was.
    assert not manifest.is_symlink()
    assert kit.recorded_pid() == handle.pid
    assert target.read_bytes() == b"not a manifest\n" and mode_of(target) == 0o644


def test_a_fifo_planted_at_the_manifest_path_does_not_hang_the_pool(kit: Kit) -> None:
    manifest, _ = names_of(kit)
    os.mkfifo(manifest, 0o600)
    # Opening a FIFO for reading blocks until a writer comes; the pool must
    # refuse it as "not a regular file" instead. A hang is turned into a
    # failure by a writer that unblocks the reader after the guard time.
    code = (
        "import os, sys, time\n"
        "time.sleep(float(sys.argv[2]))\n"
        "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_NONBLOCK)\n"
        "os.close(fd)\n"
    )
    unblocker = subprocess.Popen([sys.executable, "-c", code, str(manifest), str(HANG_GUARD)])
    try:
        started = time.monotonic()
        assert kit.pool.get(kit.key) is None
        handle = kit.get()
        hung = time.monotonic() - started >= HANG_GUARD
        assert not hung, "the pool blocked on the FIFO until a writer opened it"
        handle.verify()
        assert manifest.is_file() and kit.recorded_pid() == handle.pid
    finally:
        unblocker.kill()
        unblocker.wait()


def test_a_directory_planted_at_the_manifest_path_fails_typed_and_kills_the_backend(kit: Kit) -> None:
    manifest, _ = names_of(kit)
    manifest.mkdir(mode=0o700)
    (manifest / "keep").write_bytes(b"x")
    before = snapshot()
    with pytest.raises(rp.FilesystemError) as info:
        kit.get()
    err = info.value
    assert type(err) is rp.FilesystemError
    assert err.path == str(manifest)
    assert err.operation == "rename into place"
    # The backend launched for the key could not be recorded: killed and
    # reaped, its socket removed; the planted directory is untouched and no
    # temporary file remains.
    assert_nothing_left_behind(before)
    assert files_in(kit.dirs.socket_dir) == []
    assert files_in(manifest) == ["keep"]
    assert sorted(p.name for p in kit.state_dir.iterdir()) == sorted(
        [manifest.name, manifest.with_suffix(".lock").name]
    )


def test_a_symlink_planted_at_the_lock_path_is_refused_never_followed(kit: Kit) -> None:
    _, lock = names_of(kit)
    target = kit.dirs.root / "precious"
    target.write_bytes(b"keep me\n")
    lock.symlink_to(target)
    before = snapshot()
    with pytest.raises(rp.FilesystemError) as info:
        kit.get()
    err = info.value
    assert err.path == str(lock)
    assert err.operation == "open lock file"
    assert_nothing_left_behind(before, kit.dirs)
    assert target.read_bytes() == b"keep me\n"
    assert os.readlink(lock) == str(target)
    lock.unlink()


# --- manifests that name something else ------------------------------------------------------


def other_boot() -> str:
    return "00000000-0000-4000-8000-000000000000"


FORGERIES: dict[str, Callable[[Kit, rp.BackendHandle, int], dict[str, Any]]] = {
    # A pid reused by an unrelated process of the same user.
    "reused-pid": lambda kit, first, bystander: {"pid": bystander},
    # The same, recorded in another boot.
    "other-boot": lambda kit, first, bystander: {"pid": bystander, "boot_id": other_boot()},
    # The bystander's pid with the live backend's endpoint: the peer
    # credentials name another process.
    "reused-pid-live-endpoint": lambda kit, first, bystander: {
        "pid": bystander,
        "ipc_endpoint": {"namespace_id": first.endpoint.namespace_id, "path": first.endpoint.path},
    },
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_manifest_naming_an_unrelated_process_is_never_adopted_or_signalled(kit: Kit, forgery: str) -> None:
    first = kit.get()
    with Bystander() as bystander:
        kit.forge(**FORGERIES[forgery](kit, first, bystander.pid))
        spawns = kit.spawns()
        assert kit.pool.get(kit.key) is None  # never launches
        assert kit.spawns() == spawns
        (entry,) = kit.pool.list()
        assert entry.daemon.pid == bystander.pid
        bystander.assert_untouched()

        replacement = kit.get()
        assert replacement.pid not in (first.pid, bystander.pid)
        assert kit.spawns() == spawns + 1
        replacement.verify()
        assert kit.recorded_pid() == replacement.pid
        bystander.assert_untouched()

        # Forged again: stop() and stop_all() refuse to signal it too.
        kit.forge(**FORGERIES[forgery](kit, first, bystander.pid))
        assert kit.pool.stop(kit.key, timeout=HANG_GUARD) is False
        bystander.assert_untouched()
        # The first backend was never signalled either (it still verifies).
        first.verify()
        replacement.verify()


def test_stop_all_never_signals_a_bystander(kit: Kit) -> None:
    first = kit.get()
    with Bystander() as bystander:
        kit.forge(pid=bystander.pid)
        assert kit.pool.stop_all(timeout=HANG_GUARD) == 0
        bystander.assert_untouched()
        assert files_in(kit.state_dir) == []
        first.verify()


def test_a_manifest_for_a_binary_modified_since_is_replaced_by_the_new_binary(kit: Kit) -> None:
    first = kit.get()
    script = Path(kit.sd.binary_path)
    new_content = script.read_bytes() + b"# rebuilt\n"
    install(script, new_content)
    spawns = kit.spawns()
    # get() neither adopts nor signals nor launches.
    assert kit.pool.get(kit.key) is None
    assert kit.spawns() == spawns
    assert process_running(first.pid)
    with pytest.raises(rp.VerificationError) as info:
        first.verify(timeout=HANG_GUARD)
    assert info.value.field == "exe_sha256"

    replacement = kit.get()
    assert replacement.pid != first.pid
    assert replacement.daemon.exe_sha256 == hashlib.sha256(new_content).digest()
    assert replacement.daemon.exe_sha256 != first.daemon.exe_sha256
    replacement.verify()
    assert kit.recorded_pid() == replacement.pid
    # The recorded backend runs the old binary and is provably the recorded
    # process (same start time, uid, executable): it is retired.
    assert first.wait(timeout=HANG_GUARD) == -9
    assert_gone(first.pid)


def test_a_stolen_endpoint_is_not_adopted_and_the_impostor_never_signalled(kit: Kit) -> None:
    first = kit.get()
    path = first.endpoint.path
    with Impostor("steal-copy", path) as impostor:
        assert impostor.ready() == (first.pid, path)
        spawns = kit.spawns()
        assert kit.pool.get(kit.key) is None
        assert kit.spawns() == spawns
        assert first.is_alive() and impostor.running()

        replacement = kit.get()
        assert replacement.pid != first.pid and replacement.endpoint.path != path
        replacement.verify()
        assert kit.recorded_pid() == replacement.pid
        # The impostor is not the recorded process: never signalled. The
        # recorded backend, unreachable behind it, is provably the recorded
        # process and is retired.
        assert impostor.running()
        assert first.wait(timeout=HANG_GUARD) == -9
    os.unlink(path + ".real")
    assert_gone(first.pid)


def test_a_manifest_naming_an_interpreter_running_other_code_on_the_script_is_not_adopted(kit: Kit) -> None:
    """A forged manifest names a process that runs the backend's interpreter,
    holds the backend script open as a descriptor and names it as
    ``/dev/fd/N`` on its command line, but runs other code (``python -c``):
    it binds its own socket and answers with an identity naming itself and
    the real script and digest. The kernel starts a script backend as
    ``interpreter [#! argument] /dev/fd/N``; anything else is not the
    script running."""
    first = kit.get()
    script = Path(kit.sd.binary_path)
    path = str(kit.dirs.socket_dir / "impostor.sock")
    code = (
        "import sys\n"
        "src = open(sys.argv[2]).read().replace('\\nmain()\\n', '\\n')\n"
        "g = {'__name__': 'impostor'}\n"
        "exec(compile(src, sys.argv[2], 'exec'), g)\n"
        "import os\n"
        "path, script = sys.argv[3], sys.argv[4]\n"
        "identity = g['identity_message'](os.getpid(), script, g['sha256_of'](script), g['boot_id'](),"
        " 'shared', path, 30)\n"
        "server = g['bind'](path)\n"
        "print('ready', flush=True)\n"
        "def handle(conn):\n"
        "    with conn:\n"
        "        g['answer_probe'](conn, identity)\n"
        "g['serve_forever'](server, handle)\n"
    )
    fd = os.open(script, os.O_RDONLY)
    try:
        impostor = subprocess.Popen(
            [sys.executable, "-c", code, f"/dev/fd/{fd}", str(IMPOSTOR), path, str(script)],
            pass_fds=[fd],
            stdout=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(fd)
    try:
        assert impostor.stdout is not None
        assert impostor.stdout.readline() == "ready\n"
        kit.forge(pid=impostor.pid, ipc_endpoint={"namespace_id": "shared", "path": path})
        adopted = kit.pool.get(kit.key)
        assert adopted is None, f"adopted pid {adopted.pid}"
        replacement = kit.get()
        assert replacement.pid not in (first.pid, impostor.pid)
        replacement.verify()
        assert impostor.poll() is None
    finally:
        impostor.kill()
        impostor.wait()
        assert impostor.stdout is not None
        impostor.stdout.close()
    os.unlink(path)


def test_a_manifest_with_a_wrong_digest_for_the_current_binary_is_replaced(kit: Kit) -> None:
    script = Path(kit.sd.binary_path)
    # Two clock seconds: settled on any file system (whole-second timestamps too).
    settled = os.stat(script).st_ctime + 2.1
    poll_until(lambda: time.time() > settled, timeout=HANG_GUARD, what="the binary to settle")
    first = kit.get()
    recorded = json.loads(kit.manifest().read_text())
    assert recorded["binary_stamp"] is not None
    kit.forge(exe_sha256="00" * 32)
    # A fresh process (empty digest cache) reads the manifest.
    code = (
        "import sys\n"
        "import running_process as rp\n"
        "sd = rp.ServiceDefinition.from_bytes(bytes.fromhex(sys.argv[1]))\n"
        "launcher = rp.CommandBackendLauncher.for_current_user(socket_dir=sys.argv[2], log_dir=sys.argv[3],"
        " ready_timeout=60.0)\n"
        "pool = rp.BackendPool(launcher, sys.argv[4])\n"
        "key = rp.BackendKey.for_service(sd, '1.0.0')\n"
        "try:\n"
        "    handle = pool.get_or_launch(key, sd)\n"
        "except rp.RunningProcessError as e:\n"
        "    print(type(e).__name__, getattr(e, 'field', ''))\n"
        "else:\n"
        "    print('launched', handle.pid)\n"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            kit.sd.to_bytes().hex(),
            str(kit.dirs.socket_dir),
            str(kit.dirs.log_dir),
            str(kit.state_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    assert out[0] == "launched", out
    pid = int(out[1])
    assert pid != first.pid
    assert kit.recorded_pid() == pid


def test_a_manifest_forging_the_process_mark_of_a_bystander_never_gets_it_signalled(kit: Kit) -> None:
    """A manifest rewritten to name a bystander together with the bystander's
    own start time, uid and executable stamp (the process record the pool
    compares before retiring a recorded backend that fails verification):
    the bystander was not started for this key and endpoint, so it is never
    signalled."""
    kit.get()
    with Bystander() as bystander:
        path = kit.manifest()
        recorded = json.loads(path.read_text())
        exe = os.stat(f"/proc/{bystander.pid}/exe")
        recorded["daemon"]["pid"] = bystander.pid
        recorded["process"] = {
            "start_ticks": start_ticks(bystander.pid),
            "uid": os.geteuid(),
            "exe": {
                "dev": exe.st_dev,
                "ino": exe.st_ino,
                "size": exe.st_size,
                "mtime": [int(exe.st_mtime), exe.st_mtime_ns % 1_000_000_000],
                "ctime": [int(exe.st_ctime), exe.st_ctime_ns % 1_000_000_000],
            },
        }
        path.write_text(json.dumps(recorded))
        replacement = kit.get()
        replacement.verify()
        bystander.assert_untouched()


@pytest.mark.parametrize("fresh_process", [False, True])
def test_a_manifest_forged_to_name_another_keys_backend_is_never_adopted_or_stopped(
    dirs: BackendDirs, fresh_process: bool
) -> None:
    """Key B's manifest rewritten to name key A's live backend (its pid,
    endpoint and mark: everything but the key). A backend must have been
    started for the key it is adopted for, so ``get``, ``stop`` and
    ``get_or_launch`` of B never hand out, signal or stop A; B gets a
    backend of its own. With ``fresh_process``, a new launcher (no proofs
    remembered) asks; otherwise the launcher that proved A asks."""
    state_dir = dirs.root / "state"
    launcher = dirs.launcher()
    pool = rp.BackendPool(launcher, state_dir, verify_timeout=2.0)
    sd = dirs.sd()
    key_a = key_for(sd, "1.0.0")
    key_b = key_for(sd, "2.0.0")
    a = pool.get_or_launch(key_a, sd)
    b = pool.get_or_launch(key_b, sd)
    manifests = {json.loads(p.read_text())["service_version"]: p for p in state_dir.glob("*.json")}
    forged = json.loads(manifests["2.0.0"].read_text())
    real_a = json.loads(manifests["1.0.0"].read_text())
    b.kill()
    forged["daemon"] = real_a["daemon"]
    forged["process"] = real_a["process"]
    manifests["2.0.0"].write_text(json.dumps(forged))
    asker = rp.BackendPool(dirs.launcher(), state_dir, verify_timeout=2.0) if fresh_process else pool
    try:
        assert asker.get(key_b) is None
        assert asker.stop(key_b) is False
        assert process_running(a.pid)
        a.verify()
        manifests["2.0.0"].write_text(json.dumps(forged))
        fresh_b = asker.get_or_launch(key_b, sd)
        assert fresh_b.pid != a.pid
        assert fresh_b.daemon.ipc_endpoint.path != a.daemon.ipc_endpoint.path
        assert process_running(a.pid)
        a.verify()
        assert asker.get_or_launch(key_a, sd).pid == a.pid
        assert asker.stop(key_b) is True
    finally:
        pool.stop_all(timeout=5.0)
        for handle in (a, b):
            handle.kill()
