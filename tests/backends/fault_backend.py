"""A backend for the fault tests: the echo service of the SDK, or one of a
few misbehaviours a launcher must survive. The test that installs it writes
the ``#!`` line (an interpreter with running_process installed).

``FAULT_MODE`` chooses the behaviour:

- ``echo`` (default): ``BackendServer.from_env()`` and an echo of every
  application connection, as the example backend does.
- ``gate``: before binding, writes ``started <pid>`` to the FIFO named by
  ``FAULT_EVENTS`` and waits until a line can be read from the FIFO named by
  ``FAULT_GATE``; then serves as ``echo``. The test decides when the backend
  binds, and knows when its launcher is waiting for it.
- ``cut-probe``: binds a plain listener and answers each identity probe with
  the first ``FAULT_CUT`` bytes (default 3, inside the header; ``half``: the
  header and half of the body) of a correct answer, then closes the
  connection.
- ``trickle-probe``: binds a plain listener and sends the correct answer to
  each identity probe one byte every ``FAULT_TRICKLE_SECS`` seconds (default
  1), after printing ``trickling <n> bytes`` to stderr.

In the plain-listener modes the identity is the one the launcher expects
(pid, the script, its SHA-256, boot id, endpoint), so the only fault is the
one named.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import sys
import threading
import time
from typing import Callable

import running_process as rp

MODE = os.environ.get("FAULT_MODE", "echo")
PROBE_PROTOCOL = 0xB232


def echo_forever() -> int:
    server = rp.BackendServer.from_env()

    def serve(conn: rp.BackendConnection) -> None:
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(data)

    while True:
        conn = server.accept()
        if conn is None:
            return 0
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def wait_at_gate() -> None:
    with open(os.environ["FAULT_EVENTS"], "w", encoding="ascii") as events:
        events.write(f"started {os.getpid()}\n")
    with open(os.environ["FAULT_GATE"], encoding="ascii") as gate:
        gate.readline()


# --- the probe, spoken directly ---------------------------------------------------


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, int):
        return encode_varint(number << 3) + encode_varint(value)
    return encode_varint(number << 3 | 2) + encode_varint(len(value)) + value


def decode_fields(body: bytes) -> dict[int, int | bytes]:
    """The last value of each varint or length-delimited field of a message."""
    fields: dict[int, int | bytes] = {}
    pos = 0

    def varint() -> int:
        nonlocal pos
        result = shift = 0
        while True:
            byte = body[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return result

    while pos < len(body):
        tag = varint()
        if tag & 7 == 0:
            fields[tag >> 3] = varint()
        elif tag & 7 == 2:
            length = varint()
            fields[tag >> 3] = body[pos : pos + length]
            pos += length
        else:
            raise ValueError(f"wire type {tag & 7} in a probe request")
    return fields


def read_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError(f"peer closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def identity() -> bytes:
    """This process's identity as the launcher expects it, encoded."""
    script = os.path.realpath(sys.argv[0])
    with open(script, "rb") as f:
        digest = hashlib.sha256(f.read()).digest()
    endpoint = rp.Endpoint(os.environ[rp.ENV_BACKEND_NAMESPACE], os.environ[rp.ENV_BACKEND_PIPE])
    daemon = rp.DaemonProcess(
        pid=os.getpid(),
        exe_path=script,
        exe_sha256=digest,
        boot_id=rp.boot_id(),
        ipc_endpoint=endpoint,
        started_at_unix_ms=int(time.time() * 1000),
    )
    return daemon.to_bytes()


def probe_answer(conn: socket.socket, me: bytes) -> bytes:
    """Reads one probe request and returns the framed, correct answer."""
    header = read_exactly(conn, 5)
    (length,) = struct.unpack("<I", header[1:])
    request = decode_fields(read_exactly(conn, length))
    nonce = request.get(4, b"")
    if not isinstance(nonce, bytes) or len(nonce) != 32:
        raise ValueError("not a probe request")
    fields = [
        encode_field(1, 1),  # envelope_version
        encode_field(2, 1),  # kind RESPONSE
        encode_field(3, PROBE_PROTOCOL),
        encode_field(4, nonce + me),
        encode_field(5, request.get(5, 0)),
    ]
    for number in (8, 9):  # traceparent, tracestate, echoed
        value = request.get(number, b"")
        if value:
            fields.append(encode_field(number, value))
    body = b"".join(fields)
    return b"\x01" + struct.pack("<I", len(body)) + body


def cut(conn: socket.socket, me: bytes) -> None:
    answer = probe_answer(conn, me)
    setting = os.environ.get("FAULT_CUT", "3")
    keep = 5 + (len(answer) - 5) // 2 if setting == "half" else int(setting)
    conn.sendall(answer[:keep])
    print(f"sent {keep} of {len(answer)} bytes, closing", file=sys.stderr, flush=True)


def trickle(conn: socket.socket, me: bytes) -> None:
    answer = probe_answer(conn, me)
    interval = float(os.environ.get("FAULT_TRICKLE_SECS", "1"))
    print(f"trickling {len(answer)} bytes", file=sys.stderr, flush=True)
    for i in range(len(answer)):
        conn.sendall(answer[i : i + 1])
        time.sleep(interval)


def plain_listener(serve: Callable[[socket.socket, bytes], None]) -> int:
    me = identity()
    passed = os.environ.get(rp.ENV_LISTENER_FD, "")
    if passed:
        listener = socket.socket(fileno=int(passed))
        os.set_inheritable(listener.fileno(), False)
    else:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(os.environ[rp.ENV_BACKEND_PIPE])
    listener.listen(16)

    def handle(conn: socket.socket) -> None:
        with conn:
            try:
                serve(conn, me)
            except (OSError, EOFError, ValueError) as e:
                print(f"connection ended: {e}", file=sys.stderr, flush=True)

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def main() -> int:
    if MODE == "echo":
        return echo_forever()
    if MODE == "gate":
        wait_at_gate()
        return echo_forever()
    if MODE == "cut-probe":
        return plain_listener(cut)
    if MODE == "trickle-probe":
        return plain_listener(trickle)
    print(f"fault_backend: unknown FAULT_MODE {MODE!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
