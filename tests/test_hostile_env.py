"""The launcher in a hostile environment: directories pre-created by another
user, objects planted at the allocated socket path, binaries and allow-list
roots in places others can write, and hostile values in the trace context,
the service definition and the environment.

Each test asserts the exact typed error and its attributes, that the planted
object is untouched (never deleted, never followed), and that nothing is
left behind: no process, zombie, socket or log file, or descriptor. "Another
user" is uid 4242 (``os.chown``, so those tests need root, as in CI).
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import sys
from pathlib import Path
from typing import Any, Optional

import pytest

import running_process as rp
from support.hostile import Impostor, give_away, install_impostor_backend, launch_fails
from support.launch import BackendDirs, Launches, env_lines, install, key_for, v1_script
from support.leftovers import assert_gone, assert_nothing_left_behind, files_in, snapshot
from support.procfs import process_running
from support.values import OTHER_UID, W3C_TRACEPARENT, mode_of, requires_root
from support.waits import HANG_GUARD
from support.wire import field_bytes, field_varint

pytestmark = pytest.mark.hostile

# --- directories pre-created by another user --------------------------------------------------


@requires_root
@pytest.mark.parametrize("which", ["socket_dir", "log_dir"])
def test_a_launch_directory_owned_by_another_user_is_refused_and_left_alone(
    dirs: BackendDirs, launches: Launches, which: str
) -> None:
    planted = dirs.socket_dir if which == "socket_dir" else dirs.log_dir
    planted.mkdir(mode=0o700)
    (planted / "theirs").write_bytes(b"x")
    give_away(planted / "theirs")
    give_away(planted)
    before = snapshot()
    err = launch_fails(dirs, launches, rp.EndpointError, dirs.sd())
    cause = err.__cause__
    assert isinstance(cause, rp.InsecureDirectoryError)
    assert cause.path == str(planted)
    assert f"uid {OTHER_UID}" in cause.reason
    # Refused, not repaired, nothing added or removed.
    assert os.lstat(planted).st_uid == OTHER_UID and mode_of(planted) == 0o700
    assert files_in(planted) == ["theirs"]
    os.unlink(planted / "theirs")
    assert_nothing_left_behind(before, dirs)


@requires_root
def test_a_planted_parent_of_the_default_directories_is_refused(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``$XDG_RUNTIME_DIR/running-process`` pre-created by another user: the
    default socket and log directories hang from it."""
    runtime = dirs.root / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    planted = runtime / "running-process"
    planted.mkdir(mode=0o700)
    give_away(planted)
    before = snapshot()
    launcher = rp.CommandBackendLauncher.for_current_user(ready_timeout=HANG_GUARD)
    sd = dirs.sd()
    with pytest.raises(rp.EndpointError) as info:
        launches.launch(launcher, key_for(sd), sd)
    cause = info.value.__cause__
    assert isinstance(cause, rp.InsecureDirectoryError)
    assert cause.path == str(planted)
    assert files_in(planted) == []
    assert os.lstat(planted).st_uid == OTHER_UID
    del info, launcher
    assert_nothing_left_behind(before, dirs)


# --- objects planted at the allocated socket path ------------------------------------------------


def plant_and_launch(
    dirs: BackendDirs,
    launches: Launches,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    arg: Optional[str] = None,
    *,
    expected: type[rp.BackendLaunchError] = rp.BackendExitedError,
    backend_exits: bool = True,
) -> tuple[Any, str]:
    """An attacker plants an object at the endpoint path the moment the
    backend has been given it (found through /proc); the backend (the real
    SDK, ``BackendServer.from_env()``) then tries to bind. Returns the launch
    error and the path."""
    monkeypatch.setenv("HOSTILE_VICTIM", "late-sdk")
    if backend_exits:
        monkeypatch.setenv("HOSTILE_AFTER", "exit")
    # The backend binds itself (Listener.BIND): a launcher-bound endpoint
    # is never free for a planter (see test_impostors.py).
    sd = dirs.sd(install_impostor_backend(dirs), listener=rp.Listener.BIND)
    before = snapshot()
    with Impostor(mode, dirs.socket_dir, arg) as planter:
        err = launch_fails(dirs, launches, expected, sd)
        victim, path = planter.ready()
    assert_gone(victim)
    assert_nothing_left_behind(before, dirs, socket_files=[os.path.basename(path)])
    return err, path


def assert_planted_by_another_user(path: str) -> None:
    if os.geteuid() == 0:
        assert os.lstat(path).st_uid == OTHER_UID


@pytest.mark.parametrize("kind", ["file", "fifo", "dir"])
def test_an_object_planted_at_the_socket_path_fails_the_bind_and_is_left_alone(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    err, path = plant_and_launch(dirs, launches, monkeypatch, f"plant-{kind}")
    assert err.returncode == 1
    found = {"file": "regular file", "fifo": "fifo", "dir": "directory"}[kind]
    assert (
        f"refused to bind: BackendServerError: {path} exists and is a {found}, not a socket" in err.log_tail
    )
    st = os.lstat(path)
    assert {"file": stat.S_ISREG, "fifo": stat.S_ISFIFO, "dir": stat.S_ISDIR}[kind](st.st_mode)
    assert_planted_by_another_user(path)
    if kind == "file":
        assert Path(path).read_bytes() == b"planted by another user\n"
    if kind == "dir":
        assert os.listdir(path) == []
        os.rmdir(path)
    else:
        os.unlink(path)


@pytest.mark.parametrize("target_kind", ["file", "dangling"])
def test_a_symlink_planted_at_the_socket_path_is_neither_followed_nor_removed(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch, target_kind: str
) -> None:
    target = dirs.root / "target"
    if target_kind == "file":
        target.write_bytes(b"precious\n")
        os.chmod(target, 0o640)
    err, path = plant_and_launch(dirs, launches, monkeypatch, "plant-symlink", str(target))
    assert err.returncode == 1
    assert f"{path} exists and is a symbolic link, not a socket" in err.log_tail
    assert os.readlink(path) == str(target)
    assert_planted_by_another_user(path)
    if target_kind == "file":
        assert target.read_bytes() == b"precious\n" and mode_of(target) == 0o640
    else:
        assert not os.path.lexists(target)
    os.unlink(path)


def test_a_symlink_to_a_live_socket_planted_at_the_socket_path_is_refused_on_the_peer_pid(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The link leads the launcher's connect to someone else's listener (here
    the test process): refused on the peer credentials; neither the link nor
    the listener's socket file is removed."""
    target = dirs.root / "listener.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(target))
        listener.listen(4)
        err, path = plant_and_launch(
            dirs,
            launches,
            monkeypatch,
            "plant-symlink",
            str(target),
            expected=rp.VerificationError,
            backend_exits=False,
        )
        assert err.field == "peer pid"
        assert err.actual == str(os.getpid())
        assert os.readlink(path) == str(target)
        assert stat.S_ISSOCK(os.lstat(target).st_mode)
        # The listener still works: a client can connect to it.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(target))
    os.unlink(path)
    os.unlink(target)


# --- binaries and allow-list roots in places others can write ---------------------------------------


def refused_binary(dirs: BackendDirs, launches: Launches, sd: rp.ServiceDefinition) -> rp.BinaryPolicyError:
    before = snapshot()
    err = launch_fails(dirs, launches, rp.BinaryPolicyError, sd)
    assert_nothing_left_behind(before, dirs)
    assert not dirs.socket_dir.exists() and not dirs.log_dir.exists()
    return err


@requires_root
def test_a_binary_owned_by_another_user_is_refused(dirs: BackendDirs, launches: Launches) -> None:
    give_away(dirs.script)
    err = refused_binary(dirs, launches, dirs.sd())
    assert err.variant == "NotExecutable"
    assert err.path == str(dirs.script)
    assert f"uid {OTHER_UID}" in str(err)


@requires_root
def test_an_allow_list_root_owned_by_another_user_is_refused(dirs: BackendDirs, launches: Launches) -> None:
    give_away(dirs.version_dir)
    err = refused_binary(dirs, launches, dirs.sd())
    assert err.variant == "InsecurePermissions"
    assert err.path == str(dirs.version_dir)


def relocated_root(dirs: BackendDirs, parent_mode: int, root_mode: int = 0o755) -> tuple[Path, Path]:
    """Moves the version root under ``dirs.root/shared`` (mode
    ``parent_mode``) and leaves a symlink at its old path; returns the
    shared directory and the real root."""
    shared = dirs.root / "shared"
    shared.mkdir()
    os.chmod(shared, parent_mode)
    real = shared / dirs.version_dir.name
    os.rename(dirs.version_dir, real)
    os.chmod(real, root_mode)
    dirs.version_dir.symlink_to(real)
    return shared, real


def test_an_allow_list_root_symlinked_into_a_world_writable_directory_is_refused(
    dirs: BackendDirs, launches: Launches
) -> None:
    """Anyone could rename the real root away and put their own in its place:
    the symlink is resolved and the directory above the real root judged."""
    shared, real = relocated_root(dirs, 0o777)
    err = refused_binary(dirs, launches, dirs.sd())
    assert err.variant == "InsecurePermissions"
    assert err.path == str(shared)
    assert sorted(os.listdir(real)) == ["backend"]


def test_an_allow_list_root_symlinked_to_a_group_writable_directory_is_refused(
    dirs: BackendDirs, launches: Launches
) -> None:
    _, real = relocated_root(dirs, 0o755, root_mode=0o775)
    err = refused_binary(dirs, launches, dirs.sd())
    assert err.variant == "InsecurePermissions"
    assert err.path == str(real)


def test_an_allow_list_root_symlinked_into_a_sticky_shared_directory_is_accepted(
    dirs: BackendDirs, launches: Launches
) -> None:
    """Decision: a world-writable directory with the sticky bit (as /tmp) is
    on a trusted path, since others cannot rename or remove our entries in
    it; the launch verifies and runs the real file."""
    _, real = relocated_root(dirs, 0o1777)
    handle = launches.launch(dirs.launcher(), key_for(dirs.sd()), dirs.sd())
    assert handle.daemon.exe_path == str(real / "backend")
    handle.verify()
    assert handle.shutdown(timeout=HANG_GUARD) is not None


def test_a_script_interpreter_in_a_world_writable_directory_is_refused(
    dirs: BackendDirs, launches: Launches
) -> None:
    loose = dirs.root / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)
    shell = loose / "sh"
    shutil.copy2("/bin/sh", shell)
    os.chmod(shell, 0o755)
    script = install(dirs.version_dir / "shell-backend", f"#!{shell}\nexec sleep 1000\n".encode())
    err = refused_binary(dirs, launches, dirs.sd(script))
    assert err.variant == "InsecurePermissions"
    assert err.path == str(loose)


@pytest.mark.parametrize("mode", [0o775, 0o777])
def test_an_env_program_found_in_a_path_directory_others_can_write_is_refused(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch, mode: int
) -> None:
    """A shared tools directory early on PATH: whoever can write it can
    re-point the link between the check and the exec, so it is refused
    (it was accepted: only the link's final target was checked)."""
    shared = dirs.root / "shared-tools"
    shared.mkdir()
    os.chmod(shared, mode)
    (shared / "rp-test-python").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", f"{shared}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    err = refused_binary(
        dirs, launches, dirs.sd(dirs.script_with("env-backend", "/usr/bin/env rp-test-python"))
    )
    assert err.variant == "InsecurePermissions"
    assert err.path == str(shared)


def test_a_shebang_through_a_link_in_a_directory_others_can_write_is_refused(
    dirs: BackendDirs, launches: Launches
) -> None:
    loose = dirs.root / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)
    (loose / "py").symlink_to(sys.executable)
    script = dirs.script_with("linked", f"{loose}/py")
    err = refused_binary(dirs, launches, dirs.sd(script))
    assert err.variant == "InsecurePermissions"
    assert err.path == str(loose)


def test_every_link_of_the_resolution_is_checked(dirs: BackendDirs, launches: Launches) -> None:
    """A trusted link to a link that sits in a loose directory: the second
    hop is refused although the first and the final file are fine."""
    loose = dirs.root / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)
    (loose / "py").symlink_to(sys.executable)
    trusted = dirs.root / "bin"
    trusted.mkdir(mode=0o755)
    (trusted / "py").symlink_to(loose / "py")
    script = dirs.script_with("chained", f"{trusted}/py")
    err = refused_binary(dirs, launches, dirs.sd(script))
    assert err.variant == "InsecurePermissions"
    assert err.path == str(loose)


@pytest.mark.parametrize("owner", ["mine", "theirs"])
def test_a_link_in_a_sticky_shared_directory_counts_only_if_it_is_the_users(
    dirs: BackendDirs, launches: Launches, owner: str
) -> None:
    """In a sticky 1777 directory (like /tmp) only an entry's owner can
    replace it: the user's own link is fine, another user's is not."""
    if owner == "theirs" and os.geteuid() != 0:
        pytest.skip("giving a link to another uid needs root")
    sticky = dirs.root / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    link = sticky / "py"
    link.symlink_to(sys.executable)
    if owner == "theirs":
        os.chown(link, OTHER_UID, OTHER_UID, follow_symlinks=False)
    script = dirs.script_with("sticky-linked", str(link))
    sd = dirs.sd(script)
    if owner == "mine":
        handle = launches.launch(dirs.launcher(), key_for(sd), sd)
        assert os.readlink(f"/proc/{handle.pid}/exe") == os.path.realpath(sys.executable)
        handle.verify()
        return
    err = refused_binary(dirs, launches, sd)
    assert err.variant == "InsecurePermissions"
    assert err.path == str(sticky)


def test_an_interpreter_that_is_itself_a_script_is_refused(dirs: BackendDirs, launches: Launches) -> None:
    """The launcher executes the interpreter by descriptor; a script there
    would make the kernel look its own interpreter up by path again."""
    wrapper = install(dirs.root / "wrapper", f"#!{sys.executable}\n".encode())
    script = dirs.script_with("wrapped", str(wrapper))
    err = refused_binary(dirs, launches, dirs.sd(script))
    assert err.variant == "BadInterpreter"
    assert "not a binary" in str(err)


def test_relative_path_directories_are_not_searched(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backend starts in ``/``: a relative PATH entry would name another
    directory there than in the caller's working directory."""
    (dirs.root / "relbin").mkdir(mode=0o755)
    (dirs.root / "relbin" / "rp-test-python").symlink_to(sys.executable)
    monkeypatch.chdir(dirs.root)
    monkeypatch.setenv("PATH", "relbin")
    err = refused_binary(
        dirs, launches, dirs.sd(dirs.script_with("env-backend", "/usr/bin/env rp-test-python"))
    )
    assert err.variant == "BadInterpreter"
    assert "not on the launch PATH" in str(err)


@pytest.mark.parametrize("planted", ["PYTHONPATH", "beside the script"])
def test_a_python_backend_imports_nothing_from_the_environment_or_beside_the_script(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch, planted: str
) -> None:
    """Code outside the hashed script must not run under its identity: a
    ``sitecustomize`` on ``PYTHONPATH``, or a module beside the script that
    shadows one the backend imports (``hashlib``), would. The interpreter
    runs isolated (``-I``)."""
    marker = dirs.root / "imported"
    code = f"open({str(marker)!r}, 'w').close()\n"
    if planted == "PYTHONPATH":
        extra = dirs.root / "pythonpath"
        extra.mkdir(mode=0o755)
        install(extra / "sitecustomize.py", code.encode(), 0o644)
        monkeypatch.setenv("PYTHONPATH", str(extra))
    else:
        install(dirs.version_dir / "hashlib.py", code.encode(), 0o644)
    sd = dirs.sd()
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    handle.verify()
    with open(f"/proc/{handle.pid}/cmdline", "rb") as f:
        args = f.read().split(b"\0")
    assert args[1] == b"-I" and args[2].startswith(b"/dev/fd/")
    assert not marker.exists()


# --- hostile values ---------------------------------------------------------------------------------

FUTURE = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-"


@pytest.mark.parametrize("length", [513, 4096, 200_000])
def test_an_oversized_traceparent_is_refused_before_anything_runs(length: int) -> None:
    value = FUTURE + "x" * (length - len(FUTURE))
    with pytest.raises(rp.InvalidTraceContextError) as info:
        rp.TraceContext(traceparent=value)
    assert info.value.field == "traceparent"
    assert info.value.value == value
    assert "at most 512" in info.value.reason


def test_the_longest_traceparent_reaches_the_backend_exactly(dirs: BackendDirs, launches: Launches) -> None:
    value = FUTURE + "x" * (512 - len(FUTURE))
    trace = rp.TraceContext(traceparent=value, tracestate="k=" + "v" * 256)
    sd = dirs.sd()
    handle = launches.launch(dirs.launcher(), key_for(sd), sd, trace)
    lines = env_lines(handle.log_path)
    assert f"{rp.ENV_TRACEPARENT}={value}" in lines
    assert f"{rp.ENV_TRACESTATE}=k={'v' * 256}" in lines


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        (rp.ENV_TRACEPARENT, FUTURE + "x" * 100_000, "traceparent"),
        (rp.ENV_TRACEPARENT, W3C_TRACEPARENT[:-1] + "\x1b", "traceparent"),
        (rp.ENV_TRACESTATE, "k=" + "v" * 100_000, "tracestate"),
        (rp.ENV_TRACESTATE, "k=v\x07", "tracestate"),
    ],
    ids=["huge-traceparent", "escape-traceparent", "huge-tracestate", "bell-tracestate"],
)
def test_hostile_trace_variables_are_refused_by_from_env(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, field: str
) -> None:
    monkeypatch.setenv(rp.ENV_TRACEPARENT, W3C_TRACEPARENT)
    monkeypatch.setenv(name, value)
    with pytest.raises(rp.InvalidTraceContextError) as info:
        rp.TraceContext.from_env()
    assert info.value.field == field
    assert info.value.value == value


def test_no_environment_value_can_carry_a_nul_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    """A NUL cannot be put into the environment at all (the kernel takes
    C strings), so it can only reach a backend through a value the launcher
    sets, and every one of those is validated (see the next test)."""
    with pytest.raises(ValueError, match="null"):
        monkeypatch.setenv(rp.ENV_TRACEPARENT, W3C_TRACEPARENT + "\0")
    assert rp.ENV_TRACEPARENT not in os.environ


NUL_FIELDS = [
    pytest.param(
        lambda: rp.TraceContext(traceparent=FUTURE + "a\0b"),
        rp.InvalidTraceContextError,
        "traceparent",
        id="traceparent",
    ),
    pytest.param(
        lambda: rp.TraceContext(traceparent=W3C_TRACEPARENT, tracestate="k=v\0"),
        rp.InvalidTraceContextError,
        "tracestate",
        id="tracestate",
    ),
    pytest.param(
        lambda: rp.BackendKey(rp.BrokerInstanceKey.shared(), "svc\0", "1.0.0"),
        rp.InvalidNameError,
        "service name",
        id="key-service",
    ),
    pytest.param(
        lambda: rp.BackendKey(rp.BrokerInstanceKey.shared(), "svc", "1.0.0\0"),
        rp.InvalidVersionError,
        None,
        id="key-version",
    ),
    pytest.param(
        lambda: rp.BrokerInstanceKey.explicit("ci\0"), rp.InvalidNameError, "instance name", id="instance"
    ),
]


@pytest.mark.parametrize(("make", "error", "field"), NUL_FIELDS)
def test_a_nul_byte_in_any_value_a_backend_receives_is_refused(
    make: Any, error: type[Exception], field: Any
) -> None:
    with pytest.raises(error) as info:
        make()
    err = info.value
    if error is rp.InvalidTraceContextError:
        assert isinstance(err, rp.InvalidTraceContextError) and err.field == field
    elif error is rp.InvalidNameError:
        assert isinstance(err, rp.InvalidNameError) and err.kind == field


SD_FIELDS: dict[str, Any] = {
    "service_name": "svc",
    "binary_path": "/opt/svc/1.0.0/svc",
    "per_version_binary_dir": "/opt/svc/1.0.0",
    "isolation": rp.Isolation.SHARED,
}


@pytest.mark.parametrize(
    ("overrides", "error", "attribute", "expected"),
    [
        ({"service_name": "svc\0"}, rp.InvalidNameError, "kind", "service name"),
        (
            {"isolation": rp.Isolation.EXPLICIT, "explicit_instance": "ci\0"},
            rp.InvalidNameError,
            "kind",
            "instance name",
        ),
        ({"min_version": "1.0.0\0"}, rp.InvalidVersionError, "value", "1.0.0\0"),
        ({"version_allow_list": ["1.0.0", "1.0.1\0"]}, rp.InvalidVersionError, "value", "1.0.1\0"),
        ({"labels": {"k\0": "v"}}, rp.InvalidServiceDefinitionError, "value", "k\0"),
        ({"labels": {"k": "v\0"}}, rp.InvalidServiceDefinitionError, "value", "k"),
        ({"binary_path": "/opt/svc/1.0.0/s\0vc"}, rp.InvalidServiceDefinitionError, "field", "binary_path"),
        ({"binary_path": "/opt/svc/1.0.0/../../../bin/sh\n"}, None, None, None),
        ({"binary_path": "svc"}, rp.InvalidServiceDefinitionError, "field", "binary_path"),
        (
            {"per_version_binary_dir": "opt/../svc"},
            rp.InvalidServiceDefinitionError,
            "field",
            "per_version_binary_dir",
        ),
        (
            {"binary_path": "/" + "d/" * 2048 + "svc"},
            rp.InvalidServiceDefinitionError,
            "field",
            "binary_path",
        ),
        ({"binary_path": "/opt/svc/\udcff"}, rp.InvalidServiceDefinitionError, "field", "binary_path"),
        ({"labels": {"term": "\x1b]0;pwned\x07"}}, rp.InvalidServiceDefinitionError, "value", "term"),
        (
            {"labels": {f"k{i}": "v" * 1024 for i in range(65)}},
            rp.InvalidServiceDefinitionError,
            "field",
            "labels",
        ),
        ({"labels": {"k" * 129: "v"}}, rp.InvalidServiceDefinitionError, "field", "labels"),
    ],
    ids=[
        "nul-service",
        "nul-instance",
        "nul-min-version",
        "nul-allow-list",
        "nul-label-key",
        "nul-label-value",
        "nul-path",
        "dotdot-newline-path",
        "relative-path",
        "relative-dotdot-root",
        "path-over-4096",
        "non-utf8-path",
        "terminal-escape-label",
        "many-huge-labels",
        "long-label-key",
    ],
)
def test_hostile_service_definition_fields_are_refused_with_the_field_named(
    overrides: dict[str, Any], error: Optional[type[Exception]], attribute: Optional[str], expected: Any
) -> None:
    fields = dict(SD_FIELDS, **overrides)
    if error is None:
        # Absolute and free of NUL: a legal path. The allow-list rule at
        # launch judges where it really leads (see test_launcher_failures).
        assert rp.ServiceDefinition(**fields).binary_path == fields["binary_path"]
        return
    with pytest.raises(error) as info:
        rp.ServiceDefinition(**fields)
    assert getattr(info.value, str(attribute)) == expected


def servicedef_bytes(labels: dict[bytes, bytes]) -> bytes:
    """A hand-built ServiceDefinition message with these raw labels."""
    data = (
        field_bytes(1, "svc")
        + field_bytes(2, "/opt/svc/1.0.0/svc")
        + field_varint(3, 1)  # isolation SHARED
        + field_bytes(5, "/opt/svc/1.0.0")
    )
    for key, value in labels.items():
        data += field_bytes(8, field_bytes(1, key) + field_bytes(2, value))
    return data


@pytest.mark.parametrize(
    ("labels", "error"),
    [
        ({b"term": b"\x1b]0;pwned\x07"}, rp.InvalidServiceDefinitionError),
        ({b"k": b"v\x00v"}, rp.InvalidServiceDefinitionError),
        ({b"k": b"\xff\xfe"}, rp.DecodeError),
        ({b"k%d" % i: b"v" for i in range(65)}, rp.InvalidServiceDefinitionError),
        ({b"k": b"v" * 1025}, rp.InvalidServiceDefinitionError),
    ],
    ids=["terminal-escape", "nul", "non-utf8", "65-labels", "1025-byte-value"],
)
def test_a_servicedef_file_with_hostile_labels_is_refused_on_load(
    private_dir: Path, labels: dict[bytes, bytes], error: type[Exception]
) -> None:
    path = private_dir / "svc.servicedef"
    path.write_bytes(servicedef_bytes(labels))
    os.chmod(path, 0o600)
    with pytest.raises(error):
        rp.ServiceDefinition.load("svc", private_dir)
    with pytest.raises(error):
        rp.ServiceDefinition.load_file(path)
    assert files_in(private_dir) == ["svc.servicedef"]


def test_a_fifo_planted_as_a_servicedef_file_is_refused_without_blocking(private_dir: Path) -> None:
    """Opening a FIFO for reading waits for a writer; a definition load must
    refuse it as not a regular file at once instead."""
    path = private_dir / "svc.servicedef"
    os.mkfifo(path, 0o600)
    code = (
        "import sys\n"
        "import running_process as rp\n"
        "try:\n"
        "    rp.ServiceDefinition.load('svc', sys.argv[1])\n"
        "except rp.RunningProcessError as e:\n"
        "    print(type(e).__name__)\n"
        "except OSError as e:\n"
        "    print(type(e).__name__)\n"
    )
    import subprocess

    try:
        out = subprocess.run(
            [sys.executable, "-c", code, str(private_dir)], capture_output=True, text=True, timeout=HANG_GUARD
        )
    except subprocess.TimeoutExpired:
        pytest.fail("loading a FIFO blocked")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("FilesystemError", "DecodeError", "InvalidServiceDefinitionError"), out


@pytest.mark.parametrize(
    ("variable", "value", "error"),
    [
        (rp.ENV_BACKEND_PIPE, "relative/x.sock", rp.BackendServerError),
        (rp.ENV_BACKEND_PIPE, "/tmp/" + "x" * 120 + ".sock", rp.BackendServerError),
        (rp.ENV_BACKEND_PIPE, "@DIR@/s/../backend.sock", rp.BackendServerError),
        (rp.ENV_BACKEND_PIPE, "@DIR@/s/backend.sock\n", rp.BackendServerError),
        (rp.ENV_BACKEND_PIPE, "@DIR@/s/back\x1b[2Jend.sock", rp.BackendServerError),
        (rp.ENV_BACKEND_PIPE, "@DIR@/s/backend.sock", rp.BackendServerError),
        (rp.ENV_BACKEND_PIPE, "@DIR@/s/t/backend.sock", rp.BackendServerError),
        (rp.ENV_SERVICE_NAME, "svc\udcff", rp.BackendServerError),
        (rp.ENV_SERVICE_NAME, "svc\n", rp.BackendServerError),
        (rp.ENV_BACKEND_NAMESPACE, "sh ared", rp.BackendServerError),
        (rp.ENV_TRACEPARENT, FUTURE + "x" * 100_000, rp.BackendServerError),
        (rp.ENV_TRACESTATE, "k=" + "v" * 600, rp.BackendServerError),
        (rp.ENV_IDLE_TIMEOUT_SECS, "1e9", rp.BackendServerError),
    ],
    ids=[
        "relative-pipe",
        "long-pipe",
        "dotdot-pipe",
        "newline-pipe",
        "escape-pipe",
        "missing-socket-dir",
        "missing-socket-dirs",
        "non-utf8-name",
        "newline-name",
        "space-namespace",
        "huge-traceparent",
        "huge-tracestate",
        "float-idle",
    ],
)
def test_a_backend_refuses_hostile_contract_variables_and_creates_nothing(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, error: type[Exception]
) -> None:
    socket_dir = short_dir / "s"
    contract = {
        rp.ENV_SERVICE_NAME: "svc",
        rp.ENV_SERVICE_VERSION: "1.0.0",
        rp.ENV_BACKEND_PIPE: str(socket_dir / "backend.sock"),
        rp.ENV_BACKEND_NAMESPACE: "shared",
        rp.ENV_INSTANCE: "shared",
        rp.ENV_TRACEPARENT: W3C_TRACEPARENT,
    }
    contract[variable] = value.replace("@DIR@", str(short_dir))
    for name, text in contract.items():
        monkeypatch.setenv(name, text)
    with pytest.raises(error) as info:
        rp.BackendServer.from_env()
    assert type(info.value) is error
    assert isinstance(info.value, rp.BackendServerError) and info.value.variable == variable
    assert files_in(short_dir) == []


@pytest.mark.parametrize("socket_dir_exists", [False, True], ids=["no-socket-dir", "private-socket-dir"])
def test_a_backend_refuses_a_dotdot_endpoint_and_creates_nothing(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch, socket_dir_exists: bool
) -> None:
    """``s/..`` would bind in the directory above the socket directory:
    refused by name, as a problem of the variable, before any directory is
    looked at or made."""
    if socket_dir_exists:
        (short_dir / "s").mkdir(mode=0o700)
    path = f"{short_dir}/s/../backend.sock"
    for name, text in {
        rp.ENV_SERVICE_NAME: "svc",
        rp.ENV_SERVICE_VERSION: "1.0.0",
        rp.ENV_BACKEND_PIPE: path,
        rp.ENV_BACKEND_NAMESPACE: "shared",
        rp.ENV_INSTANCE: "shared",
    }.items():
        monkeypatch.setenv(name, text)
    with pytest.raises(rp.BackendServerError) as info:
        rp.BackendServer.from_env()
    assert type(info.value) is rp.BackendServerError
    assert info.value.variable == rp.ENV_BACKEND_PIPE
    assert "'..'" in info.value.reason
    assert files_in(short_dir) == (["s"] if socket_dir_exists else [])
    assert files_in(short_dir / "s") == []


def test_a_binary_path_with_a_newline_launches_and_verifies(dirs: BackendDirs, launches: Launches) -> None:
    """A legal (if odd) file name: the launch treats it as any other."""
    binary = install(dirs.version_dir / "back\nend", v1_script())
    sd = dirs.sd(binary)
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    assert handle.daemon.exe_path == str(binary)
    handle.verify()
    assert handle.shutdown(timeout=HANG_GUARD) is not None
    assert not process_running(handle.pid)


def test_a_binary_path_longer_than_path_max_is_refused_typed(dirs: BackendDirs, launches: Launches) -> None:
    deep = dirs.version_dir
    for _ in range(20):
        deep = deep / ("d" * 200)
    sd = dirs.sd(str(deep / "backend"))
    assert len(sd.binary_path) > 4000
    err = refused_binary(dirs, launches, sd)
    assert err.variant == "CanonicalizeBinary"
    assert err.path == sd.binary_path
