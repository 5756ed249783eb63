"""The real thing: the published zccache daemon (current generation of the
contract, BLAKE3-only identity, its own arguments, endpoint and identity
file), adopted after ``zccache start`` launched it, launched by us with its
arguments at its fixed endpoint, and shared by 16 processes at once.

Slow: the first run installs zccache from the package index into a
virtual environment of its own (see ``support/zccache.py``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import running_process as rp
from support.launch import BackendDirs, Launches, install, race_for_fixed_endpoint
from support.leftovers import assert_gone
from support.procfs import state_of
from support.waits import HANG_GUARD
from support.wire import probe
from support.zccache import VERSION, ZccacheTree, zccache_binary

pytestmark = pytest.mark.slow

SERVICE = "zccache"
DAEMON_ARGS = ["--foreground", "--endpoint", "{endpoint}", "--log-file", "{log_file}"]


@pytest.fixture
def tree(short_dir: Path) -> Iterator[ZccacheTree]:
    """A private zccache cache and runtime directory; afterwards no zccache
    daemon of this tree runs and the empty ``~/.zccache`` the daemon makes
    is gone again."""
    home_cache = Path.home() / ".zccache"
    had_home_cache = home_cache.exists()
    cache, runtime = short_dir / "c", short_dir / "r"
    for d in (cache, runtime):
        d.mkdir(mode=0o700)
    tree = ZccacheTree(cache_dir=cache, runtime_dir=runtime)
    try:
        yield tree
    finally:
        pid = tree.pid()
        if pid is not None and state_of(pid) not in (None, "Z"):
            os.kill(pid, signal.SIGKILL)
        if not had_home_cache and home_cache.exists():
            shutil.rmtree(home_cache, ignore_errors=True)


def zccache_sd(binary: Path) -> rp.ServiceDefinition:
    return rp.ServiceDefinition(
        SERVICE,
        str(binary),
        str(binary.parent),
        rp.Isolation.SHARED,
        version_allow_list=[VERSION],
        args=DAEMON_ARGS,
        # The zccache daemon binds its endpoint itself.
        listener=rp.Listener.BIND,
    )


def key() -> rp.BackendKey:
    return rp.BackendKey(rp.BrokerInstanceKey.shared(), SERVICE, VERSION)


def test_a_daemon_zccache_started_is_adopted_from_its_identity_file(
    tree: ZccacheTree, launches: Launches, dirs: BackendDirs
) -> None:
    pid = tree.start()
    daemon_binary = tree.version_dir / "zccache-daemon"
    sd = zccache_sd(daemon_binary)
    handle = dirs.launcher().adopt_identity_file(key(), sd, str(tree.identity_file))
    launches.handles.append(handle)
    assert handle.pid == pid
    daemon = handle.daemon
    assert daemon.exe_hash_algorithm == "blake3"
    assert daemon.exe_blake3 == rp.blake3_file(str(daemon_binary))
    assert daemon.exe_sha256 == bytes(32)  # BLAKE3-only, as zccache answers
    assert daemon.ipc_endpoint == rp.Endpoint("default", str(tree.endpoint))
    handle.verify()
    # Read as any client would, the file is of the current generation.
    assert rp.read_identity_file(str(tree.identity_file)) == daemon
    # shutdown of a daemon we did not start: SIGTERM through its pidfd.
    handle.shutdown()
    assert_gone(pid)


def test_we_launch_the_zccache_daemon_with_its_arguments_at_its_endpoint(
    tree: ZccacheTree, launches: Launches, dirs: BackendDirs, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = install(dirs.version_dir / "zccache-daemon", zccache_binary().read_bytes())
    sd = zccache_sd(binary)
    endpoint = rp.Endpoint("default", str(tree.endpoint))
    tree.version_dir.mkdir(mode=0o700)
    for name, value in tree.env().items():
        if name.startswith(("ZCCACHE_", "XDG_")):
            monkeypatch.setenv(name, value)
    handle = launches.launch_with(dirs.launcher(), key(), sd, endpoint=endpoint)
    assert handle.daemon.exe_hash_algorithm == "blake3"
    with open(f"/proc/{handle.pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")[:-1]
    assert argv[1:] == [
        b"--foreground",
        b"--endpoint",
        endpoint.path.encode(),
        b"--log-file",
        handle.log_path.encode(),
    ]
    # zccache's own client sees the daemon we launched.
    assert tree.pid() in (None, handle.pid)
    status = zccache_status(tree)
    assert f"v{VERSION}" in status, status
    # A second launch (another launcher, as another process) gets it too.
    again = launches.launch_with(dirs.launcher(), key(), sd, endpoint=endpoint)
    assert again.pid == handle.pid
    handle.shutdown()
    assert_gone(handle.pid)


def zccache_status(tree: ZccacheTree) -> str:
    """What zccache's own client says of the daemon at ``tree``'s endpoint."""
    done = subprocess.run(
        [str(zccache_binary()), "status"],
        env=dict(tree.env(), ZCCACHE_ENDPOINT=str(tree.endpoint)),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )
    return done.stdout + done.stderr


def test_sixteen_processes_get_one_verified_zccache_daemon(tree: ZccacheTree, dirs: BackendDirs) -> None:
    binary = install(dirs.version_dir / "zccache-daemon", zccache_binary().read_bytes())
    tree.version_dir.mkdir(mode=0o700)
    job = {
        "binary": str(binary),
        "version_dir": str(binary.parent),
        "service": SERVICE,
        "version": VERSION,
        "args": DAEMON_ARGS,
        "listener": rp.Listener.BIND.value,
        "socket_dir": str(dirs.socket_dir),
        "log_dir": str(dirs.log_dir),
        "endpoint": str(tree.endpoint),
    }
    results = race_for_fixed_endpoint(16, job, env={"ZCCACHE_CACHE_DIR": str(tree.cache_dir)})
    pids = {pid for pid, _ in results}
    assert len(pids) == 1, results
    (pid,) = pids
    timings = sorted(seconds * 1e3 for _, seconds in results)
    print(
        f"16 processes, one zccache daemon (pid {pid}): per-process launch-or-adopt ms "
        f"min {timings[0]:.1f} median {timings[8]:.1f} max {timings[-1]:.1f}"
    )
    handle = dirs.launcher().adopt(key(), zccache_sd(binary), daemon_of(pid, binary, tree))
    handle.shutdown()
    assert_gone(pid)


def daemon_of(pid: int, binary: Path, tree: ZccacheTree) -> rp.DaemonProcess:
    """The identity the zccache daemon at ``tree``'s endpoint serves, as its
    probe reports it."""
    answer = probe(str(tree.endpoint))
    assert answer.peer_pid == pid
    assert os.path.realpath(answer.identity.exe_path) == os.path.realpath(binary)
    return answer.identity
