"""TraceContext: W3C traceparent/tracestate validation and the environment
hand-off (spec sections 1 and 9)."""

from __future__ import annotations

import os
import re

import pytest

import running_process as rp
from support.values import W3C_TRACEPARENT, W3C_TRACESTATE

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
ROOT_RE = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01")


def test_defaults() -> None:
    tc = rp.TraceContext()
    assert tc.request_id == 0
    assert tc.traceparent == ""
    assert tc.tracestate == ""
    assert tc.trace_id is None
    assert tc.parent_id is None
    assert tc.trace_flags is None
    assert tc.sampled is False


def test_w3c_example() -> None:
    tc = rp.TraceContext(request_id=42, traceparent=W3C_TRACEPARENT, tracestate=W3C_TRACESTATE)
    assert tc.request_id == 42
    assert tc.traceparent == W3C_TRACEPARENT
    assert tc.tracestate == W3C_TRACESTATE
    assert tc.trace_id == TRACE_ID
    assert tc.parent_id == PARENT_ID
    assert tc.trace_flags == 1
    assert tc.sampled is True


def test_unsampled_flags() -> None:
    tc = rp.TraceContext(traceparent=W3C_TRACEPARENT[:-2] + "00")
    assert tc.trace_flags == 0
    assert tc.sampled is False


@pytest.mark.parametrize(
    ("flags", "value", "sampled"), [("02", 2, False), ("03", 3, True), ("ff", 255, True), ("fe", 254, False)]
)
def test_other_flags(flags: str, value: int, sampled: bool) -> None:
    tc = rp.TraceContext(traceparent=W3C_TRACEPARENT[:-2] + flags)
    assert tc.trace_flags == value
    assert tc.sampled is sampled


def test_traceparent_without_tracestate() -> None:
    tc = rp.TraceContext(traceparent=W3C_TRACEPARENT)
    assert tc.tracestate == ""
    assert tc.sampled


def test_request_id_is_u64() -> None:
    assert rp.TraceContext(request_id=2**64 - 1).request_id == 2**64 - 1
    with pytest.raises(OverflowError):
        rp.TraceContext(request_id=2**64)
    with pytest.raises(OverflowError):
        rp.TraceContext(request_id=-1)


@pytest.mark.parametrize(
    "traceparent",
    [
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
        "fe-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x",
    ],
)
def test_future_versions_are_accepted(traceparent: str) -> None:
    tc = rp.TraceContext(traceparent=traceparent)
    assert tc.traceparent == traceparent
    assert tc.trace_id == TRACE_ID
    assert tc.parent_id == PARENT_ID


BAD_TRACEPARENTS = [
    pytest.param(W3C_TRACEPARENT.upper(), id="upper-case"),
    pytest.param("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", id="upper-trace-id"),
    pytest.param("00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01", id="upper-parent-id"),
    pytest.param(W3C_TRACEPARENT[:-1] + "A", id="upper-flags"),
    pytest.param(W3C_TRACEPARENT[:54], id="54-chars"),
    pytest.param(W3C_TRACEPARENT + "0", id="56-chars"),
    pytest.param("00", id="version-only"),
    pytest.param("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", id="short-trace-id"),
    pytest.param("00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01", id="long-trace-id"),
    pytest.param("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01", id="short-parent-id"),
    pytest.param("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", id="short-flags"),
    pytest.param("00-00000000000000000000000000000000-00f067aa0ba902b7-01", id="zero-trace-id"),
    pytest.param("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", id="zero-parent-id"),
    pytest.param("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", id="version-ff"),
    pytest.param("FF-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", id="version-FF"),
    pytest.param("0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", id="version-not-hex"),
    pytest.param(W3C_TRACEPARENT + "-extra", id="version-00-trailing-field"),
    pytest.param(W3C_TRACEPARENT + "-", id="version-00-trailing-dash"),
    pytest.param(W3C_TRACEPARENT + " ", id="version-00-trailing-space"),
    pytest.param("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", id="future-no-dash"),
    pytest.param("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-a b", id="future-space"),
    pytest.param("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-\x00", id="future-nul"),
    pytest.param("00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", id="underscores"),
    pytest.param("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\n", id="newline"),
    pytest.param("00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01", id="non-ascii"),
    pytest.param(" " + W3C_TRACEPARENT[1:], id="leading-space"),
    pytest.param("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", id="flags-not-hex"),
]


@pytest.mark.parametrize("traceparent", BAD_TRACEPARENTS)
def test_bad_traceparents(traceparent: str) -> None:
    with pytest.raises(rp.InvalidTraceContextError) as info:
        rp.TraceContext(traceparent=traceparent)
    err = info.value
    assert err.field == "traceparent"
    assert err.value == traceparent
    assert err.reason
    assert isinstance(err, ValueError)


@pytest.mark.parametrize(
    ("traceparent", "hint"),
    [
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", "trace id"),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "parent id"),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "ff"),
        (W3C_TRACEPARENT + "-extra", "trailing"),
    ],
)
def test_bad_traceparent_reasons(traceparent: str, hint: str) -> None:
    with pytest.raises(rp.InvalidTraceContextError) as info:
        rp.TraceContext(traceparent=traceparent)
    assert hint in info.value.reason


# --- tracestate -------------------------------------------------------------


def members(count: int) -> str:
    return ",".join(f"k{i}=v{i}" for i in range(count))


@pytest.mark.parametrize(
    "tracestate",
    [
        "k=v",
        "a@b=c",
        "0t@s=v",
        "t@sys-tem_1*/=v",
        " k=v , l=w ",
        "k=v,,l=w",
        "k=a b",
        "k=!\"#$%&'()*+-./:;<>?@[\\]^_`{|}~",
        members(32),
        "k=" + "v" * 256,
        "a" * 256 + "=v",
    ],
)
def test_good_tracestates(tracestate: str) -> None:
    tc = rp.TraceContext(traceparent=W3C_TRACEPARENT, tracestate=tracestate)
    assert tc.tracestate == tracestate


def test_tracestate_of_exactly_512_characters() -> None:
    tracestate = "a=" + "v" * 254 + ",b=" + "w" * 253
    assert len(tracestate) == 512
    assert rp.TraceContext(traceparent=W3C_TRACEPARENT, tracestate=tracestate).tracestate == tracestate


BAD_TRACESTATES = [
    pytest.param(members(33), "32", id="33-members"),
    pytest.param("Key=v", "Key", id="upper-case-key"),
    pytest.param("1k=v", "1k", id="digit-first-simple-key"),
    pytest.param("k.x=v", "k.x", id="dot-in-key"),
    pytest.param("t@Sys=v", "t@Sys", id="upper-case-system"),
    pytest.param("t@s23456789012345=v", "t@", id="long-system-id"),
    pytest.param("a" * 257 + "=v", "a", id="long-key"),
    pytest.param("k=v,k=w", "twice", id="duplicate-key"),
    pytest.param("a=1,b=2,a=3", "twice", id="duplicate-key-later"),
    pytest.param("k=", "k", id="empty-value"),
    pytest.param("k", "=", id="no-equals"),
    pytest.param("k=a,b", "b", id="member-without-equals"),
    pytest.param("k=v\x01", "outside", id="control-char"),
    pytest.param("k=v=w", "outside", id="equals-in-value"),
    pytest.param("k=é", "outside", id="non-ascii-value"),
    pytest.param("k=" + "v" * 257, "256", id="long-value"),
    pytest.param("a=" + "v" * 254 + ",b=" + "w" * 254, "512", id="513-characters"),
    pytest.param("k=" + "v" * 600, "512", id="600-characters"),
]


@pytest.mark.parametrize(("tracestate", "hint"), BAD_TRACESTATES)
def test_bad_tracestates(tracestate: str, hint: str) -> None:
    with pytest.raises(rp.InvalidTraceContextError) as info:
        rp.TraceContext(traceparent=W3C_TRACEPARENT, tracestate=tracestate)
    err = info.value
    assert err.field == "tracestate"
    assert err.value == tracestate
    assert hint in err.reason
    assert isinstance(err, ValueError)


def test_tracestate_needs_a_traceparent() -> None:
    with pytest.raises(rp.InvalidTraceContextError) as info:
        rp.TraceContext(tracestate="k=v")
    err = info.value
    assert err.field == "tracestate"
    assert err.value == "k=v"
    assert "traceparent" in err.reason


def test_traceparent_is_checked_before_tracestate() -> None:
    with pytest.raises(rp.InvalidTraceContextError) as info:
        rp.TraceContext(traceparent="bad", tracestate="Bad=1")
    assert info.value.field == "traceparent"


# --- new_root ---------------------------------------------------------------


def test_new_root_is_valid_and_sampled() -> None:
    tc = rp.TraceContext.new_root()
    assert ROOT_RE.fullmatch(tc.traceparent), tc.traceparent
    assert tc.request_id == 0
    assert tc.tracestate == ""
    assert tc.sampled is True
    assert tc.trace_flags == 1
    assert tc.trace_id is not None and tc.trace_id != "0" * 32
    assert tc.parent_id is not None and tc.parent_id != "0" * 16
    # What new_root makes, the constructor accepts.
    assert rp.TraceContext(traceparent=tc.traceparent) == tc


def test_new_root_keeps_the_request_id() -> None:
    assert rp.TraceContext.new_root(request_id=99).request_id == 99
    assert rp.TraceContext.new_root(5).request_id == 5


def test_new_root_is_fresh_each_call() -> None:
    roots = [rp.TraceContext.new_root() for _ in range(200)]
    assert len({r.trace_id for r in roots}) == 200
    assert len({r.parent_id for r in roots}) == 200


# --- from_env ---------------------------------------------------------------


def test_env_names() -> None:
    assert rp.ENV_TRACEPARENT == "RUNNING_PROCESS_BROKER_V1_TRACEPARENT"
    assert rp.ENV_TRACESTATE == "RUNNING_PROCESS_BROKER_V1_TRACESTATE"


def test_from_env_unset_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(rp.ENV_TRACEPARENT, raising=False)
    monkeypatch.delenv(rp.ENV_TRACESTATE, raising=False)
    assert rp.TraceContext.from_env() == rp.TraceContext()


def test_from_env_empty_values_are_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(rp.ENV_TRACEPARENT, "")
    monkeypatch.setenv(rp.ENV_TRACESTATE, "")
    assert rp.TraceContext.from_env() == rp.TraceContext()


def test_from_env_reads_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(rp.ENV_TRACEPARENT, W3C_TRACEPARENT)
    monkeypatch.setenv(rp.ENV_TRACESTATE, W3C_TRACESTATE)
    tc = rp.TraceContext.from_env()
    assert tc == rp.TraceContext(traceparent=W3C_TRACEPARENT, tracestate=W3C_TRACESTATE)
    assert tc.request_id == 0
    assert tc.trace_id == TRACE_ID


def test_from_env_traceparent_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(rp.ENV_TRACEPARENT, W3C_TRACEPARENT)
    monkeypatch.delenv(rp.ENV_TRACESTATE, raising=False)
    assert rp.TraceContext.from_env() == rp.TraceContext(traceparent=W3C_TRACEPARENT)


def test_from_env_sees_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(rp.ENV_TRACEPARENT, W3C_TRACEPARENT)
    first = rp.TraceContext.from_env()
    other = W3C_TRACEPARENT[:-2] + "00"
    monkeypatch.setenv(rp.ENV_TRACEPARENT, other)
    assert rp.TraceContext.from_env().traceparent == other
    assert first.traceparent == W3C_TRACEPARENT


def test_from_env_invalid_traceparent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(rp.ENV_TRACEPARENT, W3C_TRACEPARENT.upper())
    with pytest.raises(rp.InvalidTraceContextError) as info:
        rp.TraceContext.from_env()
    assert info.value.field == "traceparent"
    assert info.value.value == W3C_TRACEPARENT.upper()


def test_from_env_invalid_tracestate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(rp.ENV_TRACEPARENT, W3C_TRACEPARENT)
    monkeypatch.setenv(rp.ENV_TRACESTATE, "k=v,k=w")
    with pytest.raises(rp.InvalidTraceContextError) as info:
        rp.TraceContext.from_env()
    assert info.value.field == "tracestate"
    assert info.value.value == "k=v,k=w"


def test_from_env_tracestate_without_traceparent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(rp.ENV_TRACEPARENT, raising=False)
    monkeypatch.setenv(rp.ENV_TRACESTATE, "k=v")
    with pytest.raises(rp.InvalidTraceContextError) as info:
        rp.TraceContext.from_env()
    assert info.value.field == "tracestate"


def test_from_env_non_utf8_value(monkeypatch: pytest.MonkeyPatch) -> None:
    key = os.fsencode(rp.ENV_TRACEPARENT)
    monkeypatch.setitem(os.environb, key, b"00-\xff\xfe")
    with pytest.raises(rp.InvalidTraceContextError) as info:
        rp.TraceContext.from_env()
    assert info.value.field == "traceparent"
    assert "UTF-8" in info.value.reason
