"""Runs a command as a child subreaper, for the fault tests.

Usage: ``fault_subreaper.py COMMAND [ARG ...]``

Marks itself a child subreaper (``PR_SET_CHILD_SUBREAPER``), so that a
process orphaned anywhere below it (a backend whose launcher was killed) is
re-parented here instead of to pid 1, which may never reap it. Starts the
command, prints ``child <pid>``, then reaps every process that ends up as
its child, printing ``reaped <pid> <returncode>`` for each (the return code
as :mod:`subprocess` gives it: minus the signal number for a signal), and
exits 0 once none is left.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36


def main() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        print(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(errno)}", file=sys.stderr)
        return 2
    # Started with subprocess only to be spawned; waited for below like any
    # other child, never through the Popen object.
    child = subprocess.Popen(sys.argv[1:])
    print(f"child {child.pid}", flush=True)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 0
        print(f"reaped {pid} {os.waitstatus_to_exitcode(status)}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
