"""A pool over a test's private tree that remembers every backend it hands
out, for the pool tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import running_process as rp
from support.launch import BackendDirs, key_for
from support.leftovers import files_in


class Kit:
    """A pool over a private tree, with every backend it hands out recorded
    for teardown."""

    def __init__(
        self,
        dirs: BackendDirs,
        state_dir: Optional[Path] = None,
        verify_timeout: float = 5.0,
        **launcher_options: Any,
    ) -> None:
        self.dirs = dirs
        self.state_dir = state_dir if state_dir is not None else dirs.root / "state"
        self.launcher = dirs.launcher(**launcher_options)
        self.pool = rp.BackendPool(self.launcher, self.state_dir, verify_timeout=verify_timeout)
        self.sd = dirs.sd()
        self.key = key_for(self.sd)
        self.handles: list[rp.BackendHandle] = []

    def get(self) -> rp.BackendHandle:
        handle = self.pool.get_or_launch(self.key, self.sd, rp.TraceContext.new_root())
        self.handles.append(handle)
        return handle

    def manifest(self) -> Path:
        (path,) = self.state_dir.glob("*.json")
        return path

    def forge(self, **changes: Any) -> None:
        """Rewrites fields of the manifest's recorded daemon."""
        path = self.manifest()
        recorded = json.loads(path.read_text())
        recorded["daemon"].update(changes)
        path.write_text(json.dumps(recorded))

    def spawns(self) -> int:
        """Backends spawned so far (one log file each; a clean shutdown
        removes its log, so count before stopping)."""
        return len(files_in(self.dirs.log_dir))

    def recorded_pid(self) -> int:
        pid = json.loads(self.manifest().read_text())["daemon"]["pid"]
        assert isinstance(pid, int)
        return pid
