"""The one ``/proc`` reader of the test suite: process state and parent,
children of a process, descriptors, threads, memory, executable and
environment.

Standard library only: the soak worker processes import it too.
"""

from __future__ import annotations

import os
from typing import Optional, Union

PidOrSelf = Union[int, str]
"""A pid, or ``"self"`` for the test process."""


# --- /proc/<pid>/stat and status ---------------------------------------------------------


def stat_fields(pid: int) -> Optional[list[bytes]]:
    """The fields of ``/proc/<pid>/stat`` after the command name (field 3,
    the state, first), or None once the process is gone (reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    return data[data.rindex(b")") + 2 :].split()


def proc_stat(pid: int) -> Optional[tuple[str, int]]:
    """``(state, ppid)`` of ``pid``, or None once the process is gone."""
    fields = stat_fields(pid)
    if fields is None:
        return None
    return fields[0].decode(), int(fields[1])


def state_of(pid: int) -> Optional[str]:
    """The state letter of ``pid`` (``T`` stopped, ``Z`` zombie...), or None
    once it is gone."""
    info = proc_stat(pid)
    return None if info is None else info[0]


def parent_of(pid: int) -> Optional[int]:
    info = proc_stat(pid)
    return None if info is None else info[1]


def start_ticks(pid: int) -> int:
    """Field 22 of ``/proc/<pid>/stat``: when the process started, in clock
    ticks after boot."""
    fields = stat_fields(pid)
    assert fields is not None, f"pid {pid} is gone"
    return int(fields[19])


def status_of(pid: PidOrSelf) -> dict[str, str]:
    """The ``Name: value`` lines of ``/proc/<pid>/status``."""
    out: dict[str, str] = {}
    with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as f:
        for line in f:
            name, _, value = line.partition(":")
            out[name] = value.strip()
    return out


def pending_signals(pid: int) -> tuple[int, int]:
    """The thread's and the process's pending signal masks (``SigPnd``,
    ``ShdPnd``): a stopped process keeps any signal sent to it pending,
    SIGKILL excepted, which ends it."""
    status = status_of(pid)
    return int(status["SigPnd"], 16), int(status["ShdPnd"], 16)


def rss_kib() -> int:
    """``VmRSS`` of the test process, in KiB."""
    return int(status_of("self")["VmRSS"].split()[0])


# --- processes -------------------------------------------------------------------------------


def children(parent: Optional[int] = None) -> dict[int, str]:
    """Child processes of ``parent`` (default: this process): pid -> state
    letter (``Z``: zombie)."""
    me = os.getpid() if parent is None else parent
    found: dict[int, str] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        info = proc_stat(int(name))
        if info is not None and info[1] == me:
            found[int(name)] = info[0]
    return found


def process_running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    info = proc_stat(pid)
    return info is not None and info[0] != "Z"


def gone(pid: int) -> bool:
    """Ended and reaped (or, orphaned, ended and left to init): not running,
    and no zombie child of this process."""
    info = proc_stat(pid)
    return info is None or (info[0] == "Z" and info[1] != os.getpid())


def exe_of(pid: int) -> Optional[str]:
    """``/proc/<pid>/exe``, or None if it cannot be read (gone, or a zombie)."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def environ_pairs(pid: int) -> list[tuple[str, str]]:
    """The environment a process was started with, in order, duplicates
    kept (raises once the process is gone)."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        raw = f.read()
    pairs: list[tuple[str, str]] = []
    for entry in raw.split(b"\0"):
        if entry:
            name, _, value = entry.decode("utf-8", "surrogateescape").partition("=")
            pairs.append((name, value))
    return pairs


def environ_of(pid: int) -> dict[str, str]:
    """The environment ``pid`` was started with (empty once it is gone)."""
    try:
        return dict(environ_pairs(pid))
    except OSError:
        return {}


# --- descriptors and threads -------------------------------------------------------------------


def fd_count(pid: PidOrSelf = "self") -> int:
    """How many descriptors ``pid`` has open (for ``"self"``, counting the
    one that lists the directory)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_targets(pid: PidOrSelf = "self") -> dict[int, str]:
    """The descriptors of ``pid`` and what they point at."""
    out: dict[int, str] = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:  # closed meanwhile (such as the one listing the directory)
            pass
    return out


def open_fds() -> frozenset[tuple[int, str]]:
    """This process's descriptors as ``(number, target)`` pairs, so a leaked
    descriptor that reuses the number of one closed meanwhile still shows."""
    return frozenset(fd_targets("self").items())


def threads() -> frozenset[int]:
    """Thread ids of this process."""
    return frozenset(int(tid) for tid in os.listdir("/proc/self/task"))


def thread_name(tid: int) -> str:
    try:
        with open(f"/proc/self/task/{tid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return "?"
