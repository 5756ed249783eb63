"""The launcher interface for Python code.

:class:`BackendLauncher` is what the rest of the package accepts as "a
launcher". :class:`~running_process.CommandBackendLauncher` (the Rust launcher)
is registered as one; Python code can subclass it to wrap, decorate or replace
launching (for example to add metrics or pick a binary at run time).
"""

from __future__ import annotations

import abc

from running_process._native import (
    BackendHandle,
    BackendKey,
    CommandBackendLauncher,
    ServiceDefinition,
    TraceContext,
)

# `typing` is left unimported at run time: it is a noticeable part of import time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

__all__ = ["BackendLauncher"]


class BackendLauncher(abc.ABC):
    """Starts a verified backend for a key."""

    @abc.abstractmethod
    def launch(
        self,
        key: BackendKey,
        service_definition: ServiceDefinition,
        trace_context: Optional[TraceContext] = None,
    ) -> BackendHandle:
        """Starts the backend of ``key`` as ``service_definition`` describes
        and returns its verified handle, or raises a ``BackendLaunchError``."""


BackendLauncher.register(CommandBackendLauncher)
