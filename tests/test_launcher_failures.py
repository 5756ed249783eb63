"""CommandBackendLauncher: every way a launch can fail.

Each test asserts the exact exception class and its attributes, then that the
failed launch left nothing behind: no child process (running or zombie), no
file in the socket or log directory, no extra open descriptor in the test
process.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path
from typing import Optional, TypeVar

import pytest

import running_process as rp
from support.launch import SERVICE, VERSION, BackendDirs, Launches, install, key_for, new_launcher, v1_script
from support.leftovers import assert_nothing_left_behind, snapshot
from support.procfs import proc_stat, process_running
from support.waits import poll_until

E = TypeVar("E", bound=BaseException)


def launch_fails(
    dirs: BackendDirs,
    launches: Launches,
    expected: type[E],
    sd: Optional[rp.ServiceDefinition] = None,
    key: Optional[rp.BackendKey] = None,
    launcher: Optional[rp.CommandBackendLauncher] = None,
) -> E:
    """Launches, expects exactly ``expected``, checks nothing was left behind."""
    sd = sd if sd is not None else dirs.sd()
    key = key if key is not None else key_for(sd)
    launcher = launcher if launcher is not None else dirs.launcher()
    before = snapshot()
    with pytest.raises(expected) as info:
        launches.launch(launcher, key, sd)
    assert type(info.value) is expected, repr(info.value)
    assert isinstance(info.value, rp.RunningProcessError)
    assert_nothing_left_behind(before, dirs)
    return info.value


def assert_nothing_created(dirs: BackendDirs) -> None:
    """Refused before any side effect: not even the directories exist."""
    assert not dirs.socket_dir.exists()
    assert not dirs.log_dir.exists()


def outside_backend(dirs: BackendDirs, name: str = "outside") -> Path:
    """A valid backend in a sibling of the per-version root."""
    other = dirs.root / name
    other.mkdir()
    os.chmod(other, 0o755)
    return install(other / "backend", v1_script())


def binary_policy(dirs: BackendDirs, launches: Launches, binary: object) -> rp.BinaryPolicyError:
    err = launch_fails(dirs, launches, rp.BinaryPolicyError, sd=dirs.sd(binary=str(binary)))
    assert isinstance(err, rp.BackendLaunchError)
    assert err.reason == str(err)
    assert_nothing_created(dirs)
    return err


# --- binary policy -----------------------------------------------------------------


def test_symlink_to_outside_the_root(dirs: BackendDirs, launches: Launches) -> None:
    target = outside_backend(dirs)
    link = dirs.version_dir / "link"
    link.symlink_to(target)
    err = binary_policy(dirs, launches, link)
    assert err.variant == "BinaryOutsideAllowRoot"
    assert err.path == os.path.realpath(target)


def test_dotdot_to_outside_the_root(dirs: BackendDirs, launches: Launches) -> None:
    target = outside_backend(dirs)
    err = binary_policy(dirs, launches, f"{dirs.version_dir}/../outside/backend")
    assert err.variant == "BinaryOutsideAllowRoot"
    assert err.path == os.path.realpath(target)


def test_sibling_sharing_the_root_prefix_is_outside(dirs: BackendDirs, launches: Launches) -> None:
    target = outside_backend(dirs, name=dirs.version_dir.name + "-evil")
    err = binary_policy(dirs, launches, target)
    assert err.variant == "BinaryOutsideAllowRoot"
    assert err.path == os.path.realpath(target)


def test_root_itself_is_not_a_binary(dirs: BackendDirs, launches: Launches) -> None:
    err = binary_policy(dirs, launches, dirs.version_dir)
    assert err.variant == "BinaryOutsideAllowRoot"


def test_missing_binary(dirs: BackendDirs, launches: Launches) -> None:
    missing = dirs.version_dir / "missing"
    err = binary_policy(dirs, launches, missing)
    assert err.variant == "CanonicalizeBinary"
    assert err.path == str(missing)


def test_missing_root(dirs: BackendDirs, launches: Launches) -> None:
    sd = dirs.sd(per_version_binary_dir=str(dirs.root / "9.9.9"))
    err = launch_fails(dirs, launches, rp.BinaryPolicyError, sd=sd)
    assert err.variant == "CanonicalizeBinaryRoot"
    assert err.path == str(dirs.root / "9.9.9")


def test_binary_without_execute_bit(dirs: BackendDirs, launches: Launches) -> None:
    script = install(dirs.version_dir / "noexec", v1_script(), 0o644)
    err = binary_policy(dirs, launches, script)
    assert err.variant == "NotExecutable"
    assert err.path == os.path.realpath(script)


def test_directory_as_binary(dirs: BackendDirs, launches: Launches) -> None:
    sub = dirs.version_dir / "sub"
    sub.mkdir()
    os.chmod(sub, 0o755)
    err = binary_policy(dirs, launches, sub)
    assert err.variant == "NotExecutable"
    assert err.path == os.path.realpath(sub)


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777])
def test_binary_writable_by_others(dirs: BackendDirs, launches: Launches, mode: int) -> None:
    script = install(dirs.version_dir / "writable", v1_script(), mode)
    err = binary_policy(dirs, launches, script)
    assert err.variant == "InsecurePermissions"
    assert err.path == os.path.realpath(script)


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_root_writable_by_others(dirs: BackendDirs, launches: Launches, mode: int) -> None:
    os.chmod(dirs.version_dir, mode)
    err = binary_policy(dirs, launches, dirs.script)
    assert err.variant == "InsecurePermissions"
    assert err.path == os.path.realpath(dirs.version_dir)


@pytest.mark.parametrize(
    "shebang",
    [
        b"#!/nonexistent/interpreter",
        b"#!sh",
        b"#!/usr/bin/env",
        b"#!/usr/bin/env -S python3",
        b"#!/usr/bin/env no-such-program-for-rp-tests",
    ],
)
def test_bad_interpreter(dirs: BackendDirs, launches: Launches, shebang: bytes) -> None:
    script = install(dirs.version_dir / "badinterp", shebang + b"\necho hi\n")
    err = binary_policy(dirs, launches, script)
    assert err.variant == "BadInterpreter"
    assert err.path == os.path.realpath(script)


# --- spawn and readiness ----------------------------------------------------------------


def test_exec_format_error(dirs: BackendDirs, launches: Launches) -> None:
    junk = install(dirs.version_dir / "junk", b"\0\0" + os.urandom(1022))
    err = launch_fails(dirs, launches, rp.SpawnError, sd=dirs.sd(binary=junk))
    assert err.os_errno == errno.ENOEXEC
    assert isinstance(err, OSError)
    assert err.errno == errno.ENOEXEC
    assert err.path == os.path.realpath(junk)


def test_backend_exits_before_ready(dirs: BackendDirs, launches: Launches) -> None:
    script = install(dirs.version_dir / "exit3", b"#!/bin/sh\necho exiting with 3 >&2; exit 3\n")
    err = launch_fails(dirs, launches, rp.BackendExitedError, sd=dirs.sd(binary=script))
    assert err.returncode == 3
    assert "exiting with 3" in err.log_tail
    assert err.pid > 0
    assert proc_stat(err.pid) is None


def test_backend_killed_by_a_signal_before_ready(dirs: BackendDirs, launches: Launches) -> None:
    script = install(dirs.version_dir / "selfkill", b"#!/bin/sh\nkill -KILL $$\n")
    err = launch_fails(dirs, launches, rp.BackendExitedError, sd=dirs.sd(binary=script))
    assert err.returncode == -signal.SIGKILL


def test_backend_never_ready(dirs: BackendDirs, launches: Launches) -> None:
    script = install(dirs.version_dir / "sleeper", b"#!/bin/sh\nexec sleep 1000\n")
    launcher = dirs.launcher(ready_timeout=1.0)
    err = launch_fails(dirs, launches, rp.NotReadyError, sd=dirs.sd(binary=script), launcher=launcher)
    assert err.timeout == 1.0
    assert isinstance(err.log_tail, str)
    assert proc_stat(err.pid) is None, "the sleep process is still there"


# --- probe and verification ---------------------------------------------------------------


def test_garbage_answer(dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("V1_BACKEND_MODE", "garbage")
    err = launch_fails(dirs, launches, rp.ProbeError)
    assert err.reason == str(err)


def test_wrong_nonce(dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("V1_BACKEND_MODE", "wrong-nonce")
    err = launch_fails(dirs, launches, rp.ProbeError)
    assert "nonce" in str(err)


def test_wrong_pid_in_identity(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("V1_BACKEND_MODE", "wrong-pid")
    err = launch_fails(dirs, launches, rp.VerificationError)
    assert err.field == "pid"
    assert int(err.actual) == int(err.expected) + 1
    assert proc_stat(int(err.expected)) is None


def test_endpoint_bound_by_another_process(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("V1_BACKEND_MODE", "delegate-bind")
    err = launch_fails(dirs, launches, rp.VerificationError)
    assert err.field == "peer pid"
    backend, squatter = int(err.expected), int(err.actual)
    assert backend != squatter
    try:
        assert proc_stat(backend) is None
        # The squatter was the backend's child, killed with the backend's
        # process group. Signal delivery to it is asynchronous, so wait for
        # its death; orphaned, it is then reaped by init (or stays a zombie of
        # init on hosts whose init does not reap), never our child.
        poll_until(lambda: not process_running(squatter), what=f"squatter {squatter} to die")
        info = proc_stat(squatter)
        assert info is None or info[1] != os.getpid()
    finally:
        if process_running(squatter):
            os.kill(squatter, signal.SIGKILL)


# --- policy on the key and the definition -------------------------------------------------


def test_version_below_minimum(dirs: BackendDirs, launches: Launches) -> None:
    sd = dirs.sd(min_version="2.0.0")
    err = launch_fails(dirs, launches, rp.VersionRefusedError, sd=sd)
    assert err.service_name == SERVICE
    assert err.version == VERSION
    assert_nothing_created(dirs)


def test_version_outside_allow_list(dirs: BackendDirs, launches: Launches) -> None:
    sd = dirs.sd(version_allow_list=["1.0.1", "2.0.0"])
    err = launch_fails(dirs, launches, rp.VersionRefusedError, sd=sd)
    assert err.service_name == SERVICE
    assert err.version == VERSION
    assert_nothing_created(dirs)


def test_key_for_another_service(dirs: BackendDirs, launches: Launches) -> None:
    sd = dirs.sd()
    key = rp.BackendKey(rp.BrokerInstanceKey.shared(), "other-service", VERSION)
    err = launch_fails(dirs, launches, rp.InvalidServiceDefinitionError, sd=sd, key=key)
    assert err.field == "service_name"
    assert err.value == SERVICE
    assert_nothing_created(dirs)


@pytest.mark.parametrize(
    "instance",
    [rp.BrokerInstanceKey.private(SERVICE), rp.BrokerInstanceKey.explicit("team")],
    ids=["private", "explicit"],
)
def test_key_instance_differs_from_isolation(
    dirs: BackendDirs, launches: Launches, instance: rp.BrokerInstanceKey
) -> None:
    sd = dirs.sd()
    key = rp.BackendKey(instance, SERVICE, VERSION)
    err = launch_fails(dirs, launches, rp.InvalidServiceDefinitionError, sd=sd, key=key)
    assert err.field == "isolation"
    assert err.value == "SHARED"
    assert_nothing_created(dirs)


# --- directories and options ---------------------------------------------------------------


def test_group_writable_socket_dir(dirs: BackendDirs, launches: Launches) -> None:
    dirs.socket_dir.mkdir()
    os.chmod(dirs.socket_dir, 0o770)
    err = launch_fails(dirs, launches, rp.EndpointError)
    cause = err.__cause__
    assert isinstance(cause, rp.InsecureDirectoryError)
    assert cause.path == str(dirs.socket_dir)
    assert not dirs.log_dir.exists()


def test_socket_path_too_long(dirs: BackendDirs, launches: Launches) -> None:
    long_dir = dirs.root / ("d" * 80)
    launcher = dirs.launcher(socket_dir=str(long_dir))
    err = launch_fails(dirs, launches, rp.EndpointError, launcher=launcher)
    assert isinstance(err.__cause__, rp.PathTooLongError)
    assert not long_dir.exists()


def test_group_writable_log_dir(dirs: BackendDirs, launches: Launches) -> None:
    dirs.log_dir.mkdir()
    os.chmod(dirs.log_dir, 0o770)
    err = launch_fails(dirs, launches, rp.EndpointError)
    assert isinstance(err.__cause__, rp.InsecureDirectoryError)


@pytest.mark.parametrize("which", ["socket_dir", "log_dir"])
def test_symlinked_directory_is_refused(dirs: BackendDirs, launches: Launches, which: str) -> None:
    real = dirs.root / "real"
    real.mkdir(mode=0o700)
    os.chmod(real, 0o700)
    link = dirs.socket_dir if which == "socket_dir" else dirs.log_dir
    link.symlink_to(real)
    err = launch_fails(dirs, launches, rp.EndpointError)
    assert isinstance(err.__cause__, rp.InsecureDirectoryError)
    assert os.listdir(real) == []


@pytest.mark.parametrize("value", [-1.0, -0.001, float("nan"), float("inf")])
def test_bad_ready_timeout(value: float) -> None:
    with pytest.raises(ValueError):
        new_launcher(ready_timeout=value)
