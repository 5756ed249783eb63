"""Isolation: the BrokerIsolation enum of the contract (spec section 3)."""

from __future__ import annotations

import pickle

import pytest

import running_process as rp

MEMBERS = [
    (rp.Isolation.PRIVATE, "PRIVATE", 0),
    (rp.Isolation.SHARED, "SHARED", 1),
    (rp.Isolation.EXPLICIT, "EXPLICIT", 2),
]


@pytest.mark.parametrize(("member", "name", "value"), MEMBERS)
def test_name_value_and_int(member: rp.Isolation, name: str, value: int) -> None:
    assert member.name == name
    assert member.value == value
    assert int(member) == value
    assert isinstance(member.value, int)


@pytest.mark.parametrize(("member", "name", "value"), MEMBERS)
def test_from_value(member: rp.Isolation, name: str, value: int) -> None:
    assert rp.Isolation.from_value(value) == member
    assert rp.Isolation.from_value(value) is member


@pytest.mark.parametrize(("member", "name", "value"), MEMBERS)
def test_compares_equal_to_its_wire_value(member: rp.Isolation, name: str, value: int) -> None:
    assert member == value
    assert value == member
    for other in range(-1, 4):
        if other != value:
            assert member != other


@pytest.mark.parametrize(("member", "name", "value"), MEMBERS)
def test_hash_agrees_with_int_equality(member: rp.Isolation, name: str, value: int) -> None:
    # Objects that compare equal must hash equal (Python data model), so a
    # member and its equal int must find each other in dicts and sets.
    assert member == value
    assert hash(member) == hash(value)
    table: dict[object, str] = {value: "found"}
    assert table.get(member) == "found"


@pytest.mark.parametrize("bad", [-1, 3, 4, 255, 2**31 - 1, -(2**31)])
def test_from_value_refuses_other_values(bad: int) -> None:
    with pytest.raises(ValueError, match=str(bad)):
        rp.Isolation.from_value(bad)


def test_members_are_distinct() -> None:
    members = {rp.Isolation.PRIVATE, rp.Isolation.SHARED, rp.Isolation.EXPLICIT}
    assert len(members) == 3


def test_repr_names_the_member() -> None:
    assert repr(rp.Isolation.PRIVATE) == "Isolation.PRIVATE"
    assert repr(rp.Isolation.SHARED) == "Isolation.SHARED"
    assert repr(rp.Isolation.EXPLICIT) == "Isolation.EXPLICIT"


@pytest.mark.parametrize(("member", "name", "value"), MEMBERS)
@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_returns_the_member(member: rp.Isolation, name: str, value: int, protocol: int) -> None:
    restored = pickle.loads(pickle.dumps(member, protocol=protocol))
    assert restored is member


def test_default_isolation_of_a_service_definition_is_private() -> None:
    sd = rp.ServiceDefinition(service_name="a", binary_path="/a", per_version_binary_dir="/")
    assert sd.isolation == rp.Isolation.PRIVATE
