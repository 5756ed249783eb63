"""asyncio front ends: launches that never block the event loop, and a
cancelled launch that leaves nothing behind."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

import running_process as rp
from support.launch import BackendDirs, Launches, echo, install, key_for
from support.procfs import children
from support.waits import poll_until


def test_launch_async_keeps_the_loop_running(dirs: BackendDirs, launches: Launches) -> None:
    # The backend waits for a line on a FIFO before it binds, so the launch
    # stays in flight until the loop has demonstrably kept ticking.
    fifo = dirs.root / "go"
    os.mkfifo(fifo, 0o600)
    body = f"import sys\nopen({str(fifo)!r}).readline()\n" + dirs.script.read_text().split("\n", 1)[1]
    script = install(dirs.version_dir / "gated", f"#!{sys.executable}\n{body}".encode())
    sd = dirs.sd(script)
    launcher = dirs.launcher()

    async def main() -> rp.BackendHandle:
        task = asyncio.ensure_future(launcher.launch_async(key_for(sd), sd, rp.TraceContext.new_root()))
        ticks = 0
        while ticks < 1000:  # the loop turns while the launch waits
            ticks += 1
            await asyncio.sleep(0)
        assert not task.done()
        with open(fifo, "w") as gate:
            gate.write("go\n")
        return await asyncio.wait_for(task, timeout=60)

    handle = asyncio.run(main())
    launches.handles.append(handle)
    assert handle.is_alive()
    assert echo(handle, b"async") == b"async"


def test_a_cancelled_launch_leaves_nothing_behind(dirs: BackendDirs, launches: Launches) -> None:
    fifo = dirs.root / "go"
    os.mkfifo(fifo, 0o600)
    body = f"import sys\nopen({str(fifo)!r}).readline()\n" + dirs.script.read_text().split("\n", 1)[1]
    script = install(dirs.version_dir / "gated", f"#!{sys.executable}\n{body}".encode())
    sd = dirs.sd(script)
    launcher = dirs.launcher()
    before = set(children())

    async def main() -> None:
        task = asyncio.ensure_future(launcher.launch_async(key_for(sd), sd))
        while not (set(children()) - before):  # the backend has been spawned
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with open(fifo, "w") as gate:  # let the launch finish in its thread
            gate.write("go\n")

    asyncio.run(main())
    poll_until(lambda: not (set(children()) - before), what="the cancelled backend to be reaped")
    poll_until(
        lambda: not dirs.socket_dir.exists() or not any(dirs.socket_dir.iterdir()),
        what="the cancelled backend's socket file to go",
    )


def test_pool_and_router_coroutines(dirs: BackendDirs, launches: Launches) -> None:
    sd = dirs.sd()
    launcher = dirs.launcher()
    pool = rp.BackendPool(launcher, dirs.root / "state")
    router = rp.HelloRouter(launcher, {sd.service_name: sd})

    async def main() -> tuple[set[int], rp.BackendHandle]:
        key = key_for(sd)
        pooled = await asyncio.gather(*(pool.get_or_launch_async(key, sd) for _ in range(4)))
        routed = await asyncio.gather(*(router.get_backend_async(sd.service_name, "1.0.0") for _ in range(4)))
        outcome = await router.route_async(sd.service_name, "1.0.0")
        assert isinstance(outcome, rp.Negotiated)
        refused = await router.route_async("unknown", "1.0.0")
        assert isinstance(refused, rp.Refused) and refused.code == rp.ErrorCode.SERVICE_UNKNOWN
        return {h.pid for h in pooled} | {h.pid for h in routed}, outcome.handle

    try:
        pids, handle = asyncio.run(main())
        assert len(pids) == 2  # one backend for the pool, one for the router
        assert handle.is_alive()
    finally:
        pool.stop_all()
        router.shutdown_all()
