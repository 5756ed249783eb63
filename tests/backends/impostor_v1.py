"""Hostile programs for the impostor and planted-object tests, standard
library only (the ``late-sdk`` backend role aside, which uses the SDK on
purpose).

Run by a test as ``impostor_v1.py MODE WHERE [ARG]``, it plays a
same-user attacker. It scans ``/proc`` for a process whose environment names
a backend socket inside the directory WHERE, or the socket path WHERE (any
process of the same user can read ``/proc/<pid>/environ``, so the 128 random
bits of the path do not keep it out), then acts on that endpoint path:

- ``squat``: binds the path first and accepts connections without a word;
- ``copy``: binds the path first and answers identity probes with the
  victim's identity copied from ``/proc`` (its pid, its executable, or for a
  script the script, and that file's SHA-256, the boot id, the endpoint from
  its environment) and the right nonce;
- ``relay``: binds the path first and relays each connection, byte for byte,
  to ``PATH + ".real"``, where a ``side-bound`` backend answers;
- ``plant-file``, ``plant-fifo``, ``plant-dir``, ``plant-symlink`` (ARG is
  the link target): creates that object at the path, owned by uid 4242 when
  run as root (another user's object);
- ``steal-copy``, ``steal-relay``: the victim already serves at the path;
  the socket file is renamed to ``PATH + ".real"`` (the victim's listener
  goes with it) and the path is bound as for ``copy`` or ``relay``.

It prints ``ready VICTIM_PID PATH`` once done; binders then serve until they
are killed, planters exit. If the path cannot be taken (something is there
already) it prints ``failed VICTIM_PID PATH ERROR`` and exits.

Started by a launcher (the environment contract is set), ``HOSTILE_VICTIM``
chooses its role:

- ``late-sdk``: waits until something exists at its endpoint path, then
  tries ``BackendServer.from_env()`` and prints what happened; then it waits
  to be killed, or with ``HOSTILE_AFTER=exit`` exits with status 1 (the SDK's
  refusal ends a real backend the same way);
- ``side-bound``: a v1 backend that binds beside its endpoint, at
  ``PATH + ".real"``, and answers probes with its true identity (which names
  the endpoint path, as the launcher expects).
"""

import hashlib
import os
import signal
import socket
import struct
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

PIPE_VAR = "RUNNING_PROCESS_BROKER_V1_BACKEND_PIPE"
NAMESPACE_VAR = "RUNNING_PROCESS_BROKER_V1_BACKEND_NAMESPACE"
IDLE_VAR = "RUNNING_PROCESS_BROKER_V1_IDLE_TIMEOUT_SECS"
PROBE_PROTOCOL = 0xB232
OTHER_UID = 4242
DEADLINE = 60.0


# --- protobuf, just enough for the probe -----------------------------------


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


def read_varint(buf: bytes, i: int) -> Tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, i


def parse(body: bytes) -> Tuple[Dict[int, int], Dict[int, bytes]]:
    ints: Dict[int, int] = {}
    blobs: Dict[int, bytes] = {}
    i = 0
    while i < len(body):
        key, i = read_varint(body, i)
        num, wire_type = key >> 3, key & 7
        if wire_type == 0:
            ints[num], i = read_varint(body, i)
        elif wire_type == 2:
            n, i = read_varint(body, i)
            blobs[num], i = body[i : i + n], i + n
        else:
            raise ValueError("unsupported wire type")
    return ints, blobs


def recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def identity_message(
    pid: int, exe: str, digest: bytes, boot_id: str, namespace: str, path: str, idle: int
) -> bytes:
    endpoint = field_bytes(1, namespace.encode()) + field_bytes(2, path.encode())
    return (
        field_varint(1, pid)
        + field_bytes(2, exe.encode())
        + field_bytes(3, digest)
        + field_bytes(4, endpoint)
        + field_varint(5, int(time.time() * 1000))
        + field_bytes(6, boot_id.encode())
        + (field_varint(7, idle) if idle else b"")
    )


def answer_probe(conn: socket.socket, identity: bytes) -> None:
    """Reads one probe request and answers it with ``identity`` and the
    request's own nonce; returns quietly on anything else."""
    try:
        head = recv_exact(conn, 5)
        if head[0] != 1:
            return
        (length,) = struct.unpack("<I", head[1:])
        ints, blobs = parse(recv_exact(conn, length))
    except (EOFError, OSError, ValueError, IndexError):
        return
    nonce = blobs.get(4, b"")
    if ints.get(3) != PROBE_PROTOCOL or len(nonce) != 32:
        return
    body = (
        field_varint(1, 1)
        + field_varint(2, 1)
        + field_varint(3, PROBE_PROTOCOL)
        + field_bytes(4, nonce + identity)
        + field_varint(5, ints.get(5, 0))
        + field_bytes(8, blobs.get(8, b""))
        + field_bytes(9, blobs.get(9, b""))
    )
    conn.sendall(b"\x01" + struct.pack("<I", len(body)) + body)


def boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def sha256_of(path: str) -> bytes:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).digest()


def serve_forever(server: socket.socket, handle: Callable[[socket.socket], None]) -> None:
    while True:
        conn, _ = server.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


# --- the attacker ---------------------------------------------------------------


def environ_of(pid: str) -> Dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        raw = f.read()
    env: Dict[str, str] = {}
    for entry in raw.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep:
            env[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return env


def find_victim(where: str) -> Tuple[int, Dict[str, str]]:
    """The first process whose environment names a backend socket inside the
    directory ``where``, or exactly the socket path ``where``."""
    me = os.getpid()
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == me:
                continue
            try:
                env = environ_of(name)
            except OSError:
                continue
            path = env.get(PIPE_VAR, "")
            if path and where in (path, os.path.dirname(path)):
                return int(name), env
        time.sleep(0.002)
    sys.exit(f"no backend with a socket at {where} appeared within {DEADLINE} s")


def copied_identity(pid: int, env: Dict[str, str]) -> bytes:
    """What a launcher expects of ``pid``, read from ``/proc`` as any process
    of the same user can."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read().split(b"\0")
    hashed = f"/proc/{pid}/exe"
    for arg in cmdline[:4]:
        if arg.startswith(b"/dev/fd/"):
            hashed = f"/proc/{pid}/fd/{arg[len(b'/dev/fd/') :].decode()}"
            break
    exe = os.readlink(hashed)
    idle = env.get(IDLE_VAR, "")
    return identity_message(
        pid,
        exe,
        sha256_of(hashed),
        boot_id(),
        env[NAMESPACE_VAR],
        env[PIPE_VAR],
        int(idle) if idle.isdigit() else 0,
    )


def bind(path: str) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    return server


def relay(conn: socket.socket, target: str) -> None:
    deadline = time.monotonic() + DEADLINE
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    while True:
        try:
            upstream.connect(target)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                conn.close()
                return
            time.sleep(0.002)

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    back = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
    back.start()
    pump(conn, upstream)
    back.join()
    conn.close()
    upstream.close()


def plant(mode: str, path: str, arg: Optional[str]) -> None:
    if mode == "plant-file":
        with open(path, "xb") as f:
            f.write(b"planted by another user\n")
    elif mode == "plant-fifo":
        os.mkfifo(path, 0o600)
    elif mode == "plant-dir":
        os.mkdir(path, 0o700)
    elif mode == "plant-symlink":
        assert arg is not None
        os.symlink(arg, path)
    else:
        sys.exit(f"unknown mode {mode}")
    if os.geteuid() == 0:
        os.lchown(path, OTHER_UID, OTHER_UID)


def attack(mode: str, where: str, arg: Optional[str]) -> None:
    victim, env = find_victim(where)
    path = env[PIPE_VAR]
    if mode.startswith("steal-"):
        # The victim is serving already: take its path over (its listener
        # keeps the renamed socket file) and act as the next mode says.
        mode = mode[len("steal-") :]
        os.rename(path, path + ".real")
    # Copied while the victim surely lives: once the path is bound, the
    # launcher may refuse us on the peer pid and kill the victim at once.
    identity = copied_identity(victim, env) if mode == "copy" else b""
    try:
        if mode.startswith("plant-"):
            plant(mode, path, arg)
            print(f"ready {victim} {path}", flush=True)
            return
        server = bind(path)
    except OSError as e:
        # The path was taken before we got to it (a launcher that binds the
        # endpoint before its backend runs leaves no moment to take it).
        print(f"failed {victim} {path} {type(e).__name__}", flush=True)
        return
    if mode == "squat":
        print(f"ready {victim} {path}", flush=True)
        held: List[socket.socket] = []
        while True:
            conn, _ = server.accept()
            held.append(conn)
    elif mode == "copy":
        print(f"ready {victim} {path}", flush=True)

        def handle(conn: socket.socket) -> None:
            with conn:
                answer_probe(conn, identity)

        serve_forever(server, handle)
    elif mode == "relay":
        print(f"ready {victim} {path}", flush=True)
        serve_forever(server, lambda conn: relay(conn, path + ".real"))
    else:
        sys.exit(f"unknown mode {mode}")


# --- the victims (launched as backends) ----------------------------------------------


def late_sdk() -> None:
    path = os.environ[PIPE_VAR]
    deadline = time.monotonic() + DEADLINE
    while not os.path.lexists(path):
        if time.monotonic() > deadline:
            sys.exit("nothing appeared at the endpoint path")
        time.sleep(0.002)
    import running_process as rp

    try:
        server = rp.BackendServer.from_env()
    except rp.BackendServerError as e:
        print(f"refused to bind: {type(e).__name__}: {e}", flush=True)
    else:
        print("bound anyway", flush=True)
        server.shutdown()
    if os.environ.get("HOSTILE_AFTER") == "exit":
        sys.exit(1)
    while True:
        signal.pause()


def side_bound() -> None:
    path = os.environ[PIPE_VAR]
    script = os.path.realpath(sys.argv[0])
    idle = os.environ.get(IDLE_VAR, "")
    identity = identity_message(
        os.getpid(),
        script,
        sha256_of(script),
        boot_id(),
        os.environ[NAMESPACE_VAR],
        path,
        int(idle) if idle.isdigit() else 0,
    )
    server = bind(path + ".real")
    print(f"side-bound backend pid {os.getpid()} listening beside {path}", flush=True)

    def handle(conn: socket.socket) -> None:
        with conn:
            answer_probe(conn, identity)

    serve_forever(server, handle)


def main() -> None:
    if PIPE_VAR in os.environ:
        role = os.environ.get("HOSTILE_VICTIM", "")
        if role == "late-sdk":
            late_sdk()
        elif role == "side-bound":
            side_bound()
        else:
            sys.exit(f"unknown HOSTILE_VICTIM {role!r}")
        return
    attack(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)


main()
