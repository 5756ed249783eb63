"""Writing a backend in Python.

A backend started by a running-process launcher finds everything it needs in
its environment. :class:`~running_process.BackendServer` reads it, binds the
private endpoint, answers the launcher's identity probes on its own thread,
and hands every other connection to the application with no byte consumed::

    import threading
    import running_process as rp

    def serve(conn: rp.BackendConnection) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    server = rp.BackendServer.from_env()        # SIGTERM/SIGINT end it gracefully
    while (conn := server.accept()) is not None:  # None once it shuts down
        threading.Thread(target=serve, args=(conn,), daemon=True).start()

The server ends itself after ``RUNNING_PROCESS_BROKER_V1_IDLE_TIMEOUT_SECS``
with no open application connection, removing its socket file; ``accept``
then returns None and the program can exit. A connection counts as open until
it is closed (or garbage collected).

Start the script with a ``#!`` line naming an interpreter that has this
package installed; the identity then names the script, which is what the
launcher verifies.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from running_process._native import BackendServer

__all__ = ["BackendConnection"]


class BackendConnection(socket.socket):
    """An application connection accepted by a
    :class:`~running_process.BackendServer`: a ``socket.socket`` that tells
    the server when its descriptor is finally closed (by ``close()``, or by
    the last ``makefile()`` object), so the idle timeout counts it. Copies
    made with ``dup()`` are plain sockets of their own."""

    _server: Optional[BackendServer] = None

    def __init__(
        self,
        family: int = -1,
        type: int = -1,
        proto: int = -1,
        fileno: Optional[int] = None,
        *,
        server: Optional[BackendServer] = None,
    ) -> None:
        super().__init__(family, type, proto, fileno)
        self._server = server

    def _finished(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.connection_closed()

    def _real_close(self, *args: Any, **kwargs: Any) -> None:
        try:
            super()._real_close(*args, **kwargs)  # type: ignore[misc]
        finally:
            self._finished()

    def detach(self) -> int:
        fd = super().detach()
        self._finished()
        return fd

    def __del__(self) -> None:
        self._finished()
