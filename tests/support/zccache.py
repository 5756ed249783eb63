"""The published zccache compiler cache (from the package index), the
daemon this package is meant to serve, installed in a virtual environment
of its own: its wheel also installs a top-level ``tests`` package, which
must not meet ours.

Facts the tests rely on (zccache 1.15.8):

- the wheel's ``zccache`` binary runs as the daemon when started under the
  name ``zccache-daemon``; ``zccache start`` copies it to
  ``$ZCCACHE_CACHE_DIR/v<version>/zccache-daemon`` and starts it as
  ``zccache-daemon --foreground --endpoint <ep> --log-file <log>``;
- with ``ZCCACHE_CACHE_DIR`` set, the endpoint is
  ``$ZCCACHE_CACHE_DIR/v<version>/daemon-v<version>.sock``, its lock file
  ``daemon-v<version>.lock`` (the pid as text) and its identity file
  ``daemon.running-process.json``, all in that directory (0700);
- the identity is the current generation's, BLAKE3 only (the legacy
  SHA-256 slot is zeros), namespace ``default``;
- the daemon rebuilds its environment from the password database, so only
  ``ZCCACHE_CACHE_DIR`` and ``XDG_RUNTIME_DIR`` keep it in the test's tree
  (it still creates an empty ``~/.zccache``, removed afterwards);
- ``zccache start`` may return before the identity file exists; the daemon
  is up once the lock file and the identity file name the same pid.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .waits import HANG_GUARD, poll_until

VERSION = "1.15.8"
VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "running-process" / "zccache-venv"


def zccache_binary() -> Path:
    """The ``zccache`` binary of the private virtual environment, installed
    from the package index on first use."""
    binary = VENV / "bin" / "zccache"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run(
            [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", f"zccache=={VERSION}"],
            check=True,
        )
    return binary


@dataclass
class ZccacheTree:
    """A private cache directory for one test (``ZCCACHE_CACHE_DIR``)."""

    cache_dir: Path
    runtime_dir: Path

    @property
    def version_dir(self) -> Path:
        return self.cache_dir / f"v{VERSION}"

    @property
    def endpoint(self) -> Path:
        return self.version_dir / f"daemon-v{VERSION}.sock"

    @property
    def identity_file(self) -> Path:
        return self.version_dir / "daemon.running-process.json"

    @property
    def lock_file(self) -> Path:
        return self.version_dir / f"daemon-v{VERSION}.lock"

    def env(self) -> dict[str, str]:
        return dict(
            os.environ,
            ZCCACHE_CACHE_DIR=str(self.cache_dir),
            XDG_RUNTIME_DIR=str(self.runtime_dir),
            ZCCACHE_STOP_TIMEOUT_SECS="3",
        )

    def start(self) -> int:
        """``zccache start``; returns the daemon's pid once its lock file and
        identity file both name it."""
        subprocess.run(
            [str(zccache_binary()), "start"],
            env=self.env(),
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=HANG_GUARD,
        )
        found: list[int] = []

        def up() -> bool:
            pid = self.pid()
            if pid is None:
                return False
            found.append(pid)
            return True

        poll_until(up, timeout=HANG_GUARD, what="the zccache daemon's identity file")
        return found[-1]

    def pid(self) -> Optional[int]:
        """The pid the lock file and the identity file agree on, if any."""
        try:
            locked = int(self.lock_file.read_text().strip())
            published = int(json.loads(self.identity_file.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None
        return locked if locked == published else None
