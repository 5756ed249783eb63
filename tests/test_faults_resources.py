"""Faults in the launcher's own resources: a log directory that cannot be
used, and a process out of file descriptors (EMFILE).

We run as root in CI, so permission bits alone would not stop the launcher;
the log directory is made unusable by a regular file in its place or in
place of its parent, which no privilege can write through.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

import running_process as rp
from support.launch import BACKENDS, READY_TIMEOUT, BackendDirs, install_rust_echo, key_for, new_launcher
from support.leftovers import files_in
from support.procfs import children, fd_count
from support.waits import HANG_GUARD, poll_until

pytestmark = pytest.mark.slow

EMFILE_HELPER = BACKENDS / "fault_emfile.py"

BLOCKER = b"a regular file where a directory belongs\n"


# --- 5. a log directory that cannot be used ---------------------------------------------------


LauncherFactory = Callable[[], rp.CommandBackendLauncher]


def blocked_log_dir(
    dirs: BackendDirs, where: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[LauncherFactory, Path, Path]:
    """A launcher factory whose log directory cannot be created, the regular
    file that is in the way, and the launcher's socket directory."""
    if where == "default location":
        # The default log directory, `logs` beside the socket directory
        # under $XDG_RUNTIME_DIR, is a regular file.
        run = dirs.root / "run"
        (run / "running-process").mkdir(mode=0o700, parents=True)
        os.chmod(run, 0o700)
        blocker = run / "running-process" / "logs"
        blocker.write_bytes(BLOCKER)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
        socket_dir = run / "running-process" / "broker"
        return (lambda: new_launcher(ready_timeout=READY_TIMEOUT)), blocker, socket_dir
    blocker = dirs.root / "plain"
    blocker.write_bytes(BLOCKER)
    log_dir = blocker / "logs" if where == "parent is a regular file" else blocker
    return (lambda: dirs.launcher(log_dir=str(log_dir))), blocker, dirs.socket_dir


@pytest.mark.parametrize("via", ["launcher", "pool"])
@pytest.mark.parametrize("where", ["parent is a regular file", "is a regular file", "default location"])
def test_unusable_log_directory_is_a_typed_error_and_nothing_is_spawned(
    dirs: BackendDirs, rust_example: Path, monkeypatch: pytest.MonkeyPatch, where: str, via: str
) -> None:
    sd = dirs.sd(install_rust_echo(dirs, rust_example))
    key = key_for(sd)
    make_launcher, blocker, socket_dir = blocked_log_dir(dirs, where, monkeypatch)
    state_dir = dirs.root / "state"
    children_before = children()
    gc.collect()  # what earlier tests left for the collector goes now, not mid-test
    fds_before = fd_count()

    launcher = make_launcher()
    if where == "default location":
        assert launcher.log_dir == str(blocker)
    with pytest.raises(rp.BackendLaunchError) as info:
        if via == "pool":
            rp.BackendPool(launcher, state_dir).get_or_launch(key, sd)
        else:
            launcher.launch(key, sd)
    err = info.value
    assert type(err) is rp.EndpointError, repr(err)
    assert err.reason.startswith("log file: ")
    cause = err.__cause__
    assert type(cause) is rp.InsecureDirectoryError, repr(cause)
    assert cause.path == str(blocker)
    assert cause.reason == "is not a directory"

    # Nothing was spawned or created, and the file in the way is untouched.
    assert children() == children_before
    assert files_in(socket_dir) == []
    assert blocker.is_file() and blocker.read_bytes() == BLOCKER
    if via == "pool":
        # No manifest, and the failed launch took the key's lock file with it.
        assert list(state_dir.iterdir()) == []
    del err, cause, info, launcher
    gc.collect()
    poll_until(
        lambda: fd_count() <= fds_before,
        timeout=HANG_GUARD,
        what=lambda: f"descriptors back to {fds_before} (now {fd_count()})",
    )


# --- 6. out of file descriptors (EMFILE) --------------------------------------------------------

STEP = re.compile(r"^spawning (?P<path>\S+) failed: (?P<step>.+): Too many open files \(os error 24\)$")


def run_emfile_helper(dirs: BackendDirs, sd: rp.ServiceDefinition, via: str) -> dict[str, Any]:
    config = {
        "socket_dir": str(dirs.socket_dir),
        "log_dir": str(dirs.log_dir),
        "state_dir": str(dirs.root / "state"),
        "service_definition": sd.to_bytes().hex(),
        "version": "1.0.0",
        "via": via,
        "limit": 64,
    }
    done = subprocess.run(
        [sys.executable, str(EMFILE_HELPER), json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.mark.parametrize("via", ["launcher", "pool"])
def test_out_of_descriptors_is_a_typed_error_at_every_step_and_the_same_process_recovers(
    dirs: BackendDirs, rust_example: Path, via: str
) -> None:
    binary = install_rust_echo(dirs, rust_example)
    sd = dirs.sd(binary)
    report = run_emfile_helper(dirs, sd, via)
    assert report["warm_up"] == 0
    *failures, success = report["attempts"]
    assert "launched" in success and success["exit"] == 0, success
    # At least the binary, the log file, and the spawn's own descriptors.
    assert len(failures) >= 3, failures

    steps: list[str] = []
    for attempt in failures:
        error = attempt["error"]
        assert error["errno"] == errno.EMFILE, attempt
        if via == "pool" and attempt["free"] == 0:
            # Not even the key's lock file can be opened.
            assert error["class"] == "FilesystemError", attempt
            assert error["operation"] == "open lock file"
        else:
            assert error["class"] == "SpawnError", attempt
            assert error["os_errno"] == errno.EMFILE
            found = STEP.match(error["reason"])
            assert found, error["reason"]
            assert found["path"] == str(binary)
            steps.append(found["step"])
        # Nothing left behind by the failed launch.
        left = attempt["left"]
        assert left["children"] == {}, attempt
        assert left["sockets"] == [] and left["logs"] == [], attempt
        assert left["extra_fds"] == 0, attempt
        assert all(name.endswith(".lock") for name in left["state"]), attempt

    # Each step that needs a descriptor fails in launch order and says which
    # it is: the binary, the log file, then the spawn's set-up.
    assert steps[0] == f"open {binary}"
    assert re.fullmatch(
        rf"create {re.escape(str(dirs.log_dir))}/v1echo-1\.0\.0-[0-9a-f]{{32}}\.log", steps[1]
    )
    assert steps[2:] and all(step not in steps[:2] for step in steps[2:]), steps

    # With its descriptors back, the same process launches normally.
    assert report["after"]["exit"] == 0
    assert report["left_at_end"] == {"children": {}, "sockets": [], "logs": [], "state": []}
