"""The documentation's examples run as written.

Every fenced code block of ``README.md`` and ``docs/*.md`` whose info string
is ``python runnable`` or ``sh runnable`` is executed (GitHub shows the first
word as the language and ignores the rest): a Python block with this
interpreter (``sys.executable``, the virtual environment's), a shell block
with ``bash -euo pipefail`` and the environment's script directory (where
``running-process`` and ``running-process-echo-backend`` are installed)
first on ``PATH``. A block fails the test when it exits non-zero or runs
longer than :data:`TIMEOUT` (a hang guard, not a pace); the failure names the
block's file and line and shows its output.

Model: **every block stands alone.** Each runs in a fresh temporary working
directory, with its own private (0700) ``XDG_RUNTIME_DIR`` (short, so
backend socket paths fit ``sun_path``), ``XDG_CONFIG_HOME``,
``XDG_STATE_HOME``, ``XDG_CACHE_HOME`` and ``HOME``; nothing of the test's
environment that names a running_process directory is passed on. A block
never sees what another block left, so blocks run in any order and in
parallel, and a block that needs a service definition or a running backend
makes it itself.

Nothing a block starts may outlive it. After the block, ``running-process
stop --all`` runs in the block's environment (it stops what the block left
in its pool, as a reader would), and then no process may remain whose
environment names the block's ``XDG_RUNTIME_DIR``. That check is sound: the
directory is new to the block, and every process the block starts inherits
the variable (a launcher passes its environment on, scrubbing only loader
variables), so a process that carries it was started by the block; and it is
complete, whatever the executable (a backend started from a ``#!`` script runs
as its interpreter, so a check by executable name would miss it). A process
found is killed, and the test fails naming it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.procfs import environ_of, process_running

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LANGUAGES = ("python", "sh")
TIMEOUT = 120.0
"""Seconds a block may run: only a real hang reaches it (blocks take about a
second)."""
STOP_TIMEOUT = 60.0
SETTLE = 10.0
"""Seconds what a block started gets to finish ending after ``stop --all``."""
BINDIR = sysconfig.get_path("scripts")

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it starts, its info string and text."""

    path: Path
    line: int
    """1-based line of the opening fence."""
    info: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    @property
    def words(self) -> list[str]:
        return self.info.split()

    @property
    def runnable(self) -> bool:
        return "runnable" in self.words[1:]


def fenced_blocks(path: Path) -> Iterator[Block]:
    """The fenced code blocks of a Markdown file (CommonMark fences of three
    or more backticks or tildes, indented ones inside lists included; the
    indentation of the opening fence is removed from every line)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None or ("`" in opening["info"] and opening["fence"][0] == "`"):
            i += 1
            continue
        indent = len(opening["indent"])
        fence = opening["fence"]
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = _FENCE.match(lines[j])
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            text = lines[j]
            body.append(text[indent:] if text[:indent].strip() == "" else text.lstrip())
            j += 1
        yield Block(path, i + 1, opening["info"].strip(), "\n".join(body) + "\n")
        i = j + 1


ALL_BLOCKS = [block for path in DOCUMENTS for block in fenced_blocks(path)]
RUNNABLE = [block for block in ALL_BLOCKS if block.runnable]


def test_the_documentation_has_runnable_blocks() -> None:
    """A docs test that finds nothing to run proves nothing: the README's
    quick starts, at least, are runnable."""
    assert RUNNABLE, "no `python runnable` or `sh runnable` block found"
    assert any(block.path.name == "README.md" for block in RUNNABLE), "the README has no runnable block"


def test_every_runnable_block_is_in_a_language_the_test_runs() -> None:
    strays = [f"{b.where}: {b.info!r}" for b in RUNNABLE if b.words[0] not in LANGUAGES]
    assert not strays, f"runnable blocks must be `python runnable` or `sh runnable`: {strays}"


# --- running one block ------------------------------------------------------------------------


@dataclass
class Sandbox:
    """A block's private working directory and environment."""

    cwd: Path
    runtime_dir: Path
    env: dict[str, str]


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    os.chmod(tmp_path, 0o700)
    # Short: a backend socket path is the runtime directory plus 88 bytes,
    # and must fit in 107 (see tests/conftest.py `short_dir`).
    runtime_dir = Path(tempfile.mkdtemp(prefix="rp", dir="/tmp"))
    try:
        os.chmod(runtime_dir, 0o700)
        dirs = {name: tmp_path / name for name in ("work", "config", "state", "cache", "home")}
        for path in dirs.values():
            path.mkdir(mode=0o700)
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("RUNNING_PROCESS_", "XDG_", "PYTEST_", "LISTEN_"))
        }
        env.update(
            PATH=os.pathsep.join([BINDIR, env.get("PATH", os.defpath)]),
            HOME=str(dirs["home"]),
            XDG_RUNTIME_DIR=str(runtime_dir),
            XDG_CONFIG_HOME=str(dirs["config"]),
            XDG_STATE_HOME=str(dirs["state"]),
            XDG_CACHE_HOME=str(dirs["cache"]),
            PYTHONDONTWRITEBYTECODE="1",
        )
        yield Sandbox(dirs["work"], runtime_dir, env)
    finally:
        shutil.rmtree(runtime_dir, ignore_errors=True)


def _command(block: Block, script: Path) -> list[str]:
    if block.words[0] == "python":
        return [sys.executable, str(script)]
    return ["bash", "-euo", "pipefail", str(script)]


def _run(block: Block, box: Sandbox) -> tuple[int, str]:
    """Runs the block; its exit status and output (a block still running
    after :data:`TIMEOUT` is killed, with its process group, and fails)."""
    script = box.cwd.parent / f"block-{block.line}.{'py' if block.words[0] == 'python' else 'sh'}"
    script.write_text(block.code, encoding="utf-8")
    with subprocess.Popen(
        _command(block, script),
        cwd=box.cwd,
        env=box.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        umask=0o022,
    ) as proc:
        try:
            output, _ = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            text = output.decode(errors="replace")
            pytest.fail(f"{block.where}: still running after {TIMEOUT:.0f} s\n{text}", pytrace=False)
    return proc.returncode, output.decode(errors="replace")


def _started_by(box: Sandbox) -> dict[int, str]:
    """Running processes whose environment names the block's runtime
    directory, with their command lines."""
    found: dict[int, str] = {}
    wanted = str(box.runtime_dir)
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        if environ_of(pid).get("XDG_RUNTIME_DIR") != wanted or not process_running(pid):
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                found[pid] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
    return found


def _leftovers(box: Sandbox) -> dict[int, str]:
    """Stops the block's pool, then waits for what the block started to be
    gone; what is still running after :data:`SETTLE` seconds is killed and
    returned."""
    subprocess.run(
        ["running-process", "stop", "--all"],
        cwd=box.cwd,
        env=box.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=STOP_TIMEOUT,
        check=False,
    )
    deadline = time.monotonic() + SETTLE
    while (left := _started_by(box)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


@pytest.mark.parametrize("block", RUNNABLE, ids=[block.where for block in RUNNABLE])
def test_block_runs(block: Block, sandbox: Sandbox) -> None:
    try:
        returncode, output = _run(block, sandbox)
    finally:
        left = _leftovers(sandbox)
    if returncode != 0:
        pytest.fail(
            f"{block.where} ({block.info}) exited with {returncode}\n--- output ---\n{output}",
            pytrace=False,
        )
    if left:
        described = "\n".join(f"  pid {pid}: {cmdline}" for pid, cmdline in left.items())
        pytest.fail(f"{block.where} left processes running (now killed):\n{described}", pytrace=False)
