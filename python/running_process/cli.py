"""The ``running-process`` command line (also ``python -m running_process``).

``demo`` shows the pieces a launch is built from on this machine: the per-user
hash, the boot id, the private socket directory, a freshly allocated backend
endpoint, and a service definition validated, saved and loaded back. It
leaves nothing behind: the endpoint is released and the definition lives in a
temporary directory that is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from typing import Any, Optional, Sequence

import running_process as rp

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _dir_facts(path: str) -> str:
    st = os.lstat(path)
    return f"mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}"


def run_demo() -> dict[str, Any]:
    """Runs the demo and returns what it found, as JSON-ready data."""
    user_hash = rp.user_sid_hash()
    sd_dir = tempfile.mkdtemp(prefix="running-process-demo-")
    try:
        version_dir = os.path.join(sd_dir, "bin", "1.0.0")
        sd = rp.ServiceDefinition(
            service_name="demo-echo",
            binary_path=os.path.join(version_dir, "demo-echo-backend"),
            per_version_binary_dir=version_dir,
            isolation=rp.Isolation.SHARED,
            min_version="1.0.0",
            labels={"purpose": "demo"},
        )
        key = rp.BackendKey.for_service(sd, "1.0.0")
        allocator = rp.BackendEndpointAllocator(user_hash, key.instance.id())
        started = time.perf_counter()
        endpoint = allocator.allocate()
        allocate_ms = (time.perf_counter() - started) * 1000.0
        allocator.release(endpoint.path)

        store = os.path.join(sd_dir, "services")
        saved_path = sd.save(store)
        loaded = rp.ServiceDefinition.load(sd.service_name, store)
        try:
            sd.check_version("0.9.0")
            refused = ""
        except rp.VersionRefusedError as err:
            refused = err.reason
        trace = rp.TraceContext.new_root()
        return {
            "user_sid_hash": user_hash,
            "boot_id": rp.boot_id(),
            "socket_dir": allocator.socket_dir,
            "socket_dir_facts": _dir_facts(allocator.socket_dir),
            "endpoint": {"namespace_id": endpoint.namespace_id, "path": endpoint.path},
            "endpoint_path_bytes": len(os.fsencode(endpoint.path)),
            "sun_path_max": rp.SUN_PATH_MAX,
            "allocate_ms": round(allocate_ms, 3),
            "backend_key": str(key),
            "service_definition": repr(sd),
            "servicedef_file": saved_path,
            "servicedef_bytes": len(sd.to_bytes()),
            "servicedef_round_trip": loaded == sd,
            "version_1_0_0": "admitted",
            "version_0_9_0_refused": refused,
            "traceparent": trace.traceparent,
        }
    finally:
        shutil.rmtree(sd_dir)


def _print_demo(facts: dict[str, Any]) -> None:
    rows = [
        ("user sid hash", facts["user_sid_hash"]),
        ("boot id", facts["boot_id"]),
        ("socket dir", f"{facts['socket_dir']} ({facts['socket_dir_facts']})"),
        ("endpoint", facts["endpoint"]["path"]),
        (
            "",
            f"namespace {facts['endpoint']['namespace_id']}, "
            f"{facts['endpoint_path_bytes']} of {facts['sun_path_max']} bytes, "
            f"allocated in {facts['allocate_ms']:.3f} ms",
        ),
        ("backend key", facts["backend_key"]),
        ("definition", facts["service_definition"]),
        (
            "servicedef",
            f"{facts['servicedef_bytes']} bytes, saved and loaded back: "
            f"{'identical' if facts['servicedef_round_trip'] else 'DIFFERENT'}",
        ),
        ("version 0.9.0", f"refused: {facts['version_0_9_0_refused']}"),
        ("traceparent", facts["traceparent"]),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="running-process",
        description="Launch, verify and reuse on-demand backend daemons.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {rp.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="show the pieces of a launch on this machine")
    demo.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            facts = run_demo()
            if args.json:
                print(json.dumps(facts, indent=2))
            else:
                print(f"running-process {rp.__version__} demo")
                _print_demo(facts)
            return EXIT_OK if facts["servicedef_round_trip"] else EXIT_FAILURE
    except rp.RunningProcessError as err:
        print(f"running-process: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
