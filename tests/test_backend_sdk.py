"""The backend SDK through real launches: the example backends (Python and
Rust) are launched and verified, serve application connections untouched,
end on SIGTERM or when idle, and answer a v1 probe written independently of
the package."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

import running_process as rp
from support.launch import BackendDirs, Launches, echo, install, key_for
from support.wire import probe


def python_example() -> bytes:
    source = resources.files("running_process.examples").joinpath("echo_backend.py").read_bytes()
    return f"#!{sys.executable}\n".encode() + source


def install_backend(dirs: BackendDirs, content: bytes, name: str = "echo") -> Path:
    return install(dirs.version_dir / name, content)


@pytest.mark.parametrize("kind", ["python", "rust"])
def test_example_backend_launches_verifies_and_echoes(
    kind: str, dirs: BackendDirs, launches: Launches, request: pytest.FixtureRequest
) -> None:
    if kind == "python":
        binary = install_backend(dirs, python_example())
    else:
        binary = install_backend(dirs, Path(request.getfixturevalue("rust_example")).read_bytes())
    sd = dirs.sd(binary)
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    assert handle.daemon.exe_path == str(binary)
    assert handle.daemon.exe_sha256 == hashlib.sha256(binary.read_bytes()).digest()
    # Bytes that start like a frame header but are no probe reach the
    # application untouched.
    payload = b"\x01\x05\x00\x00\x00hello, not a probe" * 100
    assert echo(handle, payload) == payload
    handle.verify()
    assert handle.shutdown(timeout=30.0) == 0  # SIGTERM handled gracefully
    assert not os.path.exists(handle.endpoint.path)


@pytest.mark.slow  # waits out a wall-clock delay
def test_idle_backend_ends_itself_and_removes_its_socket(dirs: BackendDirs, launches: Launches) -> None:
    sd = dirs.sd(install_backend(dirs, python_example()))
    handle = launches.launch(dirs.launcher(idle_timeout_secs=1), key_for(sd), sd)
    assert handle.wait(timeout=60.0) == 0
    assert not os.path.exists(handle.endpoint.path)


@pytest.mark.slow  # waits out a wall-clock delay
def test_open_connection_keeps_an_idle_backend_alive(dirs: BackendDirs, launches: Launches) -> None:
    sd = dirs.sd(install_backend(dirs, python_example()))
    handle = launches.launch(dirs.launcher(idle_timeout_secs=1), key_for(sd), sd)
    conn = handle.connect()
    conn.sendall(b"x")
    assert conn.recv(1) == b"x"  # the application holds this connection now
    # Well past the idle timeout, the open connection keeps it alive ...
    assert handle.wait(timeout=3.0) is None
    handle.verify()
    conn.close()
    # ... and once it closes, the backend goes idle and ends.
    assert handle.wait(timeout=60.0) == 0


def test_sdk_backend_answers_an_independent_v1_probe(dirs: BackendDirs, launches: Launches) -> None:
    sd = dirs.sd(install_backend(dirs, python_example()))
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    traceparent = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    answer = probe(handle.endpoint.path, traceparent=traceparent)
    response = answer.response
    # envelope_version, kind RESPONSE, payload_protocol; the request id is
    # checked by probe().
    assert response[1] == 1 and response[2] == 1 and response[3] == 0xB232
    assert response[8] == traceparent
    assert answer.nonce_ok
    identity = answer.identity
    assert identity.pid == handle.pid
    assert identity.exe_sha256 == handle.daemon.exe_sha256
    assert identity.ipc_endpoint == handle.endpoint
    assert identity.idle_timeout_secs == 30


def test_from_env_names_the_missing_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNING_PROCESS_BROKER_V1_")}
    code = (
        "import running_process as rp\n"
        "try:\n"
        "    rp.BackendServer.from_env()\n"
        "except rp.BackendServerError as e:\n"
        "    print(e.variable)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == rp.ENV_SERVICE_NAME


# --- the endpoint variable and its directory, in this process -------------------
#
# A launcher creates the private socket directory and hands the backend a plain
# path inside it. The SDK checks both and creates nothing: every refusal below
# leaves the tree exactly as it was.


def set_contract(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    for name, text in {
        rp.ENV_SERVICE_NAME: "svc",
        rp.ENV_SERVICE_VERSION: "1.0.0",
        rp.ENV_BACKEND_PIPE: path,
        rp.ENV_BACKEND_NAMESPACE: "shared",
        rp.ENV_INSTANCE: "shared",
    }.items():
        monkeypatch.setenv(name, text)
    for name in (rp.ENV_TRACEPARENT, rp.ENV_TRACESTATE, rp.ENV_IDLE_TIMEOUT_SECS):
        monkeypatch.delenv(name, raising=False)


def tree(root: Path) -> list[str]:
    """Every path under ``root`` (symlinks not followed), relative, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def refused_env(monkeypatch: pytest.MonkeyPatch, path: str) -> rp.BackendServerError:
    set_contract(monkeypatch, path)
    with pytest.raises(rp.BackendServerError) as info:
        rp.BackendServer.from_env(exit_on_sigterm=False)
    assert type(info.value) is rp.BackendServerError
    assert info.value.variable == rp.ENV_BACKEND_PIPE
    return info.value


def test_from_env_binds_in_an_existing_private_directory(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (short_dir / "s").mkdir(mode=0o700)
    path = short_dir / "s" / "b.sock"
    set_contract(monkeypatch, str(path))
    server = rp.BackendServer.from_env(exit_on_sigterm=False)
    try:
        assert server.endpoint.path == str(path)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.lstat(short_dir / "s").st_mode) == 0o700
    finally:
        server.shutdown()
    assert tree(short_dir) == ["s"]


@pytest.mark.parametrize(
    "missing",
    ["s", "s/t", "s/t/u"],
    ids=["socket-dir", "two-levels", "three-levels"],
)
def test_from_env_refuses_a_missing_socket_directory_and_creates_nothing(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    err = refused_env(monkeypatch, f"{short_dir}/{missing}/b.sock")
    assert f"{short_dir}/{missing} does not exist" in err.reason
    assert "launcher" in err.reason
    assert tree(short_dir) == []


def test_from_env_refuses_a_path_through_a_file_and_leaves_it(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (short_dir / "f").write_bytes(b"data")
    err = refused_env(monkeypatch, f"{short_dir}/f/s/b.sock")
    assert f"{short_dir}/f/s cannot be inspected" in err.reason
    assert tree(short_dir) == ["f"]
    assert (short_dir / "f").read_bytes() == b"data"


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("../b.sock", "'..'"),
        ("../../b.sock", "'..'"),
        ("./b.sock", "'.'"),
        ("..", "'..'"),
        ("b.sock\n", "control character"),
        ("b\nINFO forged.sock", "control character"),
        ("b\r.sock", "control character"),
        ("b\t.sock", "control character"),
        ("b\x1b[2J.sock", "control character"),
        ("b\x7f.sock", "control character"),
        ("b\x85.sock", "control character"),
        ("b.sock/", "ends with '/'"),
    ],
    ids=[
        "dotdot",
        "dotdot-twice",
        "dot",
        "bare-dotdot",
        "trailing-newline",
        "newline",
        "cr",
        "tab",
        "escape",
        "del",
        "c1-next-line",
        "trailing-slash",
    ],
)
def test_from_env_refuses_an_endpoint_path_that_is_not_plain(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch, name: str, says: str
) -> None:
    (short_dir / "s").mkdir(mode=0o700)
    path = f"{short_dir}/s/{name}"
    err = refused_env(monkeypatch, path)
    assert says in err.reason
    assert tree(short_dir) == ["s"]


def make_loose(short_dir: Path, how: str) -> Path:
    """A socket directory ``short_dir/s`` that exists but is not private."""
    s = short_dir / "s"
    if how == "symlink":
        real = short_dir / "real"
        real.mkdir(mode=0o700)
        s.symlink_to(real)
    elif how == "file":
        s.write_bytes(b"")
    else:
        s.mkdir(mode=0o700)
        os.chmod(s, int(how, 8))
    return s


@pytest.mark.parametrize("how", ["0755", "0750", "0705", "0701", "0710", "symlink", "file"])
def test_from_env_refuses_a_socket_directory_that_is_not_private(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    s = make_loose(short_dir, how)
    before = tree(short_dir)
    set_contract(monkeypatch, f"{s}/b.sock")
    with pytest.raises(rp.InsecureDirectoryError) as info:
        rp.BackendServer.from_env(exit_on_sigterm=False)
    assert type(info.value) is rp.InsecureDirectoryError
    assert info.value.path == str(s)
    expected = {"symlink": "symbolic link", "file": "not a directory"}.get(how, f"mode {how}")
    assert expected in info.value.reason
    assert tree(short_dir) == before
    if how not in ("symlink", "file"):
        assert stat.S_IMODE(os.lstat(s).st_mode) == int(how, 8)  # refused, not repaired
