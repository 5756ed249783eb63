"""Waiting for a condition with a generous guard that only turns a hang
into a failure; the pace of the checks never decides a result.

Standard library only: the soak worker processes import it too.
"""

from __future__ import annotations

import os
import select
import time
from typing import Callable, Union

# Generous bounds that only exist to turn a hang into a failure.
HANG_GUARD = 30.0


def poll_until(
    condition: Callable[[], bool],
    timeout: float = HANG_GUARD,
    what: Union[str, Callable[[], str]] = "condition",
) -> None:
    """Polls ``condition`` until it holds; fails after ``timeout`` seconds
    (``what``, or what it returns at that moment, names what was awaited).

    The interval only paces the polling; correctness never depends on it.
    """
    deadline = time.monotonic() + timeout
    interval = 0.0005
    while not condition():
        if time.monotonic() > deadline:
            text = what if isinstance(what, str) else what()
            raise AssertionError(f"timed out after {timeout} s waiting for {text}")
        time.sleep(interval)
        interval = min(interval * 2, 0.02)


def spin_until(condition: Callable[[], bool], timeout: float = HANG_GUARD, what: str = "condition") -> None:
    """Like ``poll_until`` without sleeping between checks (only yielding the
    CPU), for a condition whose first moment matters: a test that must act
    right after a backend's death shows through its pidfd."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        os.sched_yield()


def read_event(fd: int, timeout: float = HANG_GUARD) -> str:
    """One line from a FIFO opened non-blocking for reading."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no event within {timeout} s (got {data!r})")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 256)
            if not chunk and not data:
                # No writer yet, or it closed without writing: keep waiting.
                time.sleep(0.01)
            data += chunk
    return data.decode().strip()
