"""The pytest plugin (``running_process.pytest_plugin``), run through
pytest's own ``pytester``: real inner sessions launching real backends."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from support.launch import SERVICE, VERSION, install, v1_script
from support.leftovers import assert_gone
from support.waits import HANG_GUARD

pytestmark = pytest.mark.slow

pytest_plugins = ["pytester"]

INNER_TIMEOUT = 180.0


def _plugin_args() -> list[str]:
    """``-p running_process.pytest_plugin`` unless the ``pytest11`` entry
    point already loads it (loading it under both names would fail)."""
    registered = any(ep.name == "running_process" for ep in entry_points(group="pytest11"))
    return [] if registered else ["-p", "running_process.pytest_plugin"]


@pytest.fixture
def backend_tree() -> Iterator[Path]:
    """A short private root (0700) with ``<VERSION>/backend`` (0755 dir,
    0755 v1 script) shared by every inner session and worker."""
    root = Path(tempfile.mkdtemp(prefix="rp", dir="/tmp"))
    os.chmod(root, 0o700)
    version_dir = root / VERSION
    version_dir.mkdir()
    os.chmod(version_dir, 0o755)
    install(version_dir / "backend", v1_script())
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def inner(pytester: pytest.Pytester, backend_tree: Path) -> pytest.Pytester:
    """A pytester whose conftest offers ``sd`` (the v1 backend's definition),
    ``out`` (a directory the outer test reads) and ``echo``."""
    out = pytester.path / "out"
    out.mkdir()
    pytester.makeconftest(
        f"""
import os
import socket
from pathlib import Path

import pytest
import running_process as rp

ROOT = Path({str(backend_tree)!r})


@pytest.fixture
def sd():
    return rp.ServiceDefinition(
        service_name={SERVICE!r},
        binary_path=str(ROOT / {VERSION!r} / "backend"),
        per_version_binary_dir=str(ROOT / {VERSION!r}),
        isolation=rp.Isolation.SHARED,
    )


@pytest.fixture
def out():
    return Path({str(out)!r})


def echo(handle, payload):
    with handle.connect() as conn:
        conn.settimeout({HANG_GUARD!r})
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture(name="echo")
def echo_fixture():
    return echo
"""
    )
    return pytester


def _pids(out: Path) -> dict[str, int]:
    return {p.name: int(p.read_text().split()[0]) for p in sorted(out.iterdir())}


def test_backend_factory_gives_a_verified_live_handle_stopped_at_teardown(
    inner: pytest.Pytester,
) -> None:
    inner.makepyfile(
        f"""
def test_live(backend_factory, sd, out, echo):
    handle = backend_factory(sd, {VERSION!r})
    assert handle.is_alive()
    handle.verify()
    assert handle.service_name == {SERVICE!r}
    assert echo(handle, b"ping") == b"ping"
    (out / "live").write_text(f"{{handle.pid}} {{handle.endpoint.path}}")


def test_options(backend_factory, sd, out):
    handle = backend_factory(sd, {VERSION!r}, idle_timeout_secs=600, ready_timeout=60.0)
    handle.verify()
    (out / "options").write_text(str(handle.pid))
"""
    )
    result = inner.runpytest(*_plugin_args())
    result.assert_outcomes(passed=2)
    seen = _pids(inner.path / "out")
    assert set(seen) == {"live", "options"}
    for pid in seen.values():
        assert_gone(pid)
    endpoint = (inner.path / "out" / "live").read_text().split()[1]
    assert not os.path.exists(endpoint)


def test_rp_pool_reuses_one_backend_and_stops_it_at_teardown(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        f"""
import running_process as rp


def test_pool(rp_pool, rp_launcher, sd, out, echo):
    key = rp.BackendKey.for_service(sd, {VERSION!r})
    first = rp_pool.get_or_launch(key, sd)
    second = rp_pool.get_or_launch(key, sd)
    assert first.pid == second.pid
    assert echo(second, b"pool") == b"pool"
    [entry] = rp_pool.list()
    assert entry.alive and entry.daemon.pid == first.pid
    assert rp_pool.state_dir.startswith(rp_launcher.socket_dir.rsplit("/", 1)[0])
    (out / "pool").write_text(str(first.pid))
"""
    )
    result = inner.runpytest(*_plugin_args())
    result.assert_outcomes(passed=1)
    assert_gone(_pids(inner.path / "out")["pool"])


def test_a_leaked_backend_fails_the_test_and_is_killed(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        f"""
import running_process as rp


def test_leaks_unmanaged(backend_factory, sd, out):
    handle = backend_factory(sd, {VERSION!r}, managed=False)
    (out / "unmanaged").write_text(f"{{handle.pid}} {{handle.endpoint.path}}")


def test_tidy_unmanaged(backend_factory, sd, out):
    handle = backend_factory(sd, {VERSION!r}, managed=False)
    (out / "tidy").write_text(str(handle.pid))
    handle.shutdown()


def test_leaks_direct_launch(rp_launcher, sd, out):
    handle = rp_launcher.launch(rp.BackendKey.for_service(sd, {VERSION!r}), sd)
    (out / "direct").write_text(f"{{handle.pid}} {{handle.endpoint.path}}")
"""
    )
    result = inner.runpytest(*_plugin_args())
    result.assert_outcomes(passed=3, errors=2)
    out = inner.path / "out"
    seen = _pids(out)
    assert set(seen) == {"unmanaged", "tidy", "direct"}
    text = result.stdout.str()
    for name in ("unmanaged", "direct"):
        pid, endpoint = (out / name).read_text().split()
        result.stdout.fnmatch_lines(
            [
                f"*running_process: the test leaked 1 backend(s), killed at teardown: "
                f"service '{SERVICE}' pid {pid} endpoint {endpoint}*"
            ]
        )
    assert "ERROR at teardown of test_leaks_unmanaged" in text
    assert "ERROR at teardown of test_leaks_direct_launch" in text
    assert "test_tidy_unmanaged" not in text.split("short test summary")[-1]
    for pid_ in seen.values():
        assert_gone(pid_)


SHARED_TESTS = """
import os

import pytest


@pytest.mark.parametrize("n", range(8))
def test_shared(rp_shared_backend_factory, sd, out, echo, n):
    handle = rp_shared_backend_factory(sd, {version!r})
    assert handle.is_alive()
    assert echo(handle, b"shared") == b"shared"
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    (out / f"{{worker}}-{{n}}").write_text(f"{{handle.pid}} {{worker}}")
"""


def test_shared_backend_without_xdist(inner: pytest.Pytester) -> None:
    inner.makepyfile(SHARED_TESTS.format(version=VERSION))
    result = inner.runpytest(*_plugin_args())
    result.assert_outcomes(passed=8)
    pids = set(_pids(inner.path / "out").values())
    assert len(pids) == 1
    assert_gone(pids.pop())


def test_shared_backend_is_one_process_for_all_xdist_workers(inner: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    inner.makepyfile(SHARED_TESTS.format(version=VERSION))
    result = inner.runpytest_subprocess(*_plugin_args(), "-p", "xdist", "-n", "2", timeout=INNER_TIMEOUT)
    result.assert_outcomes(passed=8)
    out = inner.path / "out"
    files = sorted(out.iterdir())
    assert len(files) == 8
    workers = {p.read_text().split()[1] for p in files}
    assert workers == {"gw0", "gw1"}, f"both workers should have run tests: {workers}"
    pids = {int(p.read_text().split()[0]) for p in files}
    assert len(pids) == 1, f"one backend for all workers, saw pids {pids}"
    assert_gone(pids.pop())
    # The last worker removed the shared state's short directory too.
    state = list(inner.path.rglob("running-process-shared.json"))
    assert len(state) == 1, state
    for path in state:
        assert '"workers": 0' in path.read_text()
        assert '"root": null' in path.read_text()


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="backends are launched on Linux only")
