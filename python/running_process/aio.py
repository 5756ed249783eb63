"""asyncio front ends of the blocking calls.

Each coroutine runs the blocking call (which releases the GIL) in the event
loop's default executor, so the loop keeps running while a backend starts.
They are also reachable as methods: ``launcher.launch_async(...)``,
``pool.get_or_launch_async(...)``, ``router.route_async(...)`` and
``router.get_backend_async(...)``.

Cancellation: a launch cannot be interrupted half way (that would leave a
half-verified process), so a cancelled coroutine lets the launch finish in
its thread and then disposes of the result: a backend from
:func:`launch_async` is killed and reaped, so a cancelled launch leaves
nothing behind. A backend from a pool or a router is recorded there, shared
with other callers, and ends by its idle timeout, so it is left alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Mapping
from typing import TYPE_CHECKING, Callable, Optional, TypeVar, Union

if TYPE_CHECKING:
    from running_process._native import (
        BackendHandle,
        BackendKey,
        BackendPool,
        CommandBackendLauncher,
        Endpoint,
        HelloRouter,
        Negotiated,
        Refused,
        ServiceDefinition,
        TraceContext,
    )

__all__ = ["launch_async", "get_or_launch_async", "route_async", "get_backend_async"]

T = TypeVar("T")


async def _in_thread(call: Callable[[], T], dispose: Optional[Callable[[T], object]] = None) -> T:
    loop = asyncio.get_running_loop()
    work: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        if not work.set_running_or_notify_cancel():
            return
        try:
            work.set_result(call())
        except BaseException as exc:  # delivered to the awaiting task
            work.set_exception(exc)

    loop.run_in_executor(None, run)
    try:
        return await asyncio.wrap_future(work)
    except asyncio.CancelledError:
        if dispose is not None:

            def after(done: concurrent.futures.Future[T]) -> None:
                if not done.cancelled() and done.exception() is None:
                    dispose(done.result())

            work.add_done_callback(after)
        raise


async def launch_async(
    launcher: CommandBackendLauncher,
    key: BackendKey,
    service_definition: ServiceDefinition,
    trace_context: Optional[TraceContext] = None,
    *,
    endpoint: Optional[Endpoint] = None,
    arg_values: Optional[Mapping[str, str]] = None,
) -> BackendHandle:
    """``launcher.launch(...)`` without blocking the event loop. If cancelled,
    a backend the launch started is killed once it completes; a daemon it
    found already serving a fixed endpoint is left running."""

    def dispose(handle: BackendHandle) -> None:
        if any(daemon.pid == handle.pid for _, daemon in launcher.live_children()):
            handle.kill()

    return await _in_thread(
        lambda: launcher.launch(
            key, service_definition, trace_context, endpoint=endpoint, arg_values=arg_values
        ),
        dispose=dispose,
    )


async def get_or_launch_async(
    pool: BackendPool,
    key: BackendKey,
    service_definition: ServiceDefinition,
    trace_context: Optional[TraceContext] = None,
) -> BackendHandle:
    """``pool.get_or_launch(...)`` without blocking the event loop."""
    return await _in_thread(lambda: pool.get_or_launch(key, service_definition, trace_context))


async def route_async(
    router: HelloRouter,
    service_name: str,
    wanted_version: str,
    trace_context: Optional[TraceContext] = None,
) -> Union[Negotiated, Refused]:
    """``router.route(...)`` without blocking the event loop."""
    return await _in_thread(lambda: router.route(service_name, wanted_version, trace_context))


async def get_backend_async(
    router: HelloRouter,
    service_name: str,
    wanted_version: str,
    trace_context: Optional[TraceContext] = None,
) -> BackendHandle:
    """``router.get_backend(...)`` without blocking the event loop."""
    return await _in_thread(lambda: router.get_backend(service_name, wanted_version, trace_context))
