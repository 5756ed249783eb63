"""Backends for the tests to launch, the private tree they live in, and
launches that are always cleaned up (see the ``dirs`` and ``launches``
fixtures in ``conftest.py``).

Every backend these tests start is a real process listening on a real Unix
socket in a short private directory.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import running_process as rp

from .waits import HANG_GUARD

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
BACKENDS = TESTS / "backends"
V1_BACKEND = BACKENDS / "v1_backend.py"
FAULT_BACKEND = BACKENDS / "fault_backend.py"
PYTHON_ECHO = Path(rp.__file__).parent / "examples" / "echo_backend.py"

SERVICE = "v1echo"
VERSION = "1.0.0"

# Only turns a hang into a failure.
READY_TIMEOUT = 30.0


def new_launcher(**kwargs: Any) -> rp.CommandBackendLauncher:
    """``CommandBackendLauncher.for_current_user(**kwargs)``."""
    return rp.CommandBackendLauncher.for_current_user(**kwargs)


def key_for(sd: rp.ServiceDefinition, version: str = VERSION) -> rp.BackendKey:
    return rp.BackendKey.for_service(sd, version)


# --- backend installation ----------------------------------------------------


def python_script(source: Path) -> bytes:
    """A Python program with this interpreter in its ``#!`` line."""
    return f"#!{sys.executable}\n".encode() + source.read_bytes()


def v1_script() -> bytes:
    """The v1 test backend with this interpreter in its ``#!`` line."""
    return python_script(V1_BACKEND)


def install(path: Path, content: bytes, mode: int = 0o755) -> Path:
    """Writes ``content`` to ``path`` and sets ``mode`` exactly (no umask)."""
    path.write_bytes(content)
    os.chmod(path, mode)
    return path


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


@dataclass
class BackendDirs:
    """A private tree: ``root`` (0700, short path) holding the per-version
    allow-list root ``version_dir`` (0755) with the v1 backend ``script``
    (0755) in it, and where the launcher's socket and log directories go
    (not created)."""

    root: Path
    version_dir: Path
    script: Path
    socket_dir: Path
    log_dir: Path

    def sd(self, binary: Optional[Union[Path, str]] = None, **overrides: Any) -> rp.ServiceDefinition:
        """A SHARED definition of the backend (``binary`` replaces the script)."""
        fields: dict[str, Any] = {
            "service_name": SERVICE,
            "binary_path": str(self.script if binary is None else binary),
            "per_version_binary_dir": str(self.version_dir),
            "isolation": rp.Isolation.SHARED,
        }
        fields.update(overrides)
        return rp.ServiceDefinition(**fields)

    def script_with(self, name: str, shebang: str, prelude: str = "") -> Path:
        """The v1 backend installed as ``name`` in the per-version root under
        another ``#!`` line (``shebang``, without ``#!``), with Python
        ``prelude`` run first."""
        body = self.script.read_bytes().split(b"\n", 1)[1]
        head = f"#!{shebang}\n" + (f"{prelude}\n" if prelude else "")
        return install(self.version_dir / name, head.encode() + body)

    def launcher(self, **kwargs: Any) -> rp.CommandBackendLauncher:
        """A launcher for the current user using this tree's directories."""
        options: dict[str, Any] = {
            "socket_dir": str(self.socket_dir),
            "log_dir": str(self.log_dir),
            "ready_timeout": READY_TIMEOUT,
        }
        options.update(kwargs)
        return new_launcher(**options)


def make_dirs(root: Path) -> BackendDirs:
    """The tree of :class:`BackendDirs` in ``root`` (a short private
    directory)."""
    version_dir = root / VERSION
    version_dir.mkdir()
    os.chmod(version_dir, 0o755)
    script = install(version_dir / "backend", v1_script())
    return BackendDirs(
        root=root,
        version_dir=version_dir,
        script=script,
        socket_dir=root / "s",
        log_dir=root / "logs",
    )


def install_rust_echo(
    dirs: BackendDirs, rust_example: Path, name: str = "rp-echo", *, stripped: bool = False
) -> Path:
    """The Rust example backend, copied into the per-version root (without
    its debug sections if ``stripped``: see :func:`install_stripped`)."""
    if stripped:
        return install_stripped(rust_example, dirs.version_dir / name)
    return install(dirs.version_dir / name, rust_example.read_bytes())


def install_python_echo(dirs: BackendDirs, name: str = "py-echo") -> Path:
    """The package's Python example backend, in the per-version root."""
    return install(dirs.version_dir / name, python_script(PYTHON_ECHO))


def install_fault_backend(dirs: BackendDirs, name: str = "fault") -> Path:
    return install(dirs.version_dir / name, python_script(FAULT_BACKEND))


def env_lines(log_path: str) -> list[str]:
    """The ``env NAME=value`` lines the v1 backend printed (prefix removed)."""
    with open(log_path, encoding="utf-8", errors="replace") as f:
        return [line[4:].rstrip("\n") for line in f if line.startswith("env ")]


# --- launches that always get cleaned up --------------------------------------------


@dataclass
class Launches:
    """Launches backends and remembers every handle, for teardown (the
    ``launches`` fixture)."""

    handles: list[rp.BackendHandle] = field(default_factory=list)

    def launch(
        self,
        launcher: rp.CommandBackendLauncher,
        key: rp.BackendKey,
        sd: rp.ServiceDefinition,
        trace: Optional[rp.TraceContext] = None,
    ) -> rp.BackendHandle:
        handle = launcher.launch(key, sd, trace if trace is not None else rp.TraceContext.new_root())
        self.handles.append(handle)
        return handle

    def launch_with(
        self,
        launcher: rp.CommandBackendLauncher,
        key: rp.BackendKey,
        sd: rp.ServiceDefinition,
        *,
        endpoint: Optional[rp.Endpoint] = None,
        arg_values: Optional[dict[str, str]] = None,
    ) -> rp.BackendHandle:
        """``launch`` with a fixed endpoint and argument values."""
        handle = launcher.launch(
            key, sd, rp.TraceContext.new_root(), endpoint=endpoint, arg_values=arg_values
        )
        self.handles.append(handle)
        return handle


def echo(handle: rp.BackendHandle, payload: bytes) -> bytes:
    """Sends ``payload`` to an echo backend and returns all it sends back."""
    with handle.connect() as conn:
        conn.settimeout(HANG_GUARD)
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# --- processes racing for one daemon at a fixed endpoint ---------------------------------

RACER = BACKENDS / "fixed_endpoint_racer.py"


def race_for_fixed_endpoint(
    n: int, job: dict[str, Any], env: Optional[dict[str, str]] = None, delay: float = 2.0
) -> list[tuple[int, float]]:
    """Starts ``n`` interpreters (plain subprocesses, so nothing of them
    outlives the race) that launch the daemon of ``job`` (see
    ``backends/fixed_endpoint_racer.py``) at the same moment; returns each
    one's ``(daemon pid, seconds)``."""
    job = dict(job, start_at=time.time() + delay)
    procs = [
        subprocess.Popen(
            [sys.executable, str(RACER), json.dumps(job)],
            env=dict(os.environ, **(env or {})),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=HANG_GUARD * 2)
        assert proc.returncode == 0, out
        pid, seconds = out.split()
        results.append((int(pid), float(seconds)))
    return results
