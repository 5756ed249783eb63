"""A backend written against the broker v1 contract alone, with the Python
standard library only (no running_process import): it stands for the
existing backends our launcher must launch and verify.

Reads the v1 environment, binds the endpoint (or serves on the listener
the launcher passed in RUNNING_PROCESS_BROKER_LISTENER_FD), answers identity probes
(payload protocol 0xB232) and echoes any other connection. The shebang is
written by the test that installs it.

At start it prints the RUNNING_PROCESS_* and LD_* variables it received,
so tests can check what the launcher passed, and "probe answered" after
each identity probe it answers.

Test behaviours, chosen by V1_BACKEND_MODE: "echo" (default); "wrong-pid"
answers probes with pid + 1; "wrong-nonce" answers probes with a flipped
nonce; "garbage" answers every connection with junk; "delegate-bind" lets a
forked child bind and answer (with the parent's identity), as a process
squatting on the endpoint would; "no-relisten" serves on the passed listener
without listening on it again, so connections keep naming the launcher;
"ignore-listener" binds the path as if no listener had been passed;
"ignore-term" ignores SIGTERM, so stopping it takes a SIGKILL;
"stall-on-signal" serves until SIGUSR1 or SIGUSR2, then accepts nothing
more, with a thread still working (SIGUSR1: busy) or blocked for good
(SIGUSR2: hung); it prints "busy" or "hung" once stalled.

With V1_BACKEND_HELPERS=FILE it first starts two helpers that leave its
process group and session and record their pids in FILE (see
``start_helpers``).

V1_BACKEND_IDENTITY chooses the generation of the identity it answers
with: "sha256" (default; the first generation, 4.5.x: SHA-256 in field 3),
"blake3-only" (the current generation as zccache answers: fields 8 and 9,
then field 3 appended with zeros), "compatible" (fields 8 and 9, then a real
SHA-256 appended), and lies for tests: "wrong-blake3", "wrong-legacy" (a
compatible answer whose appended SHA-256 is wrong) and "unknown-algorithm"
(field 8 = "sha512"). BLAKE3 comes from the ``blake3`` package.
"""

import hashlib
import os
import socket
import struct
import sys
import threading
import time
from typing import Dict, Tuple


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(num: int, n: int) -> bytes:
    return varint(num << 3) + varint(n) if n else b""


def field_bytes(num: int, data: bytes) -> bytes:
    return varint((num << 3) | 2) + varint(len(data)) + data if data else b""


def parse(body: bytes) -> Tuple[Dict[int, int], Dict[int, bytes]]:
    """The varint fields and the length-delimited fields of a message."""
    ints: Dict[int, int] = {}
    blobs: Dict[int, bytes] = {}
    i = 0
    while i < len(body):
        key, i = read_varint(body, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            ints[num], i = read_varint(body, i)
        elif wt == 2:
            n, i = read_varint(body, i)
            blobs[num], i = body[i : i + n], i + n
        else:
            raise ValueError("unsupported wire type")
    return ints, blobs


def read_varint(buf: bytes, i: int) -> Tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, i


def recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


MODE = os.environ.get("V1_BACKEND_MODE", "echo")


def nonce(received: bytes) -> bytes:
    if MODE == "wrong-nonce":
        return bytes(b ^ 0xFF for b in received)
    return received


def start_helpers(record: str) -> None:
    """Two helpers that leave the backend's process group and session: one
    forked child that calls setsid(), and one grandchild that does after its
    parent exits (a double fork: it ends up re-parented to init). Each
    appends ``helper PID`` to the file ``record`` and sleeps until killed."""

    def helper() -> None:
        os.setsid()
        with open(record, "a") as f:
            f.write(f"helper {os.getpid()}\n")
        while True:
            time.sleep(3600)

    if os.fork() == 0:
        try:
            helper()
        finally:
            os._exit(0)
    middle = os.fork()
    if middle == 0:
        try:
            if os.fork() == 0:
                helper()
        finally:
            os._exit(0)
    os.waitpid(middle, 0)
    # Serve only once both are recorded, so a test that reads the record
    # after the backend answered (or failed to) finds them.
    while True:
        with open(record, "a+") as f:
            f.seek(0)
            if f.read().count("helper ") >= 2:
                return
        time.sleep(0.001)


def main() -> None:
    mode = MODE
    if mode == "ignore-term":
        import signal

        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    path = os.environ["RUNNING_PROCESS_BROKER_V1_BACKEND_PIPE"]
    namespace = os.environ["RUNNING_PROCESS_BROKER_V1_BACKEND_NAMESPACE"]
    script = os.path.realpath(sys.argv[0])
    with open(script, "rb") as binary:
        digest = hashlib.sha256(binary.read()).digest()
    with open("/proc/sys/kernel/random/boot_id") as text:
        boot_id = text.read().strip()
    pid = os.getpid() + (1 if mode == "wrong-pid" else 0)
    if mode == "delegate-bind":
        pid = os.getpid()
    endpoint = field_bytes(1, namespace.encode()) + field_bytes(2, path.encode())
    generation = os.environ.get("V1_BACKEND_IDENTITY", "sha256")
    common = (
        field_varint(1, pid)
        + field_bytes(2, script.encode())
        + field_bytes(4, endpoint)
        + field_varint(5, int(time.time() * 1000))
        + field_bytes(6, boot_id.encode())
    )
    if generation == "sha256":
        identity = (
            field_varint(1, pid)
            + field_bytes(2, script.encode())
            + field_bytes(3, digest)
            + field_bytes(4, endpoint)
            + field_varint(5, int(time.time() * 1000))
            + field_bytes(6, boot_id.encode())
        )
    else:
        import blake3  # type: ignore[import-not-found,unused-ignore]

        with open(script, "rb") as binary:
            hashed = blake3.blake3(binary.read()).digest()
        algorithm = b"sha512" if generation == "unknown-algorithm" else b"blake3"
        if generation == "wrong-blake3":
            hashed = bytes(b ^ 1 for b in hashed)
        legacy = {
            "blake3-only": bytes(32),
            "wrong-legacy": bytes(b ^ 1 for b in digest),
        }.get(generation, digest)
        # The current generation's layout: fields in tag order without 3,
        # then field 3 (the legacy SHA-256 slot) appended last.
        identity = common + field_bytes(8, algorithm) + field_bytes(9, hashed) + b"\x1a\x20" + legacy
    for name in sorted(os.environ):
        if name.startswith(("RUNNING_PROCESS_", "LD_")):
            print(f"env {name}={os.environ[name]}", flush=True)
    if mode == "delegate-bind" and os.fork() != 0:
        while True:
            time.sleep(3600)
    passed = os.environ.get("RUNNING_PROCESS_BROKER_LISTENER_FD", "")
    if passed and mode != "ignore-listener":
        # The launcher bound the endpoint (current generation): serve on
        # its listener, listening again so that connections name this
        # process as their peer.
        server = socket.socket(fileno=int(passed))
        os.set_inheritable(server.fileno(), False)
        if mode != "no-relisten":
            server.listen(16)
    else:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(16)
    print(f"v1 backend pid {os.getpid()} listening on {path}", flush=True)
    if os.environ.get("V1_BACKEND_HELPERS"):
        start_helpers(os.environ["V1_BACKEND_HELPERS"])

    def serve(conn: socket.socket) -> None:
        with conn:
            if mode == "garbage":
                conn.sendall(b"\xde\xad" * 32)
                return
            head = conn.recv(5, socket.MSG_PEEK)
            if len(head) == 5 and head[0] == 1:
                (length,) = struct.unpack("<I", head[1:5])
                frame = recv_exact(conn, 5 + length)[5:]
                ints, blobs = parse(frame)
                payload = blobs.get(4, b"")
                if ints.get(3) == 0xB232 and ints.get(2, 0) == 0 and len(payload) == 32:
                    body = (
                        field_varint(1, 1)
                        + field_varint(2, 1)
                        + field_varint(3, 0xB232)
                        + field_bytes(4, nonce(payload) + identity)
                        + field_varint(5, ints.get(5, 0))
                        + field_bytes(8, blobs.get(8, b""))
                        + field_bytes(9, blobs.get(9, b""))
                    )
                    # Logged before the answer leaves, so a prober that has
                    # its answer finds the line.
                    print("probe answered", flush=True)
                    conn.sendall(b"\x01" + struct.pack("<I", len(body)) + body)
                    return
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(data)

    if mode == "stall-on-signal":
        import signal

        def stall(signum: int, _frame: object) -> None:
            # Runs in the main thread, which never returns to accept():
            # SIGUSR1 keeps it working (waking every few milliseconds),
            # SIGUSR2 blocks it for good.
            print("busy" if signum == signal.SIGUSR1 else "hung", flush=True)
            if signum == signal.SIGUSR1:
                while True:
                    time.sleep(0.005)
            threading.Event().wait()

        signal.signal(signal.SIGUSR1, stall)
        signal.signal(signal.SIGUSR2, stall)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


main()
