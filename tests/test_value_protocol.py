"""The value protocol shared by every value class: equality, hashing, an
eval-able repr, pickling, copying and immutability."""

from __future__ import annotations

import copy
import pickle
from typing import Any, Callable

import pytest

import running_process as rp
from support.values import W3C_TRACEPARENT, W3C_TRACESTATE, make_dp, make_endpoint, make_sd

Factory = Callable[[], Any]

# (id, make an instance, make an instance that differs from it)
VALUES: list[tuple[str, Factory, Factory]] = [
    ("ServiceDefinition", make_sd, lambda: make_sd(min_version="1.11.0")),
    (
        "ServiceDefinition-explicit",
        lambda: make_sd(isolation=rp.Isolation.EXPLICIT, explicit_instance="ci"),
        lambda: make_sd(isolation=rp.Isolation.EXPLICIT, explicit_instance="cd"),
    ),
    (
        "ServiceDefinition-minimal",
        lambda: rp.ServiceDefinition(service_name="a", binary_path="/b", per_version_binary_dir="/"),
        lambda: rp.ServiceDefinition(
            service_name="a", binary_path="/b", per_version_binary_dir="/", labels={"k": ""}
        ),
    ),
    (
        "ServiceDefinition-quotes",
        lambda: make_sd(labels={"q": 'it\'s "quoted" \\ ünïcode'}, binary_path="/o'pt/x"),
        lambda: make_sd(labels={"q": "it's"}, binary_path="/o'pt/x"),
    ),
    ("Endpoint", make_endpoint, lambda: make_endpoint(namespace_id="shared")),
    ("BrokerInstanceKey-shared", rp.BrokerInstanceKey.shared, lambda: rp.BrokerInstanceKey.private("shared")),
    (
        "BrokerInstanceKey-private",
        lambda: rp.BrokerInstanceKey.private("zccache"),
        lambda: rp.BrokerInstanceKey.explicit("zccache"),
    ),
    (
        "BrokerInstanceKey-explicit",
        lambda: rp.BrokerInstanceKey.explicit("ci-1"),
        lambda: rp.BrokerInstanceKey.explicit("ci-2"),
    ),
    (
        "BackendKey",
        lambda: rp.BackendKey(rp.BrokerInstanceKey.shared(), "zccache", "1.11.20"),
        lambda: rp.BackendKey(rp.BrokerInstanceKey.shared(), "zccache", "1.11.21"),
    ),
    (
        "BackendKey-private",
        lambda: rp.BackendKey(rp.BrokerInstanceKey.private("zccache"), "zccache", "1.2.3-rc.1"),
        lambda: rp.BackendKey(rp.BrokerInstanceKey.shared(), "zccache", "1.2.3-rc.1"),
    ),
    (
        "TraceContext",
        lambda: rp.TraceContext(request_id=7, traceparent=W3C_TRACEPARENT, tracestate=W3C_TRACESTATE),
        lambda: rp.TraceContext(request_id=8, traceparent=W3C_TRACEPARENT, tracestate=W3C_TRACESTATE),
    ),
    ("TraceContext-empty", rp.TraceContext, lambda: rp.TraceContext(request_id=1)),
    ("DaemonProcess", make_dp, lambda: make_dp(idle_timeout_secs=None)),
    ("DaemonProcess-no-idle", lambda: make_dp(idle_timeout_secs=None), lambda: make_dp(idle_timeout_secs=0)),
    ("Isolation-PRIVATE", lambda: rp.Isolation.PRIVATE, lambda: rp.Isolation.SHARED),
    ("Isolation-SHARED", lambda: rp.Isolation.SHARED, lambda: rp.Isolation.EXPLICIT),
    ("Isolation-EXPLICIT", lambda: rp.Isolation.EXPLICIT, lambda: rp.Isolation.PRIVATE),
]

IDS = [v[0] for v in VALUES]
PROTOCOLS = list(range(2, pickle.HIGHEST_PROTOCOL + 1))


def repr_namespace() -> dict[str, Any]:
    namespace = dict(vars(rp))
    namespace["bytes"] = bytes
    return namespace


@pytest.mark.parametrize(("name", "make", "make_other"), VALUES, ids=IDS)
def test_equal_values_are_equal_and_hash_equal(name: str, make: Factory, make_other: Factory) -> None:
    a, b = make(), make()
    assert a == b
    assert not (a != b)  # noqa: SIM202 - exercises __ne__
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert {a: "x"}[b] == "x"


@pytest.mark.parametrize(("name", "make", "make_other"), VALUES, ids=IDS)
def test_different_values_are_not_equal(name: str, make: Factory, make_other: Factory) -> None:
    a, other = make(), make_other()
    assert a != other
    assert not (a == other)  # noqa: SIM201 - exercises __eq__
    assert len({a, other}) == 2


@pytest.mark.parametrize(("name", "make", "make_other"), VALUES, ids=IDS)
def test_not_equal_to_other_types(name: str, make: Factory, make_other: Factory) -> None:
    value = make()
    assert value != "value"
    assert value != object()
    assert value is not None and value != None  # noqa: E711


@pytest.mark.parametrize(("name", "make", "make_other"), VALUES, ids=IDS)
def test_repr_evaluates_back_to_an_equal_value(name: str, make: Factory, make_other: Factory) -> None:
    value = make()
    text = repr(value)
    assert text.startswith(type(value).__name__)
    assert eval(text, repr_namespace()) == value  # noqa: S307


@pytest.mark.parametrize(("name", "make", "make_other"), VALUES, ids=IDS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_pickle_round_trip(name: str, make: Factory, make_other: Factory, protocol: int) -> None:
    value = make()
    restored = pickle.loads(pickle.dumps(value, protocol=protocol))
    assert type(restored) is type(value)
    assert restored == value
    assert hash(restored) == hash(value)
    assert repr(restored) == repr(value)


@pytest.mark.parametrize(("name", "make", "make_other"), VALUES, ids=IDS)
def test_copy_and_deepcopy(name: str, make: Factory, make_other: Factory) -> None:
    value = make()
    assert copy.copy(value) == value
    assert copy.deepcopy(value) == value


IMMUTABLE: list[tuple[Factory, str]] = [
    (make_sd, "service_name"),
    (make_sd, "labels"),
    (make_endpoint, "path"),
    (rp.BrokerInstanceKey.shared, "name"),
    (lambda: rp.BackendKey(rp.BrokerInstanceKey.shared(), "a", "1.0.0"), "service_version"),
    (rp.TraceContext, "traceparent"),
    (make_dp, "pid"),
    (lambda: rp.Isolation.SHARED, "value"),
]


@pytest.mark.parametrize(("make", "attribute"), IMMUTABLE)
def test_values_are_immutable(make: Factory, attribute: str) -> None:
    value = make()
    before = getattr(value, attribute)
    with pytest.raises(AttributeError):
        setattr(value, attribute, before)
    with pytest.raises(AttributeError):
        value.new_attribute = 1
    assert getattr(value, attribute) == before


def test_values_pickle_inside_containers() -> None:
    payload = {
        "sd": make_sd(),
        "keys": [rp.BrokerInstanceKey.shared(), rp.BrokerInstanceKey.private("a")],
        "dp": make_dp(),
        "iso": (rp.Isolation.PRIVATE, rp.Isolation.EXPLICIT),
    }
    assert pickle.loads(pickle.dumps(payload)) == payload
