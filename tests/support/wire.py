"""The one protobuf codec of the test suite, and the v1 frames and identity
probe built with it.

The codec is written from the protobuf encoding rules (varints, tags,
length-delimited fields) so that tests can check the field numbers of the
contract independently of the Rust encoder; the probe is written from the
contract, not from the package's prober.

(The standalone programs under ``tests/backends/`` keep their own
standard-library copies: they are copied elsewhere and run on their own.)
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from typing import Optional, Union

import running_process as rp

from .waits import HANG_GUARD

# Wire types.
VARINT = 0
I64 = 1
LEN = 2
SGROUP = 3
EGROUP = 4
I32 = 5

WireValue = Union[int, bytes]


def varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varint of a negative number")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    """The key of a field: its number and wire type."""
    return varint(number << 3 | wire_type)


def field_varint(number: int, value: int) -> bytes:
    return tag(number, VARINT) + varint(value)


def field_bytes(number: int, value: Union[bytes, str]) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return tag(number, LEN) + varint(len(data)) + data


def parse_message(data: bytes) -> list[tuple[int, WireValue]]:
    """Splits an encoded message into ``(field number, value)`` pairs, in
    order: ints for varint fields, bytes for length-delimited ones."""
    fields: list[tuple[int, WireValue]] = []
    pos = 0

    def read_varint() -> int:
        nonlocal pos
        shift = 0
        result = 0
        while True:
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while pos < len(data):
        key = read_varint()
        number, wire_type = key >> 3, key & 7
        if wire_type == VARINT:
            fields.append((number, read_varint()))
        elif wire_type == LEN:
            length = read_varint()
            fields.append((number, data[pos : pos + length]))
            pos += length
        else:
            raise AssertionError(f"unexpected wire type {wire_type} for field {number}")
    if pos != len(data):
        raise AssertionError("message overruns its buffer")
    return fields


def fields_named(data: bytes, number: int) -> list[WireValue]:
    """Every value of field ``number`` in an encoded message."""
    return [value for n, value in parse_message(data) if n == number]


def as_bytes(value: WireValue) -> bytes:
    assert isinstance(value, bytes), value
    return value


def as_int(value: WireValue) -> int:
    assert isinstance(value, int), value
    return value


# --- v1 frames and the identity probe ---------------------------------------------------

FRAME_VERSION = 1
PAYLOAD_PROTOCOL = 0xB232
"""The identity probe's payload protocol."""


def frame(body: bytes) -> bytes:
    """A v1 frame: the version byte, the body's length (u32, little
    endian), the body."""
    return bytes([FRAME_VERSION]) + struct.pack("<I", len(body)) + body


def read_frame(conn: socket.socket) -> bytes:
    """The body of the next frame on ``conn``."""
    header = conn.recv(5, socket.MSG_WAITALL)
    assert len(header) == 5 and header[0] == FRAME_VERSION, header
    (length,) = struct.unpack("<I", header[1:])
    return conn.recv(length, socket.MSG_WAITALL)


def probe_body(nonce: bytes, request_id: int, traceparent: Optional[bytes] = None) -> bytes:
    """An identity probe request (kind REQUEST = 0 is implicit)."""
    body = (
        field_varint(1, 1)  # envelope_version
        + field_varint(3, PAYLOAD_PROTOCOL)
        + field_bytes(4, nonce)
        + field_varint(5, request_id)
    )
    if traceparent is not None:
        body += field_bytes(8, traceparent)
    return body


def probe_request() -> bytes:
    """A well-formed identity probe request with a fresh nonce, framed."""
    nonce = os.urandom(32)
    return frame(probe_body(nonce, int.from_bytes(nonce[:8], "little")))


@dataclass(frozen=True)
class ProbeAnswer:
    peer_pid: int
    peer_uid: int
    nonce_ok: bool
    identity: rp.DaemonProcess
    response: dict[int, WireValue]
    """Every field of the response envelope, by number."""


def probe(path: str, timeout: float = HANG_GUARD, traceparent: Optional[bytes] = None) -> ProbeAnswer:
    """One identity probe of the endpoint at ``path``, plus the socket's
    peer credentials."""
    nonce = os.urandom(32)
    request_id = int.from_bytes(nonce[:8], "little")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(path)
        cred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        peer_pid, peer_uid, _ = struct.unpack("3i", cred)
        conn.sendall(frame(probe_body(nonce, request_id, traceparent)))
        response = dict(parse_message(read_frame(conn)))
    assert response[5] == request_id
    payload = as_bytes(response[4])
    return ProbeAnswer(
        peer_pid=peer_pid,
        peer_uid=peer_uid,
        nonce_ok=payload[:32] == nonce,
        identity=rp.DaemonProcess.from_bytes(payload[32:]),
        response=response,
    )
