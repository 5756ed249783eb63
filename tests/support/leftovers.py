"""The one "nothing left behind" check of the test suite.

What a process holds is read from ``/proc`` (:class:`Holdings`): open
descriptors and what they point at, threads, and child processes with their
state. A leak is anything held after a test (or a soak run) that was not
held before it, any new zombie child, and any file left in a backend's
socket or log directory.

Standard library only: the soak worker processes import it too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol, Union

from .procfs import children, gone, open_fds, proc_stat, thread_name, threads
from .waits import HANG_GUARD, poll_until

PIDFD = "anon_inode:[pidfd]"
"""The target of a pidfd: a ``BackendHandle`` keeps its backend's pidfd
until the handle itself is dropped."""

# Released by other threads just after the event a test waits for (a reaper
# thread closes a backend's pidfd and ends right after reaping it): given
# time to settle. Everything else must be gone at once.
SETTLING = ("fds", "threads")


class BackendDirectories(Protocol):
    """Where a launcher puts socket files and logs (``BackendDirs``)."""

    @property
    def socket_dir(self) -> Path: ...

    @property
    def log_dir(self) -> Path: ...


def files_in(path: Union[Path, str]) -> list[str]:
    """Sorted names in ``path``; empty if it does not exist."""
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


@dataclass(frozen=True)
class Holdings:
    """What this process holds at a moment."""

    fds: frozenset[tuple[int, str]]
    threads: frozenset[int]
    children: dict[int, str]

    @staticmethod
    def now() -> Holdings:
        return Holdings(fds=open_fds(), threads=threads(), children=children())

    def zombies(self) -> list[int]:
        return sorted(pid for pid, state in self.children.items() if state == "Z")

    def counts(self) -> dict[str, int]:
        return {"fds": len(self.fds), "threads": len(self.threads), "children": len(self.children)}


def snapshot() -> Holdings:
    """What the test process holds now: take it before the code under test
    runs, and hand it to :func:`assert_nothing_left_behind` afterwards."""
    return Holdings.now()


def leaks_since(
    before: Holdings,
    dirs: Optional[BackendDirectories] = None,
    *,
    socket_files: Iterable[str] = (),
    kept_logs: Iterable[str] = (),
    ignore_pidfds: bool = False,
    check_threads: bool = False,
) -> dict[str, object]:
    """What is held now and was not in ``before`` (empty: nothing leaked).

    Descriptors, threads and children that ended meanwhile are not leaks;
    every new one is (pidfds aside with ``ignore_pidfds``, threads only with
    ``check_threads``), and so is any child that became a zombie. With
    ``dirs``: the socket directory holds exactly ``socket_files`` (what the
    test planted) and the log directory nothing but ``kept_logs`` (the logs
    of backends that did not end cleanly, kept for diagnosis).
    """
    now = Holdings.now()
    leaks: dict[str, object] = {}
    new_fds = sorted(fd for fd in now.fds - before.fds if not (ignore_pidfds and fd[1] == PIDFD))
    if new_fds:
        leaks["fds"] = new_fds
    if check_threads:
        new_threads = sorted(now.threads - before.threads)
        if new_threads:
            leaks["threads"] = [(tid, thread_name(tid)) for tid in new_threads]
    new_children = {pid: state for pid, state in now.children.items() if pid not in before.children}
    if new_children:
        leaks["children"] = new_children
    zombies = [pid for pid in now.zombies() if before.children.get(pid) != "Z"]
    if zombies:
        leaks["zombies"] = zombies
    if dirs is not None:
        sockets = files_in(dirs.socket_dir)
        if sockets != sorted(socket_files):
            leaks["socket files"] = sockets
        kept = {os.path.basename(path) for path in kept_logs}
        logs = [name for name in files_in(dirs.log_dir) if name not in kept]
        if logs:
            leaks["log files"] = logs
    return leaks


def settled_leaks(
    before: Holdings,
    dirs: Optional[BackendDirectories] = None,
    *,
    timeout: float = HANG_GUARD,
    socket_files: Iterable[str] = (),
    kept_logs: Iterable[str] = (),
    ignore_pidfds: bool = False,
    check_threads: bool = False,
) -> dict[str, object]:
    """The leaks since ``before`` once they stop going away: what is being
    released is given ``timeout`` seconds to finish. Empty if nothing
    leaked."""
    socket_files, kept_logs = list(socket_files), list(kept_logs)
    deadline = time.monotonic() + timeout
    interval = 0.001
    while True:
        leaks = leaks_since(
            before,
            dirs,
            socket_files=socket_files,
            kept_logs=kept_logs,
            ignore_pidfds=ignore_pidfds,
            check_threads=check_threads,
        )
        if not leaks or time.monotonic() > deadline:
            return leaks
        time.sleep(interval)
        interval = min(interval * 2, 0.05)


def assert_nothing_left_behind(
    before: Holdings,
    dirs: Optional[BackendDirectories] = None,
    *,
    socket_files: Iterable[str] = (),
    kept_logs: Iterable[str] = (),
    ignore_pidfds: bool = False,
    check_threads: bool = False,
    timeout: float = HANG_GUARD,
) -> None:
    """No new child process (running or zombie), no file in the socket or
    log directory of ``dirs`` but those allowed (see :func:`leaks_since`),
    checked at once; and no new descriptor (nor thread, with
    ``check_threads``) once those have had ``timeout`` seconds to be
    released."""
    socket_files, kept_logs = list(socket_files), list(kept_logs)
    leaks = leaks_since(
        before,
        dirs,
        socket_files=socket_files,
        kept_logs=kept_logs,
        ignore_pidfds=ignore_pidfds,
        check_threads=check_threads,
    )
    at_once = {what: leaked for what, leaked in leaks.items() if what not in SETTLING}
    assert at_once == {}, f"left behind: {at_once}"
    leaks = settled_leaks(
        before,
        dirs,
        timeout=timeout,
        socket_files=socket_files,
        kept_logs=kept_logs,
        ignore_pidfds=ignore_pidfds,
        check_threads=check_threads,
    )
    assert leaks == {}, f"left behind (after {timeout} s to settle): {leaks}"


def assert_gone(pid: int, timeout: float = HANG_GUARD) -> None:
    """``pid`` ends and is reaped: no zombie child of the test is left."""
    poll_until(lambda: gone(pid), timeout=timeout, what=f"pid {pid} to end")
    info = proc_stat(pid)
    assert info is None or info[1] != os.getpid(), f"pid {pid} is a zombie child of the test"
