"""Daemons started the way real tools start theirs: command-line arguments
with placeholders, a fixed endpoint chosen by the caller, an identity file
beside it; launched, adopted and shared by processes that race for them.

The daemon under test is the package's own ``rp-example-daemon``, a real
executable launched by the real launcher (the published zccache daemon is
in ``test_zccache.py``)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import running_process as rp
from running_process import aio
from support.hostile import give_away
from support.launch import BackendDirs, Launches, echo, install, key_for, race_for_fixed_endpoint
from support.leftovers import assert_gone
from support.procfs import environ_of
from support.waits import HANG_GUARD, poll_until

ARGS = ["--endpoint", "{endpoint}", "--log-file", "{log_file}", "--service", "{service}"]
SERVICE = "exdaemon"


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [arg.decode() for arg in f.read().split(b"\0")[:-1]]


def daemon_sd(dirs: BackendDirs, example_daemon: Path, args: list[str] = ARGS) -> rp.ServiceDefinition:
    binary = dirs.version_dir / "rp-example-daemon"
    if not binary.exists():
        install(binary, example_daemon.read_bytes())
    return dirs.sd(binary, service_name=SERVICE, args=args)


def fixed_endpoint(dirs: BackendDirs, name: str = "sock-v1") -> rp.Endpoint:
    home = dirs.root / "d"
    home.mkdir(mode=0o700, exist_ok=True)
    return rp.Endpoint("default", str(home / name))


def identity_file_of(endpoint: rp.Endpoint) -> Path:
    return Path(endpoint.path + ".running-process.json")


# --- argument templates --------------------------------------------------------------


def test_arguments_are_expanded_and_passed_as_a_list(
    dirs: BackendDirs, launches: Launches, example_daemon: Path
) -> None:
    args = [*ARGS, "--namespace", "{namespace}", "--version", "{version}", "--identity-file", "{idfile}"]
    sd = daemon_sd(dirs, example_daemon, args)
    assert sd.args == args
    assert rp.ServiceDefinition.from_bytes(sd.to_bytes()) == sd
    endpoint = fixed_endpoint(dirs)
    idfile = dirs.root / "d" / "my id file.json"
    handle = launches.launch_with(
        dirs.launcher(), key_for(sd), sd, endpoint=endpoint, arg_values={"idfile": str(idfile)}
    )
    argv = cmdline(handle.pid)
    assert argv[1:] == [
        "--endpoint",
        endpoint.path,
        "--log-file",
        handle.log_path,
        "--service",
        SERVICE,
        "--namespace",
        "default",
        "--version",
        "1.0.0",
        "--identity-file",
        str(idfile),
    ]
    # The v1 environment names the same endpoint.
    env = environ_of(handle.pid)
    assert env[rp.ENV_BACKEND_PIPE] == endpoint.path
    assert env[rp.ENV_BACKEND_NAMESPACE] == "default"
    assert rp.read_identity_file(str(idfile)) == handle.daemon


@pytest.mark.parametrize(
    ("template", "says"),
    [("{", "without its '}'"), ("}", "lone '}'"), ("{Endpoint}", "a-z"), ("a\0b", "NUL")],
)
def test_a_bad_template_is_refused_when_the_definition_is_built(
    dirs: BackendDirs, template: str, says: str
) -> None:
    with pytest.raises(rp.InvalidServiceDefinitionError) as info:
        dirs.sd(args=["--x", template])
    assert info.value.field == "args"
    assert says in info.value.reason


def test_a_placeholder_without_a_value_spawns_nothing(
    dirs: BackendDirs, launches: Launches, example_daemon: Path
) -> None:
    sd = daemon_sd(dirs, example_daemon, [*ARGS, "--config", "{config}"])
    launcher = dirs.launcher()
    with pytest.raises(rp.InvalidServiceDefinitionError) as info:
        launcher.launch(key_for(sd), sd, endpoint=fixed_endpoint(dirs))
    assert "{config} has no value" in info.value.reason
    with pytest.raises(rp.InvalidServiceDefinitionError) as info:
        launcher.launch(key_for(sd), sd, arg_values={"endpoint": "/elsewhere"})
    assert "filled by the launcher" in info.value.reason
    assert launcher.live_children() == []
    assert not dirs.log_dir.exists() or os.listdir(dirs.log_dir) == []
    assert os.listdir(dirs.root / "d") == []


# --- fixed endpoints -------------------------------------------------------------------


def test_a_fixed_endpoint_daemon_is_launched_verified_and_published(
    dirs: BackendDirs, launches: Launches, example_daemon: Path
) -> None:
    sd = daemon_sd(dirs, example_daemon)
    endpoint = fixed_endpoint(dirs)
    handle = launches.launch_with(dirs.launcher(), key_for(sd), sd, endpoint=endpoint)
    assert handle.endpoint == endpoint
    assert handle.daemon.exe_hash_algorithm == "blake3"
    assert echo(handle, b"hello") == b"hello"
    # The daemon publishes its identity once bound (in the current form).
    idfile = identity_file_of(endpoint)
    poll_until(idfile.exists, timeout=HANG_GUARD, what="the identity file")
    text = idfile.read_text()
    assert json.loads(text)["exe_hash_algorithm"] == "blake3"
    assert rp.read_identity_file(str(idfile)) == handle.daemon
    assert os.stat(idfile).st_mode & 0o777 == 0o600
    # A clean end removes its socket and identity file; the launch's lock
    # file stays as the endpoint's lock.
    handle.shutdown()
    assert not os.path.exists(endpoint.path)
    assert not idfile.exists()
    assert sorted(os.listdir(dirs.root / "d")) == ["sock-v1.lock"]


def test_a_second_launch_gets_the_daemon_already_serving(
    dirs: BackendDirs, launches: Launches, example_daemon: Path
) -> None:
    sd = daemon_sd(dirs, example_daemon)
    endpoint = fixed_endpoint(dirs)
    first = launches.launch_with(dirs.launcher(), key_for(sd), sd, endpoint=endpoint)
    # Another launcher (as another process would) finds and verifies it.
    other = dirs.launcher()
    second = launches.launch_with(other, key_for(sd), sd, endpoint=endpoint)
    assert second.pid == first.pid
    assert other.live_children() == []
    second.verify()


def test_a_stale_socket_is_replaced(dirs: BackendDirs, launches: Launches, example_daemon: Path) -> None:
    sd = daemon_sd(dirs, example_daemon)
    endpoint = fixed_endpoint(dirs)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(endpoint.path)
    stale.close()  # bound, never listened: connect is refused
    handle = launches.launch_with(dirs.launcher(), key_for(sd), sd, endpoint=endpoint)
    handle.verify()


def test_an_impostor_at_the_endpoint_is_refused_and_left_alone(
    dirs: BackendDirs, launches: Launches, example_daemon: Path
) -> None:
    sd = daemon_sd(dirs, example_daemon)
    endpoint = fixed_endpoint(dirs)
    # Another program of this user's listens there: the v1 test backend, a
    # real backend, but not the definition's binary.
    env = dict(
        os.environ,
        **{
            rp.ENV_BACKEND_PIPE: endpoint.path,
            rp.ENV_BACKEND_NAMESPACE: "default",
            rp.ENV_SERVICE_NAME: SERVICE,
            rp.ENV_SERVICE_VERSION: "1.0.0",
        },
    )
    impostor = subprocess.Popen([str(dirs.script)], env=env, stdout=subprocess.DEVNULL)
    try:
        poll_until(lambda: os.path.exists(endpoint.path), timeout=HANG_GUARD, what="the impostor")
        launcher = dirs.launcher()
        with pytest.raises(rp.EndpointError) as info:
            launcher.launch(key_for(sd), sd, endpoint=endpoint)
        assert f"served by pid {impostor.pid}" in str(info.value)
        assert "exe_path" in str(info.value)
        assert impostor.poll() is None
        # Its socket is left alone; the launch's lock file does not stay.
        assert os.listdir(dirs.root / "d") == ["sock-v1"]
        assert launcher.live_children() == []
    finally:
        impostor.kill()
        impostor.wait()


def test_an_endpoint_directory_others_can_write_is_refused(
    dirs: BackendDirs, launches: Launches, example_daemon: Path
) -> None:
    sd = daemon_sd(dirs, example_daemon)
    endpoint = fixed_endpoint(dirs)
    os.chmod(dirs.root / "d", 0o777)
    launcher = dirs.launcher()
    with pytest.raises(rp.EndpointError) as info:
        launcher.launch(key_for(sd), sd, endpoint=endpoint)
    assert "writable by group or other" in str(info.value)
    os.chmod(dirs.root / "d", 0o1777)  # sticky does not make it private
    with pytest.raises(rp.EndpointError):
        launcher.launch(key_for(sd), sd, endpoint=endpoint)
    assert os.listdir(dirs.root / "d") == []
    assert launcher.live_children() == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a socket to another uid")
def test_a_socket_another_user_owns_is_refused(
    dirs: BackendDirs, launches: Launches, example_daemon: Path
) -> None:
    sd = daemon_sd(dirs, example_daemon)
    endpoint = fixed_endpoint(dirs)
    planted = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    planted.bind(endpoint.path)
    planted.close()
    give_away(Path(endpoint.path))
    with pytest.raises(rp.EndpointError) as info:
        dirs.launcher().launch(key_for(sd), sd, endpoint=endpoint)
    assert "owned by uid" in str(info.value)
    assert os.path.exists(endpoint.path)


def test_a_path_that_is_not_a_socket_is_refused(
    dirs: BackendDirs, launches: Launches, example_daemon: Path
) -> None:
    sd = daemon_sd(dirs, example_daemon)
    endpoint = fixed_endpoint(dirs)
    Path(endpoint.path).write_text("precious")
    with pytest.raises(rp.EndpointError) as info:
        dirs.launcher().launch(key_for(sd), sd, endpoint=endpoint)
    assert "not a socket" in str(info.value)
    assert Path(endpoint.path).read_text() == "precious"


def test_a_failed_fixed_launch_leaves_nothing(dirs: BackendDirs, launches: Launches) -> None:
    # The v1 test backend ignores the arguments; told to answer garbage it
    # fails verification.
    endpoint = fixed_endpoint(dirs)
    sd = dirs.sd(args=["{endpoint}"])
    env_mode = os.environ.get("V1_BACKEND_MODE")
    os.environ["V1_BACKEND_MODE"] = "garbage"
    try:
        launcher = dirs.launcher()
        with pytest.raises(rp.ProbeError):
            launcher.launch(key_for(sd), sd, endpoint=endpoint)
    finally:
        if env_mode is None:
            del os.environ["V1_BACKEND_MODE"]
        else:
            os.environ["V1_BACKEND_MODE"] = env_mode
    assert launcher.live_children() == []
    assert os.listdir(dirs.root / "d") == []
    assert os.listdir(dirs.log_dir) == []


# --- identity files and adoption --------------------------------------------------------


def start_daemon_by_hand(binary: Path, endpoint: rp.Endpoint, log: Path) -> subprocess.Popen[bytes]:
    """The daemon started the way its own tool would, not by us."""
    return subprocess.Popen(
        [str(binary), "--endpoint", endpoint.path, "--log-file", str(log)],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def test_a_daemon_started_elsewhere_is_adopted_from_its_identity_file(
    dirs: BackendDirs, launches: Launches, example_daemon: Path
) -> None:
    sd = daemon_sd(dirs, example_daemon)
    endpoint = fixed_endpoint(dirs)
    proc = start_daemon_by_hand(Path(sd.binary_path), endpoint, dirs.root / "d" / "log")
    try:
        idfile = identity_file_of(endpoint)
        poll_until(idfile.exists, timeout=HANG_GUARD, what="the identity file")
        handle = dirs.launcher().adopt_identity_file(key_for(sd), sd, str(idfile))
        launches.handles.append(handle)
        assert handle.pid == proc.pid
        assert handle.daemon == rp.read_identity_file(str(idfile))
        assert echo(handle, b"adopted") == b"adopted"
        # shutdown of a daemon we did not start: SIGTERM through its pidfd;
        # it ends cleanly and takes its socket and identity file with it.
        handle.shutdown()
        assert proc.wait(timeout=HANG_GUARD) == 0
        assert not idfile.exists() and not os.path.exists(endpoint.path)
    finally:
        proc.kill()
        proc.wait()


def test_stale_and_forged_identities_are_refused(
    dirs: BackendDirs, launches: Launches, example_daemon: Path, tmp_path: Path
) -> None:
    sd = daemon_sd(dirs, example_daemon)
    endpoint = fixed_endpoint(dirs)
    launcher = dirs.launcher()
    handle = launches.launch_with(launcher, key_for(sd), sd, endpoint=endpoint)
    real = handle.daemon

    def with_(**changes: Any) -> rp.DaemonProcess:
        fields: dict[str, Any] = {
            "pid": real.pid,
            "exe_path": real.exe_path,
            "exe_sha256": real.exe_sha256,
            "boot_id": real.boot_id,
            "ipc_endpoint": real.ipc_endpoint,
            "started_at_unix_ms": real.started_at_unix_ms,
            "exe_blake3": real.exe_blake3,
        }
        fields.update(changes)
        return rp.DaemonProcess(**fields)

    def adopt(daemon: rp.DaemonProcess) -> rp.BackendHandle:
        return launcher.adopt(key_for(sd), sd, daemon)

    assert adopt(with_()).pid == real.pid
    # A pid that has ended: stale.
    gone = subprocess.Popen(["true"])
    gone.wait()
    with pytest.raises(rp.StaleIdentityError) as stale:
        adopt(with_(pid=gone.pid))
    assert stale.value.field == "pid"
    with pytest.raises(rp.StaleIdentityError) as stale:
        adopt(with_(boot_id="0d3c9a52-6c1e-4c2f-9a43-2f1d2a7b9e10"))
    assert stale.value.field == "boot_id"
    # A live pid that is not the daemon: not trusted.
    with pytest.raises(rp.VerificationError):
        adopt(with_(pid=os.getpid()))
    # A wrong digest of either algorithm.
    with pytest.raises(rp.VerificationError) as wrong:
        adopt(with_(exe_blake3=bytes(32)))
    assert wrong.value.field == "exe_hash"
    with pytest.raises(rp.VerificationError) as wrong:
        adopt(with_(exe_sha256=bytes(range(32))))
    assert wrong.value.field == "exe_sha256"
    assert handle.is_alive()
    # Files that are not identities.
    bad = tmp_path / "bad.json"
    for text, error in [
        ("{not json", rp.DecodeError),
        (real.to_json().replace('"blake3"', '"md5"'), rp.InvalidIdentityError),
        (real.to_json().replace("[", "[1,", 1), rp.InvalidIdentityError),
    ]:
        bad.write_text(text)
        assert rp.try_read_identity_file(str(bad)) is None
        with pytest.raises(error):
            launcher.adopt_identity_file(key_for(sd), sd, str(bad))
    assert rp.try_read_identity_file(str(tmp_path / "absent.json")) is None
    with pytest.raises(rp.FilesystemError):
        rp.read_identity_file(str(tmp_path / "absent.json"))


def test_identity_files_of_both_generations_round_trip(tmp_path: Path) -> None:
    endpoint = rp.Endpoint("default", "/tmp/x/sock-v1")
    daemon = rp.DaemonProcess(7, "/x/d", bytes(range(32)), "b", endpoint, 5, exe_blake3=bytes([9]) * 32)
    current, legacy = tmp_path / "current.json", tmp_path / "legacy.json"
    rp.write_identity_file(str(current), daemon)
    rp.write_identity_file(str(legacy), daemon, form="legacy")
    as_json = json.loads(current.read_text())
    assert list(as_json) == [
        "pid",
        "exe_path",
        "exe_hash_algorithm",
        "exe_hash",
        "legacy_exe_sha256",
        "boot_id",
        "ipc_endpoint",
        "started_at_unix_ms",
        "idle_timeout_secs",
    ]
    assert as_json["exe_hash"] == [9] * 32
    assert rp.read_identity_file(str(current)) == daemon
    old = json.loads(legacy.read_text())
    assert "exe_hash" not in old and old["exe_sha256"] == list(range(32))
    assert rp.read_identity_file(str(legacy)).exe_blake3 is None
    assert sorted(os.listdir(tmp_path)) == ["current.json", "legacy.json"]
    assert os.stat(current).st_mode & 0o777 == 0o600
    blake3_only = rp.DaemonProcess(7, "/x/d", None, "b", endpoint, 5, exe_blake3=bytes([9]) * 32)
    with pytest.raises(rp.InvalidIdentityError):
        rp.write_identity_file(str(tmp_path / "x.json"), blake3_only, form="legacy")
    assert not (tmp_path / "x.json").exists()


# --- one daemon for many processes ---------------------------------------------------------


@pytest.mark.slow  # 16 interpreters
def test_sixteen_processes_get_one_verified_daemon(dirs: BackendDirs, example_daemon: Path) -> None:
    sd = daemon_sd(dirs, example_daemon)
    endpoint = fixed_endpoint(dirs)
    job = {
        "binary": sd.binary_path,
        "version_dir": sd.per_version_binary_dir,
        "service": SERVICE,
        "version": "1.0.0",
        "args": ARGS,
        "socket_dir": str(dirs.socket_dir),
        "log_dir": str(dirs.log_dir),
        "endpoint": endpoint.path,
    }
    results = race_for_fixed_endpoint(16, job)
    pids = {pid for pid, _ in results}
    assert len(pids) == 1, results
    (pid,) = pids
    timings = sorted(seconds for _, seconds in results)
    print(
        f"16 racers: one daemon pid {pid}; per-process ms min {timings[0] * 1e3:.1f} "
        f"median {timings[8] * 1e3:.1f} max {timings[-1] * 1e3:.1f}"
    )
    # The daemon outlives its launcher's process; end it through a handle.
    handle = dirs.launcher().adopt_identity_file(key_for(sd), sd, str(identity_file_of(endpoint)))
    handle.shutdown()
    assert_gone(pid)


# --- from the command line ---------------------------------------------------------------


def test_the_cli_writes_arguments_and_launches_at_a_fixed_endpoint(
    dirs: BackendDirs, launches: Launches, example_daemon: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from running_process import cli

    binary = install(dirs.version_dir / "rp-example-daemon", example_daemon.read_bytes())
    defs = dirs.root / "defs"
    write = ["servicedef", "write", SERVICE, "--binary", str(binary), "--root", str(dirs.version_dir)]
    write += ["--isolation", "shared", "--dir", str(defs)]
    write += [f"--arg={a}" for a in ARGS] + ["--arg=--identity-file", "--arg={idfile}"]
    assert cli.main(write) == 0
    capsys.readouterr()
    assert cli.main(["--json", "servicedef", "show", SERVICE, "--dir", str(defs)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["args"] == [*ARGS, "--identity-file", "{idfile}"]
    endpoint = fixed_endpoint(dirs)
    idfile = dirs.root / "d" / "id.json"
    launch = [
        "--json",
        "launch",
        SERVICE,
        "--version",
        "1.0.0",
        "--dir",
        str(defs),
        "--endpoint",
        endpoint.path,
    ]
    launch += ["--arg-value", f"idfile={idfile}"]
    assert cli.main(launch) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["reused"] is False and first["endpoint"] == endpoint.path
    assert first["exe_hash_algorithm"] == "blake3"
    try:
        assert cli.main(launch) == 0
        second = json.loads(capsys.readouterr().out)
        assert second["reused"] is True and second["pid"] == first["pid"]
        assert (
            cli.main(["launch", SERVICE, "--version", "1.0.0", "--dir", str(defs), "--arg-value", "x"]) == 2
        )
        assert "has no '='" in capsys.readouterr().err
    finally:
        sd = dirs.sd(binary, service_name=SERVICE)
        handle = dirs.launcher().adopt_identity_file(key_for(sd), sd, str(idfile))
        handle.shutdown()
    assert_gone(first["pid"])


PY_PUBLISHER = """
import os
import running_process as rp

server = rp.BackendServer.from_env(identity_file=os.environ["RP_TEST_IDENTITY_FILE"])
while (conn := server.accept()) is not None:
    conn.close()
"""


def test_a_python_backend_publishes_its_identity_file_and_removes_it(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = install(dirs.version_dir / "publisher", f"#!{sys.executable}\n{PY_PUBLISHER}".encode())
    idfile = dirs.root / "publisher.json"
    monkeypatch.setenv("RP_TEST_IDENTITY_FILE", str(idfile))
    sd = dirs.sd(script, service_name="publisher")
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    poll_until(idfile.exists, timeout=HANG_GUARD, what="the identity file")
    assert rp.read_identity_file(str(idfile)) == handle.daemon
    assert handle.daemon.exe_path == str(script)
    handle.shutdown()
    assert not idfile.exists()


def test_launch_async_takes_a_fixed_endpoint(
    dirs: BackendDirs, launches: Launches, example_daemon: Path
) -> None:
    sd = daemon_sd(dirs, example_daemon)
    endpoint = fixed_endpoint(dirs)
    launcher = dirs.launcher()

    async def both() -> tuple[rp.BackendHandle, rp.BackendHandle]:
        first = await launcher.launch_async(key_for(sd), sd, endpoint=endpoint)
        second = await aio.launch_async(launcher, key_for(sd), sd, endpoint=endpoint)
        return first, second

    first, second = asyncio.run(both())
    launches.handles.append(first)
    assert first.pid == second.pid
