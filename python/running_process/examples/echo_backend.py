"""An example backend in Python: a small echo service.

Launch it through a running-process launcher with a ``#!`` line naming an
interpreter that has running_process installed (the demo writes one). Every
application connection gets back every byte it sends; identity probes are
answered by the SDK. It exits when idle, on SIGTERM or SIGINT.
"""

from __future__ import annotations

import threading

import running_process as rp


def serve(conn: rp.BackendConnection) -> None:
    with conn:
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(data)
        except (ConnectionResetError, BrokenPipeError):
            return  # the client went away mid-conversation: nothing to answer


def main() -> int:
    server = rp.BackendServer.from_env()
    while True:
        conn = server.accept()
        if conn is None:
            return 0
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    raise SystemExit(main())
