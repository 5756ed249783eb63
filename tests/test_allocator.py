"""BackendEndpointAllocator: unguessable private socket paths (spec section 2).

Every test points the allocator at a private temporary directory, either with
``socket_dir=`` or through ``$XDG_RUNTIME_DIR``; none touches the user's real
socket directory.
"""

from __future__ import annotations

import os
import pickle
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

import running_process as rp
from support.values import BACKEND_NAME_LEN, HASH, NOBODY_UID, entries, mode_of, requires_root

NAME_RE = re.compile(rf"rpb-v1-{HASH}-be-[0-9a-f]{{32}}\.sock")


def allocator(socket_dir: Path, **kwargs: Any) -> rp.BackendEndpointAllocator:
    return rp.BackendEndpointAllocator(HASH, "private:zccache", socket_dir=socket_dir, **kwargs)


def constant(byte: int) -> Callable[[], bytes]:
    return lambda: bytes([byte]) * 16


def path_for(socket_dir: Path, byte: int) -> str:
    return str(socket_dir / f"rpb-v1-{HASH}-be-{bytes([byte]).hex() * 16}.sock")


class Draws:
    """A random source that hands out the given tokens in order and counts calls."""

    def __init__(self, *tokens: bytes) -> None:
        self._tokens: Iterator[bytes] = iter(tokens)
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return next(self._tokens)


@pytest.fixture
def socket_dir(short_dir: Path) -> Path:
    """Where the allocator should create its socket directory (missing)."""
    return short_dir / "broker"


# --- construction ---------------------------------------------------------------


def test_keyword_construction_and_properties(socket_dir: Path) -> None:
    alloc = rp.BackendEndpointAllocator(
        user_sid_hash=HASH, namespace_id="shared", max_attempts=5, socket_dir=socket_dir
    )
    assert alloc.user_sid_hash == HASH
    assert alloc.namespace_id == "shared"
    assert alloc.max_attempts == 5
    assert alloc.socket_dir == str(socket_dir)
    assert alloc.reserved_count == 0
    # Construction touches nothing.
    assert not socket_dir.exists()


def test_defaults(xdg_runtime_dir: Path) -> None:
    alloc = rp.BackendEndpointAllocator(HASH, "shared")
    assert alloc.max_attempts == 16
    assert alloc.socket_dir == str(xdg_runtime_dir / "running-process" / "broker")
    assert alloc.socket_dir == rp.socket_dir()
    assert entries(xdg_runtime_dir) == []


def test_default_socket_dir_without_xdg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    alloc = rp.BackendEndpointAllocator(HASH, "shared")
    assert alloc.socket_dir == f"/tmp/running-process-{os.getuid()}/broker"


def test_repr_mentions_the_settings(socket_dir: Path) -> None:
    text = repr(allocator(socket_dir, max_attempts=3))
    assert text.startswith("BackendEndpointAllocator(")
    assert HASH in text
    assert "private:zccache" in text
    assert str(socket_dir) in text


@pytest.mark.parametrize("bad", ["", "0123456789ABCDEF", "0123456789abcde", "xyz"])
def test_bad_user_sid_hash(socket_dir: Path, bad: str) -> None:
    with pytest.raises(rp.InvalidNameError) as info:
        rp.BackendEndpointAllocator(bad, "shared", socket_dir=socket_dir)
    assert info.value.kind == "user sid hash"
    assert info.value.value == bad


@pytest.mark.parametrize("bad", ["", "a b", "é", "x" * 257, "tab\t"])
def test_bad_namespace_id(socket_dir: Path, bad: str) -> None:
    with pytest.raises(rp.InvalidIdentityError) as info:
        rp.BackendEndpointAllocator(HASH, bad, socket_dir=socket_dir)
    assert info.value.field == "namespace_id"
    assert info.value.value == bad


def test_non_utf8_socket_dir(short_dir: Path) -> None:
    with pytest.raises(rp.InvalidIdentityError) as info:
        rp.BackendEndpointAllocator(HASH, "shared", socket_dir=str(short_dir) + "/\udcff")
    assert info.value.field == "path"
    assert "UTF-8" in info.value.reason
    assert entries(short_dir) == []


@pytest.mark.parametrize("socket_dir", ["relative/broker", "/tmp/x/../broker"])
def test_relative_or_dotted_socket_dir_is_refused_without_creating_anything(
    socket_dir: str, short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(short_dir)
    with pytest.raises(rp.InsecureDirectoryError) as info:
        rp.BackendEndpointAllocator(HASH, "shared", socket_dir=socket_dir).allocate()
    assert info.value.path == socket_dir
    assert entries(short_dir) == []


def test_not_picklable(socket_dir: Path) -> None:
    with pytest.raises(TypeError):
        pickle.dumps(allocator(socket_dir))


# --- allocate -------------------------------------------------------------------


def test_allocate_returns_a_private_endpoint(socket_dir: Path) -> None:
    alloc = allocator(socket_dir)
    endpoint = alloc.allocate()
    assert isinstance(endpoint, rp.Endpoint)
    assert endpoint.namespace_id == "private:zccache"
    path = Path(endpoint.path)
    assert path.parent == socket_dir
    assert NAME_RE.fullmatch(path.name), path.name
    assert len(path.name) == BACKEND_NAME_LEN
    assert os.fspath(endpoint) == endpoint.path
    # The directory is created private; the allocator binds nothing.
    assert mode_of(socket_dir) == 0o700
    assert entries(socket_dir) == []
    assert alloc.reserved_count == 1
    assert alloc.is_reserved(endpoint.path)


def test_allocate_creates_the_directory_0700_despite_umask(socket_dir: Path) -> None:
    old = os.umask(0)
    try:
        allocator(socket_dir).allocate()
    finally:
        os.umask(old)
    assert mode_of(socket_dir) == 0o700


def test_allocate_in_an_existing_private_directory(socket_dir: Path) -> None:
    socket_dir.mkdir(mode=0o700)
    endpoint = allocator(socket_dir).allocate()
    assert Path(endpoint.path).parent == socket_dir
    assert entries(socket_dir) == []


def test_allocate_under_xdg_runtime_dir(xdg_runtime_dir: Path) -> None:
    endpoint = rp.BackendEndpointAllocator(HASH, "shared").allocate()
    top = xdg_runtime_dir / "running-process"
    broker = top / "broker"
    assert Path(endpoint.path).parent == broker
    assert NAME_RE.fullmatch(Path(endpoint.path).name)
    assert mode_of(top) == 0o700
    assert mode_of(broker) == 0o700
    assert entries(xdg_runtime_dir) == ["running-process"]
    assert entries(top) == ["broker"]
    assert entries(broker) == []


def test_allocate_under_a_sticky_world_writable_xdg_base(xdg_runtime_dir: Path) -> None:
    os.chmod(xdg_runtime_dir, 0o1777)
    endpoint = rp.BackendEndpointAllocator(HASH, "shared").allocate()
    assert Path(endpoint.path).parent == xdg_runtime_dir / "running-process" / "broker"


def test_paths_are_unique(socket_dir: Path) -> None:
    alloc = allocator(socket_dir)
    paths = {alloc.allocate().path for _ in range(2000)}
    assert len(paths) == 2000
    assert alloc.reserved_count == 2000
    assert entries(socket_dir) == []


def test_two_allocators_share_the_disk_but_not_reservations(socket_dir: Path) -> None:
    a = allocator(socket_dir)
    b = allocator(socket_dir)
    first = a.allocate_with(constant(7))
    # b does not know a's reservation: the same token is free for b.
    assert b.allocate_with(constant(7)) == first


# --- allocate_with and collisions --------------------------------------------------


def test_allocate_with_is_deterministic(socket_dir: Path) -> None:
    endpoint = allocator(socket_dir).allocate_with(lambda: bytes(16))
    assert endpoint.path == str(socket_dir / f"rpb-v1-{HASH}-be-{'00' * 16}.sock")
    assert allocator(socket_dir).allocate_with(lambda: bytes(16)) == endpoint
    token = bytes(range(16))
    assert allocator(socket_dir).allocate_with(lambda: token).path.endswith(f"-be-{token.hex()}.sock")


def test_reserved_paths_are_skipped_then_exhausted(socket_dir: Path) -> None:
    alloc = allocator(socket_dir, max_attempts=4)
    first = alloc.allocate_with(constant(1))
    draws = Draws(*[bytes([1]) * 16] * 4)
    with pytest.raises(rp.AllocationExhaustedError) as info:
        alloc.allocate_with(draws)
    assert draws.calls == 4
    assert info.value.attempts == 4
    assert info.value.dir == str(socket_dir)
    assert alloc.reserved_count == 1
    assert alloc.is_reserved(first.path)


def test_default_max_attempts_is_used(socket_dir: Path) -> None:
    alloc = allocator(socket_dir)
    alloc.allocate_with(constant(1))
    draws = Draws(*[bytes([1]) * 16] * 100)
    with pytest.raises(rp.AllocationExhaustedError) as info:
        alloc.allocate_with(draws)
    assert draws.calls == 16
    assert info.value.attempts == 16


def test_collision_draws_again(socket_dir: Path) -> None:
    alloc = allocator(socket_dir, max_attempts=3)
    alloc.allocate_with(constant(1))
    draws = Draws(bytes([1]) * 16, bytes([1]) * 16, bytes([2]) * 16)
    endpoint = alloc.allocate_with(draws)
    assert draws.calls == 3
    assert endpoint.path == path_for(socket_dir, 2)
    assert alloc.reserved_count == 2


def test_reserve_path(socket_dir: Path) -> None:
    alloc = allocator(socket_dir, max_attempts=2)
    taken = path_for(socket_dir, 3)
    assert alloc.reserve_path(taken) is True
    assert alloc.reserve_path(taken) is False
    assert alloc.reserve_path(Path(taken)) is False
    assert alloc.is_reserved(taken)
    assert alloc.reserved_count == 1
    with pytest.raises(rp.AllocationExhaustedError):
        alloc.allocate_with(constant(3))
    assert alloc.allocate_with(Draws(bytes([3]) * 16, bytes([4]) * 16)).path == path_for(socket_dir, 4)


@pytest.mark.parametrize("kind", ["file", "directory", "dangling-symlink", "unix-socket"])
def test_existing_entries_on_disk_are_collisions(socket_dir: Path, kind: str) -> None:
    socket_dir.mkdir(mode=0o700)
    taken = Path(path_for(socket_dir, 5))
    if kind == "directory":
        taken.mkdir()
    elif kind == "dangling-symlink":
        taken.symlink_to(socket_dir / "nowhere")
    elif kind == "unix-socket":
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.bind(str(taken))
    else:
        taken.write_bytes(b"")
    alloc = allocator(socket_dir, max_attempts=3)
    draws = Draws(*[bytes([5]) * 16] * 3)
    with pytest.raises(rp.AllocationExhaustedError) as info:
        alloc.allocate_with(draws)
    assert draws.calls == 3
    assert info.value.attempts == 3
    assert alloc.reserved_count == 0
    endpoint = alloc.allocate_with(Draws(bytes([5]) * 16, bytes([6]) * 16))
    assert endpoint.path == path_for(socket_dir, 6)


def test_release(socket_dir: Path) -> None:
    alloc = allocator(socket_dir, max_attempts=1)
    a = alloc.allocate_with(constant(1))
    b = alloc.allocate_with(constant(2))
    c = alloc.allocate_with(constant(3))
    assert alloc.reserved_count == 3
    assert alloc.release(a.path) is True
    assert alloc.release(a.path) is False
    assert alloc.reserved_count == 2
    assert not alloc.is_reserved(a.path)
    assert alloc.release(Path(b.path)) is True
    assert alloc.release(c) is True  # an Endpoint is a path-like
    assert alloc.reserved_count == 0
    assert alloc.release("/never/reserved.sock") is False
    # A released path can be handed out again.
    assert alloc.allocate_with(constant(1)) == a


@pytest.mark.parametrize("length", [0, 15, 17, 32])
def test_random_source_of_wrong_length(socket_dir: Path, length: int) -> None:
    alloc = allocator(socket_dir)
    with pytest.raises(ValueError, match=str(length)):
        alloc.allocate_with(lambda: bytes(length))
    assert alloc.reserved_count == 0


@pytest.mark.parametrize("value", ["0" * 16, 0, None, [0] * 16])
def test_random_source_returning_non_bytes(socket_dir: Path, value: object) -> None:
    alloc = allocator(socket_dir)
    source: Callable[[], Any] = lambda: value  # noqa: E731
    with pytest.raises(ValueError):
        alloc.allocate_with(source)
    assert alloc.reserved_count == 0


def test_random_source_exceptions_propagate(socket_dir: Path) -> None:
    class Boom(Exception):
        pass

    def explode() -> bytes:
        raise Boom("no entropy")

    alloc = allocator(socket_dir)
    with pytest.raises(Boom, match="no entropy"):
        alloc.allocate_with(explode)
    assert alloc.reserved_count == 0


# --- insecure directories ---------------------------------------------------------


def test_symlinked_socket_dir_is_refused(short_dir: Path) -> None:
    real = short_dir / "real"
    real.mkdir(mode=0o700)
    link = short_dir / "link"
    link.symlink_to(real)
    alloc = allocator(link)
    with pytest.raises(rp.InsecureDirectoryError) as info:
        alloc.allocate()
    assert info.value.path == str(link)
    assert "symbolic link" in info.value.reason
    assert entries(real) == []
    assert entries(short_dir) == ["link", "real"]
    assert alloc.reserved_count == 0


@pytest.mark.parametrize("mode", [0o750, 0o770, 0o705, 0o701, 0o755, 0o777, 0o1777])
def test_group_or_other_accessible_socket_dir_is_refused(socket_dir: Path, mode: int) -> None:
    socket_dir.mkdir()
    os.chmod(socket_dir, mode)
    alloc = allocator(socket_dir)
    with pytest.raises(rp.InsecureDirectoryError) as info:
        alloc.allocate()
    assert info.value.path == str(socket_dir)
    assert f"{mode:04o}" in info.value.reason
    # Refused, never repaired.
    assert mode_of(socket_dir) == mode
    assert entries(socket_dir) == []
    assert alloc.reserved_count == 0


@requires_root
def test_socket_dir_owned_by_another_user_is_refused(socket_dir: Path) -> None:
    socket_dir.mkdir(mode=0o700)
    os.chown(socket_dir, NOBODY_UID, NOBODY_UID)
    with pytest.raises(rp.InsecureDirectoryError) as info:
        allocator(socket_dir).allocate()
    assert info.value.path == str(socket_dir)
    assert str(NOBODY_UID) in info.value.reason
    assert os.stat(socket_dir).st_uid == NOBODY_UID
    assert entries(socket_dir) == []


def test_socket_dir_that_is_a_file_is_refused(socket_dir: Path) -> None:
    socket_dir.write_bytes(b"")
    with pytest.raises(rp.InsecureDirectoryError) as info:
        allocator(socket_dir).allocate()
    assert info.value.path == str(socket_dir)


def test_world_writable_xdg_base_without_sticky_bit_is_refused(xdg_runtime_dir: Path) -> None:
    os.chmod(xdg_runtime_dir, 0o777)
    with pytest.raises(rp.InsecureDirectoryError) as info:
        rp.BackendEndpointAllocator(HASH, "shared").allocate()
    assert info.value.path == str(xdg_runtime_dir)
    assert entries(xdg_runtime_dir) == []


@requires_root
def test_xdg_base_owned_by_another_user_is_refused(xdg_runtime_dir: Path) -> None:
    os.chown(xdg_runtime_dir, NOBODY_UID, NOBODY_UID)
    with pytest.raises(rp.InsecureDirectoryError) as info:
        rp.BackendEndpointAllocator(HASH, "shared").allocate()
    assert info.value.path == str(xdg_runtime_dir)
    assert entries(xdg_runtime_dir) == []


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o711])
def test_loose_intermediate_directory_under_xdg_is_refused(xdg_runtime_dir: Path, mode: int) -> None:
    top = xdg_runtime_dir / "running-process"
    top.mkdir()
    os.chmod(top, mode)
    with pytest.raises(rp.InsecureDirectoryError) as info:
        rp.BackendEndpointAllocator(HASH, "shared").allocate()
    assert info.value.path == str(top)
    assert entries(top) == []
    assert mode_of(top) == mode


def test_symlinked_intermediate_directory_under_xdg_is_refused(xdg_runtime_dir: Path) -> None:
    elsewhere = xdg_runtime_dir / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (xdg_runtime_dir / "running-process").symlink_to(elsewhere)
    with pytest.raises(rp.InsecureDirectoryError) as info:
        rp.BackendEndpointAllocator(HASH, "shared").allocate()
    assert info.value.path == str(xdg_runtime_dir / "running-process")
    assert entries(elsewhere) == []


# --- sun_path -------------------------------------------------------------------


def padded_dir(short_dir: Path, total: int) -> Path:
    """A directory path under ``short_dir`` that is ``total`` bytes long."""
    pad = total - len(str(short_dir)) - 1
    assert pad > 0
    return short_dir / ("d" * pad)


def test_longest_socket_dir_that_fits(short_dir: Path) -> None:
    directory = padded_dir(short_dir, rp.SUN_PATH_MAX - 1 - BACKEND_NAME_LEN)
    endpoint = allocator(directory).allocate()
    assert len(endpoint.path.encode()) == rp.SUN_PATH_MAX == 107
    assert mode_of(directory) == 0o700


@pytest.mark.parametrize("extra", [1, 2, 50])
def test_too_long_socket_dir_fails_before_touching_disk(short_dir: Path, extra: int) -> None:
    directory = padded_dir(short_dir, rp.SUN_PATH_MAX - 1 - rp.COMPACT_BACKEND_SOCKET_NAME_LEN + extra)
    alloc = allocator(directory)
    with pytest.raises(rp.PathTooLongError) as info:
        alloc.allocate()
    err = info.value
    assert err.limit == rp.SUN_PATH_MAX
    assert err.length == rp.SUN_PATH_MAX + extra
    assert err.path.startswith(str(directory) + "/")
    assert isinstance(err, ValueError)
    assert not directory.exists()
    assert entries(short_dir) == []
    assert alloc.reserved_count == 0
    with pytest.raises(rp.PathTooLongError):
        alloc.allocate_with(lambda: bytes(16))
    assert not directory.exists()


def test_too_long_xdg_runtime_dir_fails_before_touching_disk(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = short_dir / ("x" * 40)
    base.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    with pytest.raises(rp.PathTooLongError) as info:
        rp.BackendEndpointAllocator(HASH, "shared").allocate()
    assert info.value.limit == 107
    assert info.value.length > 107
    assert entries(base) == []


@pytest.mark.parametrize("over", [1, 17])
def test_a_directory_too_long_for_the_v1_name_gets_compact_names(short_dir: Path, over: int) -> None:
    """Up to 17 bytes past the v1 budget, the compact name (no per-user
    hash; the directory is private) keeps launches working."""
    directory = padded_dir(short_dir, rp.SUN_PATH_MAX - 1 - BACKEND_NAME_LEN + over)
    endpoint = allocator(directory).allocate()
    name = os.path.basename(endpoint.path)
    assert name.startswith("rpb-v1-be-") and name.endswith(".sock")
    assert len(name) == rp.COMPACT_BACKEND_SOCKET_NAME_LEN
    assert len(os.fsencode(endpoint.path)) <= rp.SUN_PATH_MAX
    fitting = padded_dir(short_dir / "v1", rp.SUN_PATH_MAX - 1 - BACKEND_NAME_LEN)
    assert os.path.basename(allocator(fitting).allocate().path).startswith(f"rpb-v1-{HASH}-be-")


def test_path_length_counts_bytes(short_dir: Path) -> None:
    # Fits in characters, not in bytes.
    chars = rp.SUN_PATH_MAX - 1 - rp.COMPACT_BACKEND_SOCKET_NAME_LEN - len(str(short_dir)) - 1
    directory = short_dir / ("é" * chars)
    with pytest.raises(rp.PathTooLongError) as info:
        allocator(directory).allocate()
    assert info.value.length == rp.SUN_PATH_MAX + chars
    assert not directory.exists()


# --- threads --------------------------------------------------------------------


def test_threads_get_distinct_paths(socket_dir: Path) -> None:
    alloc = allocator(socket_dir)
    threads_n, per_thread = 8, 200
    barrier = threading.Barrier(threads_n)
    results: list[list[str]] = [[] for _ in range(threads_n)]
    errors: list[BaseException] = []

    def work(slot: int) -> None:
        try:
            barrier.wait()
            for _ in range(per_thread):
                results[slot].append(alloc.allocate().path)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    paths = [p for chunk in results for p in chunk]
    assert len(paths) == threads_n * per_thread
    assert len(set(paths)) == threads_n * per_thread
    assert alloc.reserved_count == threads_n * per_thread
    assert all(NAME_RE.fullmatch(Path(p).name) for p in paths)
    assert entries(socket_dir) == []


def test_threads_racing_on_one_token_get_one_winner(socket_dir: Path) -> None:
    alloc = allocator(socket_dir, max_attempts=1)
    threads_n = 8
    barrier = threading.Barrier(threads_n)
    won: list[str] = []
    lost: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        barrier.wait()
        try:
            endpoint = alloc.allocate_with(constant(9))
        except rp.AllocationExhaustedError as err:
            with lock:
                lost.append(err.attempts)
        else:
            with lock:
                won.append(endpoint.path)

    threads = [threading.Thread(target=work) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert won == [path_for(socket_dir, 9)]
    assert lost == [1] * (threads_n - 1)
