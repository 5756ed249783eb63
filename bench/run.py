#!/usr/bin/env python3
"""The benchmark harness: every figure of the performance targets, side by
side in one run, on the example Rust backend (``rp-echo-backend``) and the
example Python backend (``running_process/examples/echo_backend.py``).

    python bench/run.py            # full run: bench/results.json, bench/RESULTS.md
    python bench/run.py --quick    # smoke run (few iterations), results in a temp dir

Run it with the interpreter that has running_process installed. It builds
the Rust side (``cargo build --release --bin rp-bench --bin rp-echo-backend``)
first. Benchmarks measure and report; they never fail on a missed target
(the exit status is non-zero only when a measurement could not be taken).

Comparisons that form a ratio are measured interleaved (alternating rounds of
each side), so that both sides see the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import running_process as rp

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
SERVICE = "benchecho"
VERSION = "1.0.0"
HANG_GUARD = 60.0


# --- statistics --------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Series:
    """Samples of one figure, in seconds."""

    name: str
    samples: list[float]

    @property
    def p50(self) -> float:
        return percentile(self.samples, 50)

    @property
    def p90(self) -> float:
        return percentile(self.samples, 90)

    def summary(self) -> dict[str, Any]:
        return {
            "n": len(self.samples),
            "p50_s": self.p50,
            "p90_s": self.p90,
            "min_s": min(self.samples),
            "max_s": max(self.samples),
        }


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


@dataclass
class Row:
    """One line of the results table."""

    figure: str
    measured: str
    baseline: str
    ratio: Optional[float]
    target: str
    met: Optional[bool]
    data: dict[str, Any] = field(default_factory=dict)


# --- set-up ------------------------------------------------------------------


def build() -> Path:
    subprocess.run(
        [
            "cargo",
            "build",
            "--release",
            "-q",
            "--features",
            "bench",
            "--bin",
            "rp-bench",
            "--bin",
            "rp-echo-backend",
        ],  # fmt: skip
        cwd=REPO,
        check=True,
    )
    return REPO / "target" / "release"


@dataclass
class Tree:
    """A private work tree: the per-version directory holding both example
    backends, and room for sockets, logs and pool state."""

    root: Path
    version_dir: Path
    rust_backend: Path
    python_backend: Path

    def sd(self, binary: Path) -> rp.ServiceDefinition:
        return rp.ServiceDefinition(
            service_name=SERVICE,
            binary_path=str(binary),
            per_version_binary_dir=str(self.version_dir),
            isolation=rp.Isolation.SHARED,
        )

    def launcher(self, sub: str = "py") -> rp.CommandBackendLauncher:
        return rp.CommandBackendLauncher.for_current_user(
            socket_dir=str(self.root / sub / "s"),
            log_dir=str(self.root / sub / "logs"),
            ready_timeout=HANG_GUARD,
        )


def make_tree(release: Path) -> Tree:
    root = Path(tempfile.mkdtemp(prefix="rpb", dir="/tmp"))
    os.chmod(root, 0o700)
    version_dir = root / VERSION
    version_dir.mkdir(mode=0o755)
    os.chmod(version_dir, 0o755)
    rust_backend = version_dir / "rp-echo-backend"
    shutil.copyfile(release / "rp-echo-backend", rust_backend)
    os.chmod(rust_backend, 0o755)
    example = Path(rp.__file__).parent / "examples" / "echo_backend.py"
    python_backend = version_dir / "echo-backend.py"
    python_backend.write_bytes(f"#!{sys.executable}\n".encode() + example.read_bytes())
    os.chmod(python_backend, 0o755)
    # The launcher trusts a digest (and passes it to the backend) only for a
    # file that settled before it was hashed; let the fresh copies settle so
    # that the launches measure an installed binary, as in real use.
    settle(rust_backend, python_backend)
    return Tree(root, version_dir, rust_backend, python_backend)


def settle(*paths: Path) -> None:
    """Waits until each file's ctime is more than a whole second in the past
    (the launcher compares whole seconds)."""
    for path in paths:
        while int(time.time()) <= int(os.stat(path).st_ctime) + 1:
            time.sleep(0.1)


def rp_bench(release: Path, *args: object) -> dict[str, Any]:
    out = subprocess.run(
        [str(release / "rp-bench"), *map(str, args)],
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def rust_series(name: str, data: dict[str, Any], key: str = "samples_ns") -> Series:
    return Series(name, [ns / 1e9 for ns in data[key]])


def workdir(tree: Tree, name: str) -> Path:
    path = tree.root / name
    path.mkdir(mode=0o700, exist_ok=True)
    return path


# --- launches ----------------------------------------------------------------


def peer_pid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, _uid, _gid = struct.unpack("3i", creds)
    return int(pid)


def baseline_launch(
    binary: Path, path: str, digest: str = "", timeout: float = HANG_GUARD
) -> tuple[float, subprocess.Popen[bytes]]:
    """What users write today: Popen in a new session, a polling connect loop
    (1 ms between attempts), and a check that the peer is the child. With
    ``digest`` (the variable the launcher passes), the backend does the same
    work as under the launcher: it does not hash its own executable."""
    env = dict(os.environ)
    if digest:
        env[rp.ENV_EXE_DIGEST] = digest
    env.update(
        {
            rp.ENV_SERVICE_NAME: SERVICE,
            rp.ENV_SERVICE_VERSION: VERSION,
            rp.ENV_BACKEND_PIPE: path,
            rp.ENV_BACKEND_NAMESPACE: "shared",
            rp.ENV_INSTANCE: rp.BrokerInstanceKey.shared().id(),
        }
    )
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(binary)],
        env=env,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = start + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if proc.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError("baseline backend never accepted") from None
            time.sleep(0.001)
            continue
        try:
            if peer_pid(sock) != proc.pid:
                raise RuntimeError("baseline: the peer is not our child")
        finally:
            sock.close()
        return time.perf_counter() - start, proc


def stop_baseline(proc: subprocess.Popen[bytes], path: str) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=HANG_GUARD)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@dataclass
class ColdLaunch:
    floor: Series
    fair_floor: Series
    rust: Series
    python: Series
    baseline: Series


def python_round(binary: Path, root: Path, n: int, digest: str) -> dict[str, list[float]]:
    """One round on the Python side, in a process of its own (as the Rust
    side runs in an rp-bench process of its own): ``n`` verified launches,
    then ``n`` launches the way users write them today."""
    launcher = rp.CommandBackendLauncher.for_current_user(
        socket_dir=str(root / "s"), log_dir=str(root / "logs"), ready_timeout=HANG_GUARD
    )
    sd = rp.ServiceDefinition(
        service_name=SERVICE,
        binary_path=str(binary),
        per_version_binary_dir=str(binary.parent),
        isolation=rp.Isolation.SHARED,
    )
    key = rp.BackendKey.for_service(sd, VERSION)
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(n):
        start = time.perf_counter()
        handle = launcher.launch(key, sd)
        ours.append(time.perf_counter() - start)
        handle.shutdown(5.0)
    for i in range(n):
        path = str(root / f"b{i}.sock")
        took, proc = baseline_launch(binary, path, digest)
        theirs.append(took)
        stop_baseline(proc, path)
    return {"launch": ours, "baseline": theirs}


def cold_launches(
    release: Path, tree: Tree, binary: Path, label: str, rounds: int, per_round: int
) -> ColdLaunch:
    """Alternating rounds of: the Rust floor and the Rust-side verified
    launch (interleaved within one rp-bench process), then the verified
    launch from Python and the Python baseline (within one Python process,
    see ``python_round``)."""
    floor: list[float] = []
    fair_floor: list[float] = []
    rust: list[float] = []
    python: list[float] = []
    baseline: list[float] = []
    rust_dir = workdir(tree, f"rust-{label}")
    py_dir = workdir(tree, f"py-{label}")
    digest = rp_bench(release, "digest-env", binary)["value"]
    for _round in range(rounds):
        data = rp_bench(release, "cold", binary, rust_dir, per_round)
        floor += [ns / 1e9 for ns in data["floor_ns"]]
        fair_floor += [ns / 1e9 for ns in data["fair_floor_ns"]]
        rust += [ns / 1e9 for ns in data["launch_ns"]]
        out = subprocess.run(
            [sys.executable, __file__, "--python-round", str(binary), str(py_dir), str(per_round), digest],
            check=True,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        sides = json.loads(out.stdout)
        python += sides["launch"]
        baseline += sides["baseline"]
    return ColdLaunch(
        Series(f"old floor, the backend hashes itself ({label})", floor),
        Series(f"fair floor, digest passed as the launcher does ({label})", fair_floor),
        Series(f"verified launch from Rust ({label})", rust),
        Series(f"verified launch from Python ({label})", python),
        Series(f"Popen + connect loop ({label})", baseline),
    )


# --- reuse -------------------------------------------------------------------


def python_router_hits(tree: Tree, n: int) -> Series:
    sd = tree.sd(tree.rust_backend)
    router = rp.HelloRouter(tree.launcher("router"), {SERVICE: sd})
    first = router.get_backend(SERVICE, VERSION)
    samples = []
    clock = time.perf_counter
    for _ in range(n):
        start = clock()
        outcome = router.route(SERVICE, VERSION)
        samples.append(clock() - start)
        assert isinstance(outcome, rp.Negotiated) and outcome.handle.pid == first.pid
    router.shutdown_all()
    return Series("router hit from Python", samples)


POOL_CLIENT = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    import running_process as rp
    root, binary, version_dir, n, version = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    interval = float(sys.argv[6])
    t_import = time.perf_counter() - t0
    sd = rp.ServiceDefinition(service_name="benchecho", binary_path=binary,
                              per_version_binary_dir=version_dir, isolation=rp.Isolation.SHARED)
    key = rp.BackendKey.for_service(sd, version)
    launcher = rp.CommandBackendLauncher.for_current_user(socket_dir=root + "/s", log_dir=root + "/logs",
                                                          full_probe_interval=interval)
    pool = rp.BackendPool(launcher, state_dir=root + "/state")
    samples = []
    pids = set()
    for _ in range(n):
        start = time.perf_counter()
        handle = pool.get_or_launch(key, sd)
        samples.append(time.perf_counter() - start)
        pids.add(handle.pid)
    print(json.dumps({"samples": samples, "pids": sorted(pids), "import_s": t_import}))
    """
)


def pool_client(
    root: Path,
    binary: Path,
    version_dir: Path,
    n: int,
    version: str = VERSION,
    full_probe_interval: float = 5.0,
) -> dict[str, Any]:
    """Runs ``POOL_CLIENT`` in a fresh interpreter: ``n`` pool hits on the
    backend of ``version``, its launcher re-probing a backend it proved
    after ``full_probe_interval`` seconds (0: on every hit); its samples,
    pids and import time."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            POOL_CLIENT,
            str(root),
            str(binary),
            str(version_dir),
            str(n),
            version,
            str(full_probe_interval),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def fresh_pool_hits(tree: Tree, release: Path, processes: int) -> tuple[Series, Series, Optional[bool]]:
    """The usual install pattern: a tool copies its daemon into a new
    versioned directory and launches it at once through the pool; then
    ``processes`` fresh processes hit it, one after another, each with one
    ``get_or_launch``. Returns the launch, the hits, and whether the
    manifest ended up with the binary's stamp (so later adopters stop
    hashing)."""
    root = workdir(tree, "fresh")
    version_dir = root / "9.9.9"
    version_dir.mkdir(mode=0o755)
    os.chmod(version_dir, 0o755)
    binary = version_dir / "rp-echo-backend"
    shutil.copyfile(release / "rp-echo-backend", binary)
    os.chmod(binary, 0o755)
    sd = rp.ServiceDefinition(
        service_name=SERVICE,
        binary_path=str(binary),
        per_version_binary_dir=str(version_dir),
        isolation=rp.Isolation.SHARED,
    )
    key = rp.BackendKey.for_service(sd, VERSION)
    launcher = rp.CommandBackendLauncher.for_current_user(
        socket_dir=str(root / "s"), log_dir=str(root / "logs"), ready_timeout=HANG_GUARD
    )
    pool = rp.BackendPool(launcher, state_dir=str(root / "state"))
    start = time.perf_counter()
    owner = pool.get_or_launch(key, sd)
    launched = time.perf_counter() - start
    hits: list[float] = []
    for _ in range(processes):
        data = pool_client(root, binary, version_dir, 1)
        assert data["pids"] == [owner.pid], "the pool hit launched another backend"
        hits += data["samples"]
    manifests = list((root / "state").glob("*.json"))
    stamped = json.loads(manifests[0].read_text()).get("binary_stamp") is not None if manifests else None
    pool.stop_all()
    owner.shutdown(5.0)
    return (
        Series("pool launch of a binary copied into place just before", [launched]),
        Series("pool hit from another process, binary copied into place just before", hits),
        stamped,
    )


def pool_hits(tree: Tree, n: int) -> tuple[Series, Series, Series, int]:
    """A backend launched through the pool by one process, then hit by
    fresh processes, alternating: its first hit (a full probe), its
    following hits on the kernel's word (the default), and the same hits
    with a full probe each (``full_probe_interval=0``)."""
    root = workdir(tree, "pool")
    sd = tree.sd(tree.rust_backend)
    key = rp.BackendKey.for_service(sd, VERSION)
    launcher = rp.CommandBackendLauncher.for_current_user(
        socket_dir=str(root / "s"), log_dir=str(root / "logs"), ready_timeout=HANG_GUARD
    )
    pool = rp.BackendPool(launcher, state_dir=str(root / "state"))
    owner = pool.get_or_launch(key, sd)
    firsts: list[float] = []
    attested: list[float] = []
    probed: list[float] = []
    for _ in range(5):
        for interval, into in ((5.0, attested), (0.0, probed)):
            data = pool_client(root, tree.rust_backend, tree.version_dir, n, full_probe_interval=interval)
            assert data["pids"] == [owner.pid], "the pool hit launched another backend"
            firsts.append(data["samples"][0])
            into += data["samples"][1:]
    pool.stop_all()
    owner.shutdown(5.0)
    return (
        Series("pool hit, first in a fresh process", firsts),
        Series("pool hit from another process", attested),
        Series("pool hit from another process, full probe every hit", probed),
        owner.pid,
    )


def python_verifies(tree: Tree, n: int) -> Series:
    launcher = tree.launcher("verify")
    sd = tree.sd(tree.rust_backend)
    handle = launcher.launch(rp.BackendKey.for_service(sd, VERSION), sd)
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        handle.verify()
        samples.append(time.perf_counter() - start)
    handle.shutdown(5.0)
    return Series("BackendHandle.verify() from Python", samples)


# --- races -------------------------------------------------------------------


RACER = textwrap.dedent(
    """
    import json, os, sys, time
    import running_process as rp
    root, binary, version_dir, go, quit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    sd = rp.ServiceDefinition(service_name="benchecho", binary_path=binary,
                              per_version_binary_dir=version_dir, isolation=rp.Isolation.SHARED)
    key = rp.BackendKey.for_service(sd, "1.0.0")
    launcher = rp.CommandBackendLauncher.for_current_user(socket_dir=root + "/s", log_dir=root + "/logs",
                                                          ready_timeout=60.0)
    pool = rp.BackendPool(launcher, state_dir=root + "/state")
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    os.read(go, 1)
    handle = pool.get_or_launch(key, sd)
    done = time.monotonic_ns()
    print(json.dumps({"pid": handle.pid, "done_ns": done}))
    sys.stdout.flush()
    # Stay until every racer is done: an interpreter exiting takes CPU the
    # racers still at work would otherwise wait for.
    os.read(quit, 1)
    """
)


def race(tree: Tree, processes: int, rounds: int, release: Optional[Path] = None) -> tuple[Series, list[int]]:
    """``processes`` prepared processes (interpreter started, package
    imported, pool created) released at once on one key of an empty pool:
    wall time from the release to the last verified handle, and the number
    of spawns (launch log files) per round. Racers stay alive until all are
    done, so that exiting interpreters do not take CPU from the others.
    The racers are Python processes, or ``rp-bench racer`` processes when
    ``release`` (the Rust build directory) is given."""
    walls: list[float] = []
    spawns: list[int] = []
    for r in range(rounds):
        root = workdir(tree, f"race-{'py' if release is None else 'rs'}-{r}")
        go_read, go_write = os.pipe()
        quit_read, quit_write = os.pipe()
        if release is None:
            command = [sys.executable, "-c", RACER, str(root), str(tree.rust_backend), str(tree.version_dir)]
        else:
            command = [str(release / "rp-bench"), "racer", str(tree.rust_backend), str(root)]
        procs = [
            subprocess.Popen(
                [*command, str(go_read), str(quit_read)],
                stdout=subprocess.PIPE,
                text=True,
                pass_fds=(go_read, quit_read),
            )
            for _ in range(processes)
        ]
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        released = time.monotonic_ns()
        os.write(go_write, b"g" * processes)
        results = []
        for p in procs:
            assert p.stdout is not None
            results.append(json.loads(p.stdout.readline()))
        os.write(quit_write, b"q" * processes)
        for p in procs:
            p.communicate(timeout=HANG_GUARD)
        for fd in (go_read, go_write, quit_read, quit_write):
            os.close(fd)
        pids = {res["pid"] for res in results}
        walls.append((max(res["done_ns"] for res in results) - released) / 1e9)
        spawns.append(len(list((root / "logs").glob("*.log"))))
        assert len(pids) == 1, f"{len(pids)} distinct backends in one race"
        launcher = rp.CommandBackendLauncher.for_current_user(
            socket_dir=str(root / "s"), log_dir=str(root / "logs")
        )
        rp.BackendPool(launcher, state_dir=str(root / "state")).stop_all()
    kind = "Python" if release is None else "Rust"
    return Series(f"{processes} {kind} processes racing on one key", walls), spawns


# --- hashing -----------------------------------------------------------------


def hashing(release: Path, tree: Tree, mib: int, rounds: int) -> tuple[Series, Series, Series, Series]:
    path = tree.root / "big.bin"
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(mib):
            f.write(chunk[i % 7 :] + chunk[: i % 7])
    ours: list[float] = []
    coreutils: list[float] = []
    python: list[float] = []
    expected = None
    for _ in range(rounds):
        ours += rust_series("", rp_bench(release, "sha256", path, 1)).samples
        start = time.perf_counter()
        out = subprocess.run(["sha256sum", str(path)], check=True, capture_output=True, text=True)
        coreutils.append(time.perf_counter() - start)
        start = time.perf_counter()
        digest = rp.sha256_file(str(path))
        python.append(time.perf_counter() - start)
        assert out.stdout.split()[0] == digest.hex(), "sha256sum and sha256_file disagree"
        expected = digest
    assert expected is not None
    settle(path)  # as an installed binary has
    cache = rust_series("digest lookup of an unchanged file", rp_bench(release, "digest-cache", path, 50))
    path.unlink()
    return (
        Series(f"sha256_file of {mib} MiB (Rust)", ours),
        Series(f"sha256sum of {mib} MiB", coreutils),
        Series(f"sha256_file of {mib} MiB from Python", python),
        cache,
    )


# --- import and memory -------------------------------------------------------


def import_times(n: int) -> tuple[Series, Series]:
    bare: list[float] = []
    ours: list[float] = []
    for _ in range(n):
        for code, sink in (("pass", bare), ("import running_process", ours)):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            sink.append(time.perf_counter() - start)
    return Series("python -c pass", bare), Series("python -c 'import running_process'", ours)


PER_CALL = textwrap.dedent(
    """
    import sys
    import running_process as rp
    root, binary, version_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    sd = rp.ServiceDefinition(service_name="benchecho", binary_path=binary,
                              per_version_binary_dir=version_dir, isolation=rp.Isolation.SHARED)
    launcher = rp.CommandBackendLauncher.for_current_user(socket_dir=root + "/s", log_dir=root + "/logs")
    pool = rp.BackendPool(launcher, state_dir=root + "/state")
    conn = pool.get_or_launch(rp.BackendKey.for_service(sd, "1.0.0"), sd).connect()
    conn.sendall(b"x")
    assert conn.recv(1) == b"x"
    conn.close()
    """
)


def per_call(tree: Tree, n: int) -> tuple[Series, Series]:
    """What a compiler wrapper pays per run: a fresh interpreter that imports
    the package, hits the pool, connects and exchanges a byte, against a
    bare interpreter start."""
    root = workdir(tree, "percall")
    sd = tree.sd(tree.rust_backend)
    launcher = rp.CommandBackendLauncher.for_current_user(
        socket_dir=str(root / "s"), log_dir=str(root / "logs"), ready_timeout=HANG_GUARD
    )
    pool = rp.BackendPool(launcher, state_dir=str(root / "state"))
    owner = pool.get_or_launch(rp.BackendKey.for_service(sd, VERSION), sd)
    bare: list[float] = []
    ours: list[float] = []
    args = [str(root), str(tree.rust_backend), str(tree.version_dir)]
    for _ in range(n):
        for command, sink in ((["-c", "pass"], bare), (["-c", PER_CALL, *args], ours)):
            start = time.perf_counter()
            subprocess.run([sys.executable, *command], check=True, timeout=HANG_GUARD)
            sink.append(time.perf_counter() - start)
    pool.stop_all()
    owner.shutdown(5.0)
    return Series("python -c pass (per-call baseline)", bare), Series(
        "import, pool hit, first connect and one echo", ours
    )


# --- cost curves ---------------------------------------------------------------

SIZES_MIB = (1, 16, 64, 256)
POOL_KEYS = (1, 10, 100, 1000)
ROUTER_KEYS = (10, 100, 1000, 10_000, 100_000)
LAUNCHERS = (1, 2, 4, 8)


def padded_backend(tree: Tree, release: Path, mib: int) -> Path:
    """The Rust example backend grown to ``mib`` MiB by trailing bytes the
    loader ignores, in a per-version directory of its own, settled."""
    version_dir = tree.root / f"size-{mib}"
    version_dir.mkdir(mode=0o755)
    os.chmod(version_dir, 0o755)
    binary = version_dir / "rp-echo-backend"
    shutil.copyfile(release / "rp-echo-backend", binary)
    # Written out (not a sparse hole), so that, as after a real install, the
    # file's pages are in the page cache when it is first hashed.
    chunk = b"\0" * (1024 * 1024)
    with open(binary, "ab") as f:
        while f.tell() < mib * 1024 * 1024:
            f.write(chunk[: mib * 1024 * 1024 - f.tell()])
    os.chmod(binary, 0o755)
    settle(binary)
    return binary


def launch_size_curve(tree: Tree, release: Path, sizes: tuple[int, ...], n: int) -> list[dict[str, Any]]:
    """Verified cold launch against binary size: the first launch in a
    process hashes the binary, the later ones find its digest cached."""
    points = []
    for mib in sizes:
        binary = padded_backend(tree, release, mib)
        samples = rp_bench(release, "launch", binary, workdir(tree, f"size-run-{mib}"), n)["samples_ns"]
        points.append(
            {
                "mib": mib,
                "first_hash_s": samples[0] / 1e9,
                "cached_p50_s": statistics.median(samples[1:]) / 1e9,
            }
        )
        binary.unlink()
    return points


def pool_keys_curve(tree: Tree, counts: tuple[int, ...], hits: int) -> list[dict[str, Any]]:
    """Pool hit from another process against the number of live backends
    recorded in the same pool (one key each)."""
    points = []
    sd = tree.sd(tree.rust_backend)
    for count in counts:
        root = workdir(tree, f"pool-keys-{count}")
        launcher = rp.CommandBackendLauncher.for_current_user(
            socket_dir=str(root / "s"),
            log_dir=str(root / "logs"),
            ready_timeout=HANG_GUARD,
            idle_timeout_secs=None,
        )
        pool = rp.BackendPool(launcher, state_dir=str(root / "state"))
        handles = [pool.get_or_launch(rp.BackendKey.for_service(sd, f"1.0.{i}"), sd) for i in range(count)]
        try:
            data = pool_client(root, tree.rust_backend, tree.version_dir, hits, f"1.0.{count // 2}")
            samples = data["samples"][1:]
            points.append({"keys": count, "hit_p50_s": statistics.median(samples)})
        finally:
            pool.stop_all(timeout=5.0)
            for handle in handles:
                handle.kill()
    return points


def router_keys_curve(release: Path, counts: tuple[int, ...], n: int) -> list[dict[str, Any]]:
    """Router hit against the number of registered keys (stand-in handles)."""
    return [
        {
            "keys": count,
            "hit_p50_s": statistics.median(rp_bench(release, "router-curve", count, n)["samples_ns"]) / 1e9,
        }
        for count in counts
    ]


def throughput_curve(tree: Tree, release: Path, counts: tuple[int, ...], per: int) -> list[dict[str, Any]]:
    """Verified launches per second with N launching processes at once, each
    launching (and shutting down) ``per`` backends of its own key."""
    points = []
    for count in counts:
        start = time.perf_counter()
        procs = [
            subprocess.Popen(
                [
                    str(release / "rp-bench"),
                    "launch",
                    str(tree.rust_backend),
                    str(workdir(tree, f"tp-{count}-{i}")),
                    str(per),
                ],
                stdout=subprocess.DEVNULL,
            )
            for i in range(count)
        ]
        for proc in procs:
            if proc.wait(timeout=HANG_GUARD) != 0:
                raise RuntimeError("a launching process failed")
        wall = time.perf_counter() - start
        points.append({"launchers": count, "launches_per_s": count * per / wall})
    return points


def cost_curves(tree: Tree, release: Path, quick: bool) -> dict[str, list[dict[str, Any]]]:
    print("cost curves ...", file=sys.stderr)
    return {
        "launch_vs_binary_size": launch_size_curve(
            tree, release, SIZES_MIB[:2] if quick else SIZES_MIB, 3 if quick else 6
        ),
        "pool_hit_vs_live_backends": pool_keys_curve(
            tree, POOL_KEYS[:2] if quick else POOL_KEYS, 20 if quick else 200
        ),
        "router_hit_vs_keys": router_keys_curve(
            release, ROUTER_KEYS[:2] if quick else ROUTER_KEYS, 200 if quick else 5000
        ),
        "launch_throughput_vs_launchers": throughput_curve(
            tree, release, LAUNCHERS[:2] if quick else LAUNCHERS, 3 if quick else 20
        ),
    }


def slope(points: list[dict[str, Any]], x: str, y: str) -> float:
    """Least-squares slope of ``y`` against ``x``."""
    xs = [p[x] for p in points]
    ys = [p[y] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((a - mx) ** 2 for a in xs)
    return sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / den if den else 0.0


def draw_curves(curves: dict[str, list[dict[str, Any]]], out: Path) -> list[str]:
    """One PNG chart per curve in ``out``; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts = [
        (
            "curve-launch-size.png",
            "Verified cold launch vs binary size",
            "binary size (MiB)",
            "launch (ms)",
            "launch_vs_binary_size",
            "mib",
            [
                ("first_hash_s", "first launch (hashes the binary)"),
                ("cached_p50_s", "later launches (digest cached)"),
            ],
            1e3,
            False,
        ),
        (
            "curve-pool-keys.png",
            "Pool hit from another process vs live backends",
            "live backends in the pool",
            "hit p50 (µs)",
            "pool_hit_vs_live_backends",
            "keys",
            [("hit_p50_s", "pool hit")],
            1e6,
            True,
        ),
        (
            "curve-router-keys.png",
            "Router hit vs registered keys",
            "keys",
            "hit p50 (µs)",
            "router_hit_vs_keys",
            "keys",
            [("hit_p50_s", "router hit (Rust)")],
            1e6,
            True,
        ),
        (
            "curve-throughput.png",
            "Launch throughput vs parallel launchers",
            "launching processes",
            "verified launches per second",
            "launch_throughput_vs_launchers",
            "launchers",
            [("launches_per_s", "throughput")],
            1.0,
            False,
        ),
    ]
    names = []
    for name, title, xlabel, ylabel, key, x, series, scale, logx in charts:
        points = curves[key]
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for field_name, label in series:
            ax.plot([p[x] for p in points], [p[field_name] * scale for p in points], marker="o", label=label)
        if logx:
            ax.set_xscale("log")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / name)
        plt.close(fig)
        names.append(name)
    return names


MEMORY = textwrap.dedent(
    """
    import json, sys
    import running_process as rp
    root, binary, version_dir, warm, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    def rss_kib():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    sd = rp.ServiceDefinition(service_name="benchecho", binary_path=binary,
                              per_version_binary_dir=version_dir, isolation=rp.Isolation.SHARED)
    key = rp.BackendKey.for_service(sd, "1.0.0")
    launcher = rp.CommandBackendLauncher.for_current_user(socket_dir=root + "/s", log_dir=root + "/logs",
                                                          ready_timeout=60.0)
    def cycle():
        handle = launcher.launch(key, sd)
        handle.shutdown(5.0)
    for _ in range(warm):
        cycle()
    before = rss_kib()
    for _ in range(n):
        cycle()
    after = rss_kib()
    print(json.dumps({"before_kib": before, "after_kib": after}))
    """
)


def memory(tree: Tree, warm: int, n: int) -> dict[str, int]:
    root = workdir(tree, "memory")
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            MEMORY,
            str(root),
            str(tree.rust_backend),
            str(tree.version_dir),
            str(warm),
            str(n),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    data: dict[str, int] = json.loads(out.stdout)
    return data


# --- the run -----------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / (1 << 20), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "rustc": rustc,
        "commit": commit or "unknown",
        "load_average_at_start": os.getloadavg(),
    }


def ratio_row(
    figure: str, measured: Series, baseline: Series, limit: float, target: str, lower_is_better: bool = True
) -> Row:
    ratio = measured.p50 / baseline.p50
    met = ratio <= limit if lower_is_better else ratio >= limit
    return Row(
        figure,
        f"p50 {fmt_time(measured.p50)}, p90 {fmt_time(measured.p90)}",
        f"{baseline.name}: p50 {fmt_time(baseline.p50)}",
        ratio,
        target,
        met,
        {"measured": measured.summary(), "baseline": baseline.summary()},
    )


def run(quick: bool) -> tuple[dict[str, Any], list[Row]]:
    release = build()
    tree = make_tree(release)
    rows: list[Row] = []
    series: dict[str, Any] = {}

    def keep(*many: Series) -> None:
        for s in many:
            series[s.name] = s.summary()

    try:
        rounds, per_round = (2, 3) if quick else (6, 10)
        for label, binary, rnds, per in (
            ("Rust backend", tree.rust_backend, rounds, per_round),
            ("Python backend", tree.python_backend, 2 if quick else 4, 2 if quick else 5),
        ):
            print(f"cold launches, {label} ...", file=sys.stderr)
            cold = cold_launches(release, tree, binary, label, rnds, per)
            keep(cold.floor, cold.fair_floor, cold.rust, cold.python, cold.baseline)
            if label == "Rust backend":
                rust_cold = cold
                rows.append(
                    ratio_row(
                        "verified cold launch, Rust backend, from Rust, against the fair floor",
                        cold.rust,
                        cold.fair_floor,
                        1.10,
                        "≤ 1.10 × fair floor",
                    )
                )
                rows.append(
                    ratio_row(
                        "the same, from Python, against the fair floor",
                        cold.python,
                        cold.fair_floor,
                        1.10,
                        "≤ 1.10 × fair floor",
                    )
                )
                rows.append(
                    ratio_row(
                        "the same, from Rust, against the old floor (backend hashes itself)",
                        cold.rust,
                        cold.floor,
                        1.25,
                        "(reported; the old target ≤ 1.25 ×)",
                    )
                )
                rows.append(
                    ratio_row(
                        "the same, from Python", cold.python, cold.rust, 1.05, "≤ 1.05 × the Rust-side launch"
                    )
                )
            rows.append(
                ratio_row(
                    f"verified cold launch vs Popen + connect loop, {label}",
                    cold.python,
                    cold.baseline,
                    1.0,
                    "< 1 (faster, with full verification)",
                )
            )

        print("reuse ...", file=sys.stderr)
        n_hits = 1000 if quick else 20000
        rust_hits = rust_series(
            "router hit from Rust", rp_bench(release, "hit", tree.rust_backend, workdir(tree, "hit"), n_hits)
        )
        py_hits = python_router_hits(tree, n_hits)
        keep(rust_hits, py_hits)
        rows.append(
            Row(
                "registry hit in one process (no re-probe), Rust",
                f"p50 {fmt_time(rust_hits.p50)}, p90 {fmt_time(rust_hits.p90)}",
                "",
                None,
                "p50 ≤ 5 µs",
                rust_hits.p50 <= 5e-6,
            )
        )
        rows.append(
            Row(
                "registry hit in one process (no re-probe), Python",
                f"p50 {fmt_time(py_hits.p50)}, p90 {fmt_time(py_hits.p90)}",
                "",
                None,
                "p50 ≤ 20 µs",
                py_hits.p50 <= 20e-6,
            )
        )

        first, hits, probed_hits, _ = pool_hits(tree, 50 if quick else 400)
        keep(first, hits, probed_hits)
        rows.append(
            Row(
                "pool hit from another process, kernel-attested after its first (manifest, pidfd, "
                "start time, exe stamp, peer creds; no probe), Python",
                f"p50 {fmt_time(hits.p50)}, p90 {fmt_time(hits.p90)}; first hit in a fresh process "
                f"(full probe) p50 {fmt_time(first.p50)}",
                f"full probe every hit p50 {fmt_time(probed_hits.p50)}",
                hits.p50 / probed_hits.p50,
                "p50 ≤ 50 µs",
                hits.p50 <= 50e-6,
            )
        )

        fresh_launch, fresh_hits, stamped = fresh_pool_hits(tree, release, 5 if quick else 100)
        keep(fresh_launch, fresh_hits)
        rows.append(
            ratio_row(
                "pool hit from another process, binary copied into place and launched at once"
                f" (stamp recorded by an adopter: {'yes' if stamped else 'no'})",
                fresh_hits,
                first,
                1.5,
                "≈ the first hit in a fresh process on a settled binary (≤ 1.5 ×): hashed once at most",
            )
        )

        n_probe = 200 if quick else 5000
        probe_dir = workdir(tree, "probe")
        probe_rust = rust_series(
            "probe round trip, Rust backend",
            rp_bench(release, "probe", tree.rust_backend, probe_dir, n_probe),
        )
        probe_py = rust_series(
            "probe round trip, Python backend",
            rp_bench(release, "probe", tree.python_backend, probe_dir, n_probe),
        )
        verify_rust = rust_series(
            "BackendHandle::verify, Rust backend",
            rp_bench(release, "verify", tree.rust_backend, probe_dir, n_probe),
        )
        verify_py = python_verifies(tree, n_probe)
        keep(probe_rust, probe_py, verify_rust, verify_py)
        for s in (probe_rust, probe_py):
            rows.append(
                Row(
                    s.name,
                    f"p50 {fmt_time(s.p50)}, p90 {fmt_time(s.p90)}",
                    "",
                    None,
                    "p50 ≤ 60 µs",
                    s.p50 <= 60e-6,
                )
            )
        rows.append(
            Row(
                "full verification (peer creds, /proc, probe), Rust / Python",
                f"p50 {fmt_time(verify_rust.p50)} / {fmt_time(verify_py.p50)}",
                "",
                None,
                "(reported)",
                None,
            )
        )

        print("hashing ...", file=sys.stderr)
        mib = 32 if quick else 256
        ours, coreutils, py_hash, cache = hashing(release, tree, mib, 2 if quick else 3)
        keep(ours, coreutils, py_hash, cache)
        throughput = coreutils.p50 / ours.p50
        rows.append(
            Row(
                f"SHA-256 of a {mib} MiB file",
                f"{fmt_time(ours.p50)} ({mib / ours.p50:.0f} MiB/s); from Python {fmt_time(py_hash.p50)}",
                f"sha256sum: {fmt_time(coreutils.p50)} ({mib / coreutils.p50:.0f} MiB/s)",
                throughput,
                "≥ 0.90 × sha256sum throughput",
                throughput >= 0.9,
            )
        )
        cached = Series("digest lookup, unchanged file", cache.samples[1:])
        rows.append(
            Row(
                "unchanged binary not rehashed",
                f"p50 {fmt_time(cached.p50)} after a first hash of {fmt_time(cache.samples[0])}",
                "",
                None,
                "no rehash",
                cached.p50 < cache.samples[0] / 100,
            )
        )

        print("racing processes ...", file=sys.stderr)
        racers = 8 if quick else 32
        for racer_release, one in ((release, rust_cold.rust), (None, rust_cold.python)):
            walls, spawns = race(tree, racers, 1 if quick else 5, racer_release)
            keep(walls)
            rows.append(
                Row(
                    walls.name,
                    f"spawns per round {spawns}; wall p50 {fmt_time(walls.p50)}",
                    f"{one.name}: {fmt_time(one.p50)}",
                    walls.p50 / one.p50,
                    "exactly 1 spawn; wall ≤ 2 × one cold launch",
                    all(s == 1 for s in spawns) and walls.p50 <= 2 * one.p50,
                )
            )

        print("import time ...", file=sys.stderr)
        bare, imported = import_times(5 if quick else 40)
        keep(bare, imported)
        over = imported.p50 - bare.p50
        rows.append(
            Row(
                "import running_process",
                f"+{fmt_time(over)} over bare start (p50 {fmt_time(imported.p50)})",
                f"bare interpreter: {fmt_time(bare.p50)}",
                None,
                "≤ 15 ms over bare start",
                over <= 15e-3,
            )
        )

        print("per-call cost ...", file=sys.stderr)
        bare_call, call = per_call(tree, 5 if quick else 30)
        keep(bare_call, call)
        over_call = call.p50 - bare_call.p50
        rows.append(
            Row(
                "import, pool hit, first connect and one echo, in a fresh interpreter",
                f"+{fmt_time(over_call)} over bare start (p50 {fmt_time(call.p50)})",
                f"bare interpreter: {fmt_time(bare_call.p50)}",
                None,
                "≤ 15 ms over bare start",
                over_call <= 15e-3,
            )
        )

        print("memory ...", file=sys.stderr)
        warm, n = (20, 100) if quick else (50, 1000)
        mem = memory(tree, warm, n)
        growth = mem["after_kib"] - mem["before_kib"]
        series["rss"] = mem
        rows.append(
            Row(
                f"launcher RSS over {n} launches",
                f"{growth:+d} KiB ({mem['before_kib']} → "
                f"{mem['after_kib']} KiB, after {warm} warm-up launches)",
                "",
                None,
                "growth < 1 MiB",
                growth < 1024,
            )
        )
        curves = cost_curves(tree, release, quick)
    finally:
        shutil.rmtree(tree.root, ignore_errors=True)
    info = machine()
    info["load_average_at_end"] = os.getloadavg()
    return {"machine": info, "quick": quick, "series": series, "curves": curves}, rows


def curve_notes(curves: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Where each curve bends and why, from the measured points."""
    size = curves["launch_vs_binary_size"]
    pool = curves["pool_hit_vs_live_backends"]
    router = curves["router_hit_vs_keys"]
    tp = curves["launch_throughput_vs_launchers"]
    per_mib = slope(size, "mib", "first_hash_s") * 1e3
    cached = [p["cached_p50_s"] * 1e3 for p in size]
    pool_text = ", ".join("{}: {:.0f} µs".format(p["keys"], p["hit_p50_s"] * 1e6) for p in pool)
    router_text = ", ".join("{}: {:.1f} µs".format(p["keys"], p["hit_p50_s"] * 1e6) for p in router)
    tp_text = ", ".join("{}: {:.0f}/s".format(p["launchers"], p["launches_per_s"]) for p in tp)
    one = tp[0]["launches_per_s"]
    efficiency = ", ".join(
        "{:.0f} % at {}".format(100 * p["launches_per_s"] / (p["launchers"] * one), p["launchers"])
        for p in tp[1:]
    )
    scaling = (
        f"Against {len(tp) and tp[0]['launchers']} launcher times the number of launchers: {efficiency}. "
        "A launch is partly CPU work on both sides (spawn, digest lookup, probe) and partly "
        "waiting for the backend to bind, which other launchers fill; launchers of different "
        "keys share no lock, so throughput grows while there is waiting left to fill and "
        "bends once launchers and starting backends keep both cores busy."
    )
    router_growth = router[-1]["hit_p50_s"] / router[0]["hit_p50_s"]
    pool_growth = pool[-1]["hit_p50_s"] / pool[0]["hit_p50_s"]
    return [
        f"- **Launch vs binary size.** The first launch of a binary in a process grows by "
        f"{per_mib:.2f} ms per MiB: it reads and hashes the whole file once. Later launches "
        f"take {min(cached):.2f} to {max(cached):.2f} ms whatever the size: the digest is "
        "cached while the file's stamp is unchanged, and the launcher passes it to the "
        "backend, which then does not hash itself either; `execve` maps the file, it does "
        "not read it.",
        f"- **Pool hit vs live backends** ({pool_text}; {pool_growth:.2f} × from the first "
        "point to the last). A hit reads one manifest (named by a hash of the key) and "
        "verifies one backend; nothing scans the state directory, so the work per hit does "
        "not grow with the number of keys. What moves the figure is the machine: many live "
        "processes and their sockets compete for the two cores and the caches.",
        f"- **Router hit vs keys** ({router_text}; {router_growth:.2f} × from 10 to the most "
        "keys). Catalog and registry are hash maps, so the work per hit is constant; a rise "
        "at the high end is the registry outgrowing the CPU caches, not the algorithm.",
        f"- **Launch throughput vs launchers** ({tp_text}). {scaling}",
    ]


def markdown(result: dict[str, Any], rows: list[Row], charts: Optional[list[str]] = None) -> str:
    m = result["machine"]
    lines = [
        "# Benchmark results",
        "",
        "Written by `python bench/run.py`"
        + (" --quick" if result["quick"] else "")
        + "; do not edit by hand.",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}",
        f"- Python {m['python']}, {m['rustc']}, commit {m['commit']}",
        f"- load average at start / end: {' '.join(f'{x:.2f}' for x in m['load_average_at_start'])} / "
        f"{' '.join(f'{x:.2f}' for x in m['load_average_at_end'])}",
        "",
        "| figure | measured | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}"
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        lines.append(f"| {row.figure} | {row.measured} | {row.baseline} | {ratio} | {row.target} | {met} |")
    lines += ["", "## All series", "", "| series | n | p50 | p90 | min |", "|---|---|---|---|---|"]
    for name, s in result["series"].items():
        if "p50_s" in s:
            lines.append(
                f"| {name} | {s['n']} | {fmt_time(s['p50_s'])} | {fmt_time(s['p90_s'])} | "
                f"{fmt_time(s['min_s'])} |"
            )
    if "curves" in result:
        lines += ["", "## Cost curves", ""]
        lines += [f"![{name}]({name})" for name in charts or []]
        lines += ["", *curve_notes(result["curves"])]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run with few iterations")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where results.json and RESULTS.md go (default: bench/, or a temp dir with --quick)",
    )
    parser.add_argument(
        "--python-round", nargs=4, metavar=("BINARY", "WORKDIR", "N", "DIGEST"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.python_round:
        binary, root, n, digest = args.python_round
        print(json.dumps(python_round(Path(binary), Path(root), int(n), digest)))
        return 0
    result, rows = run(args.quick)
    out = args.out or (Path(tempfile.mkdtemp(prefix="rp-bench-")) if args.quick else BENCH)
    out.mkdir(parents=True, exist_ok=True)
    result["rows"] = [
        {
            "figure": r.figure,
            "measured": r.measured,
            "baseline": r.baseline,
            "ratio": r.ratio,
            "target": r.target,
            "met": r.met,
            **r.data,
        }
        for r in rows
    ]
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    charts = draw_curves(result["curves"], out)
    text = markdown(result, rows, charts)
    (out / "RESULTS.md").write_text(text)
    print(text)
    print(f"written: {out / 'results.json'}, {out / 'RESULTS.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
