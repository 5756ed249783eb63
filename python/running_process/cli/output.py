"""What the command line does to its output streams while a command runs.

- :func:`library_log`: the library's log records (a failed launch logs a
  WARNING with the backend's log tail) are not printed by default, since the
  command prints the failure itself as one line; with ``-v`` they are, one
  record per line group, control characters escaped, after clearing a
  progress line on a terminal. Logging is restored afterwards, so the
  command can run inside another program.
- :func:`closed_pipe_quiet`: when the reader of stdout goes away
  (``running-process launch ... | head -1``), further output is dropped and
  the command finishes with its own exit code instead of a
  ``BrokenPipeError``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import running_process as rp
from running_process.cli.hints import printable

LIBRARY_LOGGER = "running_process"


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time of the record."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            stream = sys.stderr
            lines = [printable(line) for line in text.splitlines() or [""]]
            prefix = "\r\033[K" if stream.isatty() else ""
            stream.write(prefix + "\n".join(lines) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


@contextmanager
def library_log(verbose: bool) -> Iterator[None]:
    """Shows the library's log records on stderr (INFO and up) with
    ``verbose``; hides them otherwise. Restores the logger on exit."""
    logger = logging.getLogger(LIBRARY_LOGGER)
    saved = (logger.level, logger.propagate)
    handler: logging.Handler
    if verbose:
        handler = _StderrHandler(logging.INFO)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.setLevel(logging.INFO)
    else:
        handler = logging.NullHandler()
    logger.addHandler(handler)
    logger.propagate = False
    rp.refresh_logging()
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        rp.refresh_logging()


class _PipeGuard:
    """A text stream that drops output once its reader has gone away."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.broken = False

    def _closed(self) -> None:
        if not self.broken:
            self.broken = True
            # Nothing more reaches the reader; the buffered rest goes to
            # /dev/null so the interpreter's final flush does not fail.
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self._stream.fileno())
                os.close(devnull)
            except (OSError, ValueError, AttributeError):
                pass

    def write(self, text: str) -> int:
        if self.broken:
            return len(text)
        try:
            return int(self._stream.write(text))
        except BrokenPipeError:
            self._closed()
            return len(text)

    def flush(self) -> None:
        if self.broken:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._closed()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def closed_pipe_quiet() -> Iterator[None]:
    """Runs the body with ``sys.stdout`` guarded against a closed pipe."""
    original = sys.stdout
    guard = _PipeGuard(original)
    sys.stdout = guard
    try:
        yield
        guard.flush()
    finally:
        if sys.stdout is guard:
            sys.stdout = original
