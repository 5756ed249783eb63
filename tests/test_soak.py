"""Soak tests: many launches in one process, and many rounds of processes
racing on the pool, with the accounting of everything a launch could leak.

- Soak A: 1,000 cycles of launch, verify, use (a request and its echo
  through ``handle.connect()``) and shutdown in the test process, with the
  Rust example backend. Before and after: open descriptors, threads, child
  processes and zombies, socket and log files, and the resident set size
  (measured after a warm-up, so the allocator's own growth is not counted).
- Soak B: 200 rounds of 8 long-lived worker processes released together on
  a fresh key through ``BackendPool.get_or_launch``: one spawn per round,
  counted three ways, and nothing left in the pool's state directory, the
  socket directory or any of the processes once the rounds are over.

The figures each soak measures are printed (``-s``) and recorded as
properties of the test (``--junitxml``).

Also here: the socket file of a pool backend killed after its launching
process exited is removed by the pool that replaces it.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import running_process as rp
from support.launch import BackendDirs, Launches, echo, install_rust_echo, key_for
from support.leftovers import Holdings, files_in, settled_leaks
from support.procfs import exe_of, proc_stat, rss_kib
from support.soak import kill_backends, worker_command
from support.waits import poll_until

pytestmark = pytest.mark.soak

CLEAN_END = (0, -signal.SIGTERM)
# Only turns a hang into a failure.
GUARD = 60.0


def report(record_property: Any, figures: dict[str, object]) -> None:
    """Prints the figures (visible with ``-s``) and records them."""
    for name, value in figures.items():
        record_property(name, value)
    print("soak figures: " + json.dumps(figures, sort_keys=True))


# --- Soak A: one process, a thousand cycles -----------------------------------------------

WARM_UP = 50
CYCLES = 1000
RSS_GROWTH_BOUND_KIB = 8 * 1024


def one_cycle(
    launcher: rp.CommandBackendLauncher,
    key: rp.BackendKey,
    sd: rp.ServiceDefinition,
    binary: Path,
    digest: bytes,
    socket_dir: Path,
    n: int,
) -> str:
    """Launch, verify, use and shut down one backend; returns its endpoint."""
    me = os.getpid()
    with launcher.launch(key, sd, rp.TraceContext.new_root()) as handle:
        pid = handle.pid
        endpoint = handle.endpoint.path
        daemon = handle.daemon
        assert daemon.pid == pid
        assert daemon.exe_path == str(binary)
        assert daemon.exe_sha256 == digest
        assert os.path.dirname(endpoint) == str(socket_dir)
        assert stat.S_ISSOCK(os.lstat(endpoint).st_mode)
        state = proc_stat(pid)
        assert state is not None and state[1] == me and state[0] != "Z", state
        assert exe_of(pid) == str(binary)
        handle.verify()
        payload = f"cycle {n} of the soak ".encode() * 3
        assert echo(handle, payload) == payload
        returncode = handle.shutdown(timeout=10.0)
        assert returncode in CLEAN_END, f"cycle {n}: backend ended with {returncode}"
        assert handle.returncode == returncode
        assert not handle.is_alive()
        # Reaped by the time shutdown returns (the pid is gone, or reused by
        # a process that is not ours).
        after = proc_stat(pid)
        assert after is None or after[1] != me, f"cycle {n}: pid {pid} not reaped: {after}"
        assert not os.path.lexists(endpoint), f"cycle {n}: socket file left"
        assert not os.path.lexists(handle.log_path), f"cycle {n}: log file left"
    return endpoint


def test_soak_a_thousand_launch_verify_use_shutdown_cycles_leak_nothing(
    dirs: BackendDirs, rust_example: Path, launches: Launches, record_property: Any
) -> None:
    binary = install_rust_echo(dirs, rust_example, stripped=True)
    sd = dirs.sd(binary, service_name="soak")
    key = key_for(sd)
    digest = rp.sha256_file(binary)
    endpoints: set[str] = set()

    gc.collect()
    initial = Holdings.now()
    started = time.monotonic()
    launcher = dirs.launcher()
    for n in range(WARM_UP):
        endpoints.add(one_cycle(launcher, key, sd, binary, digest, dirs.socket_dir, n))
    gc.collect()
    # The steady state: what the launcher keeps for its lifetime (its
    # allocator, a watch on the socket directory) exists from here on.
    before = Holdings.now()
    rss_before = rss_kib()
    measured = time.monotonic()
    for n in range(WARM_UP, WARM_UP + CYCLES):
        endpoints.add(one_cycle(launcher, key, sd, binary, digest, dirs.socket_dir, n))
    elapsed = time.monotonic() - measured
    gc.collect()
    rss_after = rss_kib()
    leaks = settled_leaks(before, check_threads=True)
    after = Holdings.now()
    # Once the launcher is gone, everything it held is released too.
    del launcher
    gc.collect()
    released = settled_leaks(initial, check_threads=True)

    report(
        record_property,
        {
            "soak_a_cycles": WARM_UP + CYCLES,
            "soak_a_ms_per_cycle": round(elapsed / CYCLES * 1000, 2),
            "soak_a_total_s": round(time.monotonic() - started, 2),
            "soak_a_fds_initial": len(initial.fds),
            "soak_a_fds_before": len(before.fds),
            "soak_a_fds_after": len(after.fds),
            "soak_a_threads_before": len(before.threads),
            "soak_a_threads_after": len(after.threads),
            "soak_a_children_before": len(before.children),
            "soak_a_children_after": len(after.children),
            "soak_a_rss_kib_after_warm_up": rss_before,
            "soak_a_rss_kib_after": rss_after,
            "soak_a_rss_growth_kib": rss_after - rss_before,
        },
    )
    assert len(endpoints) == WARM_UP + CYCLES, "an endpoint was handed out twice"
    assert leaks == {}, f"leaked over {CYCLES} cycles: {leaks}"
    assert released == {}, f"held after the launcher was dropped: {released}"
    assert after.zombies() == []
    assert files_in(dirs.socket_dir) == [], "socket files left"
    assert files_in(dirs.log_dir) == [], "log files left"
    assert rss_after - rss_before < RSS_GROWTH_BOUND_KIB, (
        f"resident set grew by {rss_after - rss_before} KiB over {CYCLES} cycles"
    )


# --- Soak B: eight processes racing on the pool, two hundred rounds --------------------------

WORKERS = 8
ROUNDS = 200


class Worker:
    """One worker process and the line-by-line JSON conversation with it."""

    def __init__(self, command: list[str], gate: int) -> None:
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(gate,))
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin = self.proc.stdin
        self.out = self.proc.stdout.fileno()
        self.buffer = b""
        self.pid = self.proc.pid

    def send(self, message: dict[str, object]) -> None:
        self.stdin.write(json.dumps(message).encode() + b"\n")
        self.stdin.flush()

    def recv(self, timeout: float = GUARD) -> dict[str, Any]:
        """The next message; fails if none comes within ``timeout``."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"worker {self.pid} said nothing for {timeout} s")
            ready, _, _ = select.select([self.out], [], [], left)
            if ready:
                chunk = os.read(self.out, 65536)
                if not chunk:
                    raise AssertionError(f"worker {self.pid} ended (status {self.proc.wait()})")
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        assert "error" not in message, f"worker {self.pid} failed:\n{message['error']}"
        return message

    def close(self) -> None:
        self.stdin.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def test_soak_b_eight_processes_racing_on_a_fresh_key_get_one_backend_per_round(
    dirs: BackendDirs, rust_example: Path, record_property: Any
) -> None:
    binary = install_rust_echo(dirs, rust_example, stripped=True)
    sd = dirs.sd(binary, service_name="soak")
    state_dir = dirs.root / "state"
    config = {
        "socket_dir": str(dirs.socket_dir),
        "log_dir": str(dirs.log_dir),
        "state_dir": str(state_dir),
        "sd": sd.to_bytes().hex(),
    }
    seen_pids: set[int] = set()
    endpoints: set[str] = set()
    spawners: dict[str, int] = {}

    gc.collect()
    before = Holdings.now()
    started = time.monotonic()
    pool = rp.BackendPool(dirs.launcher(), state_dir)
    gate_r, gate_w = os.pipe()
    workers: list[Worker] = []
    try:
        workers = [Worker(worker_command(config, gate_r), gate_r) for _ in range(WORKERS)]
        worker_pids = {w.recv()["ready"] for w in workers}
        assert worker_pids == {w.pid for w in workers}
        racing = time.monotonic()
        for r in range(ROUNDS):
            version = f"2.0.{r}"
            for w in workers:
                w.send({"round": version})
            for w in workers:
                assert w.recv() == {"waiting": w.pid}
            os.write(gate_w, b"!")  # every worker wakes at once
            gots = [w.recv()["got"] for w in workers]
            assert os.read(gate_r, 1) == b"!"  # the gate closes again

            pids = {g["pid"] for g in gots}
            seen_pids |= pids
            assert len(pids) == 1, f"round {r}: {len(pids)} backends for one key: {gots}"
            (pid,) = pids
            (endpoint,) = {g["endpoint"] for g in gots}
            assert len({g["started_at_unix_ms"] for g in gots}) == 1
            # One spawn, counted three ways: one worker is the parent, one log
            # file was created, and the endpoint is new.
            parents = [w.pid for w, g in zip(workers, gots) if g["spawned_here"]]
            assert len(parents) == 1, f"round {r}: spawned by {parents}"
            assert len(list(dirs.log_dir.glob(f"soak-{version}-*.log"))) == 1
            assert endpoint not in endpoints, f"round {r}: endpoint {endpoint} reused"
            endpoints.add(endpoint)
            spawners[endpoint] = parents[0]
            state = files_in(state_dir)
            assert sorted(Path(name).suffix for name in state) == [".json", ".lock"], state
            assert files_in(dirs.socket_dir) == [os.path.basename(endpoint)]

            key = rp.BackendKey.for_service(sd, version)
            assert pool.stop(key, timeout=10.0) is True  # verified, then stopped
            assert files_in(state_dir) == [], f"round {r}: manifest or lock file left"
            assert files_in(dirs.socket_dir) == [], f"round {r}: socket file left"
            # The parent's reaper reaps it (the pid may be reused meanwhile,
            # by a process that is not the worker's child).
            poll_until(
                lambda: (proc_stat(pid) or ("", 0))[1] != parents[0],
                what=f"round {r}: backend {pid} to be reaped by worker {parents[0]}",
            )
        racing_s = time.monotonic() - racing

        for w in workers:
            w.send({"stop": True})
        held = [w.recv() for w in workers]
        for w in workers:
            assert w.proc.wait(timeout=GUARD) == 0
            w.close()
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
            w.close()
        os.close(gate_r)
        os.close(gate_w)
        left = kill_backends(seen_pids, str(binary))
        pool.stop_all(timeout=10.0)
    assert left == [], f"backends still running: {left}"

    del pool
    gc.collect()
    leaks = settled_leaks(before, check_threads=True)
    after = Holdings.now()
    logs = files_in(dirs.log_dir)
    report(
        record_property,
        {
            "soak_b_rounds": ROUNDS,
            "soak_b_workers": WORKERS,
            "soak_b_ms_per_round": round(racing_s / ROUNDS * 1000, 2),
            "soak_b_total_s": round(time.monotonic() - started, 2),
            "soak_b_spawns": len(endpoints),
            "soak_b_distinct_pids": len(seen_pids),
            "soak_b_spawns_per_worker": sorted(
                sum(1 for p in spawners.values() if p == w.pid) for w in workers
            ),
            "soak_b_fds_before": len(before.fds),
            "soak_b_fds_after": len(after.fds),
            "soak_b_threads_before": len(before.threads),
            "soak_b_threads_after": len(after.threads),
            "soak_b_worker_holdings": held,
            "soak_b_log_files_left": len(logs),
        },
    )
    assert len(endpoints) == ROUNDS
    for h in held:
        assert h["leaks"] == "", f"a worker leaked: {h}"
        assert h["after"] == h["before"], f"a worker's holdings changed: {h}"
    assert leaks == {}, f"the test process leaked: {leaks}"
    assert after.zombies() == []
    assert files_in(state_dir) == [], "manifests or lock files left"
    assert files_in(dirs.socket_dir) == [], "socket files left"
    # Every backend ended within the grace of its SIGTERM (the pool stops
    # each round's backend), which is a clean stop: its log went with it,
    # whichever process stopped it (see docs/launch.md, "Logs").
    assert logs == []


# --- found on the way: a backend whose launching process is gone --------------------------------

LAUNCH_AND_EXIT = """
import sys
import running_process as rp
socket_dir, log_dir, state_dir, sd_hex = sys.argv[1:5]
sd = rp.ServiceDefinition.from_bytes(bytes.fromhex(sd_hex))
launcher = rp.CommandBackendLauncher.for_current_user(
    socket_dir=socket_dir, log_dir=log_dir, idle_timeout_secs=None, ready_timeout=60.0)
handle = rp.BackendPool(launcher, state_dir).get_or_launch(rp.BackendKey.for_service(sd, "1.0.0"), sd)
print(handle.pid, handle.endpoint.path)
"""


def test_socket_file_of_a_killed_pool_backend_whose_launcher_is_gone_is_removed(
    dirs: BackendDirs, rust_example: Path
) -> None:
    binary = install_rust_echo(dirs, rust_example, stripped=True)
    sd = dirs.sd(binary, service_name="soak")
    state_dir = dirs.root / "state"
    out = subprocess.run(
        [sys.executable, "-c", LAUNCH_AND_EXIT, str(dirs.socket_dir), str(dirs.log_dir), str(state_dir)]
        + [sd.to_bytes().hex()],
        capture_output=True,
        text=True,
        check=True,
        timeout=GUARD,
    ).stdout.split()
    pid, orphan_endpoint = int(out[0]), out[1]
    pool = rp.BackendPool(dirs.launcher(idle_timeout_secs=None), state_dir)
    try:
        # Not our child any more: killed through a pidfd, once it is provably the backend.
        pidfd = os.pidfd_open(pid)
        try:
            assert exe_of(pid) == str(binary)
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            assert select.select([pidfd], [], [], GUARD)[0] == [pidfd]
        finally:
            os.close(pidfd)
        replacement = pool.get_or_launch(rp.BackendKey.for_service(sd, "1.0.0"), sd)
        assert replacement.endpoint.path != orphan_endpoint
        assert files_in(dirs.socket_dir) == [os.path.basename(replacement.endpoint.path)]
    finally:
        pool.stop_all(timeout=10.0)
        kill_backends([pid], str(binary))
    assert files_in(dirs.socket_dir) == []
