"""BackendRegistry on its own, with real backends: a thread-safe map from
BackendKey to BackendHandle that never starts or stops anything except when
pruning entries whose process has exited."""

from __future__ import annotations

import os
import pickle
import signal

import pytest

import running_process as rp
from support.launch import VERSION, BackendDirs, Launches, key_for
from support.leftovers import assert_nothing_left_behind, snapshot
from support.router import concurrently
from support.waits import HANG_GUARD, spin_until

CLEAN_END = (0, -signal.SIGTERM)


def launch(
    dirs: BackendDirs, launches: Launches, version: str = VERSION
) -> tuple[rp.BackendKey, rp.BackendHandle]:
    sd = dirs.sd()
    key = key_for(sd, version)
    return key, launches.launch(dirs.launcher(), key, sd)


def test_an_empty_registry(dirs: BackendDirs) -> None:
    registry = rp.BackendRegistry()
    key = key_for(dirs.sd())
    assert len(registry) == 0
    assert key not in registry
    assert registry.get(key) is None
    assert registry.remove(key) is None
    assert registry.items() == []
    assert registry.prune_stale() == []


def test_insert_get_remove_items_len_contains(dirs: BackendDirs, launches: Launches) -> None:
    before = snapshot()
    key, handle = launch(dirs, launches)
    registry = rp.BackendRegistry()
    assert registry.insert(key, handle) is None
    assert len(registry) == 1
    assert key in registry
    # Keys are values: an equal key built separately finds the entry ...
    assert key_for(dirs.sd()) in registry
    got = registry.get(key_for(dirs.sd()))
    assert got is not None and got.pid == handle.pid and got.endpoint == handle.endpoint
    # ... and another version is another key.
    assert key_for(dirs.sd(), "1.0.1") not in registry
    assert registry.get(key_for(dirs.sd(), "1.0.1")) is None
    [(item_key, item_handle)] = registry.items()
    assert item_key == key and item_handle.pid == handle.pid
    removed = registry.remove(key)
    assert removed is not None and removed.pid == handle.pid
    assert len(registry) == 0 and key not in registry
    assert registry.get(key) is None
    assert registry.remove(key) is None
    # Removing an entry leaves its backend running.
    assert handle.is_alive()
    handle.verify()
    assert handle.shutdown(timeout=HANG_GUARD) in CLEAN_END
    assert_nothing_left_behind(before, dirs, ignore_pidfds=True)


def test_insert_returns_the_handle_it_replaces(dirs: BackendDirs, launches: Launches) -> None:
    before = snapshot()
    key, first = launch(dirs, launches)
    _, second = launch(dirs, launches)
    assert first.pid != second.pid
    registry = rp.BackendRegistry()
    assert registry.insert(key, first) is None
    replaced = registry.insert(key, second)
    assert replaced is not None and replaced.pid == first.pid
    assert len(registry) == 1
    got = registry.get(key)
    assert got is not None and got.pid == second.pid
    # The replaced backend is not touched.
    assert first.is_alive()
    for handle in (first, second):
        assert handle.shutdown(timeout=HANG_GUARD) in CLEAN_END
    assert_nothing_left_behind(before, dirs, ignore_pidfds=True)


def test_prune_stale_removes_a_killed_backend_and_returns_its_key(
    dirs: BackendDirs, launches: Launches
) -> None:
    before = snapshot()
    dead_key, dead = launch(dirs, launches)
    live_key, live = launch(dirs, launches, "1.0.1")
    registry = rp.BackendRegistry()
    registry.insert(dead_key, dead)
    registry.insert(live_key, live)
    assert registry.prune_stale() == []
    assert len(registry) == 2
    os.kill(dead.pid, signal.SIGKILL)
    assert dead.wait(timeout=HANG_GUARD) == -signal.SIGKILL
    assert registry.prune_stale() == [dead_key]
    assert dead_key not in registry
    assert live_key in registry
    assert len(registry) == 1
    assert not os.path.exists(dead.endpoint.path)
    # The live backend is untouched and stays registered.
    assert live.is_alive()
    live.verify()
    assert registry.prune_stale() == []
    got = registry.get(live_key)
    assert got is not None and got.pid == live.pid
    assert live.shutdown(timeout=HANG_GUARD) in CLEAN_END
    # Once it is gone too, it is pruned as well.
    assert registry.prune_stale() == [live_key]
    assert len(registry) == 0
    assert_nothing_left_behind(before, dirs, ignore_pidfds=True, kept_logs=[dead.log_path])


ROUNDS = 20


def test_prune_stale_removes_the_socket_file_of_a_backend_that_just_died(
    dirs: BackendDirs, launches: Launches
) -> None:
    """The v1 backend never removes its socket file; pruning it must, also
    when it runs right after the death shows through the pidfd (before the
    reaper thread may have recorded the exit). Several rounds, because that
    window is short."""
    before = snapshot()
    sd = dirs.sd()
    key = key_for(sd)
    launcher = dirs.launcher()
    left_behind: list[str] = []
    for _ in range(ROUNDS):
        handle = launches.launch(launcher, key, sd)
        registry = rp.BackendRegistry()
        registry.insert(key, handle)
        os.kill(handle.pid, signal.SIGKILL)
        spin_until(lambda: not handle.is_alive(), what="the killed backend to be seen dead")
        assert registry.prune_stale() == [key]
        if os.path.exists(handle.endpoint.path):
            left_behind.append(handle.endpoint.path)
        # Reaped in any case; waiting also cleans up what pruning left.
        assert handle.wait(timeout=HANG_GUARD) == -signal.SIGKILL
    assert left_behind == [], (
        f"prune_stale left the socket file of {len(left_behind)} of {ROUNDS} dead backends"
    )
    assert_nothing_left_behind(
        before, dirs, ignore_pidfds=True, kept_logs=[h.log_path for h in launches.handles]
    )


def test_concurrent_inserts_are_all_kept(dirs: BackendDirs, launches: Launches) -> None:
    before = snapshot()
    _, handle = launch(dirs, launches)
    registry = rp.BackendRegistry()
    keys = [key_for(dirs.sd(), f"1.0.{i}") for i in range(16)]
    results = concurrently(16, lambda i: registry.insert(keys[i], handle))
    assert results == [None] * 16
    assert len(registry) == 16
    assert sorted(str(k) for k, _ in registry.items()) == sorted(str(k) for k in keys)
    assert all(k in registry for k in keys)
    assert handle.shutdown(timeout=HANG_GUARD) in CLEAN_END
    assert sorted(str(k) for k in registry.prune_stale()) == sorted(str(k) for k in keys)
    assert len(registry) == 0
    assert_nothing_left_behind(before, dirs, ignore_pidfds=True)


def test_registry_is_not_a_value() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(rp.BackendRegistry())
