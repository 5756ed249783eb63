"""``running-process demo``: a verified launch of the example backend."""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import sys
import tempfile
import time
from importlib import resources
from typing import Any

import running_process as rp
from running_process.cli.hints import EXIT_FAILURE, EXIT_OK, emit_json

DEMO_SERVICE = "demo-echo"
DEMO_VERSION = "1.0.0"


def _install_example_backend(root: str) -> tuple[str, str]:
    """Writes the example backend into ``root/<version>/`` with a ``#!`` line
    naming this interpreter; returns (binary path, per-version directory)."""
    version_dir = os.path.join(root, DEMO_VERSION)
    os.mkdir(version_dir, 0o755)
    source = resources.files("running_process.examples").joinpath("echo_backend.py").read_text()
    binary = os.path.join(version_dir, "demo-echo-backend")
    with open(binary, "w") as f:
        f.write(f"#!{sys.executable}\n{source}")
    os.chmod(binary, 0o755)
    return binary, version_dir


def run_demo() -> dict[str, Any]:
    """Launches, verifies, uses and stops the example backend; returns what
    happened as JSON-ready data."""
    root = tempfile.mkdtemp(prefix="running-process-demo-")
    try:
        binary, version_dir = _install_example_backend(root)
        sd = rp.ServiceDefinition(
            service_name=DEMO_SERVICE,
            binary_path=binary,
            per_version_binary_dir=version_dir,
            isolation=rp.Isolation.SHARED,
            min_version="1.0.0",
            labels={"purpose": "demo"},
        )
        key = rp.BackendKey.for_service(sd, DEMO_VERSION)
        launcher = rp.CommandBackendLauncher.for_current_user(idle_timeout_secs=30)
        trace = rp.TraceContext.new_root()
        started = time.perf_counter()
        handle = launcher.launch(key, sd, trace)
        launch_ms = (time.perf_counter() - started) * 1000.0
        with handle:
            daemon = handle.daemon
            message = f"hello from pid {os.getpid()}".encode()
            with handle.connect() as conn:
                conn.sendall(message)
                conn.shutdown(1)
                echoed = b""
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    echoed += chunk
            started = time.perf_counter()
            handle.verify(trace)
            verify_ms = (time.perf_counter() - started) * 1000.0
            facts: dict[str, Any] = {
                "backend_key": str(key),
                "pid": daemon.pid,
                "exe_path": daemon.exe_path,
                "exe_sha256": daemon.exe_sha256_hex,
                "boot_id": daemon.boot_id,
                "endpoint": daemon.ipc_endpoint.path,
                "namespace_id": daemon.ipc_endpoint.namespace_id,
                "log_path": handle.log_path,
                "user_sid_hash": launcher.user_sid_hash,
                "socket_dir": launcher.socket_dir,
                "socket_dir_mode": f"{stat.S_IMODE(os.lstat(launcher.socket_dir).st_mode):04o}",
                "traceparent": trace.traceparent,
                "launch_ms": round(launch_ms, 2),
                "reverify_ms": round(verify_ms, 2),
                "sent": message.decode(),
                "echoed": echoed.decode(errors="replace"),
            }
        facts["returncode"] = handle.returncode
        facts["socket_file_removed"] = not os.path.exists(facts["endpoint"])
        facts["ok"] = facts["echoed"] == facts["sent"] and facts["socket_file_removed"]
        return facts
    finally:
        shutil.rmtree(root)


def _print_demo(facts: dict[str, Any]) -> None:
    rows = [
        ("backend", facts["backend_key"]),
        ("pid", str(facts["pid"])),
        ("executable", facts["exe_path"]),
        ("sha-256", facts["exe_sha256"]),
        ("boot id", facts["boot_id"]),
        ("endpoint", facts["endpoint"]),
        ("socket dir", f"{facts['socket_dir']} (mode {facts['socket_dir_mode']})"),
        ("trace", facts["traceparent"]),
        ("launch", f"{facts['launch_ms']:.1f} ms including full verification"),
        ("re-verify", f"{facts['reverify_ms']:.2f} ms"),
        ("sent", repr(facts["sent"])),
        ("echoed", repr(facts["echoed"])),
        (
            "shutdown",
            f"return code {facts['returncode']}, socket file "
            f"{'removed' if facts['socket_file_removed'] else 'LEFT BEHIND'}",
        ),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")


def cmd_demo(args: argparse.Namespace) -> int:
    facts = run_demo()
    if args.json:
        emit_json(facts)
    else:
        print(f"running-process {rp.__version__}: verified launch of the example backend")
        _print_demo(facts)
    return EXIT_OK if facts["ok"] else EXIT_FAILURE
