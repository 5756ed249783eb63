"""Launches with the process out of file descriptors, for the fault tests.

Usage: ``fault_emfile.py CONFIG_JSON``, where the JSON object holds
``socket_dir``, ``log_dir``, ``state_dir``, ``service_definition`` (hex of
``ServiceDefinition.to_bytes()``), ``version``, ``via`` (``launcher`` or
``pool``) and ``limit`` (the soft ``RLIMIT_NOFILE`` to run with).

After one ordinary launch (so that what the launcher keeps for reuse
exists), it lowers the descriptor limit and, for ``free`` = 0, 1, 2, ...
descriptors left free, fills every other descriptor with ``/dev/null`` and
launches. Each failure is recorded with what was left behind once the dummy
descriptors are closed again; the loop ends at the first launch that
succeeds. Then it launches once more with every descriptor available. The
report is one JSON object on stdout.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any, Callable, Optional

import running_process as rp


def children() -> dict[int, str]:
    """This process's child processes: pid -> state letter."""
    found: dict[int, str] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2 :].split()
        if int(fields[1]) == os.getpid():
            found[int(name)] = fields[0].decode()
    return found


def listing(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def pidfds() -> int:
    """Open pidfds: a backend's reaper thread closes the one it shares a
    moment after the backend's exit is recorded."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[pidfd]":
                count += 1
        except OSError:
            pass
    return count


def settle(condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    """Polls ``condition`` for a moment: a killed backend's reaper thread
    records the exit, then closes the pidfd it shares."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def fill(free: int) -> list[int]:
    """Opens ``/dev/null`` until the limit is reached, then closes ``free``
    of those descriptors again; returns the ones still open."""
    dummies: list[int] = []
    while True:
        try:
            dummies.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
        except OSError as e:
            if e.errno != 24:  # EMFILE
                raise
            break
    for _ in range(free):
        os.close(dummies.pop())
    return dummies


def describe(err: BaseException) -> dict[str, Any]:
    cause = err.__cause__
    return {
        "class": type(err).__name__,
        "reason": str(err),
        "errno": getattr(err, "errno", None),
        "os_errno": getattr(err, "os_errno", None),
        "operation": getattr(err, "operation", None),
        "cause": None
        if cause is None
        else {"class": type(cause).__name__, "errno": getattr(cause, "errno", None), "reason": str(cause)},
    }


def main() -> int:
    config = json.loads(sys.argv[1])
    sd = rp.ServiceDefinition.from_bytes(bytes.fromhex(config["service_definition"]))
    key = rp.BackendKey.for_service(sd, config["version"])
    launcher = rp.CommandBackendLauncher.for_current_user(
        socket_dir=config["socket_dir"], log_dir=config["log_dir"], ready_timeout=60.0
    )
    pool: Optional[rp.BackendPool] = (
        rp.BackendPool(launcher, config["state_dir"]) if config["via"] == "pool" else None
    )

    def launch() -> rp.BackendHandle:
        if pool is not None:
            return pool.get_or_launch(key, sd)
        return launcher.launch(key, sd)

    def stop(handle: rp.BackendHandle) -> Optional[int]:
        code = handle.shutdown(timeout=30.0)
        if pool is not None:
            pool.stop(key)
        return code

    report: dict[str, Any] = {"attempts": []}
    report["warm_up"] = stop(launch())
    # The baseline is taken once the warm-up backend's reaper has let go of
    # its pidfd, or a descriptor closed after it would never be matched.
    settle(lambda: pidfds() == 0)
    baseline_fds = fd_count()
    baseline_children = children()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (config["limit"], hard))
    report["limit"] = config["limit"]
    report["baseline_fds"] = baseline_fds

    for free in range(64):
        dummies = fill(free)
        handle: Optional[rp.BackendHandle] = None
        attempt: dict[str, Any] = {"free": free}
        try:
            handle = launch()
        except rp.RunningProcessError as e:
            attempt["error"] = describe(e)
        finally:
            for fd in dummies:
                os.close(fd)
        if handle is not None:
            attempt["launched"] = handle.pid
            attempt["exit"] = stop(handle)
            report["attempts"].append(attempt)
            break
        settle(lambda: fd_count() == baseline_fds and children() == baseline_children)
        attempt["left"] = {
            "children": {
                str(pid): state for pid, state in children().items() if pid not in baseline_children
            },
            "sockets": listing(config["socket_dir"]),
            "logs": listing(config["log_dir"]),
            "state": listing(config["state_dir"]),
            "extra_fds": fd_count() - baseline_fds,
        }
        report["attempts"].append(attempt)

    # Every descriptor available again, in the same process: a normal launch.
    handle = launch()
    handle.verify()
    report["after"] = {"pid": handle.pid, "exit": stop(handle)}
    report["left_at_end"] = {
        "children": {str(pid): state for pid, state in children().items() if pid not in baseline_children},
        "sockets": listing(config["socket_dir"]),
        "logs": listing(config["log_dir"]),
        "state": listing(config["state_dir"]),
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
