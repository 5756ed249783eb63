"""The worker of the cross-process pool soak (test_soak.py), and a teardown
helper for the soak tests.

Workers are plain interpreters running :func:`worker_main` (see
:func:`worker_command`), driven over their stdin and stdout with one JSON
object per line. No multiprocessing: its ``spawn`` and ``forkserver``
contexts leave a helper process (the resource tracker, the fork server)
running for the rest of the test session. So this module imports nothing
from pytest.

The barrier is a pipe all workers inherit (the gate): each worker, once it
has its round, says it is waiting and polls the gate's read end; when all
have said so, the test writes one byte, which makes the gate readable for
every worker at once. Nobody reads the byte until every worker has
answered; then the test takes it back, closing the gate for the next round.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import running_process as rp

from .leftovers import Holdings, settled_leaks
from .procfs import exe_of, proc_stat

# Only turns a hang into a failure.
WORKER_GUARD = 60.0

TESTS = Path(__file__).resolve().parent.parent


def worker_command(config: dict[str, str], gate_fd: int) -> list[str]:
    """The command line of one worker (``config``: socket_dir, log_dir,
    state_dir and the service definition's bytes in hex)."""
    program = (
        "import sys; "
        f"sys.path.insert(0, {str(TESTS)!r}); "
        "from support.soak import worker_main; "
        "sys.exit(worker_main(sys.argv))"
    )
    return [sys.executable, "-c", program, json.dumps(config), str(gate_fd)]


def _say(out: TextIO, message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


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
            leaks = settled_leaks(before, check_threads=True)
            _say(
                out,
                {
                    "before": before.counts(),
                    "after": Holdings.now().counts(),
                    "leaks": repr(leaks) if leaks else "",
                },
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
