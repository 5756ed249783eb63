"""An unrelated process of the same user that a forged or stale pool
manifest names (as if its pid had been reused): it must never receive a
signal from the pool.

It reports every catchable signal it receives as ``signal N`` on stdout, and
answers each ``sync`` line on stdin with ``synced``: a signal sent before the
test wrote ``sync`` is reported before the answer, so everything printed
before ``synced`` is the complete list. SIGKILL and SIGSTOP cannot be
caught; the test sees them in ``/proc`` (gone, or state ``T``). Started in a
session of its own, so a signal to its process group would be seen too.
"""

import signal
import sys
from types import FrameType
from typing import Optional

CAUGHT = [
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGPIPE,
    signal.SIGALRM,
    signal.SIGTERM,
    signal.SIGCONT,
    signal.SIGTSTP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGWINCH,
]


def report(signum: int, frame: Optional[FrameType]) -> None:
    sys.stdout.write(f"signal {signum}\n")
    sys.stdout.flush()


def main() -> None:
    for sig in CAUGHT:
        signal.signal(sig, report)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "sync":
            print("synced", flush=True)


main()
