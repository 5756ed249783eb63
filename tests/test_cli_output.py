"""What the command line prints, run as the real program a user runs (a
subprocess, with its own stdout and stderr): a failure is one line and a
hint, ``-v`` adds the details and the log, a closed stdout ends quietly, a
progress line on a terminal never shares a line with an error, a missing
``--state-dir`` is an error, and ``servicedef write`` refuses a binary that
a launch would refuse."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from running_process import cli
from support.launch import VERSION, BackendDirs
from support.procfs import children

SERVICE = "v1echo"
KEY = f"shared/{SERVICE}@{VERSION}"
TIMEOUT = 120


@dataclass
class Prog:
    dirs: BackendDirs
    env: dict[str, str]

    @property
    def defs(self) -> Path:
        return self.dirs.root / "defs"

    @property
    def state(self) -> Path:
        return self.dirs.root / "st"

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "running_process", *args]

    def run(self, *args: str, cwd: Optional[str] = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args), capture_output=True, text=True, timeout=TIMEOUT, env=self.env, cwd=cwd
        )

    def write(self, name: str, binary: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.run(
            "servicedef", "write", name, "--binary", str(binary), "--root", str(self.dirs.version_dir),
            "--isolation", "shared", "--dir", str(self.defs), *extra,
        )  # fmt: skip

    def failing_backend(self, name: str = "exits", delay: float = 0.0) -> Path:
        """A backend that writes two lines (one with an escape sequence) and
        exits 3 after ``delay`` seconds, with a definition saved for it."""
        path = self.dirs.version_dir / name
        path.write_text(
            f"#!{sys.executable}\nimport sys, time\nprint('starting up', flush=True)\n"
            f"time.sleep({delay})\nprint('fatal: \\x1b[31mno config\\x1b[0m', file=sys.stderr)\n"
            "raise SystemExit(3)\n"
        )
        os.chmod(path, 0o755)
        assert self.write(name, path).returncode == 0
        return path


@pytest.fixture
def prog(dirs: BackendDirs) -> Iterator[Prog]:
    env = dict(os.environ, XDG_RUNTIME_DIR=str(dirs.root / "run"))
    env.pop("RUNNING_PROCESS_SERVICE_DEF_DIR", None)
    p = Prog(dirs, env)
    before = set(children())
    try:
        yield p
    finally:
        if p.state.exists():
            p.run("stop", "--all", "--state-dir", str(p.state))
        assert set(children()) - before == set()


def assert_one_line_failure(stderr: str, name: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 2, stderr
    assert lines[0].startswith(f"running-process: {name}: "), stderr
    assert lines[1].startswith("hint: "), stderr


def test_a_failed_launch_is_one_line_and_a_hint(prog: Prog) -> None:
    prog.failing_backend()
    result = prog.run(
        "launch", "exits", "--version", VERSION, "--dir", str(prog.defs), "--state-dir", str(prog.state)
    )
    assert result.returncode == cli.EXIT_FAILURE
    assert_one_line_failure(result.stderr, "BackendExitedError")
    assert "last log line: fatal: \\x1b[31mno config\\x1b[0m" in result.stderr
    assert "\x1b" not in result.stderr
    assert "WARNING" not in result.stderr


def test_verbose_shows_the_details_the_log_tail_and_the_librarys_log(prog: Prog) -> None:
    prog.failing_backend()
    result = prog.run(
        "launch", "exits", "--version", VERSION, "--dir", str(prog.defs), "--state-dir", str(prog.state), "-v"
    )
    assert result.returncode == cli.EXIT_FAILURE
    err = result.stderr
    assert "\x1b" not in err
    lines = err.splitlines()
    assert any(line.startswith("WARNING running_process.launch: launch of exits") for line in lines), err
    failure = next(
        i for i, line in enumerate(lines) if line.startswith("running-process: BackendExitedError: ")
    )
    assert lines[failure + 1].startswith("hint: ")
    details = [line.strip() for line in lines[failure + 2 :]]
    assert "returncode: 3" in details
    assert "log tail:" in details
    assert details[-2:] == ["starting up", "fatal: \\x1b[31mno config\\x1b[0m"]
    # -v is accepted before the command too.
    before = prog.run("-v", "ls", "--state-dir", str(prog.state))
    assert before.returncode == 0, before.stderr


def test_progress_on_a_terminal_never_shares_a_line_with_the_error(prog: Prog) -> None:
    prog.failing_backend("slow-exit", delay=1.5)
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            prog.argv(
                "launch", "slow-exit", "--version", VERSION, "--dir", str(prog.defs), "--state-dir", str(prog.state)
            ),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=terminal, env=prog.env,
        )  # fmt: skip
        os.close(terminal)
        terminal = -1
        seen = b""
        while True:
            ready, _, _ = select.select([controller], [], [], TIMEOUT)
            assert ready, "no output from the command"
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the command ended and closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(TIMEOUT) == cli.EXIT_FAILURE
        assert proc.stdout is not None and proc.stdout.read() == b""
        proc.stdout.close()
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    text = seen.decode().replace("\r\n", "\n")
    assert "launching" in text  # the progress line was shown ...
    # ... and cleared: once the clearing sequence is applied, the error and
    # the hint are lines of their own.
    shown = [line.rsplit("\r", 1)[-1].replace("\x1b[K", "") for line in text.split("\n")]
    shown = [line for line in shown if line.strip()]
    assert shown[0].startswith("running-process: BackendExitedError: "), text
    assert shown[1].startswith("hint: "), text
    assert len(shown) == 2, text


def test_a_closed_stdout_ends_the_command_quietly_with_its_own_exit_code(prog: Prog) -> None:
    """``running-process launch ... | head -1`` once head has gone."""
    assert prog.write(SERVICE, prog.dirs.script).returncode == 0
    for args in (
        ("launch", SERVICE, "--version", VERSION, "--dir", str(prog.defs), "--state-dir", str(prog.state)),
        ("ls", "--state-dir", str(prog.state)),
        ("ls", "--json", "--state-dir", str(prog.state)),
    ):
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader is gone before anything is written
        try:
            result = subprocess.run(
                prog.argv(*args),
                stdout=write_end,
                stderr=subprocess.PIPE,
                text=True,
                timeout=TIMEOUT,
                env=prog.env,
            )
        finally:
            os.close(write_end)
        assert result.returncode == 0, (args, result.stderr)
        assert result.stderr == "", (args, result.stderr)
    listed = prog.run("ls", "--json", "--state-dir", str(prog.state))
    assert KEY in listed.stdout  # the launch did happen


@pytest.mark.parametrize(
    "args",
    [
        ("ls",),
        ("stop", "--all"),
        ("probe", KEY),
    ],
)
def test_a_state_dir_that_does_not_exist_is_an_error(
    prog: Prog, tmp_path: Path, args: tuple[str, ...]
) -> None:
    assert prog.write(SERVICE, prog.dirs.script).returncode == 0
    missing = tmp_path / "no-such-state"
    result = prog.run(*args, "--state-dir", str(missing))
    assert result.returncode == cli.EXIT_NOT_FOUND
    assert_one_line_failure(result.stderr, "StateDirNotFoundError")
    assert not missing.exists()
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    result = prog.run(*args, "--state-dir", str(a_file))
    assert result.returncode == cli.EXIT_NOT_FOUND
    assert "is not a directory" in result.stderr


def test_servicedef_write_refuses_what_a_launch_would_refuse(prog: Prog, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("#!/bin/sh\n")
    os.chmod(outside, 0o755)
    not_executable = prog.dirs.version_dir / "plain"
    not_executable.write_text("data")
    os.chmod(not_executable, 0o644)
    cases = {
        "missing": (prog.dirs.version_dir / "nothere", prog.dirs.version_dir),
        "outside": (outside, prog.dirs.version_dir),
        "plain": (not_executable, prog.dirs.version_dir),
        "noroot": (prog.dirs.script, tmp_path / "no-root"),
    }
    for name, (binary, root) in cases.items():
        result = prog.run(
            "servicedef", "write", name, "--binary", str(binary), "--root", str(root), "--dir", str(prog.defs)
        )
        assert result.returncode == cli.EXIT_REFUSED, (name, result.stderr)
        assert_one_line_failure(result.stderr, "BinaryPolicyError")
        assert not (prog.defs / f"{name}.servicedef").exists()
    # A relative binary path is taken against the working directory.
    relative = prog.run(
        "servicedef", "write", "rel", "--binary", prog.dirs.script.name, "--root", ".", "--dir", str(prog.defs),
        cwd=str(prog.dirs.version_dir),
    )  # fmt: skip
    assert relative.returncode == 0, relative.stderr
    shown = prog.run("servicedef", "show", "rel", "--dir", str(prog.defs), "--json")
    assert str(prog.dirs.script) in shown.stdout
