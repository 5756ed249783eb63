"""A pool client in its own process, for the fault tests: what a compiler
invocation using a shared backend does.

Usage: ``fault_pool_client.py CONFIG_JSON``, where the JSON object holds
``socket_dir``, ``log_dir``, ``state_dir``, ``service_definition`` (hex of
``ServiceDefinition.to_bytes()``), ``version``, and optionally
``idle_timeout_secs`` and ``ready_timeout``.

Prints ``launcher <pid>`` at start, calls ``BackendPool.get_or_launch``,
prints ``backend <pid>`` (or ``error <class> <message>``), then waits until
its standard input ends or says ``exit``. While it waits it keeps the
backend's handle, so a backend it spawned is reaped here if it ends.
"""

from __future__ import annotations

import json
import os
import sys

import running_process as rp


def main() -> int:
    config = json.loads(sys.argv[1])
    print(f"launcher {os.getpid()}", flush=True)
    sd = rp.ServiceDefinition.from_bytes(bytes.fromhex(config["service_definition"]))
    launcher = rp.CommandBackendLauncher.for_current_user(
        socket_dir=config["socket_dir"],
        log_dir=config["log_dir"],
        idle_timeout_secs=config.get("idle_timeout_secs", 30),
        ready_timeout=config.get("ready_timeout", 60.0),
    )
    pool = rp.BackendPool(launcher, config["state_dir"])
    try:
        handle = pool.get_or_launch(rp.BackendKey.for_service(sd, config["version"]), sd)
    except rp.RunningProcessError as e:
        print(f"error {type(e).__name__} {e}", flush=True)
        return 1
    print(f"backend {handle.pid}", flush=True)
    for line in sys.stdin:
        if line.strip() == "exit":
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
