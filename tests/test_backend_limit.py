"""The per-user limit on running backends: a launch beyond it is a
``BackendLimitError`` before anything is spawned; endpoints nothing listens
on do not count; ``RUNNING_PROCESS_MAX_BACKENDS`` overrides the launcher's
``max_backends``."""

from __future__ import annotations

import socket

import pytest

import running_process as rp
from support.launch import BackendDirs, Launches, key_for
from support.leftovers import assert_nothing_left_behind, snapshot

pytestmark = pytest.mark.slow


def refused(
    dirs: BackendDirs, launches: Launches, launcher: rp.CommandBackendLauncher, version: str
) -> rp.BackendLimitError:
    sd = dirs.sd()
    before = snapshot()
    files = (sorted(dirs.socket_dir.iterdir()), sorted(dirs.log_dir.iterdir()))
    with pytest.raises(rp.BackendLimitError) as info:
        launches.launch(launcher, key_for(sd, version), sd)
    assert_nothing_left_behind(before)
    assert (sorted(dirs.socket_dir.iterdir()), sorted(dirs.log_dir.iterdir())) == files
    return info.value


def test_a_launch_beyond_the_limit_is_refused_until_one_ends(dirs: BackendDirs, launches: Launches) -> None:
    launcher = dirs.launcher(max_backends=2)
    sd = dirs.sd()
    first = launches.launch(launcher, key_for(sd, "1.0.0"), sd)
    launches.launch(launcher, key_for(sd, "1.0.1"), sd)
    err = refused(dirs, launches, launcher, "1.0.2")
    assert (err.limit, err.running, err.dir) == (2, 2, str(dirs.socket_dir))
    assert "stop some" in str(err)
    first.shutdown()
    launches.launch(launcher, key_for(sd, "1.0.2"), sd)


def test_an_endpoint_nothing_listens_on_does_not_count(dirs: BackendDirs, launches: Launches) -> None:
    launcher = dirs.launcher(max_backends=1)
    sd = dirs.sd()
    launches.launch(launcher, key_for(sd, "1.0.0"), sd).shutdown()
    # A socket file left where a backend ended without removing it.
    stale = dirs.socket_dir / ("rpb-v1-be-" + "ab" * 16 + ".sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(stale))
    launches.launch(launcher, key_for(sd, "1.0.1"), sd)
    refused(dirs, launches, launcher, "1.0.2")


def test_the_environment_overrides_the_launchers_limit(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch
) -> None:
    launcher = dirs.launcher(max_backends=None)
    sd = dirs.sd()
    launches.launch(launcher, key_for(sd, "1.0.0"), sd)
    monkeypatch.setenv(rp.ENV_MAX_BACKENDS, "1")
    assert refused(dirs, launches, launcher, "1.0.1").limit == 1
    monkeypatch.setenv(rp.ENV_MAX_BACKENDS, "0")
    launches.launch(launcher, key_for(sd, "1.0.1"), sd)
    assert rp.DEFAULT_MAX_BACKENDS == 64


def test_a_pool_beyond_the_limit_leaves_no_lock_file(dirs: BackendDirs) -> None:
    state = dirs.root / "state"
    pool = rp.BackendPool(dirs.launcher(max_backends=1), state)
    sd = dirs.sd()
    try:
        pool.get_or_launch(key_for(sd, "1.0.0"), sd)
        with pytest.raises(rp.BackendLimitError):
            pool.get_or_launch(key_for(sd, "1.0.1"), sd)
        assert [entry.key.service_version for entry in pool.list()] == ["1.0.0"]
        assert len(list(state.glob("*.lock"))) == 1
    finally:
        pool.stop_all()
