"""The launcher hands a backend the digest it computed of the executable, so
the SDK need not hash itself again; the SDK uses it only while the file keeps
the stamp the launcher hashed."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

import running_process as rp
from support.launch import BackendDirs, Launches, key_for
from support.procfs import environ_pairs


def settled_copy(dirs: BackendDirs, rust_example: Path) -> Path:
    """The Rust example in the allow-list root, old enough for its stamp to
    vouch for a digest."""
    binary = dirs.version_dir / "rp-echo-backend"
    shutil.copyfile(rust_example, binary)
    os.chmod(binary, 0o755)
    settled = os.stat(binary).st_ctime + 2
    deadline = time.monotonic() + 30
    while time.time() <= settled:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    return binary


@pytest.mark.slow  # waits out a wall-clock delay
def test_a_settled_binary_gets_its_digest_and_stamp(
    dirs: BackendDirs, launches: Launches, rust_example: Path
) -> None:
    binary = settled_copy(dirs, rust_example)
    sd = dirs.sd(binary)
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    env = dict(environ_pairs(handle.pid))
    digests, dev, ino, size, mtime, ctime = env[rp.ENV_EXE_DIGEST].split(":")
    sha256, blake3 = digests.split("-")
    st = os.stat(binary)
    assert sha256 == handle.daemon.exe_sha256.hex() == rp.sha256_file(str(binary)).hex()
    assert blake3 == handle.daemon.exe_hash_hex == rp.blake3_file(str(binary)).hex()
    assert handle.daemon.exe_hash_algorithm == "blake3"
    assert (int(dev), int(ino), int(size)) == (st.st_dev, st.st_ino, st.st_size)
    assert mtime == f"{st.st_mtime_ns // 10**9}.{st.st_mtime_ns % 10**9}"
    assert ctime == f"{st.st_ctime_ns // 10**9}.{st.st_ctime_ns % 10**9}"
    handle.verify()


def test_a_binary_changed_just_before_the_launch_gets_no_digest(
    dirs: BackendDirs, launches: Launches, rust_example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = dirs.version_dir / "fresh-backend"
    shutil.copyfile(rust_example, binary)
    os.chmod(binary, 0o755)
    # An hour must pass before the stamp vouches: the copy is fresh for sure.
    monkeypatch.setenv(rp.ENV_SETTLE_MS, str(3600 * 1000))
    sd = dirs.sd(binary)
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    # The stamp cannot vouch: no digest is passed, the backend hashes.
    assert rp.ENV_EXE_DIGEST not in dict(environ_pairs(handle.pid))
    assert handle.daemon.exe_sha256 == rp.sha256_file(str(binary))


@pytest.mark.slow  # waits out a wall-clock delay
def test_the_settle_wait_can_only_be_lengthened(
    dirs: BackendDirs, launches: Launches, rust_example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = settled_copy(dirs, rust_example)
    sd = dirs.sd(binary)
    for value in ("0", "-5", "soon", ""):
        monkeypatch.setenv(rp.ENV_SETTLE_MS, value)
        handle = launches.launch(dirs.launcher(), key_for(sd), sd)
        assert rp.ENV_EXE_DIGEST in dict(environ_pairs(handle.pid)), value
        handle.shutdown()


def test_an_inherited_digest_never_reaches_a_backend(
    dirs: BackendDirs, launches: Launches, rust_example: Path
) -> None:
    os.environ[rp.ENV_EXE_DIGEST] = "00" * 32 + ":1:2:3:4.5:6.7"
    try:
        binary = dirs.version_dir / "fresh-backend"
        shutil.copyfile(rust_example, binary)
        os.chmod(binary, 0o755)
        sd = dirs.sd(binary)
        handle = launches.launch(dirs.launcher(), key_for(sd), sd)
        assert rp.ENV_EXE_DIGEST not in dict(environ_pairs(handle.pid))
    finally:
        del os.environ[rp.ENV_EXE_DIGEST]
