"""Accounting of a process's resources for the soak and stateful tests, and
the worker of the cross-process pool soak.

The accounting reads only ``/proc``: open descriptors and what they point
at, threads, child processes (and which of them are zombies) and the
resident set size. A leak is anything that is there after a run and was not
there before.

This file is also the program of the pool soak's worker processes (see
:func:`worker_main`), so it imports nothing from pytest or the other test
helpers.
"""

from __future__ import annotations

import gc
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TextIO

import running_process as rp
from _launch_support import children, files_in, poll_until, proc_stat

# Only turns a hang into a failure.
WORKER_GUARD = 60.0


# --- /proc ---------------------------------------------------------------------------


def open_fds() -> frozenset[tuple[int, str]]:
    """This process's descriptors as ``(number, target)`` pairs, so a leaked
    descriptor that reuses the number of one closed meanwhile still shows."""
    out = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            out.add((int(name), os.readlink(f"/proc/self/fd/{name}")))
        except OSError:  # the descriptor listing the directory, now closed
            continue
    return frozenset(out)


def threads() -> frozenset[int]:
    """Thread ids of this process."""
    return frozenset(int(tid) for tid in os.listdir("/proc/self/task"))


def rss_kib() -> int:
    """``VmRSS`` of this process, in KiB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def exe_of(pid: int) -> Optional[str]:
    """``/proc/<pid>/exe``, or None if it cannot be read (gone, or a zombie)."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


# --- the backend binary ------------------------------------------------------------------


def install_stripped(source: Path, dest: Path) -> Path:
    """Installs the Rust example backend at ``dest`` (mode 0755) without its
    debug sections when ``strip`` is available (a plain copy otherwise).

    The backend hashes its own executable once at start-up: the debug build
    with its symbols is about 24 MiB, and hashing it made every launch take
    tens of milliseconds; stripped, the very same code launches in a few.
    """
    strip = shutil.which("strip")
    if strip is not None:
        subprocess.run([strip, "-o", str(dest), str(source)], check=True)
    else:
        shutil.copyfile(source, dest)
    os.chmod(dest, 0o755)
    return dest


def environ_of(pid: int) -> dict[str, str]:
    """The environment ``pid`` was started with (empty once it is gone)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    pairs = (entry.decode("utf-8", "surrogateescape").partition("=") for entry in raw.split(b"\0") if entry)
    return {name: value for name, _, value in pairs}


# --- what a process holds ----------------------------------------------------------------


@dataclass(frozen=True)
class Holdings:
    """What one process holds at a moment."""

    fds: frozenset[tuple[int, str]]
    threads: frozenset[int]
    children: dict[int, str]

    @staticmethod
    def now() -> Holdings:
        return Holdings(fds=open_fds(), threads=threads(), children=children())

    def zombies(self) -> list[int]:
        return sorted(pid for pid, state in self.children.items() if state == "Z")

    def leaks_since(self, before: Holdings) -> dict[str, object]:
        """What is held now and was not before (empty: nothing leaked).
        Descriptors, threads and children that ended meanwhile are not
        leaks; every new one is, and so is any zombie."""
        leaks: dict[str, object] = {}
        new_fds = sorted(self.fds - before.fds)
        if new_fds:
            leaks["fds"] = new_fds
        new_threads = sorted(self.threads - before.threads)
        if new_threads:
            leaks["threads"] = [(tid, _thread_name(tid)) for tid in new_threads]
        new_children = {pid: s for pid, s in self.children.items() if pid not in before.children}
        if new_children:
            leaks["children"] = new_children
        if self.zombies():
            leaks["zombies"] = self.zombies()
        return leaks


def _thread_name(tid: int) -> str:
    try:
        with open(f"/proc/self/task/{tid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return "?"


def settled_leaks(before: Holdings, timeout: float = 30.0) -> dict[str, object]:
    """The leaks since ``before`` once they stop going away: reaper threads
    close a backend's pidfd and end just after it is reaped, so what is
    being released is given ``timeout`` seconds to finish. Empty if nothing
    leaked."""
    deadline = time.monotonic() + timeout
    interval = 0.001
    while True:
        leaks = Holdings.now().leaks_since(before)
        if not leaks or time.monotonic() > deadline:
            return leaks
        time.sleep(interval)
        interval = min(interval * 2, 0.05)


# --- the pool soak's worker process --------------------------------------------------------
#
# Workers are plain interpreters running this file (``python _soak_support.py
# CONFIG GATE_FD``), driven over their stdin and stdout with one JSON object
# per line. No multiprocessing: its ``spawn`` and ``forkserver`` contexts
# leave a helper process (the resource tracker, the fork server) running
# for the rest of the test session.
#
# The barrier is a pipe all workers inherit (the gate): each worker, once it
# has its round, says it is waiting and polls the gate's read end; when all
# have said so, the test writes one byte, which makes the gate readable for
# every worker at once. Nobody reads the byte until every worker has
# answered; then the test takes it back, closing the gate for the next round.


def worker_command(config: dict[str, str], gate_fd: int) -> list[str]:
    """The command line of one worker (``config``: socket_dir, log_dir,
    state_dir and the service definition's bytes in hex)."""
    return [sys.executable, os.path.abspath(__file__), json.dumps(config), str(gate_fd)]


def _say(out: TextIO, message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def counts(held: Holdings) -> dict[str, int]:
    return {"fds": len(held.fds), "threads": len(held.threads), "children": len(held.children)}


def worker_main(argv: list[str]) -> int:
    """One worker: ``{"round": VERSION}`` asks for the pool's backend of that
    version once the gate opens and answers ``{"got": ...}`` (or
    ``{"error": traceback}``); ``{"stop": true}`` drops the pool and its
    launcher and answers with what the worker holds then against what it
    held before it made them (once what the rounds released has settled),
    and ends the worker."""
    config = json.loads(argv[1])
    gate = int(argv[2])
    sd = rp.ServiceDefinition.from_bytes(bytes.fromhex(config["sd"]))
    me = os.getpid()
    out = sys.stdout
    before = Holdings.now()
    launcher = rp.CommandBackendLauncher.for_current_user(
        socket_dir=config["socket_dir"], log_dir=config["log_dir"], ready_timeout=WORKER_GUARD
    )
    pool = rp.BackendPool(launcher, config["state_dir"])
    _say(out, {"ready": me})
    for line in sys.stdin:
        request = json.loads(line)
        if "stop" in request:
            # What the launcher keeps for its lifetime (a directory watch)
            # goes with it; anything else still held is a leak.
            del pool, launcher
            gc.collect()
            leaks = settled_leaks(before)
            _say(
                out,
                {"before": counts(before), "after": counts(Holdings.now()), "leaks": repr(leaks) if leaks else ""},
            )
            return 0
        try:
            key = rp.BackendKey.for_service(sd, request["round"])
            _say(out, {"waiting": me})
            ready, _, _ = select.select([gate], [], [], WORKER_GUARD)
            if not ready:
                raise TimeoutError(f"the gate did not open within {WORKER_GUARD} s")
            handle = pool.get_or_launch(key, sd, rp.TraceContext.new_root())
            state = proc_stat(handle.pid)
            got = {
                "pid": handle.pid,
                "endpoint": handle.endpoint.path,
                "started_at_unix_ms": handle.daemon.started_at_unix_ms,
                # Exactly one worker per round spawned the backend: its child.
                "spawned_here": state is not None and state[1] == me,
            }
            del handle
            _say(out, {"got": got})
        except Exception:
            _say(out, {"error": traceback.format_exc()})
    return 1  # stdin closed without a stop


def kill_backends(pids: Iterable[int], binary: str) -> list[int]:
    """SIGKILLs those of ``pids`` that still run ``binary`` (through a pidfd,
    so a pid reused by another program is left alone); returns the pids it
    signalled. For teardown after a failure only."""
    signalled = []
    for pid in pids:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            exe = exe_of(pid)
            if exe is not None and exe.removesuffix(" (deleted)") == binary:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                signalled.append(pid)
        finally:
            os.close(pidfd)
    return signalled


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv))
