"""CommandBackendLauncher and BackendHandle: successful, verified launches.

Every test starts real backends (tests/backends/v1_backend.py, a stdlib-only
v1 backend) in a short private directory and talks to them over real Unix
sockets. The ``launches`` fixture kills every backend at teardown.
"""

from __future__ import annotations

import concurrent.futures
import gc
import hashlib
import logging
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

import running_process as rp
from support.launch import SERVICE, VERSION, BackendDirs, Launches, env_lines, install, key_for, new_launcher
from support.leftovers import assert_nothing_left_behind, files_in, snapshot
from support.procfs import children, environ_pairs, exe_of, fd_targets, proc_stat, status_of
from support.values import NOBODY_UID, W3C_TRACEPARENT, W3C_TRACESTATE, mode_of
from support.waits import HANG_GUARD, poll_until


@pytest.fixture
def handle(dirs: BackendDirs, launches: Launches) -> rp.BackendHandle:
    """A backend launched with the default options."""
    sd = dirs.sd()
    return launches.launch(dirs.launcher(), key_for(sd), sd)


def echo(sock: socket.socket, payload: bytes) -> bytes:
    """Sends ``payload`` and reads back as many bytes."""
    sock.settimeout(HANG_GUARD)
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(len(payload) - len(got))
        if not chunk:
            break
        got += chunk
    return got


# --- the launcher object ---------------------------------------------------------


def test_launcher_properties_and_defaults(dirs: BackendDirs) -> None:
    launcher = new_launcher(socket_dir=str(dirs.socket_dir), log_dir=str(dirs.log_dir))
    assert launcher.user_sid_hash == rp.user_sid_hash()
    assert launcher.idle_timeout_secs == 30
    assert launcher.ready_timeout == 10.0
    assert launcher.socket_dir == str(dirs.socket_dir)
    assert launcher.log_dir == str(dirs.log_dir)
    assert "LD_*" in launcher.env_scrub
    custom = new_launcher(idle_timeout_secs=None, ready_timeout=2.5, env_scrub=["FOO"])
    assert custom.idle_timeout_secs is None
    assert custom.ready_timeout == 2.5
    assert custom.env_scrub == ["FOO"]


def test_constructing_a_launcher_creates_nothing(dirs: BackendDirs) -> None:
    dirs.launcher()
    assert not dirs.socket_dir.exists()
    assert not dirs.log_dir.exists()


# --- identity ----------------------------------------------------------------------


def test_launch_returns_the_verified_identity(dirs: BackendDirs, launches: Launches) -> None:
    sd = dirs.sd()
    key = key_for(sd)
    launcher = dirs.launcher()
    handle = launches.launch(launcher, key, sd)

    daemon = handle.daemon
    assert daemon.pid == handle.pid
    assert handle.is_alive()
    assert daemon.exe_path == os.path.realpath(dirs.script)
    assert daemon.exe_sha256 == hashlib.sha256(dirs.script.read_bytes()).digest()
    assert daemon.boot_id == rp.boot_id()
    assert daemon.ipc_endpoint == handle.endpoint

    endpoint = handle.endpoint
    assert endpoint.namespace_id == "shared"
    path = Path(endpoint.path)
    assert path.parent == dirs.socket_dir
    assert re.fullmatch(rf"rpb-v1-{rp.user_sid_hash()}-be-[0-9a-f]{{32}}\.sock", path.name)
    assert path.is_socket()

    assert handle.key == key
    assert handle.service_name == SERVICE
    assert handle.service_version == VERSION
    assert str(handle.pid) in repr(handle)


def test_socket_dir_and_log_are_private(handle: rp.BackendHandle, dirs: BackendDirs) -> None:
    assert mode_of(dirs.socket_dir) == 0o700
    assert mode_of(dirs.log_dir) == 0o700
    log = Path(handle.log_path)
    assert log.parent == dirs.log_dir
    assert mode_of(log) == 0o600
    assert os.stat(log).st_uid == os.geteuid()


def test_connect_returns_a_socket_that_echoes(handle: rp.BackendHandle) -> None:
    with handle.connect() as sock:
        assert isinstance(sock, socket.socket)
        assert sock.family == socket.AF_UNIX
        assert echo(sock, b"hello backend") == b"hello backend"
    with handle.connect() as again:
        assert echo(again, bytes(range(256)) * 64) == bytes(range(256)) * 64


def test_verify_passes_on_a_running_backend(handle: rp.BackendHandle) -> None:
    handle.verify()
    handle.verify(rp.TraceContext.new_root(), timeout=HANG_GUARD)
    handle.verify(trace_context=None, timeout=HANG_GUARD)


def test_verify_after_exit_raises(handle: rp.BackendHandle) -> None:
    handle.kill()
    with pytest.raises(rp.VerificationError) as info:
        handle.verify()
    assert info.value.field == "pid alive"


@pytest.mark.parametrize("method", ["wait", "shutdown", "verify"])
def test_negative_timeouts_are_value_errors(handle: rp.BackendHandle, method: str) -> None:
    with pytest.raises(ValueError):
        getattr(handle, method)(timeout=-1.0)
    assert handle.is_alive()


# --- environment ----------------------------------------------------------------------


def test_trace_context_is_passed_exactly(dirs: BackendDirs, launches: Launches) -> None:
    sd = dirs.sd()
    trace = rp.TraceContext(traceparent=W3C_TRACEPARENT, tracestate=W3C_TRACESTATE)
    handle = launches.launch(dirs.launcher(), key_for(sd), sd, trace)
    lines = env_lines(handle.log_path)
    assert f"{rp.ENV_TRACEPARENT}={W3C_TRACEPARENT}" in lines
    assert f"{rp.ENV_TRACESTATE}={W3C_TRACESTATE}" in lines


def test_empty_trace_context_sets_no_trace_variables(dirs: BackendDirs, launches: Launches) -> None:
    sd = dirs.sd()
    handle = launches.launch(dirs.launcher(), key_for(sd), sd, rp.TraceContext())
    names = {line.partition("=")[0] for line in env_lines(handle.log_path)}
    assert rp.ENV_TRACEPARENT not in names
    assert rp.ENV_TRACESTATE not in names


def test_v1_variables(handle: rp.BackendHandle) -> None:
    lines = env_lines(handle.log_path)
    for line in (
        f"{rp.ENV_SERVICE_NAME}={SERVICE}",
        f"{rp.ENV_SERVICE_VERSION}={VERSION}",
        f"{rp.ENV_INSTANCE}=shared",
        f"{rp.ENV_BACKEND_NAMESPACE}=shared",
        f"{rp.ENV_BACKEND_PIPE}={handle.endpoint.path}",
        f"{rp.ENV_IDLE_TIMEOUT_SECS}=30",
    ):
        assert line in lines
    names = [name for name, _ in environ_pairs(handle.pid) if name.startswith("RUNNING_PROCESS_BROKER_V1_")]
    assert sorted(names) == sorted(set(names)), "a v1 variable is duplicated"


def test_no_idle_timeout_variable_when_none(dirs: BackendDirs, launches: Launches) -> None:
    sd = dirs.sd()
    handle = launches.launch(dirs.launcher(idle_timeout_secs=None), key_for(sd), sd)
    names = {line.partition("=")[0] for line in env_lines(handle.log_path)}
    assert rp.ENV_IDLE_TIMEOUT_SECS not in names
    assert rp.ENV_SERVICE_NAME in names


def test_idle_timeout_value_is_passed(dirs: BackendDirs, launches: Launches) -> None:
    sd = dirs.sd()
    handle = launches.launch(dirs.launcher(idle_timeout_secs=7), key_for(sd), sd)
    assert f"{rp.ENV_IDLE_TIMEOUT_SECS}=7" in env_lines(handle.log_path)


def test_ld_preload_is_scrubbed_by_default(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LD_PRELOAD", "/nonexistent.so")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/nonexistent-lib")
    monkeypatch.setenv("GCONV_PATH", "/nonexistent-gconv")
    sd = dirs.sd()
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    assert not [line for line in env_lines(handle.log_path) if line.startswith("LD_")]
    names = {name for name, _ in environ_pairs(handle.pid)}
    assert not {"LD_PRELOAD", "LD_LIBRARY_PATH", "GCONV_PATH"} & names
    # Ordinary variables still pass.
    assert "PATH" in names


def test_ld_preload_passes_with_an_empty_scrub_list(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A missing LD_PRELOAD object only makes the loader print a warning.
    monkeypatch.setenv("LD_PRELOAD", "/nonexistent.so")
    sd = dirs.sd()
    handle = launches.launch(dirs.launcher(env_scrub=[]), key_for(sd), sd)
    assert "LD_PRELOAD=/nonexistent.so" in env_lines(handle.log_path)


def test_inherited_v1_variable_is_overridden_not_duplicated(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(rp.ENV_SERVICE_NAME, "impostor")
    monkeypatch.setenv(rp.ENV_BACKEND_PIPE, "/tmp/impostor.sock")
    sd = dirs.sd()
    # env_scrub=[]: even without any scrub rule the v1 names are replaced.
    for launcher in (dirs.launcher(), dirs.launcher(env_scrub=[])):
        handle = launches.launch(launcher, key_for(sd), sd)
        assert f"{rp.ENV_SERVICE_NAME}={SERVICE}" in env_lines(handle.log_path)
        env = environ_pairs(handle.pid)
        assert [v for n, v in env if n == rp.ENV_SERVICE_NAME] == [SERVICE]
        assert [v for n, v in env if n == rp.ENV_BACKEND_PIPE] == [handle.endpoint.path]


# --- process setup -------------------------------------------------------------------


def test_backend_is_detached(handle: rp.BackendHandle) -> None:
    pid = handle.pid
    assert os.getsid(pid) == pid
    assert os.getpgid(pid) == pid
    assert os.getsid(pid) != os.getsid(0)
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    fds = fd_targets(pid)
    assert fds[0] == "/dev/null"
    assert fds[1] == handle.log_path
    assert fds[2] == handle.log_path


def test_inheritable_descriptor_is_not_passed_on(dirs: BackendDirs, launches: Launches) -> None:
    read_end, write_end = os.pipe()
    try:
        os.set_inheritable(read_end, True)
        os.set_inheritable(write_end, True)
        pipe = f"pipe:[{os.fstat(read_end).st_ino}]"
        sd = dirs.sd()
        handle = launches.launch(dirs.launcher(), key_for(sd), sd)
        targets = fd_targets(handle.pid)
        assert pipe not in targets.values()
        # Nothing of the test process's beyond what the backend opened itself.
        for fd, target in targets.items():
            if fd > 2:
                assert target.startswith("socket:") or target == os.path.realpath(dirs.script), targets
    finally:
        os.close(read_end)
        os.close(write_end)


# --- ending a backend --------------------------------------------------------------------


def test_shutdown_sends_sigterm_and_removes_the_socket(handle: rp.BackendHandle) -> None:
    path = Path(handle.endpoint.path)
    assert path.is_socket()
    assert handle.shutdown() == -signal.SIGTERM
    assert not handle.is_alive()
    assert handle.returncode == -signal.SIGTERM
    assert handle.wait(timeout=0) == -signal.SIGTERM
    assert not path.exists()
    # Ending it again is harmless and reports the same.
    assert handle.shutdown() == -signal.SIGTERM
    assert handle.kill() == -signal.SIGTERM


def test_kill_returns_sigkill(handle: rp.BackendHandle) -> None:
    path = Path(handle.endpoint.path)
    assert handle.kill() == -signal.SIGKILL
    assert not handle.is_alive()
    assert handle.returncode == -signal.SIGKILL
    assert not path.exists()


def test_wait_times_out_while_alive(handle: rp.BackendHandle) -> None:
    assert handle.returncode is None
    assert handle.wait(timeout=0.1) is None
    assert handle.wait(timeout=0) is None
    assert handle.is_alive()
    assert handle.returncode is None


def test_context_manager_shuts_down(handle: rp.BackendHandle) -> None:
    path = Path(handle.endpoint.path)
    with handle as entered:
        assert entered is handle
        assert handle.is_alive()
    assert not handle.is_alive()
    assert handle.returncode == -signal.SIGTERM
    assert not path.exists()


def test_context_manager_shuts_down_on_exception(handle: rp.BackendHandle) -> None:
    with pytest.raises(KeyError), handle:
        raise KeyError("boom")
    assert not handle.is_alive()
    assert handle.returncode == -signal.SIGTERM


def test_externally_killed_backend_is_reaped_without_wait(handle: rp.BackendHandle) -> None:
    pid = handle.pid
    path = Path(handle.endpoint.path)
    pidfd = os.pidfd_open(pid)
    try:
        os.kill(pid, signal.SIGKILL)
        # The pidfd turns readable when the process ends.
        readable, _, _ = select.select([pidfd], [], [], HANG_GUARD)
        assert readable == [pidfd]
    finally:
        os.close(pidfd)
    # Nobody calls wait(): the launcher's reaper must collect it by itself.
    poll_until(
        lambda: proc_stat(pid) is None,
        what=lambda: f"pid {pid} to be reaped; /proc state now {proc_stat(pid)}",
    )
    # And the socket file the killed backend could not remove goes with it.
    poll_until(lambda: not path.exists(), what="the socket file of the reaped backend to go")
    assert handle.wait(timeout=HANG_GUARD) == -signal.SIGKILL
    assert not path.exists()
    assert not handle.is_alive()
    assert handle.returncode == -signal.SIGKILL


def test_host_subprocess_keeps_its_exit_status(dirs: BackendDirs, launches: Launches) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read(); sys.exit(7)"],
        stdin=subprocess.PIPE,
    )
    try:
        sd = dirs.sd()
        launcher = dirs.launcher()
        first = launches.launch(launcher, key_for(sd), sd)
        assert child.stdin is not None
        child.stdin.close()
        # The child has exited but is not reaped while backends come and go.
        poll_until(lambda: proc_stat(child.pid) == ("Z", os.getpid()), what="child to exit")
        second = launches.launch(launcher, key_for(sd), sd)
        assert first.kill() == -signal.SIGKILL
        assert second.shutdown() == -signal.SIGTERM
        third = launches.launch(launcher, key_for(sd), sd)
        os.kill(third.pid, signal.SIGKILL)
        assert third.wait(timeout=HANG_GUARD) == -signal.SIGKILL
        assert proc_stat(child.pid) == ("Z", os.getpid())
        assert child.wait(timeout=HANG_GUARD) == 7
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


# --- concurrency ---------------------------------------------------------------------------


def test_concurrent_launches_from_one_launcher(dirs: BackendDirs, launches: Launches) -> None:
    sd = dirs.sd()
    key = key_for(sd)
    launcher = dirs.launcher()
    workers = 4
    start = threading.Barrier(workers + 1)
    stop = threading.Event()
    counter = 0

    def count() -> None:
        nonlocal counter
        while not stop.is_set():
            counter += 1
            os.sched_yield()

    def launch_one(_: int) -> tuple[rp.BackendHandle, int, int]:
        start.wait(timeout=HANG_GUARD)
        before = counter
        handle = launches.launch(launcher, key, sd)
        return handle, before, counter

    counter_thread = threading.Thread(target=count, daemon=True)
    counter_thread.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(launch_one, i) for i in range(workers)]
            start.wait(timeout=HANG_GUARD)
            results = [f.result(timeout=HANG_GUARD * 2) for f in futures]
    finally:
        stop.set()
        counter_thread.join(timeout=HANG_GUARD)

    handles = [h for h, _, _ in results]
    assert len({h.pid for h in handles}) == workers
    assert len({h.endpoint.path for h in handles}) == workers
    assert len({h.log_path for h in handles}) == workers
    for h in handles:
        assert h.is_alive()
        h.verify(timeout=HANG_GUARD)
        with h.connect() as sock:
            assert echo(sock, str(h.pid).encode()) == str(h.pid).encode()
    # Python code ran while the launches were inside the Rust core.
    assert any(after > before for _, before, after in results), results
    for h in handles:
        assert h.shutdown() == -signal.SIGTERM
    assert sorted(os.listdir(dirs.socket_dir)) == []


def test_launch_lets_other_threads_run(dirs: BackendDirs, launches: Launches) -> None:
    """Deterministic proof that launch() releases the GIL: another Python
    thread finds the backend while launch() waits for it to become ready and
    kills it; launch() can only report that death if that thread ran while
    launch() was still running (else it would wait out ready_timeout)."""
    script = install(dirs.version_dir / "sleeper", b"#!/bin/sh\nexec sleep 1000\n")
    sd = dirs.sd(binary=script)
    launcher = dirs.launcher(ready_timeout=HANG_GUARD * 2)
    before = set(children())
    victim: list[int] = []

    def find_sleeper() -> bool:
        for pid in set(children()) - before:
            exe = exe_of(pid)
            if exe is not None and os.path.basename(exe) == "sleep":
                victim.append(pid)
                return True
        return False

    def killer() -> None:
        poll_until(find_sleeper, timeout=HANG_GUARD * 2, what="the backend to exec sleep")
        os.kill(victim[0], signal.SIGKILL)

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        killed = pool.submit(killer)
        with pytest.raises(rp.BackendExitedError) as info:
            launches.launch(launcher, key_for(sd), sd)
        killed.result(timeout=HANG_GUARD)
    assert info.value.pid == victim[0]
    assert info.value.returncode == -signal.SIGKILL


# --- more of the launch contract ----------------------------------------------------------


@pytest.mark.parametrize(
    "isolation, explicit, instance_id",
    [
        (rp.Isolation.PRIVATE, "", f"private:{SERVICE}"),
        (rp.Isolation.EXPLICIT, "team", "explicit:team"),
    ],
    ids=["private", "explicit"],
)
def test_other_isolations(
    dirs: BackendDirs,
    launches: Launches,
    isolation: rp.Isolation,
    explicit: str,
    instance_id: str,
) -> None:
    sd = dirs.sd(isolation=isolation, explicit_instance=explicit)
    key = key_for(sd)
    assert key.instance.id() == instance_id
    handle = launches.launch(dirs.launcher(), key, sd)
    assert handle.endpoint.namespace_id == instance_id
    lines = env_lines(handle.log_path)
    assert f"{rp.ENV_INSTANCE}={instance_id}" in lines
    assert f"{rp.ENV_BACKEND_NAMESPACE}={instance_id}" in lines
    handle.verify()


def test_default_directories_follow_xdg_runtime_dir(
    dirs: BackendDirs, launches: Launches, xdg_runtime_dir: Path
) -> None:
    sd = dirs.sd()
    handle = launches.launch(new_launcher(), key_for(sd), sd)
    broker = xdg_runtime_dir / "running-process" / "broker"
    assert Path(handle.endpoint.path).parent == broker
    assert Path(handle.log_path).parent == xdg_runtime_dir / "running-process" / "logs"
    assert mode_of(broker) == 0o700
    assert mode_of(Path(handle.log_path).parent) == 0o700


def test_symlink_inside_the_root_runs_the_canonical_file(dirs: BackendDirs, launches: Launches) -> None:
    link = dirs.version_dir / "current"
    link.symlink_to(dirs.script.name)
    sd = dirs.sd(binary=link)
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    assert handle.daemon.exe_path == os.path.realpath(dirs.script)


def test_interpreter_argument_in_shebang(dirs: BackendDirs, launches: Launches) -> None:
    script = dirs.script_with("unbuffered", f"{sys.executable} -u")
    sd = dirs.sd(binary=script)
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    assert handle.daemon.exe_path == os.path.realpath(script)
    handle.verify()


def test_env_shebang_resolves_on_the_launch_path(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = dirs.root / "bin"
    bin_dir.mkdir()
    (bin_dir / "rp-test-python").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    script = dirs.script_with("envbackend", "/usr/bin/env rp-test-python")
    sd = dirs.sd(binary=script)
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    assert handle.daemon.exe_path == os.path.realpath(script)
    assert os.readlink(f"/proc/{handle.pid}/exe") == os.path.realpath(sys.executable)
    handle.verify()


def test_rewritten_binary_is_hashed_again(dirs: BackendDirs, launches: Launches) -> None:
    """Same inode, same size, mtime put back: the new content is still seen
    (the digest cache is keyed on ctime too)."""
    body = dirs.script.read_bytes()
    install(dirs.script, body + b"# variant a\n")
    sd = dirs.sd()
    launcher = dirs.launcher()
    first = launches.launch(launcher, key_for(sd), sd)
    old = os.stat(dirs.script)
    with open(dirs.script, "r+b") as f:
        f.seek(len(body))
        f.write(b"# variant b\n")
    os.utime(dirs.script, ns=(old.st_atime_ns, old.st_mtime_ns))
    new = os.stat(dirs.script)
    assert (new.st_ino, new.st_size, new.st_mtime_ns) == (old.st_ino, old.st_size, old.st_mtime_ns)

    second = launches.launch(launcher, key_for(sd), sd)
    assert second.daemon.exe_sha256 == hashlib.sha256(body + b"# variant b\n").digest()
    assert first.daemon.exe_sha256 == hashlib.sha256(body + b"# variant a\n").digest()
    # The first backend runs a file that changed since it was hashed.
    with pytest.raises(rp.VerificationError) as info:
        first.verify(timeout=HANG_GUARD)
    assert info.value.field == "exe_sha256"


def test_verify_detects_a_replaced_socket(handle: rp.BackendHandle) -> None:
    path = handle.endpoint.path
    os.unlink(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as squatter:
        squatter.bind(path)
        squatter.listen(1)
        with pytest.raises(rp.VerificationError) as info:
            handle.verify(timeout=HANG_GUARD)
        assert info.value.field == "peer pid"
        assert info.value.expected == str(handle.pid)
        assert info.value.actual == str(os.getpid())
    assert handle.is_alive()


def test_process_state_is_reset(dirs: BackendDirs, launches: Launches) -> None:
    """An ignored signal and a blocked one in the launching thread, and the
    umask of the test process, do not leak into the backend (both survive
    exec unless reset). The backend is Python, which ignores SIGPIPE and
    SIGXFSZ by itself."""
    sd = dirs.sd()
    launcher = dirs.launcher()
    previous = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    old_umask = os.umask(0o002)
    try:
        handle = launches.launch(launcher, key_for(sd), sd)
    finally:
        os.umask(old_umask)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        signal.signal(signal.SIGUSR2, previous)
    status = status_of(handle.pid)
    assert int(status["SigBlk"], 16) == 0
    python_ignores = (1 << (signal.SIGPIPE - 1)) | (1 << (signal.SIGXFSZ - 1))
    assert int(status["SigIgn"], 16) & ~python_ignores == 0, status["SigIgn"]
    assert status["Umask"] == "0077"


def test_log_is_removed_by_a_clean_shutdown_only(dirs: BackendDirs, launches: Launches) -> None:
    sd = dirs.sd()
    launcher = dirs.launcher()
    clean = launches.launch(launcher, key_for(sd), sd)
    assert clean.shutdown() == -signal.SIGTERM
    assert not os.path.exists(clean.log_path)
    killed = launches.launch(launcher, key_for(sd), sd)
    assert killed.kill() == -signal.SIGKILL
    assert os.path.exists(killed.log_path)
    with launches.launch(launcher, key_for(sd), sd) as managed:
        pass
    assert managed.returncode == -signal.SIGTERM
    assert not os.path.exists(managed.log_path)


def test_handle_outlives_its_launcher(dirs: BackendDirs, launches: Launches) -> None:
    sd = dirs.sd()
    launcher = dirs.launcher()
    handle = launches.launch(launcher, key_for(sd), sd)
    del launcher
    gc.collect()
    handle.verify(timeout=HANG_GUARD)
    with handle.connect() as sock:
        assert echo(sock, b"still here") == b"still here"
    assert handle.shutdown() == -signal.SIGTERM
    assert not os.path.exists(handle.endpoint.path)


def test_no_descriptor_or_thread_leak_across_launches(dirs: BackendDirs) -> None:
    sd = dirs.sd()
    launcher = dirs.launcher()
    before = snapshot()
    for _ in range(3):
        handle = launcher.launch(key_for(sd), sd)
        try:
            handle.verify(timeout=HANG_GUARD)
        finally:
            handle.kill()
        del handle
    gc.collect()
    # Descriptors closed and reaper threads ended; no child left.
    assert_nothing_left_behind(before, check_threads=True, timeout=10)


def v1_variant(dirs: BackendDirs, name: str, prelude: str) -> Path:
    """The v1 backend with Python ``prelude`` run first."""
    return dirs.script_with(name, sys.executable, prelude)


def test_shutdown_escalates_to_sigkill(dirs: BackendDirs, launches: Launches) -> None:
    script = v1_variant(dirs, "stubborn", "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    sd = dirs.sd(binary=script)
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    path = handle.endpoint.path
    assert handle.shutdown(timeout=0.2) == -signal.SIGKILL
    assert not handle.is_alive()
    assert not os.path.exists(path)
    # Not a clean end: the log is kept for diagnosis.
    assert os.path.exists(handle.log_path)


def test_shutdown_of_a_backend_exiting_cleanly(dirs: BackendDirs, launches: Launches) -> None:
    script = v1_variant(
        dirs,
        "polite",
        "import os, signal; signal.signal(signal.SIGTERM, lambda *_: os._exit(0))",
    )
    sd = dirs.sd(binary=script)
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    assert handle.shutdown(timeout=HANG_GUARD) == 0
    assert handle.returncode == 0
    assert not os.path.exists(handle.endpoint.path)
    assert not os.path.exists(handle.log_path)


def test_connect_after_shutdown_fails(handle: rp.BackendHandle) -> None:
    handle.shutdown()
    with pytest.raises(OSError):
        handle.connect()


def test_non_utf8_environment_passes_unchanged(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RP_TEST_BYTES", b"\xff\xfe ok".decode("utf-8", "surrogateescape"))
    sd = dirs.sd()
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    with open(f"/proc/{handle.pid}/environ", "rb") as f:
        entries = f.read().split(b"\0")
    assert entries.count(b"RP_TEST_BYTES=\xff\xfe ok") == 1


# --- bugs found by these tests --------------------------------------------------------------


def test_huge_ready_timeout_is_refused_or_honoured(dirs: BackendDirs, launches: Launches) -> None:
    """1e19 s fits a Duration (accepted by the constructor) but not an
    Instant deadline. Expected: ValueError up front, or a working launch;
    never a panic with the spawned backend left running."""
    try:
        launcher = dirs.launcher(ready_timeout=1e19)
    except ValueError:
        return
    sd = dirs.sd()
    before = snapshot()
    try:
        handle = launches.launch(launcher, key_for(sd), sd)
    except BaseException as e:
        left = sorted(set(children()) - set(before.children))
        pytest.fail(
            f"launch raised {type(e).__module__}.{type(e).__name__}: {e}; "
            f"left behind: child processes {left}, "
            f"log files {files_in(dirs.log_dir)}"
        )
    handle.verify(timeout=HANG_GUARD)


def test_huge_verify_timeout_is_refused_or_honoured(handle: rp.BackendHandle) -> None:
    """Same overflow in verify(): expected ValueError or a pass, not a panic."""
    try:
        handle.verify(timeout=1e19)
    except ValueError:
        pass
    except BaseException as e:
        pytest.fail(f"verify raised {type(e).__module__}.{type(e).__name__}: {e}")


def test_zero_verify_timeout_does_not_blame_the_backend(handle: rp.BackendHandle) -> None:
    """timeout=0 is accepted as a valid duration, so it must be refused as an
    argument (ValueError) or honoured; a healthy backend must not be reported
    as failing its identity probe because of it."""
    try:
        handle.verify(timeout=0)
    except ValueError:
        pass
    except rp.ProbeError as e:
        pytest.fail(f"healthy backend reported as a failed probe: {e}")
    assert handle.is_alive()


def test_launch_steps_are_logged_with_their_facts(
    dirs: BackendDirs, launches: Launches, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="running_process")
    rp.refresh_logging()
    try:
        trace = rp.TraceContext.new_root()
        sd = dirs.sd()
        handle = launches.launch(dirs.launcher(), key_for(sd), sd, trace)
        records = [r for r in caplog.records if r.name.startswith("running_process.launch")]
        launched = [r for r in records if r.levelno == logging.INFO and "launched" in r.getMessage()]
        assert len(launched) == 1
        message = launched[0].getMessage()
        for fact in (sd.service_name, "1.0.0", str(handle.pid), handle.endpoint.path, str(trace.trace_id)):
            assert fact in message
        assert any(r.levelno == logging.DEBUG and "spawned" in r.getMessage() for r in records)
    finally:
        caplog.set_level(logging.WARNING, logger="running_process")
        rp.refresh_logging()


def test_the_launcher_lists_and_kills_its_live_children(dirs: BackendDirs, launches: Launches) -> None:
    sd = dirs.sd()
    launcher = dirs.launcher()
    assert launcher.live_children() == []
    first = launches.launch(launcher, key_for(sd), sd)
    second = launches.launch(launcher, key_for(sd, "1.0.1"), sd)
    listed = {(key, daemon.pid) for key, daemon in launcher.live_children()}
    assert listed == {(first.key, first.pid), (second.key, second.pid)}
    # Another launcher's children are its own, not this one's.
    other = dirs.launcher()
    third = launches.launch(other, key_for(sd, "1.0.2"), sd)
    assert [daemon.pid for _, daemon in other.live_children()] == [third.pid]
    assert third.pid not in {daemon.pid for _, daemon in launcher.live_children()}
    first.shutdown()
    assert [daemon.pid for _, daemon in launcher.live_children()] == [second.pid]
    killed = launcher.kill_children()
    assert [(key, daemon.pid) for key, daemon in killed] == [(second.key, second.pid)]
    assert second.returncode == -signal.SIGKILL
    assert launcher.live_children() == [] and launcher.kill_children() == []


def test_logs_stay_in_the_users_tree_when_only_the_socket_dir_is_given(
    dirs: BackendDirs, launches: Launches
) -> None:
    """A socket directory under a shared parent must not put the logs in a
    directory beside it that another user could have created first."""
    shared_parent = dirs.root / "shared"
    shared_parent.mkdir()
    os.chmod(shared_parent, 0o1777)
    # Another user's directory where the logs used to go.
    (shared_parent / "logs").mkdir(mode=0o700)
    os.chmod(shared_parent / "logs", 0o700)
    if os.geteuid() == 0:
        os.chown(shared_parent / "logs", NOBODY_UID, NOBODY_UID)
    sd = dirs.sd()
    launcher = rp.CommandBackendLauncher.for_current_user(
        socket_dir=str(shared_parent / "s"), ready_timeout=HANG_GUARD
    )
    handle = launches.launch(launcher, key_for(sd), sd)
    assert Path(handle.log_path).parent == Path(rp.socket_dir()).parent / "logs"
    assert mode_of(Path(handle.log_path).parent) == 0o700
    assert launcher.log_dir == str(Path(rp.socket_dir()).parent / "logs")


@pytest.mark.parametrize("xdg_len", [20, 36])
def test_launches_work_under_any_real_xdg_runtime_dir(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch, xdg_len: int
) -> None:
    """``/run/user/4294967294`` is 20 bytes: too long for the v1 name by
    one byte. Such a directory (and any up to 36 bytes) gets compact socket
    names, and the launch is verified as usual."""
    base = Path(tempfile.mkdtemp(prefix="rx", dir="/tmp"))
    try:
        xdg = base / ("u" * (xdg_len - len(str(base)) - 1))
        xdg.mkdir(mode=0o700)
        assert len(str(xdg)) == xdg_len
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
        launcher = rp.CommandBackendLauncher.for_current_user()
        handle = launches.launch(launcher, key_for(dirs.sd()), dirs.sd())
        name = os.path.basename(handle.daemon.ipc_endpoint.path)
        assert name.startswith("rpb-v1-be-"), name
        assert handle.daemon.ipc_endpoint.path.startswith(f"{xdg}/running-process/broker/")
        handle.verify()
        with handle.connect() as conn:
            conn.sendall(b"ping")
            conn.shutdown(socket.SHUT_WR)
            assert conn.recv(16) == b"ping"
        handle.shutdown()
        # One byte more and even the compact name does not fit: a clear
        # error before anything is created.
        longer = base / ("v" * (xdg_len - len(str(base))))
        longer.mkdir(mode=0o700)
        if xdg_len == 36:
            monkeypatch.setenv("XDG_RUNTIME_DIR", str(longer))
            with pytest.raises(rp.EndpointError) as info:
                launches.launch(rp.CommandBackendLauncher.for_current_user(), key_for(dirs.sd()), dirs.sd())
            assert isinstance(info.value.__cause__, rp.PathTooLongError)
            assert files_in(longer) == []
    finally:
        shutil.rmtree(base)
