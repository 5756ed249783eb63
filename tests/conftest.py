"""Fixtures shared by the test suite (helpers are in the ``support``
package next to this file).

Every test runs with the user's directories redirected into pytest's private
temporary tree, so no test can create or read anything under the real
``$XDG_RUNTIME_DIR``, ``/tmp/running-process-{uid}`` or ``~/.config``.

Markers (registered in pyproject.toml): ``slow``, ``hostile`` and ``soak``
suites are left out of a plain ``pytest`` run; ``pytest -m ""`` runs
everything.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import running_process as rp
from support.launch import REPO, BackendDirs, Launches, make_dirs
from support.procfs import children

_CLEARED = (rp.ENV_TRACEPARENT, rp.ENV_TRACESTATE)


@pytest.fixture(scope="session", autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Points the per-user directories at a private session directory.

    Session scoped so that hypothesis tests (which refuse function-scoped
    fixtures) are covered too; tests that need other values use
    ``monkeypatch`` on top of this.
    """
    root = tmp_path_factory.mktemp("user-dirs")
    os.chmod(root, 0o700)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_RUNTIME_DIR", str(root / "run"))
        mp.setenv("XDG_CONFIG_HOME", str(root / "config"))
        mp.setenv(rp.ENV_SERVICE_DEF_DIR, str(root / "servicedefs"))
        for name in _CLEARED:
            mp.delenv(name, raising=False)
        yield root


@pytest.fixture
def private_dir(tmp_path: Path) -> Path:
    """An existing, empty directory with mode 0700 owned by us."""
    path = tmp_path / "private"
    path.mkdir(mode=0o700)
    os.chmod(path, 0o700)
    return path


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A private directory with a short absolute path (``/tmp/rpXXXXXXXX``).

    pytest's ``tmp_path`` is too long to hold a Unix socket path (108 bytes
    with the NUL), so socket tests work here instead.
    """
    path = Path(tempfile.mkdtemp(prefix="rp", dir="/tmp"))
    os.chmod(path, 0o700)
    assert len(str(path)) <= 16
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def xdg_runtime_dir(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh private ``$XDG_RUNTIME_DIR`` for this test."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(short_dir))
    return short_dir


@pytest.fixture
def dirs(short_dir: Path) -> BackendDirs:
    """A private tree with the v1 test backend installed (see
    :class:`support.launch.BackendDirs`)."""
    return make_dirs(short_dir)


@pytest.fixture
def launches() -> Iterator[Launches]:
    """Kills every launched backend at teardown, then any child process the
    test left (a backend a buggy launch failed to clean up)."""
    before = set(children())
    state = Launches()
    try:
        yield state
    finally:
        try:
            for handle in state.handles:
                try:
                    handle.kill()
                except Exception:  # pragma: no cover - teardown must go on
                    pass
        finally:
            for pid in set(children()) - before:
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except OSError as e:  # reaped by the launcher meanwhile
                    assert e.errno in (errno.ESRCH, errno.ECHILD), e


@pytest.fixture(scope="session")
def rust_example() -> Path:
    """The Rust example backend, built by cargo if this checkout has not yet."""
    binary = REPO / "target" / "debug" / "rp-echo-backend"
    if not binary.exists():
        subprocess.run(["cargo", "build", "--quiet", "--bin", "rp-echo-backend"], cwd=REPO, check=True)
    return binary


@pytest.fixture(scope="session")
def example_daemon() -> Path:
    """The Rust example daemon (arguments, fixed endpoint, identity file),
    built by cargo if this checkout has not yet."""
    binary = REPO / "target" / "debug" / "rp-example-daemon"
    if not binary.exists():
        subprocess.run(["cargo", "build", "--quiet", "--bin", "rp-example-daemon"], cwd=REPO, check=True)
    return binary
