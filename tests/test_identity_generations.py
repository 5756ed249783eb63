"""Both generations of the v1 identity, both directions.

Our backends must pass the probers of both generations, and our launcher
must verify backends of either. The probers' rules are written here from
the contract's description (`v1-compat.md` section 7 for the first
generation, `v1-identity-4.10.md` section 2 for the current one), on the
raw probe answer, independently of the package's decoder:

- first generation (4.5.x): field 3 is the SHA-256 of the executable; as
  protobuf keeps the last value of a repeated scalar field, an appended
  field 3 wins;
- current generation (4.10.x): field 8 must be "blake3" and field 9 the
  32-byte BLAKE3 of the executable; field 3 is reserved and ignored.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import blake3
import pytest

import running_process as rp
from support.launch import BackendDirs, Launches, install_python_echo, install_rust_echo, key_for
from support.wire import as_bytes, as_int, parse_message, probe

# --- the two generations' probers, from the contract ----------------------------------


def first_generation_accepts(identity: bytes, exe: Path, pid: int) -> bool:
    """A 4.5.x prober: pid and the SHA-256 in (the last) field 3."""
    fields = parse_message(identity)
    sha256 = [as_bytes(v) for n, v in fields if n == 3]
    pids = [as_int(v) for n, v in fields if n == 1]
    return bool(sha256) and sha256[-1] == hashlib.sha256(exe.read_bytes()).digest() and pids[-1:] == [pid]


def current_generation_accepts(identity: bytes, exe: Path, pid: int) -> bool:
    """A 4.10.x prober: field 8 is "blake3" and field 9 its digest; a peer
    that sends only field 3 is refused."""
    fields = dict(parse_message(identity))
    if fields.get(8) != b"blake3":
        return False
    digest = as_bytes(fields.get(9, b""))
    return len(digest) == 32 and digest == blake3.blake3(exe.read_bytes()).digest() and fields.get(1) == pid


def raw_identity(path: str) -> bytes:
    """The identity bytes of a probe answer (after the 32-byte nonce)."""
    answer = probe(path)
    assert answer.nonce_ok
    return as_bytes(answer.response[4])[32:]


# --- our backends answer both generations -------------------------------------------


@pytest.mark.parametrize("backend", ["rust", "python"])
def test_our_backends_pass_the_probers_of_both_generations(
    backend: str, dirs: BackendDirs, launches: Launches, rust_example: Path
) -> None:
    binary = install_rust_echo(dirs, rust_example) if backend == "rust" else install_python_echo(dirs)
    sd = dirs.sd(binary)
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    identity = raw_identity(handle.endpoint.path)
    assert first_generation_accepts(identity, binary, handle.pid)
    assert current_generation_accepts(identity, binary, handle.pid)
    # The compatible layout: tag order 1, 2, 4, 5, 6, 8, 9, then 3 last.
    numbers = [n for n, _ in parse_message(identity)]
    assert numbers[-1] == 3 and numbers[-3:-1] == [8, 9], numbers
    assert numbers.count(3) == 1
    daemon = handle.daemon
    assert daemon.exe_hash_algorithm == "blake3"
    assert daemon.exe_blake3 == rp.blake3_file(str(binary)) == daemon.exe_hash
    assert daemon.exe_sha256 == rp.sha256_file(str(binary))


def test_the_probers_rules_refuse_what_they_must(dirs: BackendDirs) -> None:
    """The rule functions above are not vacuous: each refuses the other
    generation's BLAKE3-only or SHA-256-only answer."""
    exe = dirs.script
    endpoint = rp.Endpoint("shared", "/tmp/x.sock")
    first = rp.DaemonProcess(42, str(exe), rp.sha256_file(str(exe)), "b", endpoint, 0)
    only_blake3 = rp.DaemonProcess(42, str(exe), None, "b", endpoint, 0, exe_blake3=rp.blake3_file(str(exe)))
    assert first_generation_accepts(first.to_bytes(), exe, 42)
    assert not current_generation_accepts(first.to_bytes(), exe, 42)
    assert current_generation_accepts(only_blake3.to_bytes(), exe, 42)
    assert not first_generation_accepts(only_blake3.to_bytes(), exe, 42)
    assert not first_generation_accepts(first.to_bytes(), exe, 43)


# --- our launcher verifies backends of either generation ----------------------------


@pytest.mark.parametrize(
    ("generation", "algorithm", "real_sha256"),
    [("sha256", "sha256", True), ("blake3-only", "blake3", False), ("compatible", "blake3", True)],
)
def test_the_launcher_verifies_backends_of_either_generation(
    generation: str,
    algorithm: str,
    real_sha256: bool,
    dirs: BackendDirs,
    launches: Launches,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("V1_BACKEND_IDENTITY", generation)
    sd = dirs.sd()
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    daemon = handle.daemon
    assert daemon.exe_hash_algorithm == algorithm
    expected_sha = rp.sha256_file(str(dirs.script)) if real_sha256 else bytes(32)
    assert daemon.exe_sha256 == expected_sha
    if algorithm == "blake3":
        assert daemon.exe_blake3 == rp.blake3_file(str(dirs.script))
    else:
        assert daemon.exe_blake3 is None
    handle.verify()


@pytest.mark.parametrize(
    ("lie", "error", "says"),
    [
        ("wrong-blake3", rp.VerificationError, "exe_hash"),
        ("wrong-legacy", rp.VerificationError, "exe_sha256"),
        ("unknown-algorithm", rp.ProbeError, "exe_hash_algorithm"),
    ],
)
def test_a_backend_that_lies_about_its_hash_is_refused(
    lie: str,
    error: type[Exception],
    says: str,
    dirs: BackendDirs,
    launches: Launches,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("V1_BACKEND_IDENTITY", lie)
    sd = dirs.sd()
    with pytest.raises(error) as info:
        launches.launch(dirs.launcher(), key_for(sd), sd)
    assert says in str(info.value)
    assert not list(dirs.socket_dir.glob("*.sock"))
