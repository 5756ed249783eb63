"""Helpers for the hostile-environment tests (test_hostile_env.py,
test_impostors.py, test_hostile_pool.py): another user's objects, impostor
and bystander programs started by the test, an independent v1 prober, and
the "nothing left behind" checks that allow for what the test itself planted
or started.

Tests run as root in CI, so "another user" is uid/gid 4242 given with
``os.chown``; paths owned by us or root are trusted by the security model.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Iterable, Optional, TypeVar

import pytest

import running_process as rp
from _launch_support import (
    HANG_GUARD,
    BackendDirs,
    Launches,
    Snapshot,
    children,
    fd_count,
    files_in,
    install,
    key_for,
    poll_until,
    proc_stat,
)
from _support import as_bytes, field_bytes, field_varint, parse_message

BACKENDS = Path(__file__).parent / "backends"
IMPOSTOR = BACKENDS / "impostor_v1.py"
BYSTANDER = BACKENDS / "hostile_bystander.py"

OTHER_UID = 4242
requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def give_away(path: Path) -> None:
    """Makes ``path`` (not followed if a symlink) another user's."""
    os.lchown(path, OTHER_UID, OTHER_UID)


def install_impostor_backend(dirs: BackendDirs, name: str = "victim") -> Path:
    """impostor_v1.py as a launchable script backend in the version root;
    ``HOSTILE_VICTIM`` in the launch environment picks its role."""
    return install(dirs.version_dir / name, f"#!{sys.executable}\n".encode() + IMPOSTOR.read_bytes())


# --- programs the test starts ------------------------------------------------------------


P = TypeVar("P", bound="Program")


class Program:
    """A helper program started by the test (its own child), always killed
    and reaped by ``stop()``."""

    def __init__(self, argv: list[str], *, new_session: bool = False) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=new_session,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def line(self, timeout: float = HANG_GUARD) -> str:
        """The next line of its output (fails if it ends or stays silent)."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"pid {self.pid} printed nothing within {timeout} s")
        text = self.proc.stdout.readline()
        if not text:
            self.proc.wait(timeout=HANG_GUARD)
            assert self.proc.stderr is not None
            raise AssertionError(
                f"pid {self.pid} ended with {self.proc.returncode}: {self.proc.stderr.read()}"
            )
        return text.rstrip("\n")

    def running(self) -> bool:
        """Alive, not a zombie, not stopped."""
        info = proc_stat(self.pid)
        return self.proc.poll() is None and info is not None and info[0] not in ("Z", "T", "t")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=HANG_GUARD)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self: P) -> P:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()


class Impostor(Program):
    """impostor_v1.py in one of its attacker modes (see its docstring)."""

    def __init__(self, mode: str, where: Path | str, arg: Optional[str] = None) -> None:
        argv = [sys.executable, str(IMPOSTOR), mode, str(where)]
        if arg is not None:
            argv.append(arg)
        super().__init__(argv)

    def ready(self) -> tuple[int, str]:
        """Waits until it has acted; returns the victim's pid and the
        endpoint path."""
        word, pid, path = self.line().split(" ", 2)
        assert word == "ready", word
        return int(pid), path


class Bystander(Program):
    """hostile_bystander.py: an unrelated live process that reports every
    signal it receives."""

    def __init__(self) -> None:
        super().__init__([sys.executable, str(BYSTANDER)], new_session=True)
        assert self.line() == "ready"

    def signals(self) -> list[str]:
        """The signals received so far (complete up to this call)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("sync\n")
        self.proc.stdin.flush()
        seen = []
        while (text := self.line()) != "synced":
            seen.append(text)
        return seen

    def assert_untouched(self) -> None:
        """Never signalled: alive, not stopped, nothing caught."""
        assert self.running(), f"bystander {self.pid}: {proc_stat(self.pid)}"
        assert self.signals() == []


# --- an independent prober ----------------------------------------------------------------


@dataclass(frozen=True)
class ProbeAnswer:
    peer_pid: int
    peer_uid: int
    nonce_ok: bool
    identity: rp.DaemonProcess


def probe(path: str, timeout: float = HANG_GUARD) -> ProbeAnswer:
    """One v1 identity probe, written from the contract (not the package's
    prober), plus the socket's peer credentials."""
    nonce = os.urandom(32)
    request_id = int.from_bytes(nonce[:8], "little")
    body = field_varint(1, 1) + field_varint(3, 0xB232) + field_bytes(4, nonce) + field_varint(5, request_id)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(path)
        cred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        peer_pid, peer_uid, _ = struct.unpack("3i", cred)
        conn.sendall(b"\x01" + struct.pack("<I", len(body)) + body)
        header = conn.recv(5, socket.MSG_WAITALL)
        assert len(header) == 5 and header[0] == 1, header
        (length,) = struct.unpack("<I", header[1:])
        response = dict(parse_message(conn.recv(length, socket.MSG_WAITALL)))
    assert response[5] == request_id
    payload = as_bytes(response[4])
    return ProbeAnswer(
        peer_pid=peer_pid,
        peer_uid=peer_uid,
        nonce_ok=payload[:32] == nonce,
        identity=rp.DaemonProcess.from_bytes(payload[32:]),
    )


def same_identity(a: rp.DaemonProcess, b: rp.DaemonProcess) -> bool:
    """Equal on every field a launcher compares."""
    return (a.pid, a.exe_path, a.exe_sha256, a.boot_id, a.ipc_endpoint) == (
        b.pid,
        b.exe_path,
        b.exe_sha256,
        b.boot_id,
        b.ipc_endpoint,
    )


# --- failed launches ----------------------------------------------------------------------

E = TypeVar("E", bound=BaseException)


def launch_fails(
    dirs: BackendDirs,
    launches: Launches,
    expected: type[E],
    sd: rp.ServiceDefinition,
    key: Optional[rp.BackendKey] = None,
    **launcher_options: Any,
) -> E:
    """Launches with a launcher of its own and expects exactly ``expected``.

    The launcher (which may keep descriptors of its own, such as directory
    watches, for later launches) is gone when this returns, and the error
    carries no traceback, so descriptor counts afterwards see only what the
    failed launch itself left open.
    """
    launcher = dirs.launcher(**launcher_options)
    with pytest.raises(expected) as info:
        launches.launch(launcher, key if key is not None else key_for(sd), sd)
    err = info.value
    assert type(err) is expected, repr(err)
    err.__traceback__ = None
    del info, launcher
    return err


# --- nothing left behind ----------------------------------------------------------------------


def assert_clean(
    before: Snapshot,
    dirs: BackendDirs,
    *,
    socket_files: Iterable[str] = (),
    started: Iterable[int] = (),
) -> None:
    """After a failed launch: no new child process (running or zombie)
    except the helper programs ``started`` by the test, no file in the socket
    directory but ``socket_files`` (what the test planted), nothing in the
    log directory, and as many descriptors as before plus the helpers' pipes
    (three each)."""
    allowed = set(started)
    new = {pid: st for pid, st in children().items() if pid not in before.children and pid not in allowed}
    assert new == {}, f"child processes left behind (pid: state): {new}"
    assert files_in(dirs.socket_dir) == sorted(socket_files), f"unexpected files in the socket directory: {files_in(dirs.socket_dir)}"
    assert files_in(dirs.log_dir) == [], "files left in the log directory"
    expected_fds = before.fds + 3 * len(allowed)
    poll_until(
        lambda: fd_count() == expected_fds,
        timeout=HANG_GUARD,
        what=lambda: f"{expected_fds} open descriptors (now {fd_count()}: {sorted(os.listdir('/proc/self/fd'))})",
    )


def gone(pid: int) -> bool:
    """Ended and reaped (or, orphaned, reaped by init): not running."""
    info = proc_stat(pid)
    return info is None or info[0] == "Z" and info[1] != os.getpid()


def assert_gone(pid: int) -> None:
    poll_until(lambda: gone(pid), what=f"pid {pid} to end")
    info = proc_stat(pid)
    assert info is None or info[1] != os.getpid(), f"pid {pid} is a zombie child of the test"
