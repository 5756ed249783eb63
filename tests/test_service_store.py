"""The on-disk ``.servicedef`` store: save, load, load_file and the default
directory (spec section 4)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import running_process as rp
from support.values import NOBODY_UID, entries, make_sd, mode_of, requires_root

# --- save -----------------------------------------------------------------------


def test_save_creates_directory_0700_and_file_0600(tmp_path: Path) -> None:
    directory = tmp_path / "defs"
    sd = make_sd()
    path = sd.save(directory)
    assert path == str(directory / "zccache.servicedef")
    assert mode_of(directory) == 0o700
    assert mode_of(path) == 0o600
    assert entries(directory) == ["zccache.servicedef"]
    assert Path(path).read_bytes() == sd.to_bytes()


def test_save_file_mode_ignores_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = make_sd().save(tmp_path / "defs")
    finally:
        os.umask(old)
    assert mode_of(path) == 0o600
    assert mode_of(tmp_path / "defs") == 0o700


def test_save_accepts_str_and_path(tmp_path: Path) -> None:
    a = make_sd(service_name="a").save(str(tmp_path / "defs"))
    b = make_sd(service_name="b").save(tmp_path / "defs")
    assert entries(tmp_path / "defs") == ["a.servicedef", "b.servicedef"]
    assert Path(a).parent == Path(b).parent


def test_save_into_existing_private_directory(private_dir: Path) -> None:
    path = make_sd().save(private_dir)
    assert path == str(private_dir / "zccache.servicedef")
    assert mode_of(private_dir) == 0o700


def test_save_replaces_an_existing_file_atomically(private_dir: Path, tmp_path: Path) -> None:
    first = make_sd(min_version="1.10.0")
    second = make_sd(min_version="1.11.0", labels={"new": "label"})
    path = Path(first.save(private_dir))
    old_inode = os.stat(path).st_ino
    # A hard link outside the store keeps the old file object alive: if save
    # rewrote the file in place, the link would see the new bytes.
    witness = tmp_path / "witness"
    os.link(path, witness)

    assert second.save(private_dir) == str(path)

    assert path.read_bytes() == second.to_bytes()
    assert witness.read_bytes() == first.to_bytes()
    assert os.stat(path).st_ino != old_inode
    assert mode_of(path) == 0o600
    assert entries(private_dir) == ["zccache.servicedef"]
    assert rp.ServiceDefinition.load("zccache", private_dir) == second


def test_many_saves_leave_no_temporary_files(private_dir: Path) -> None:
    for i in range(20):
        make_sd(min_version=f"1.{i}.0").save(private_dir)
        make_sd(service_name=f"svc-{i % 3}").save(private_dir)
    assert entries(private_dir) == [
        "svc-0.servicedef",
        "svc-1.servicedef",
        "svc-2.servicedef",
        "zccache.servicedef",
    ]
    assert rp.ServiceDefinition.load("zccache", private_dir).min_version == "1.19.0"


@pytest.mark.parametrize("mode", [0o770, 0o720, 0o702, 0o777])
def test_save_refuses_a_directory_others_can_write(tmp_path: Path, mode: int) -> None:
    directory = tmp_path / "defs"
    directory.mkdir()
    os.chmod(directory, mode)
    with pytest.raises(rp.InsecureDirectoryError) as info:
        make_sd().save(directory)
    assert info.value.path == str(directory)
    assert f"{mode:04o}" in info.value.reason
    # Refused, never repaired, nothing written.
    assert mode_of(directory) == mode
    assert entries(directory) == []


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o711])
def test_save_accepts_an_existing_directory_only_its_owner_can_write(tmp_path: Path, mode: int) -> None:
    directory = tmp_path / "defs"
    directory.mkdir()
    os.chmod(directory, mode)
    path = make_sd().save(directory)
    assert mode_of(path) == 0o600 and mode_of(directory) == mode
    assert rp.ServiceDefinition.load("zccache", directory) == make_sd()


@requires_root
def test_save_refuses_a_directory_owned_by_another_user(tmp_path: Path) -> None:
    directory = tmp_path / "defs"
    directory.mkdir(mode=0o700)
    os.chown(directory, NOBODY_UID, NOBODY_UID)
    with pytest.raises(rp.InsecureDirectoryError) as info:
        make_sd().save(directory)
    assert info.value.path == str(directory)
    assert str(NOBODY_UID) in info.value.reason
    assert os.stat(directory).st_uid == NOBODY_UID
    assert entries(directory) == []


def test_save_through_a_symlinked_directory_writes_into_its_checked_target(
    tmp_path: Path, private_dir: Path
) -> None:
    link = tmp_path / "link"
    link.symlink_to(private_dir)
    make_sd().save(link)
    assert entries(private_dir) == ["zccache.servicedef"]
    assert link.is_symlink()


def test_save_refuses_a_symlink_to_a_directory_others_can_write(tmp_path: Path) -> None:
    target = tmp_path / "open"
    target.mkdir()
    os.chmod(target, 0o777)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(rp.InsecureDirectoryError) as info:
        make_sd().save(link)
    assert info.value.path == str(target)
    assert entries(target) == []


def test_save_refuses_a_world_writable_parent_without_sticky_bit(tmp_path: Path) -> None:
    parent = tmp_path / "open"
    parent.mkdir()
    os.chmod(parent, 0o777)
    with pytest.raises(rp.InsecureDirectoryError) as info:
        make_sd().save(parent / "defs")
    assert info.value.path == str(parent)
    assert entries(parent) == []


def test_save_refuses_when_the_target_is_a_directory(private_dir: Path) -> None:
    (private_dir / "zccache.servicedef").mkdir()
    with pytest.raises(rp.FilesystemError) as info:
        make_sd().save(private_dir)
    assert isinstance(info.value, OSError)
    assert info.value.errno is not None
    # The temporary file is cleaned up after the failed rename.
    assert entries(private_dir) == ["zccache.servicedef"]


def test_save_relative_directory_resolves_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = make_sd().save("defs")
    assert path == str(tmp_path / "defs" / "zccache.servicedef")
    assert rp.ServiceDefinition.load("zccache", "defs") == make_sd()


# --- load -----------------------------------------------------------------------


def test_load_round_trip(private_dir: Path) -> None:
    sd = make_sd(isolation=rp.Isolation.EXPLICIT, explicit_instance="ci")
    sd.save(private_dir)
    loaded = rp.ServiceDefinition.load("zccache", private_dir)
    assert loaded == sd
    assert rp.ServiceDefinition.load("zccache", str(private_dir)) == sd


def test_load_missing_service(private_dir: Path) -> None:
    make_sd().save(private_dir)
    with pytest.raises(rp.ServiceDefinitionNotFoundError) as info:
        rp.ServiceDefinition.load("other", private_dir)
    err = info.value
    assert isinstance(err, FileNotFoundError)
    assert isinstance(err, OSError)
    assert isinstance(err, rp.RunningProcessError)
    assert err.service_name == "other"
    assert err.path == str(private_dir / "other.servicedef")


def test_load_from_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(rp.ServiceDefinitionNotFoundError) as info:
        rp.ServiceDefinition.load("zccache", missing)
    assert info.value.service_name == "zccache"
    assert info.value.path == str(missing / "zccache.servicedef")
    assert not missing.exists()


def test_not_found_is_caught_by_except_file_not_found(private_dir: Path) -> None:
    try:
        rp.ServiceDefinition.load("zccache", private_dir)
    except FileNotFoundError as err:
        assert type(err) is rp.ServiceDefinitionNotFoundError
    else:
        pytest.fail("no exception")


def test_load_refuses_a_renamed_file(private_dir: Path) -> None:
    path = Path(make_sd().save(private_dir))
    renamed = private_dir / "renamed.servicedef"
    path.rename(renamed)
    with pytest.raises(rp.ServiceDefinitionStemMismatchError) as info:
        rp.ServiceDefinition.load("renamed", private_dir)
    err = info.value
    assert isinstance(err, rp.InvalidServiceDefinitionError)
    assert isinstance(err, ValueError)
    assert err.path == str(renamed)
    assert err.stem == "renamed"
    assert err.field == "service_name"
    assert err.value == "zccache"
    assert err.reason


def test_load_file_refuses_a_renamed_file(private_dir: Path) -> None:
    path = Path(make_sd().save(private_dir))
    renamed = private_dir / "other-name.servicedef"
    path.rename(renamed)
    with pytest.raises(rp.ServiceDefinitionStemMismatchError) as info:
        rp.ServiceDefinition.load_file(renamed)
    assert info.value.stem == "other-name"
    assert info.value.value == "zccache"


@pytest.mark.parametrize("mode", [0o770, 0o722, 0o757, 0o775])
def test_load_refuses_a_directory_others_can_write(private_dir: Path, mode: int) -> None:
    make_sd().save(private_dir)
    os.chmod(private_dir, mode)
    with pytest.raises(rp.InsecureDirectoryError) as info:
        rp.ServiceDefinition.load("zccache", private_dir)
    assert info.value.path == str(private_dir)
    assert "sticky" in info.value.reason
    with pytest.raises(rp.InsecureDirectoryError):
        rp.ServiceDefinition.load_file(private_dir / "zccache.servicedef")
    assert mode_of(private_dir) == mode


def test_load_refuses_a_world_writable_ancestor(tmp_path: Path) -> None:
    ancestor = tmp_path / "open"
    (ancestor / "defs").mkdir(parents=True)
    path = make_sd().save(ancestor / "defs")
    os.chmod(ancestor, 0o777)
    with pytest.raises(rp.InsecureDirectoryError) as info:
        rp.ServiceDefinition.load_file(path)
    assert info.value.path == str(ancestor)


@pytest.mark.parametrize("dir_mode", [0o700, 0o755, 0o750])
@pytest.mark.parametrize("file_mode", [0o600, 0o644, 0o400])
def test_load_accepts_files_only_their_owner_can_write(tmp_path: Path, dir_mode: int, file_mode: int) -> None:
    """Trusted like a binary: readable by others is fine, writable is not."""
    directory = tmp_path / "defs"
    path = Path(make_sd().save(directory))
    os.chmod(path, file_mode)
    os.chmod(directory, dir_mode)
    assert rp.ServiceDefinition.load("zccache", directory) == make_sd()
    assert rp.ServiceDefinition.load_file(path) == make_sd()


@pytest.mark.parametrize("file_mode", [0o620, 0o602, 0o666])
def test_load_refuses_a_file_others_can_write(private_dir: Path, file_mode: int) -> None:
    path = Path(make_sd().save(private_dir))
    os.chmod(path, file_mode)
    with pytest.raises(rp.InsecureFileError) as info:
        rp.ServiceDefinition.load("zccache", private_dir)
    assert info.value.path == str(path)
    assert f"{file_mode:04o}" in info.value.reason
    assert mode_of(path) == file_mode


def test_load_accepts_a_file_of_ones_own_in_a_sticky_shared_directory(tmp_path: Path) -> None:
    """As in /tmp: others can create names there but cannot replace ours."""
    shared = tmp_path / "shared"
    shared.mkdir()
    path = Path(make_sd().save(tmp_path / "mine"))
    moved = shared / path.name
    path.rename(moved)
    os.chmod(shared, 0o1777)
    assert rp.ServiceDefinition.load_file(moved) == make_sd()


def test_a_missing_file_is_not_found_whatever_its_directory(tmp_path: Path) -> None:
    """The fitting answer to a typo is "not found", not a lecture on the
    directory's mode (even for / or a world-writable directory)."""
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    for path in (open_dir / "nope.servicedef", Path("/nope.servicedef"), tmp_path / "no" / "x.servicedef"):
        with pytest.raises(rp.ServiceDefinitionNotFoundError) as info:
            rp.ServiceDefinition.load_file(path)
        assert info.value.path.endswith(path.name)


@requires_root
def test_load_refuses_a_directory_owned_by_another_user(private_dir: Path) -> None:
    make_sd().save(private_dir)
    os.chown(private_dir, NOBODY_UID, NOBODY_UID)
    with pytest.raises(rp.InsecureDirectoryError) as info:
        rp.ServiceDefinition.load("zccache", private_dir)
    assert info.value.path == str(private_dir)


@requires_root
def test_load_refuses_a_file_owned_by_another_user(private_dir: Path) -> None:
    path = Path(make_sd().save(private_dir))
    os.chown(path, NOBODY_UID, NOBODY_UID)
    with pytest.raises(rp.InsecureFileError) as info:
        rp.ServiceDefinition.load("zccache", private_dir)
    assert str(NOBODY_UID) in info.value.reason


def test_load_through_a_symlinked_directory_checks_its_target(tmp_path: Path, private_dir: Path) -> None:
    make_sd().save(private_dir)
    link = tmp_path / "link"
    link.symlink_to(private_dir)
    assert rp.ServiceDefinition.load("zccache", link) == make_sd()
    os.chmod(private_dir, 0o777)
    with pytest.raises(rp.InsecureDirectoryError) as info:
        rp.ServiceDefinition.load("zccache", link)
    assert info.value.path == str(private_dir)


def test_load_garbage_file(private_dir: Path) -> None:
    path = private_dir / "zccache.servicedef"
    path.write_bytes(b"\xff\xff\xff\xff garbage")
    os.chmod(path, 0o600)
    with pytest.raises(rp.DecodeError) as info:
        rp.ServiceDefinition.load("zccache", private_dir)
    assert "ServiceDefinition" in info.value.what
    assert info.value.reason
    with pytest.raises(rp.DecodeError):
        rp.ServiceDefinition.load_file(path)


def test_load_truncated_file(private_dir: Path) -> None:
    path = Path(make_sd().save(private_dir))
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(rp.DecodeError):
        rp.ServiceDefinition.load("zccache", private_dir)


def test_load_file_with_invalid_content(private_dir: Path) -> None:
    # Well-formed protobuf whose binary path is relative.
    path = private_dir / "zccache.servicedef"
    path.write_bytes(b"\x0a\x07zccache\x12\x03bin\x2a\x01/")
    with pytest.raises(rp.InvalidServiceDefinitionError) as info:
        rp.ServiceDefinition.load("zccache", private_dir)
    assert info.value.field == "binary_path"


def test_load_refuses_an_oversized_file(private_dir: Path) -> None:
    path = private_dir / "zccache.servicedef"
    path.write_bytes(make_sd().to_bytes() + b"\x00" * (1024 * 1024))
    with pytest.raises(rp.DecodeError):
        rp.ServiceDefinition.load("zccache", private_dir)


@pytest.mark.parametrize("name", ["../zccache", "Zccache", "", "a/b", "a.b"])
def test_load_refuses_bad_service_names_before_touching_disk(private_dir: Path, name: str) -> None:
    with pytest.raises(rp.InvalidNameError) as info:
        rp.ServiceDefinition.load(name, private_dir)
    assert info.value.value == name
    assert info.value.kind == "service name"


def test_load_refuses_a_symlinked_file(private_dir: Path, tmp_path: Path) -> None:
    target = Path(make_sd().save(private_dir))
    link_dir = tmp_path / "links"
    link_dir.mkdir(mode=0o700)
    (link_dir / "zccache.servicedef").symlink_to(target)
    with pytest.raises(rp.RunningProcessError):
        rp.ServiceDefinition.load("zccache", link_dir)


def test_load_file_by_path(private_dir: Path) -> None:
    sd = make_sd()
    path = sd.save(private_dir)
    assert rp.ServiceDefinition.load_file(path) == sd
    assert rp.ServiceDefinition.load_file(Path(path)) == sd


def test_load_file_missing(private_dir: Path) -> None:
    path = private_dir / "ghost.servicedef"
    with pytest.raises(rp.ServiceDefinitionNotFoundError) as info:
        rp.ServiceDefinition.load_file(path)
    assert info.value.path == str(path)
    assert info.value.service_name == "ghost"


def test_load_file_with_relative_path(private_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sd = make_sd()
    sd.save(private_dir)
    monkeypatch.chdir(private_dir)
    assert rp.ServiceDefinition.load_file("./zccache.servicedef") == sd
    assert rp.ServiceDefinition.load_file("zccache.servicedef") == sd


# --- default directory ----------------------------------------------------------


def test_service_def_dir_prefers_the_explicit_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(rp.ENV_SERVICE_DEF_DIR, str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert rp.service_def_dir() == str(tmp_path / "explicit")
    assert not (tmp_path / "explicit").exists()


@pytest.mark.parametrize("explicit", [None, ""])
def test_service_def_dir_uses_xdg_config_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, explicit: str | None
) -> None:
    if explicit is None:
        monkeypatch.delenv(rp.ENV_SERVICE_DEF_DIR, raising=False)
    else:
        monkeypatch.setenv(rp.ENV_SERVICE_DEF_DIR, explicit)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert rp.service_def_dir() == str(tmp_path / "config" / "running-process" / "services")


@pytest.mark.parametrize("xdg", [None, "", "relative/config"])
def test_service_def_dir_falls_back_to_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, xdg: str | None
) -> None:
    monkeypatch.delenv(rp.ENV_SERVICE_DEF_DIR, raising=False)
    if xdg is None:
        monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CONFIG_HOME", xdg)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".config" / "running-process" / "services"
    assert rp.service_def_dir() == str(expected)


def test_save_and_load_use_the_default_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "from-env"
    monkeypatch.setenv(rp.ENV_SERVICE_DEF_DIR, str(directory))
    sd = make_sd()
    assert sd.save() == str(directory / "zccache.servicedef")
    assert mode_of(directory) == 0o700
    assert rp.ServiceDefinition.load("zccache") == sd


def test_default_directory_under_xdg_config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config"
    config.mkdir(mode=0o700)
    monkeypatch.delenv(rp.ENV_SERVICE_DEF_DIR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    sd = make_sd()
    path = sd.save()
    assert path == str(config / "running-process" / "services" / "zccache.servicedef")
    assert mode_of(config / "running-process" / "services") == 0o700
    assert rp.ServiceDefinition.load("zccache") == sd
