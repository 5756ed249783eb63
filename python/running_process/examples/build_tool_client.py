"""A sample client: a build-tool wrapper that talks to its backend.

A compiler wrapper runs once per compilation, thousands of times per build,
often many at once. Each run asks the pool for the backend of its version:
the first run of the day launches and verifies it; every other run adopts it
after a cheap verification (one connect and one probe). The backend ends by
itself when the build is over (idle timeout).

Run it against the example echo backend::

    python -m running_process.examples.build_tool_client \\
        --definition /path/to/echo.servicedef --version 1.0.0 -- hello
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Optional

import running_process as rp


def ask_backend(pool: rp.BackendPool, sd: rp.ServiceDefinition, version: str, request: bytes) -> bytes:
    """Sends ``request`` to the verified backend of ``version`` and returns
    its whole answer."""
    key = rp.BackendKey.for_service(sd, version)
    handle = pool.get_or_launch(key, sd, rp.TraceContext.new_root())
    with handle.connect() as conn:
        conn.sendall(request)
        conn.shutdown(1)
        chunks: list[bytes] = []
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--definition", required=True, help="a .servicedef file")
    parser.add_argument("--version", required=True)
    parser.add_argument("--state-dir", default=None)
    parser.add_argument("words", nargs="*")
    args = parser.parse_args(argv)
    try:
        sd = rp.ServiceDefinition.load_file(args.definition)
        pool = rp.BackendPool(rp.CommandBackendLauncher.for_current_user(), args.state_dir)
        answer = ask_backend(pool, sd, args.version, " ".join(args.words).encode())
    except rp.RunningProcessError as err:
        print(f"build-tool: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    sys.stdout.write(answer.decode(errors="replace") + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
