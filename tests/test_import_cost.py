"""`import running_process` stays cheap, and Rust log records still reach
Python's `logging` however late the application imports it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from support.launch import BackendDirs, install

HANG_GUARD = 60.0


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        env={k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"},
    )


def test_import_leaves_heavy_modules_unimported(tmp_path: Path) -> None:
    result = run_python(
        """
        import sys
        import running_process as rp
        heavy = [m for m in ("logging", "socket", "typing", "asyncio", "argparse") if m in sys.modules]
        print(",".join(heavy))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_backend_connection_is_importable_on_demand(tmp_path: Path) -> None:
    result = run_python(
        """
        import socket
        import running_process as rp
        from running_process import BackendConnection
        assert issubclass(rp.BackendConnection, socket.socket)
        assert BackendConnection is rp.BackendConnection
        try:
            rp.NoSuchThing
        except AttributeError as e:
            print(e)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "NoSuchThing" in result.stdout


def failing_launch_code(dirs: BackendDirs, configure: str) -> str:
    failing = install(dirs.version_dir / "fails", b"#!/bin/sh\nexit 3\n")
    return f"""
        import running_process as rp
        {configure}
        sd = rp.ServiceDefinition(service_name="lazylog", binary_path={str(failing)!r},
                                  per_version_binary_dir={str(dirs.version_dir)!r},
                                  isolation=rp.Isolation.SHARED)
        launcher = rp.CommandBackendLauncher.for_current_user(
            socket_dir={str(dirs.socket_dir)!r}, log_dir={str(dirs.log_dir)!r})
        try:
            launcher.launch(rp.BackendKey.for_service(sd, "1.0.0"), sd)
        except rp.BackendExitedError:
            pass
        else:
            raise SystemExit("the launch should have failed")
        """


def test_a_warning_reaches_the_last_resort_handler_without_logging_imported(
    dirs: BackendDirs,
) -> None:
    # Nothing imported `logging`; Python would still print a WARNING, so the
    # bridge connects for it.
    result = run_python(failing_launch_code(dirs, "pass"), dirs.root)
    assert result.returncode == 0, result.stderr
    assert "launch of lazylog 1.0.0" in result.stderr
    assert "failed" in result.stderr


def test_logging_imported_after_the_package_sees_debug_records(dirs: BackendDirs) -> None:
    configure = (
        "import logging; "
        "logging.basicConfig(level=logging.DEBUG, format='%(levelname)s %(name)s %(message)s')"
    )
    result = run_python(failing_launch_code(dirs, configure), dirs.root)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert any(line.startswith("DEBUG running_process.") for line in lines), result.stderr
    assert any(line.startswith("WARNING running_process.launch") for line in lines)


def test_unconfigured_debug_records_stay_silent(dirs: BackendDirs) -> None:
    # Below WARNING, with `logging` never imported: dropped, as Python would.
    result = run_python(failing_launch_code(dirs, "pass"), dirs.root)
    assert result.returncode == 0, result.stderr
    assert "DEBUG" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        line for line in result.stderr.splitlines() if "launch of lazylog" in line
    ]
