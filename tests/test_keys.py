"""BrokerInstanceKey and BackendKey (spec sections 2 and 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest

import running_process as rp
from support.values import HASH, make_sd

# --- BrokerInstanceKey ------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "id_", "isolation", "name"),
    [
        (rp.BrokerInstanceKey.shared(), "shared", rp.Isolation.SHARED, None),
        (rp.BrokerInstanceKey.private("zccache"), "private:zccache", rp.Isolation.PRIVATE, "zccache"),
        (rp.BrokerInstanceKey.explicit("ci-1"), "explicit:ci-1", rp.Isolation.EXPLICIT, "ci-1"),
    ],
)
def test_instance_key_properties(
    key: rp.BrokerInstanceKey, id_: str, isolation: rp.Isolation, name: Optional[str]
) -> None:
    assert key.id() == id_
    assert str(key) == id_
    assert key.isolation == isolation
    assert key.name == name
    assert rp.BrokerInstanceKey.from_id(id_) == key


def test_private_and_explicit_of_the_same_name_differ() -> None:
    assert rp.BrokerInstanceKey.private("a") != rp.BrokerInstanceKey.explicit("a")
    assert rp.BrokerInstanceKey.private("shared") != rp.BrokerInstanceKey.shared()


def test_repr() -> None:
    assert repr(rp.BrokerInstanceKey.shared()) == "BrokerInstanceKey.shared()"
    assert repr(rp.BrokerInstanceKey.private("zccache")) == "BrokerInstanceKey.private('zccache')"
    assert repr(rp.BrokerInstanceKey.explicit("ci")) == "BrokerInstanceKey.explicit('ci')"


BAD_NAMES = ["Zccache", "", "x" * 65, "é", "a b", "a_b", "a:b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_private_refuses_bad_service_names(name: str) -> None:
    with pytest.raises(rp.InvalidNameError) as info:
        rp.BrokerInstanceKey.private(name)
    assert info.value.kind == "service name"
    assert info.value.value == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_explicit_refuses_bad_instance_names(name: str) -> None:
    with pytest.raises(rp.InvalidNameError) as info:
        rp.BrokerInstanceKey.explicit(name)
    assert info.value.kind == "instance name"
    assert info.value.value == name


@pytest.mark.parametrize(
    "id_",
    [
        "",
        "Shared",
        "SHARED",
        "shared:x",
        " shared",
        "shared ",
        "other:x",
        "private",
        "explicit",
        "Private:zccache",
        "private-zccache",
        "zccache",
    ],
)
def test_from_id_refuses_malformed_ids(id_: str) -> None:
    with pytest.raises(rp.InvalidNameError) as info:
        rp.BrokerInstanceKey.from_id(id_)
    assert info.value.kind == "instance id"
    assert info.value.value == id_


@pytest.mark.parametrize("id_", ["private:", "private:Zccache", "explicit:", "explicit:CI"])
def test_from_id_refuses_ids_with_bad_names(id_: str) -> None:
    # The stub: "InvalidNameError (kind "instance id") for anything else".
    with pytest.raises(rp.InvalidNameError) as info:
        rp.BrokerInstanceKey.from_id(id_)
    assert info.value.kind == "instance id"
    assert info.value.value == id_


def test_from_service_definition_follows_isolation() -> None:
    assert (
        rp.BrokerInstanceKey.from_service_definition(make_sd(isolation=rp.Isolation.SHARED))
        == rp.BrokerInstanceKey.shared()
    )
    assert rp.BrokerInstanceKey.from_service_definition(
        make_sd(isolation=rp.Isolation.PRIVATE)
    ) == rp.BrokerInstanceKey.private("zccache")
    assert rp.BrokerInstanceKey.from_service_definition(
        make_sd(isolation=rp.Isolation.EXPLICIT, explicit_instance="ci")
    ) == rp.BrokerInstanceKey.explicit("ci")


# --- socket paths ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "file_name"),
    [
        (rp.BrokerInstanceKey.shared(), f"rpb-v1-{HASH}-shared.sock"),
        (rp.BrokerInstanceKey.private("zccache"), f"rpb-v1-{HASH}-svc-zccache.sock"),
        (rp.BrokerInstanceKey.explicit("ci-1"), f"rpb-v1-{HASH}-inst-ci-1.sock"),
    ],
)
def test_socket_path_uses_the_spec_names(key: rp.BrokerInstanceKey, file_name: str) -> None:
    directory = "/run/user/1000/running-process/broker"
    assert key.socket_path(HASH, directory) == f"{directory}/{file_name}"
    assert key.socket_path(HASH, Path(directory)) == f"{directory}/{file_name}"


def test_socket_path_defaults_to_the_user_socket_dir(
    xdg_runtime_dir: Path,
) -> None:
    path = rp.BrokerInstanceKey.shared().socket_path(HASH)
    assert path == str(xdg_runtime_dir / "running-process" / "broker" / f"rpb-v1-{HASH}-shared.sock")
    assert path == str(Path(rp.socket_dir()) / f"rpb-v1-{HASH}-shared.sock")
    # Computing a path touches nothing.
    assert list(xdg_runtime_dir.iterdir()) == []


def test_socket_path_refuses_a_bad_hash() -> None:
    with pytest.raises(rp.InvalidNameError) as info:
        rp.BrokerInstanceKey.shared().socket_path("ABCDEF0123456789", "/run")
    assert info.value.kind == "user sid hash"


def test_socket_path_too_long() -> None:
    directory = "/" + "d" * 90
    expected = f"{directory}/rpb-v1-{HASH}-shared.sock"
    with pytest.raises(rp.PathTooLongError) as info:
        rp.BrokerInstanceKey.shared().socket_path(HASH, directory)
    err = info.value
    assert err.limit == rp.SUN_PATH_MAX == 107
    assert err.length == len(expected.encode())
    assert err.path == expected
    assert isinstance(err, ValueError)


@pytest.mark.parametrize(
    "key",
    [
        rp.BrokerInstanceKey.shared(),
        rp.BrokerInstanceKey.private("zccache"),
        rp.BrokerInstanceKey.explicit("x" * 64),
    ],
)
def test_socket_path_limit_is_exactly_107_bytes(key: rp.BrokerInstanceKey) -> None:
    file_name = Path(key.socket_path(HASH, "/")).name
    fits = "/" + "d" * (107 - len(file_name) - 2)
    path = key.socket_path(HASH, fits)
    assert len(path.encode()) == 107
    too_long = fits + "d"
    with pytest.raises(rp.PathTooLongError) as info:
        key.socket_path(HASH, too_long)
    assert info.value.length == 108
    assert info.value.limit == 107


def test_socket_path_counts_bytes_not_characters() -> None:
    file_name = f"rpb-v1-{HASH}-shared.sock"
    # 35 two-byte characters: fits in characters, not in bytes.
    directory = "/" + "é" * ((107 - len(file_name) - 2) // 2 + 1)
    assert len(directory) + 1 + len(file_name) <= 107
    with pytest.raises(rp.PathTooLongError) as info:
        rp.BrokerInstanceKey.shared().socket_path(HASH, directory)
    assert info.value.length > 107


# --- BackendKey -------------------------------------------------------------


def test_backend_key_keywords_and_properties() -> None:
    instance = rp.BrokerInstanceKey.private("zccache")
    key = rp.BackendKey(instance=instance, service_name="zccache", service_version="1.11.20")
    assert key.instance == instance
    assert key.service_name == "zccache"
    assert key.service_version == "1.11.20"
    assert str(key) == "private:zccache/zccache@1.11.20"


def test_backend_key_str_for_each_instance() -> None:
    assert str(rp.BackendKey(rp.BrokerInstanceKey.shared(), "a", "1.0.0")) == "shared/a@1.0.0"
    assert (
        str(rp.BackendKey(rp.BrokerInstanceKey.explicit("ci"), "a", "1.0.0-rc.1"))
        == "explicit:ci/a@1.0.0-rc.1"
    )


@pytest.mark.parametrize("name", BAD_NAMES)
def test_backend_key_refuses_bad_service_names(name: str) -> None:
    with pytest.raises(rp.InvalidNameError) as info:
        rp.BackendKey(rp.BrokerInstanceKey.shared(), name, "1.0.0")
    assert info.value.kind == "service name"
    assert info.value.value == name


@pytest.mark.parametrize("version", ["1.2", "01.2.3-RC1", "1.2.3+build", "01.2.3", "1.2.3-", ""])
def test_backend_key_refuses_bad_versions(version: str) -> None:
    with pytest.raises(rp.InvalidVersionError) as info:
        rp.BackendKey(rp.BrokerInstanceKey.shared(), "zccache", version)
    assert info.value.value == version


def test_backend_key_needs_an_instance_key() -> None:
    instance: object = "shared"
    with pytest.raises(TypeError):
        rp.BackendKey(instance, "zccache", "1.0.0")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sd", "instance"),
    [
        (make_sd(isolation=rp.Isolation.SHARED), rp.BrokerInstanceKey.shared()),
        (make_sd(isolation=rp.Isolation.PRIVATE), rp.BrokerInstanceKey.private("zccache")),
        (
            make_sd(isolation=rp.Isolation.EXPLICIT, explicit_instance="ci"),
            rp.BrokerInstanceKey.explicit("ci"),
        ),
    ],
)
def test_for_service_uses_the_definition_isolation(
    sd: rp.ServiceDefinition, instance: rp.BrokerInstanceKey
) -> None:
    key = rp.BackendKey.for_service(sd, "1.11.20")
    assert key == rp.BackendKey(instance, "zccache", "1.11.20")
    assert key.instance == instance


def test_for_service_does_not_apply_the_version_policy() -> None:
    sd = make_sd(min_version="2.0.0", version_allow_list=["2.0.0"])
    key = rp.BackendKey.for_service(sd, "1.0.0")
    assert key.service_version == "1.0.0"


@pytest.mark.parametrize("version", ["1.2", "1.2.3+build", "01.2.3"])
def test_for_service_refuses_malformed_versions(version: str) -> None:
    with pytest.raises(rp.InvalidVersionError) as info:
        rp.BackendKey.for_service(make_sd(), version)
    assert info.value.value == version


def test_keys_work_as_dict_keys() -> None:
    registry = {
        rp.BackendKey(rp.BrokerInstanceKey.shared(), "a", "1.0.0"): 1,
        rp.BackendKey(rp.BrokerInstanceKey.private("a"), "a", "1.0.0"): 2,
    }
    assert registry[rp.BackendKey.for_service(make_sd(service_name="a"), "1.0.0")] == 1
    assert registry[rp.BackendKey(rp.BrokerInstanceKey.from_id("private:a"), "a", "1.0.0")] == 2


@pytest.mark.parametrize(
    "key",
    [
        rp.BackendKey(rp.BrokerInstanceKey.shared(), "zccache", "1.11.20"),
        rp.BackendKey(rp.BrokerInstanceKey.private("zccache"), "zccache", "2.0.0-rc.1"),
        rp.BackendKey(rp.BrokerInstanceKey.explicit("ci"), "echo", "1.0.0"),
    ],
    ids=str,
)
def test_a_key_parses_from_its_text(key: rp.BackendKey) -> None:
    assert rp.BackendKey.parse(str(key)) == key


@pytest.mark.parametrize("text", ["", "shared", "shared/echo", "echo@1.0.0", "/echo@1.0.0", "shared/echo@"])
def test_text_not_shaped_like_a_key_is_refused_as_a_key(text: str) -> None:
    with pytest.raises(rp.InvalidNameError) as info:
        rp.BackendKey.parse(text)
    assert info.value.kind == "backend key" and info.value.value == text


def test_a_key_with_a_bad_part_names_the_part() -> None:
    with pytest.raises(rp.InvalidNameError) as info:
        rp.BackendKey.parse("nowhere/echo@1.0.0")
    assert info.value.kind == "instance id"
    with pytest.raises(rp.InvalidNameError) as info:
        rp.BackendKey.parse("shared/Echo@1.0.0")
    assert info.value.kind == "service name"
    with pytest.raises(rp.InvalidVersionError):
        rp.BackendKey.parse("shared/echo@1.0")
