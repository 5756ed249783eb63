"""The per-user tree under /tmp (no XDG_RUNTIME_DIR) when another local
user has taken its v1 name first: the user is not locked out (a private
alternative is chosen and remembered), ``doctor`` says what happened
without a traceback, and a base directory reached through another user's
symlink is refused. Each test plays two users with uids nobody uses."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import running_process as rp
from running_process import cli
from support.hostile import as_user
from support.values import requires_root

pytestmark = [pytest.mark.hostile, requires_root]

VICTIM = 64011
ATTACKER = 64012


@pytest.fixture
def victim_home(tmp_path: Path) -> Iterator[Path]:
    """A home of the victim's and a clean /tmp for both uids."""
    home = Path("/tmp") / f"rp-home-{VICTIM}-{os.getpid()}"
    home.mkdir(mode=0o700)
    os.chown(home, VICTIM, VICTIM)

    def clean() -> None:
        for entry in Path("/tmp").glob(f"running-process-{VICTIM}*"):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    clean()
    try:
        yield home
    finally:
        clean()
        shutil.rmtree(home)


def victim_env(home: Path) -> None:
    os.environ.pop("XDG_RUNTIME_DIR", None)
    os.environ.pop("XDG_STATE_HOME", None)
    os.environ["HOME"] = str(home)


def test_a_squatted_v1_tree_moves_to_a_private_alternative(victim_home: Path) -> None:
    v1 = f"/tmp/running-process-{VICTIM}"
    as_user(ATTACKER, lambda: os.mkdir(v1, 0o777))

    def victim() -> tuple[str, str, str]:
        victim_env(victim_home)
        first = rp.socket_dir()
        endpoint = rp.BackendEndpointAllocator(rp.user_sid_hash(), "shared").allocate()
        return first, rp.socket_dir(), endpoint.path

    first, again, endpoint = as_user(VICTIM, victim)
    assert first == again  # remembered, not drawn again
    assert first.startswith(f"{v1}-") and first.endswith("/broker")
    assert endpoint.startswith(first + "/")
    tree = Path(first).parent
    assert tree.stat().st_uid == VICTIM and (tree.stat().st_mode & 0o777) == 0o700
    pointer = victim_home / ".local/state/running-process/tmp-tree"
    assert pointer.read_text() == str(tree)
    assert pointer.stat().st_uid == VICTIM and (pointer.stat().st_mode & 0o777) == 0o600
    assert os.stat(v1).st_uid == ATTACKER  # theirs, untouched


def test_an_unsquatted_user_keeps_the_v1_tree(victim_home: Path) -> None:
    def victim() -> str:
        victim_env(victim_home)
        rp.BackendEndpointAllocator(rp.user_sid_hash(), "shared").allocate()
        return rp.socket_dir()

    assert as_user(VICTIM, victim) == f"/tmp/running-process-{VICTIM}/broker"
    assert not (victim_home / ".local").exists()


def test_a_squatted_alternative_is_replaced(victim_home: Path) -> None:
    as_user(ATTACKER, lambda: os.mkdir(f"/tmp/running-process-{VICTIM}", 0o755))

    def victim() -> str:
        victim_env(victim_home)
        return rp.socket_dir()

    first = as_user(VICTIM, victim)
    tree = str(Path(first).parent)
    # /tmp emptied (a reboot) and the attacker, who saw the name, takes it.
    shutil.rmtree(tree, ignore_errors=True)
    as_user(ATTACKER, lambda: os.mkdir(tree, 0o755))
    second = as_user(VICTIM, victim)
    assert second != first and Path(second).parent.name.startswith(f"running-process-{VICTIM}-")


def test_concurrent_processes_agree_on_one_alternative(victim_home: Path) -> None:
    as_user(ATTACKER, lambda: os.mkdir(f"/tmp/running-process-{VICTIM}", 0o755))

    def victim() -> str:
        victim_env(victim_home)
        return rp.socket_dir()

    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        seen = set(pool.map(lambda _: as_user(VICTIM, victim), range(8)))
    assert len(seen) == 1


def test_doctor_explains_a_squatted_tree_without_a_traceback(victim_home: Path) -> None:
    v1 = f"/tmp/running-process-{VICTIM}"
    as_user(ATTACKER, lambda: os.mkdir(v1, 0o700))

    def victim() -> tuple[int, str, str]:
        victim_env(victim_home)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["doctor", "--json"])
        return code, out.getvalue(), err.getvalue()

    code, out, err = as_user(VICTIM, victim)
    assert "Traceback" not in err
    report = json.loads(out)
    assert report["tmp_tree"]["taken_by_uid"] == ATTACKER, report
    assert report["tmp_tree"]["v1_path"] == v1
    assert report["directories"]["socket_dir"]["path"].startswith(f"{v1}-")
    assert code == cli.EXIT_OK, err


def test_without_a_home_the_squat_is_a_clear_error(victim_home: Path) -> None:
    as_user(ATTACKER, lambda: os.mkdir(f"/tmp/running-process-{VICTIM}", 0o755))

    def victim() -> tuple[str, str]:
        os.environ.pop("XDG_RUNTIME_DIR", None)
        os.environ.pop("XDG_STATE_HOME", None)
        os.environ.pop("HOME", None)
        try:
            rp.BackendEndpointAllocator(rp.user_sid_hash(), "shared").allocate()
        except rp.RunningProcessError as e:
            return type(e).__name__, str(e)
        return "", "allocated"

    name, message = as_user(VICTIM, victim)
    assert name == "InsecureDirectoryError", message
    assert f"uid {ATTACKER}" in message


def test_a_base_reached_through_another_users_symlink_is_refused(victim_home: Path) -> None:
    """XDG_RUNTIME_DIR through a link the attacker owns (and could re-point)."""
    real = victim_home / "run"
    real.mkdir(mode=0o700)
    os.chown(real, VICTIM, VICTIM)
    link = Path(f"/tmp/running-process-{VICTIM}-link")
    as_user(ATTACKER, lambda: os.symlink(real, link))

    def victim() -> tuple[str, str]:
        os.environ["XDG_RUNTIME_DIR"] = str(link)
        try:
            rp.BackendEndpointAllocator(rp.user_sid_hash(), "shared").allocate()
        except rp.RunningProcessError as e:
            return type(e).__name__, str(e)
        return "", "allocated"

    name, message = as_user(VICTIM, victim)
    assert name == "InsecureDirectoryError", message
    assert "symbolic link owned by uid" in message
    assert list(real.iterdir()) == []
    # The victim's own link to the same place is fine.
    own = victim_home / "mylink"
    os.symlink(real, own)
    os.lchown(own, VICTIM, VICTIM)

    def victim_own() -> str:
        os.environ["XDG_RUNTIME_DIR"] = str(own)
        return rp.BackendEndpointAllocator(rp.user_sid_hash(), "shared").allocate().path

    assert as_user(VICTIM, victim_own).startswith(f"{own}/running-process/broker/")


def test_doctor_without_a_home_names_the_squatter_without_a_traceback(victim_home: Path) -> None:
    v1 = f"/tmp/running-process-{VICTIM}"
    as_user(ATTACKER, lambda: os.mkdir(v1, 0o700))  # not even listable by the victim

    def victim() -> tuple[int, str, str]:
        for name in ("XDG_RUNTIME_DIR", "XDG_STATE_HOME", "HOME"):
            os.environ.pop(name, None)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["doctor"])
        return code, out.getvalue(), err.getvalue()

    code, out, err = as_user(VICTIM, victim)
    assert "Traceback" not in err + out
    assert code == cli.EXIT_REFUSED, (out, err)
    assert f"belongs to uid {ATTACKER}" in out
    assert err.startswith("running-process: InsecureDirectoryError: ")
