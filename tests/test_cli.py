"""The ``running-process`` command line: every command in text and JSON form,
failures (one line plus a hint, never a traceback) and exit codes.

Commands run in-process through ``running_process.cli.main``; a few run as
real subprocesses. Every test works in a short private directory (sockets,
logs, pool state, service definitions) and stops what it launched.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import running_process as rp
from running_process import cli
from running_process.cli import commands as cli_commands
from support.launch import VERSION, BackendDirs
from support.procfs import children, process_running
from support.waits import poll_until

SERVICE = "v1echo"
KEY = f"shared/{SERVICE}@{VERSION}"


@dataclass
class Cli:
    dirs: BackendDirs
    capsys: pytest.CaptureFixture[str]
    state_dir: Path
    def_dir: Path

    def run(self, *argv: str) -> tuple[int, str, str]:
        """Runs the CLI; (exit code, stdout, stderr)."""
        self.capsys.readouterr()
        code = cli.main(list(argv))
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *argv: str) -> tuple[int, Any]:
        code, out, _ = self.run(*argv, "--json")
        return code, json.loads(out)

    def write(self, *extra: str) -> tuple[int, str, str]:
        return self.run(
            "servicedef", "write", SERVICE,
            "--binary", str(self.dirs.script), "--root", str(self.dirs.version_dir),
            "--isolation", "shared", "--dir", str(self.def_dir), *extra,
        )  # fmt: skip

    def launch(self, *extra: str) -> tuple[int, str, str]:
        return self.run(
            "launch", SERVICE, "--version", VERSION, "--dir", str(self.def_dir),
            "--state-dir", str(self.state_dir), "--ready-timeout", "30", *extra,
        )  # fmt: skip

    def sd(self) -> tuple[str, str]:
        return "--dir", str(self.def_dir)

    def st(self) -> tuple[str, str]:
        return "--state-dir", str(self.state_dir)


@pytest.fixture
def c(
    dirs: BackendDirs, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Cli]:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(dirs.root / "run"))
    monkeypatch.setenv(rp.ENV_SERVICE_DEF_DIR, str(dirs.root / "defs"))
    kit = Cli(dirs, capsys, dirs.root / "st", dirs.root / "defs")
    before = set(children())
    try:
        yield kit
    finally:
        try:
            cli.main(["stop", "--all", "--state-dir", str(kit.state_dir)])
        finally:
            for pid in set(children()) - before:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def assert_one_line_failure(err: str, name: str) -> None:
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"running-process: {name}: "), err
    assert len(lines) <= 2, err
    if len(lines) == 2:
        assert lines[1].startswith("hint: "), err
    assert "Traceback" not in err


# --- help and entry points ---------------------------------------------------------


def test_help_lists_commands_and_exit_codes(c: Cli) -> None:
    code, out, _ = c.run("--help")
    assert code == 0
    for word in ("servicedef", "launch", "ls", "stop", "probe", "doctor", "demo", "exit codes:"):
        assert word in out
    assert "4  refused or insecure" in out
    for value in (cli.EXIT_OK, cli.EXIT_FAILURE, cli.EXIT_USAGE, cli.EXIT_NOT_FOUND, cli.EXIT_REFUSED):
        assert f"* {value} (" in (cli.__doc__ or "")


def test_python_dash_m_help_subprocess() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "running_process", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "exit codes:" in result.stdout and "doctor" in result.stdout


def test_console_script_subprocess(dirs: BackendDirs) -> None:
    script = Path(sys.executable).parent / "running-process"
    found = script if script.exists() else shutil.which("running-process")
    if found is None:
        pytest.skip("running-process console script not on PATH")
    env = dict(os.environ, XDG_RUNTIME_DIR=str(dirs.root / "run"))
    result = subprocess.run(
        [str(found), "servicedef", "show", "missing", "--dir", str(dirs.root / "defs"), "--json"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == cli.EXIT_NOT_FOUND
    assert json.loads(result.stdout)["error"] == "ServiceDefinitionNotFoundError"
    assert_one_line_failure(result.stderr, "ServiceDefinitionNotFoundError")


def test_usage_errors_exit_2(c: Cli) -> None:
    assert c.run("nosuchcommand")[0] == 2
    assert c.run("launch", SERVICE)[0] == 2  # --version is required
    code, _, err = c.run("stop", *c.st())
    assert code == 2 and "exactly one of KEY or --all" in err
    assert c.run("stop", KEY, "--all", *c.st())[0] == 2
    code, _, err = c.run("stop", "not-a-key", *c.st())
    assert code == 2
    assert_one_line_failure(err, "InvalidKeyError")
    code, _, err = c.run("probe", "nonsense:x/svc@1.0.0", *c.st())
    assert code == 2
    assert_one_line_failure(err, "InvalidNameError")


def test_json_accepted_before_and_after_the_command(c: Cli) -> None:
    c.state_dir.mkdir(mode=0o700)
    code, out, _ = c.run("--json", "ls", *c.st())
    assert code == 0 and json.loads(out) == []
    code, out, _ = c.run("ls", "--json", *c.st())
    assert code == 0 and json.loads(out) == []


# --- servicedef ------------------------------------------------------------------------


def test_servicedef_write_show_validate_text(c: Cli) -> None:
    code, out, err = c.write("--min-version", "1.0.0", "--allow", "1.0.0", "1.0.1", "--label", "team=build")
    assert code == 0, err
    path = out.strip()
    assert path == str(c.def_dir / f"{SERVICE}.servicedef")
    assert os.stat(path).st_mode & 0o777 == 0o600
    code, out, _ = c.run("servicedef", "show", SERVICE, *c.sd())
    assert code == 0
    assert "shared" in out and "1.0.0, 1.0.1" in out and "team=build" in out and str(c.dirs.script) in out
    code, out, _ = c.run("servicedef", "validate", path)
    assert code == 0 and out.strip() == f"{path}: ok (service {SERVICE})"


def test_servicedef_write_show_validate_json(c: Cli) -> None:
    code, data = c.json(
        "servicedef", "write", "other", "--binary", str(c.dirs.script), "--root", str(c.dirs.version_dir),
        "--instance", "builders", "--label", "a=1", "b=2", *c.sd(),
    )  # fmt: skip
    assert code == 0
    assert data["ok"] is True
    assert data["service_definition"]["isolation"] == "explicit"
    assert data["service_definition"]["instance_id"] == "explicit:builders"
    code, shown = c.json("servicedef", "show", "other", *c.sd())
    assert code == 0 and shown == data["service_definition"]
    assert shown["labels"] == {"a": "1", "b": "2"}
    assert rp.ServiceDefinition.load("other", c.def_dir).explicit_instance == "builders"
    code, valid = c.json("servicedef", "validate", data["path"])
    assert code == 0 and valid["ok"] is True and valid["service_definition"] == shown
    assert shown["listener"] == "inherit"


def test_servicedef_write_listener_bind(c: Cli) -> None:
    code, data = c.json(
        "servicedef", "write", "binds", "--binary", str(c.dirs.script), "--root", str(c.dirs.version_dir),
        "--listener", "bind", *c.sd(),
    )  # fmt: skip
    assert code == 0 and data["service_definition"]["listener"] == "bind"
    assert rp.ServiceDefinition.load("binds", c.def_dir).listener == rp.Listener.BIND
    code, out, _ = c.run("servicedef", "show", "binds", *c.sd())
    assert code == 0 and any(line.split() == ["listener", "bind"] for line in out.splitlines())


def test_servicedef_show_unknown_exits_3(c: Cli) -> None:
    code, out, err = c.run("servicedef", "show", "nope", *c.sd())
    assert code == cli.EXIT_NOT_FOUND and out == ""
    assert_one_line_failure(err, "ServiceDefinitionNotFoundError")
    assert "hint: write it with" in err
    code, data = c.json("servicedef", "show", "nope", *c.sd())
    assert code == 3 and data["ok"] is False and data["exit_code"] == 3


def test_servicedef_write_invalid_fields_exit_2(c: Cli) -> None:
    code, _, err = c.write("--min-version", "1.0")
    assert code == cli.EXIT_USAGE
    assert "Traceback" not in err and err.startswith("running-process: ")
    code, _, err = c.write("--label", "novalue")
    assert code == cli.EXIT_USAGE
    assert_one_line_failure(err, "InvalidLabelError")
    code, _, err = c.run(
        "servicedef",
        "write",
        "Bad_Name",
        "--binary",
        str(c.dirs.script),
        "--root",
        str(c.dirs.version_dir),
        *c.sd(),
    )
    assert code == cli.EXIT_USAGE
    assert "Traceback" not in err


def test_servicedef_validate_failures(c: Cli, tmp_path: Path) -> None:
    code, _, err = c.run("servicedef", "validate", str(c.dirs.root / "absent.servicedef"))
    assert code == cli.EXIT_NOT_FOUND
    assert "Traceback" not in err
    c.def_dir.mkdir(mode=0o700)
    garbage = c.def_dir / "junk.servicedef"
    garbage.write_bytes(b"\xff\xff\xff not protobuf")
    os.chmod(garbage, 0o600)
    code, data = c.json("servicedef", "validate", str(garbage))
    assert code == cli.EXIT_FAILURE and data["ok"] is False
    _, _, err = c.run("servicedef", "validate", str(garbage))
    assert_one_line_failure(err, data["error"])


def test_servicedef_in_insecure_dir_exits_4(c: Cli) -> None:
    assert c.write()[0] == 0
    os.chmod(c.def_dir, 0o755)  # readable by others, writable by us only: fine
    assert c.run("servicedef", "show", SERVICE, *c.sd())[0] == 0
    os.chmod(c.def_dir, 0o777)
    code, _, err = c.run("servicedef", "show", SERVICE, *c.sd())
    assert code == cli.EXIT_REFUSED
    assert_one_line_failure(err, "InsecureDirectoryError")
    assert f"chmod go-w {c.def_dir}" in err
    code, _, err = c.launch()
    assert code == cli.EXIT_REFUSED
    os.chmod(c.def_dir, 0o700)
    os.chmod(c.def_dir / f"{SERVICE}.servicedef", 0o666)
    code, _, err = c.run("servicedef", "show", SERVICE, *c.sd())
    assert code == cli.EXIT_REFUSED
    assert_one_line_failure(err, "InsecureFileError")
    assert "chmod go-w" in err


# --- launch, ls, probe, stop ---------------------------------------------------------


def test_launch_ls_probe_stop_text(c: Cli) -> None:
    assert c.write()[0] == 0
    code, out, err = c.launch()
    assert code == 0, err
    assert err == ""  # not a TTY: no progress
    assert out.startswith(f"launched {KEY} (verified) in ")
    pid = int(next(line.split()[1] for line in out.splitlines() if line.split()[:1] == ["pid"]))
    for label in ("executable", "sha256", "endpoint", "log", "trace", "time"):  # a first-generation backend
        assert any(line.split()[:1] == [label] for line in out.splitlines()), label
    assert process_running(pid)
    code, out, _ = c.launch()
    assert code == 0 and out.startswith(f"adopted running {KEY}")
    code, out, _ = c.run("ls", *c.st())
    assert code == 0
    header, row = out.strip().splitlines()
    assert header.split() == ["KEY", "PID", "VERSION", "UPTIME", "ALIVE", "ENV", "ENDPOINT"]
    assert row.split()[:3] == [KEY, str(pid), VERSION] and row.split()[4:6] == ["yes", "inherit"]
    code, out, _ = c.run("probe", KEY, *c.st())
    assert code == 0 and out.splitlines()[0] == f"{KEY}: ok"
    code, out, _ = c.run("stop", KEY, *c.st())
    assert code == 0 and out.strip() == f"stopped {KEY}"
    poll_until(lambda: not process_running(pid), what="the backend to end")
    code, _, err = c.run("stop", KEY, *c.st())
    assert code == cli.EXIT_NOT_FOUND
    assert_one_line_failure(err, "NotRunningError")
    code, _, err = c.run("probe", KEY, *c.st())
    assert code == cli.EXIT_NOT_FOUND
    assert_one_line_failure(err, "NotFoundError")
    code, out, _ = c.run("ls", *c.st())
    assert code == 0 and out.startswith("no backends recorded")


def test_launch_ls_probe_stop_json(c: Cli) -> None:
    assert c.write()[0] == 0
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    code, data = c.json(
        "launch", str(c.def_dir / f"{SERVICE}.servicedef"), "--version", VERSION, "--state-dir", str(c.state_dir),
        "--traceparent", tp, "--tracestate", "rojo=00f067aa0ba902b7",
    )  # fmt: skip
    assert code == 0
    assert data["key"] == KEY and data["traceparent"] == tp and data["reused"] is False
    assert data["exe_path"] == str(c.dirs.script)
    assert data["exe_sha256"] == rp.sha256_file(c.dirs.script).hex()
    assert os.path.exists(data["endpoint"]) and data["elapsed_ms"] > 0
    assert data["log_path"]
    code, entries = c.json("ls", *c.st())
    assert code == 0 and len(entries) == 1
    entry = entries[0]
    assert entry["key"] == KEY and entry["pid"] == data["pid"] and entry["version"] == VERSION
    assert entry["endpoint"] == data["endpoint"] and entry["alive"] is True and entry["uptime_secs"] >= 0
    code, probed = c.json("probe", KEY, *c.st())
    assert code == 0 and probed["ok"] is True and all(probed["checks"].values())
    code, stopped = c.json("stop", "--all", *c.st())
    assert code == 0 and stopped == {"ok": True, "stopped": 1}
    code, stopped = c.json("stop", "--all", *c.st())
    assert code == 0 and stopped["stopped"] == 0
    code, failed = c.json("stop", KEY, *c.st())
    assert code == 3 and failed["error"] == "NotRunningError"


def test_probe_of_dead_backend_exits_1(c: Cli) -> None:
    assert c.write()[0] == 0
    code, data = c.json("launch", SERVICE, "--version", VERSION, *c.sd(), *c.st())
    assert code == 0
    os.kill(data["pid"], signal.SIGKILL)
    poll_until(lambda: not process_running(data["pid"]), what="the backend to die")
    code, probed = c.json("probe", KEY, *c.st())
    assert code == cli.EXIT_FAILURE
    assert probed["checks"]["alive"] is False
    code, out, err = c.run("probe", KEY, *c.st())
    assert code == cli.EXIT_FAILURE and "alive" in out and "FAILED" in out
    assert_one_line_failure(err, "ProbeFailedError")
    code, entries = c.json("ls", *c.st())
    assert entries[0]["alive"] is False


def test_launch_failures_and_exit_codes(c: Cli) -> None:
    assert c.write("--min-version", "1.0.0")[0] == 0
    code, _, err = c.run("launch", SERVICE, "--version", "0.9.0", *c.sd(), *c.st())
    assert code == cli.EXIT_REFUSED
    assert_one_line_failure(err, "VersionRefusedError")
    code, _, err = c.run("launch", SERVICE, "--version", "1.0", *c.sd(), *c.st())
    assert code == cli.EXIT_USAGE
    assert_one_line_failure(err, "InvalidVersionError")
    code, _, err = c.launch("--traceparent", "nonsense")
    assert code == cli.EXIT_USAGE
    assert_one_line_failure(err, "InvalidTraceContextError")
    code, _, err = c.run("launch", "nope", "--version", VERSION, *c.sd(), *c.st())
    assert code == cli.EXIT_NOT_FOUND
    code, data = c.json("launch", "nope", "--version", VERSION, *c.sd(), *c.st())
    assert code == 3 and data["error"] == "ServiceDefinitionNotFoundError"
    assert c.run("launch", SERVICE, "--version", VERSION, "--ready-timeout", "0", *c.sd())[0] == 2
    # a backend that exits at once: a launch failure with a hint from its log
    exiting = c.dirs.version_dir / "exits"
    exiting.write_text(f"#!{sys.executable}\nprint('cannot start: no config')\nraise SystemExit(3)\n")
    os.chmod(exiting, 0o755)
    code, _, _ = c.run(
        "servicedef", "write", "exits", "--binary", str(exiting), "--root", str(c.dirs.version_dir), *c.sd()
    )
    assert code == 0
    code, _, err = c.run("launch", "exits", "--version", VERSION, *c.sd(), *c.st())
    assert code == cli.EXIT_FAILURE
    assert_one_line_failure(err, "BackendExitedError")
    assert "hint: last log line: cannot start: no config" in err
    code, entries = c.json("ls", *c.st())
    assert entries == []


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_launch_progress_only_on_a_tty_and_never_in_json(c: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    assert c.write()[0] == 0
    # The progress line lives with the launch command.
    monkeypatch.setattr(cli_commands, "PROGRESS_AFTER", 0.0)
    tty = FakeTty()
    monkeypatch.setattr(sys, "stderr", tty)
    code, out, _ = c.launch()
    assert code == 0 and out.startswith("launched")
    assert f"launching {KEY} ..." in tty.getvalue()
    assert c.run("stop", "--all", *c.st())[0] == 0
    tty2 = FakeTty()
    monkeypatch.setattr(sys, "stderr", tty2)
    code, out, _ = c.launch("--json")
    assert code == 0 and json.loads(out)["reused"] is False
    assert tty2.getvalue() == ""


# --- doctor -----------------------------------------------------------------------------


def test_doctor_ok_text_and_json(c: Cli) -> None:
    code, out, err = c.run("doctor", *c.st(), *c.sd())
    assert code == 0, err
    assert "doctor: all OK" in out and "sun_path budget" in out and "XDG_RUNTIME_DIR" in out
    code, report = c.json("doctor", *c.st(), *c.sd())
    assert code == 0 and report["ok"] is True
    assert report["xdg_runtime_dir"] == str(c.dirs.root / "run")
    assert report["directories"]["socket_dir"]["path"] == rp.socket_dir()
    assert report["directories"]["state_dir"]["path"] == str(c.state_dir)
    assert report["boot_id"] == rp.boot_id()
    expected = len(rp.socket_dir()) + 1 + len(rp.backend_socket_name(rp.user_sid_hash(), "0" * 32))
    assert report["backend_socket_path_len"] == expected
    assert report["sun_path_budget"] == rp.SUN_PATH_MAX - expected


def test_doctor_default_dirs_and_existing_secure_dir(c: Cli) -> None:
    assert c.write()[0] == 0  # creates the definition dir 0700
    code, report = c.json("doctor")
    assert code == 0
    d = report["directories"]["service_def_dir"]
    assert d["path"] == str(c.def_dir) and d["exists"] is True and d["status"] == "ok"
    assert d["owner_uid"] == os.getuid() and d["mode"] == "0700"
    assert (
        report["directories"]["state_dir"]["path"]
        == rp.BackendPool(rp.CommandBackendLauncher.for_current_user()).state_dir
    )


def test_doctor_insecure_dir_exits_4(c: Cli) -> None:
    c.state_dir.mkdir(mode=0o700)
    os.chmod(c.state_dir, 0o750)
    code, out, err = c.run("doctor", *c.st(), *c.sd())
    assert code == cli.EXIT_REFUSED
    assert "INSECURE" in out
    assert_one_line_failure(err, "InsecureDirectoryError")
    code, report = c.json("doctor", *c.st(), *c.sd())
    assert code == 4 and report["directories"]["state_dir"]["status"] == "insecure"
    link = c.dirs.root / "link"
    os.chmod(c.state_dir, 0o700)
    link.symlink_to(c.state_dir)
    code, report = c.json("doctor", "--state-dir", str(link), *c.sd())
    assert code == 4 and "symbolic link" in report["directories"]["state_dir"]["problem"]


def test_doctor_judges_the_definition_directory_as_a_load_does(c: Cli) -> None:
    assert c.write()[0] == 0
    os.chmod(c.def_dir, 0o755)  # loads fine, so doctor is content
    code, report = c.json("doctor", *c.st(), *c.sd())
    assert report["directories"]["service_def_dir"]["status"] == "ok", report
    assert c.run("servicedef", "show", SERVICE, *c.sd())[0] == 0
    os.chmod(c.def_dir, 0o775)  # others can write: a load refuses, so does doctor
    code, report = c.json("doctor", *c.st(), *c.sd())
    assert code == cli.EXIT_REFUSED
    assert "sticky" in report["directories"]["service_def_dir"]["problem"]
    assert c.run("servicedef", "show", SERVICE, *c.sd())[0] == cli.EXIT_REFUSED


def test_doctor_sun_path_budget_exceeded_exits_1(c: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    long_dir = "/tmp/" + "x" * 80
    monkeypatch.setenv("XDG_RUNTIME_DIR", long_dir)
    code, report = c.json("doctor", *c.st(), *c.sd())
    assert code == cli.EXIT_FAILURE and report["sun_path_budget"] < 0
    code, out, err = c.run("doctor", *c.st(), *c.sd())
    assert code == 1 and "TOO LONG" in out and "hint: set XDG_RUNTIME_DIR" in err


def test_errors_map_to_exit_codes() -> None:
    assert cli.exit_code_for(OSError(13, "denied")) == cli.EXIT_REFUSED
    assert cli.exit_code_for(FileNotFoundError(2, "x")) == cli.EXIT_NOT_FOUND
    assert cli.exit_code_for(RuntimeError("x")) == cli.EXIT_FAILURE
    assert str(cli.parse_key("private:abc/abc@1.0.0")) == "private:abc/abc@1.0.0"
    assert cli.parse_key("shared/zccache@1.11.20") == rp.BackendKey(
        rp.BrokerInstanceKey.shared(), "zccache", "1.11.20"
    )


# --- doctor and launch agree ---------------------------------------------------------


def _private_tree(run: Path) -> tuple[Path, Path]:
    middle = run / "running-process"
    middle.mkdir(mode=0o700)
    (middle / "broker").mkdir(mode=0o700)
    return middle, middle / "broker"


def _loosen(mode: int) -> Any:
    def setup(run: Path) -> Path:
        middle, _ = _private_tree(run)
        os.chmod(middle, mode)
        return middle

    return setup


def _loose_leaf(run: Path) -> Path:
    _, broker = _private_tree(run)
    os.chmod(broker, 0o750)
    return broker


def _symlinked_middle(run: Path) -> Path:
    real = run / "elsewhere"
    real.mkdir(mode=0o700)
    (real / "broker").mkdir(mode=0o700)
    (run / "running-process").symlink_to(real)
    return run / "running-process"


def _open_base(run: Path) -> Path:
    os.chmod(run, 0o777)
    return run


def _nothing(run: Path) -> None:
    return None


@pytest.mark.parametrize(
    "setup",
    [_nothing, _loose_leaf, _loosen(0o755), _loosen(0o770), _symlinked_middle, _open_base],
    ids=["fresh", "loose-leaf", "loose-middle-755", "loose-middle-770", "symlinked-middle", "open-base"],
)
def test_doctor_and_launch_judge_the_socket_tree_alike(
    c: Cli, setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = c.dirs.root / "run"
    run.mkdir(mode=0o700)
    culprit = setup(run)
    code, report = c.json("doctor", *c.st(), *c.sd())
    verdict = report["directories"]["socket_dir"]
    launcher = rp.CommandBackendLauncher.for_current_user(ready_timeout=30.0)
    key = rp.BackendKey(rp.BrokerInstanceKey.shared(), "v1echo", VERSION)
    try:
        handle = launcher.launch(key, c.dirs.sd())
    except rp.EndpointError as refusal:
        err = refusal.__cause__
        assert isinstance(err, rp.InsecureDirectoryError), refusal
        assert verdict["status"] == "insecure", (verdict, err)
        assert code == cli.EXIT_REFUSED
        assert str(err.path) == str(culprit)
        assert err.reason in verdict["problem"]
    else:
        handle.shutdown()
        assert culprit is None
        assert verdict["status"] in ("ok", "missing"), verdict
    finally:
        os.chmod(run, 0o700)


def test_doctor_reports_what_a_launch_would_create(c: Cli) -> None:
    code, report = c.json("doctor", *c.st(), *c.sd())
    verdict = report["directories"]["socket_dir"]
    assert code == 0 and verdict["status"] == "missing"
    assert verdict["would_create"][-1] == rp.socket_dir()
    assert not os.path.exists(rp.socket_dir())


def test_doctor_takes_a_relative_definition_dir_as_the_store_does(
    c: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert c.write()[0] == 0
    monkeypatch.chdir(c.def_dir.parent)
    code, report = c.json("doctor", *c.st(), "--dir", c.def_dir.name)
    assert code == 0, report
    verdict = report["directories"]["service_def_dir"]
    assert verdict["path"] == str(c.def_dir) and verdict["status"] == "ok"
    assert cli.main(["servicedef", "show", SERVICE, "--dir", c.def_dir.name]) == 0


# --- hostile input -----------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["launch", SERVICE, "--version", VERSION, "--ready-timeout", "inf"],
        ["launch", SERVICE, "--version", VERSION, "--ready-timeout", "1e309"],
        ["launch", SERVICE, "--version", VERSION, "--ready-timeout", "nan"],
        ["launch", SERVICE, "--version", VERSION, "--ready-timeout", "86401"],
        ["launch", SERVICE, "--version", VERSION, "--idle-timeout", "99999999999"],
        ["launch", SERVICE, "--version", VERSION, "--idle-timeout", "-5"],
        ["launch", SERVICE, "--version", VERSION, "--idle-timeout", "1.5"],
        ["stop", "--all", "--timeout", "-inf"],
    ],
    ids=lambda argv: " ".join(argv[-2:]),
)
def test_out_of_range_numbers_are_usage_errors(c: Cli, argv: list[str]) -> None:
    code, _, err = c.run(*argv)
    assert code == cli.EXIT_USAGE, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("running-process launch: error:") or "stop: error:" in err


def test_a_name_that_is_not_utf8_is_a_one_line_usage_error(c: Cli) -> None:
    name = os.fsdecode(b"echo\xff")
    code, _, err = c.run("launch", name, "--version", VERSION, *c.sd())
    assert code == cli.EXIT_USAGE
    assert_one_line_failure(err, "InvalidArgumentError")
    assert "'echo\\udcff' is not valid UTF-8" in err


def test_escape_sequences_never_reach_the_terminal(c: Cli) -> None:
    for argv in (
        ["launch", "\x1b[2J\x1b]0;pwned\x07x", "--version", VERSION, *c.sd()],
        ["launch", SERVICE, "--version", VERSION, "--dir", "/nonexistent/\x1b[2J\x07"],
    ):
        code, _, err = c.run(*argv)
        assert code != 0
        assert "\x1b" not in err and "\x07" not in err, err
        assert "\\x1b[2J" in err or "\\u{1b}[2J" in err, err
    assert cli.printable("tab\there\u009bC1") == "tab\\there\\x9bC1"


# Words of the command line, and free text that cannot be an option or an
# absolute path (so no generated command writes outside the test's
# directories; relative paths land in the working directory, a temporary one).
WORDS = st.sampled_from(
    ["launch", "stop", "ls", "probe", "doctor", "servicedef", "write", "show", "validate", "--json", "--all",
     "--version", "--ready-timeout", "--idle-timeout", "--timeout", "--label", "--traceparent", "inf", "-1",
     "0", "1e309", "nan", "shared/x@1.0.0"]
)  # fmt: skip
FREE_TEXT = st.text(max_size=20).filter(lambda t: not t.startswith(("-", "/")))


@pytest.mark.slow  # a few hundred command lines
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=st.lists(st.one_of(WORDS, FREE_TEXT), max_size=8))
def test_no_command_line_ends_in_a_traceback(c: Cli, argv: list[str], tmp_path: Path) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code, _, err = c.run(*argv)
    finally:
        os.chdir(cwd)
    assert isinstance(code, int)
    assert "Traceback" not in err
    assert "\x1b" not in err


def test_the_environment_policy_is_written_shown_listed_and_diagnosed(
    c: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = c.write(
        "--env-policy", "baseline", "--env-allow", "ZCCACHE_*", "--env-set", "RUST_LOG=info"
    )  # fmt: skip
    assert code == 0, err
    code, out, _ = c.run("servicedef", "show", SERVICE, *c.sd())
    assert any(
        line.split() == ["environment", "baseline", "+ZCCACHE_*", "set", "RUST_LOG"]
        for line in out.splitlines()
    )
    code, fields = c.json("servicedef", "show", SERVICE, *c.sd())
    assert (fields["env_policy"], fields["env_allow"], fields["env_set"]) == (
        "baseline",
        ["ZCCACHE_*"],
        {"RUST_LOG": "info"},
    )
    code, _, err = c.launch()
    assert code == 0, err
    code, rows = c.json("ls", *c.st())
    assert [row["environment"] for row in rows] == ["baseline +ZCCACHE_* set RUST_LOG"]
    monkeypatch.setenv("PYTHONPATH", "/tmp/elsewhere")
    code, report = c.json("doctor", *c.sd(), *c.st())
    assert report["environment"]["definitions"] == {SERVICE: "baseline +ZCCACHE_* set RUST_LOG"}
    assert "PYTHONPATH" in report["environment"]["scrubbed_here"]
    assert report["environment"]["scrub"] == list(rp.DEFAULT_ENV_SCRUB)
    code, out, _ = c.run("doctor", *c.sd(), *c.st())
    assert "would remove PYTHONPATH" in out
    assert c.run("stop", "--all", *c.st())[0] == 0


def test_a_bad_env_set_is_a_one_line_usage_error(c: Cli) -> None:
    code, _, err = c.write("--env-set", "novalue")
    assert code == cli.EXIT_USAGE
    assert_one_line_failure(err, "InvalidEnvSetError")
    code, _, err = c.write("--env-allow", "not a name")
    assert code == cli.EXIT_USAGE
    assert_one_line_failure(err, "InvalidServiceDefinitionError")
    assert "--env-allow" in err
