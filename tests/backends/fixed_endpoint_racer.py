"""One of the processes that race for a daemon at a fixed endpoint: waits
for the common start time, launches (or is handed) the daemon, verifies it,
and prints ``<pid> <seconds>``. Its one argument is a JSON object: binary,
version_dir, service, version, args, socket_dir, log_dir, endpoint,
start_at (a time.time() value)."""

import json
import sys
import time

import running_process as rp


def main() -> None:
    job = json.loads(sys.argv[1])
    sd = rp.ServiceDefinition(
        job["service"],
        job["binary"],
        job["version_dir"],
        rp.Isolation.SHARED,
        args=job["args"],
        listener=rp.Listener.from_value(job.get("listener", 0)),
    )
    launcher = rp.CommandBackendLauncher.for_current_user(
        socket_dir=job["socket_dir"], log_dir=job["log_dir"], ready_timeout=30.0
    )
    key = rp.BackendKey.for_service(sd, job["version"])
    while time.time() < job["start_at"]:
        time.sleep(0.0005)
    started = time.perf_counter()
    handle = launcher.launch(key, sd, endpoint=rp.Endpoint("default", job["endpoint"]))
    handle.verify()
    print(handle.pid, time.perf_counter() - started, flush=True)


main()
