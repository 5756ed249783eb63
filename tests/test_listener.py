"""Who binds a backend's endpoint: by default the launcher, which creates the
socket before the spawn and passes its listener to the backend
(``RUNNING_PROCESS_BROKER_LISTENER_FD``); a definition with
``Listener.BIND`` leaves the bind to the backend; a service manager's socket
activation (``LISTEN_FDS``) is taken too. The impostor side of it (nobody
can take a launcher-bound path) is in test_impostors.py."""

from __future__ import annotations

import os
import pickle
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import running_process as rp
from support.hostile import launch_fails
from support.launch import BackendDirs, Launches, echo, install_rust_echo, key_for
from support.leftovers import assert_nothing_left_behind, snapshot
from support.procfs import environ_of
from support.waits import HANG_GUARD
from support.wire import probe


def unix_socket_inode(path: str) -> int:
    """The inode of the socket listening at ``path``, from /proc/net/unix
    (connections it accepted show the same path; only the listener has the
    accepting flag, 0x10000)."""
    with open("/proc/net/unix", encoding="utf-8") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == path and int(fields[3], 16) & 0x10000:
                return int(fields[6])
    raise AssertionError(f"no socket bound at {path}")


def test_the_launcher_binds_the_endpoint_and_the_backend_serves_on_its_listener(
    dirs: BackendDirs, launches: Launches, rust_example: Path
) -> None:
    sd = dirs.sd(install_rust_echo(dirs, rust_example))
    assert sd.listener == rp.Listener.INHERIT
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    path = handle.endpoint.path
    passed = environ_of(handle.pid)[rp.ENV_LISTENER_FD]
    # The descriptor the backend serves on is the socket bound at the path.
    target = os.readlink(f"/proc/{handle.pid}/fd/{passed}")
    assert target == f"socket:[{unix_socket_inode(path)}]"
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    # It listened again: connections name the backend, not the launcher.
    assert probe(path).peer_pid == handle.pid
    handle.verify()
    assert echo(handle, b"inherited") == b"inherited"
    # The launcher kept no copy: once the backend ends, the socket is gone.
    assert handle.shutdown(timeout=HANG_GUARD) is not None
    assert not os.path.lexists(path)


@pytest.mark.parametrize("how", ["definition", "opt-out"])
def test_a_backend_can_bind_its_endpoint_itself(
    dirs: BackendDirs,
    launches: Launches,
    rust_example: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    binary = install_rust_echo(dirs, rust_example)
    if how == "definition":
        sd = dirs.sd(binary, listener=rp.Listener.BIND)
    else:
        sd = dirs.sd(binary)
        monkeypatch.setenv(rp.ENV_OWNED_BIND, "0")
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    assert rp.ENV_LISTENER_FD not in environ_of(handle.pid)
    assert probe(handle.endpoint.path).peer_pid == handle.pid
    handle.verify()
    assert echo(handle, b"bound itself") == b"bound itself"


def test_a_listener_passed_to_the_launcher_is_not_passed_on(
    dirs: BackendDirs, launches: Launches, rust_example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Variables of a listener meant for the launching process (it may run
    under socket activation itself) never reach the backend."""
    monkeypatch.setenv(rp.ENV_LISTENER_FD, "1000")
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDNAMES", "outer")
    sd = dirs.sd(install_rust_echo(dirs, rust_example), listener=rp.Listener.BIND)
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    seen = environ_of(handle.pid)
    assert not {rp.ENV_LISTENER_FD, "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} & set(seen)


def test_a_backend_that_serves_without_listening_again_is_refused(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections to a listener nobody listened on again keep naming the
    launcher that bound it, so no later verification could tell who
    answers: the launch is refused, and says what the definition needs."""
    monkeypatch.setenv("V1_BACKEND_MODE", "no-relisten")
    before = snapshot()
    err = launch_fails(dirs, launches, rp.VerificationError, dirs.sd())
    assert err.field == "peer pid"
    assert err.actual.startswith(f"{os.getpid()} (this launcher")
    assert "listener BIND" in err.actual
    assert_nothing_left_behind(before, dirs)


def test_a_backend_that_ignores_the_passed_listener_fails_with_its_own_words(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backend declared INHERIT that binds the path itself anyway finds it
    taken; it ends, the launch reports its log, and nothing is left."""
    monkeypatch.setenv("V1_BACKEND_MODE", "ignore-listener")
    before = snapshot()
    err = launch_fails(dirs, launches, rp.BackendExitedError, dirs.sd())
    assert "Address already in use" in err.log_tail
    assert_nothing_left_behind(before, dirs)


def test_socket_activation_is_taken_by_the_sdk(short_dir: Path) -> None:
    """Under a service manager (``LISTEN_FDS=1``, ``LISTEN_PID`` naming the
    backend, the socket at descriptor 3) a Python backend of the SDK serves
    on that socket."""
    sock_dir = short_dir / "s"
    sock_dir.mkdir(mode=0o700)
    path = str(sock_dir / "activated.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    program = (
        "import running_process as rp, sys\n"
        "server = rp.BackendServer.from_env()\n"
        "print('serving', flush=True)\n"
        "conn = server.accept()\n"
        "conn.sendall(conn.recv(64))\n"
        "conn.close()\n"
        "server.shutdown()\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RUNNING_PROCESS_") and not k.startswith("LISTEN_")
    }
    env.update(
        {
            rp.ENV_SERVICE_NAME: "activated",
            rp.ENV_SERVICE_VERSION: "1.0.0",
            rp.ENV_BACKEND_PIPE: path,
            rp.ENV_BACKEND_NAMESPACE: "shared",
            rp.ENV_INSTANCE: "shared",
            "LISTEN_FDS": "1",
        }
    )
    # A wrapper moves the socket to descriptor 3 and names itself in
    # LISTEN_PID, then becomes the backend (same pid), as a service manager
    # would start it.
    wrapper = (
        "import os, sys\n"
        "os.dup2(int(sys.argv[1]), 3)\n"
        "os.environ['LISTEN_PID'] = str(os.getpid())\n"
        "os.execv(sys.executable, [sys.executable, '-c', sys.argv[2]])\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", wrapper, str(listener.fileno()), program],
        env=env,
        pass_fds=(listener.fileno(),),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        listener.close()
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "serving"
        answer = probe(path)
        assert answer.peer_pid == child.pid
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(HANG_GUARD)
            conn.connect(path)
            conn.sendall(b"activated")
            assert conn.recv(64) == b"activated"
        assert child.wait(timeout=HANG_GUARD) == 0
        assert not os.path.lexists(path)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_the_listener_mode_is_part_of_the_definition(tmp_path: Path) -> None:
    sd = rp.ServiceDefinition("svc", "/opt/svc/1/b", "/opt/svc/1", listener=rp.Listener.BIND)
    assert sd.listener == rp.Listener.BIND and sd.listener.value == 1
    assert "listener=Listener.BIND" in repr(sd)
    assert "listener" not in repr(rp.ServiceDefinition("svc", "/opt/svc/1/b", "/opt/svc/1"))
    assert rp.ServiceDefinition.from_bytes(sd.to_bytes()) == sd
    assert pickle.loads(pickle.dumps(sd)) == sd
    assert pickle.loads(pickle.dumps(rp.Listener.BIND)) is rp.Listener.BIND
    assert sd != rp.ServiceDefinition("svc", "/opt/svc/1/b", "/opt/svc/1")
    store = tmp_path / "defs"
    store.mkdir(mode=0o700)
    sd.save(store)
    assert rp.ServiceDefinition.load("svc", store).listener == rp.Listener.BIND
    assert rp.Listener.from_value(0) == rp.Listener.INHERIT
    with pytest.raises(ValueError, match="not a Listener value"):
        rp.Listener.from_value(2)
