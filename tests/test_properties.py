"""Property tests: the validators agree with regular-expression oracles, and
every value survives its encodings."""

from __future__ import annotations

import json
import pickle
import re
from typing import Any, Optional

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import running_process as rp

# Derandomized: the same examples on every run, so the suite's outcome does
# not depend on luck.
SETTINGS = settings(
    deadline=None,
    max_examples=200,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

U64_MAX = 2**64 - 1

# --- names ------------------------------------------------------------------------

NAME_RE = re.compile(r"[a-z0-9-]{1,64}")


def name_is_valid(name: str) -> bool:
    return NAME_RE.fullmatch(name) is not None


def accepted(check: Any, value: str) -> bool:
    try:
        check(value)
    except rp.RunningProcessError as err:
        assert isinstance(err, ValueError)
        return False
    return True


def admitted(sd: rp.ServiceDefinition, version: str) -> bool:
    try:
        sd.check_version(version)
    except rp.VersionRefusedError as err:
        assert err.version == version
        return False
    return True


valid_names = st.from_regex(NAME_RE, fullmatch=True)
name_like = st.text(alphabet="abcxyz0189-_.ABZ é:/", max_size=70)


@SETTINGS
@given(valid_names)
def test_valid_names_are_accepted(name: str) -> None:
    rp.validate_service_name(name)
    rp.validate_instance_name(name)


@SETTINGS
@given(st.one_of(st.text(max_size=80), name_like, valid_names))
def test_name_validation_matches_the_oracle(name: str) -> None:
    expected = name_is_valid(name)
    assert accepted(rp.validate_service_name, name) == expected
    assert accepted(rp.validate_instance_name, name) == expected
    assert accepted(rp.BrokerInstanceKey.private, name) == expected
    assert accepted(rp.BrokerInstanceKey.explicit, name) == expected


@SETTINGS
@given(st.one_of(st.text(max_size=80), name_like))
def test_refused_names_carry_the_input(name: str) -> None:
    assume(not name_is_valid(name))
    try:
        rp.validate_service_name(name)
    except rp.InvalidNameError as err:
        assert err.value == name
        assert err.kind == "service name"
    else:
        raise AssertionError(f"{name!r} accepted")


# --- versions ---------------------------------------------------------------------

VERSION_RE = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[a-z0-9]+(\.[a-z0-9]+)*)?")


def version_is_valid(version: str) -> bool:
    match = VERSION_RE.fullmatch(version)
    if match is None or len(version.encode()) > 128:
        return False
    return all(int(match.group(i)) <= U64_MAX for i in (1, 2, 3))


numbers = st.one_of(
    st.integers(min_value=0, max_value=1000),
    st.integers(min_value=0, max_value=U64_MAX),
    st.integers(min_value=U64_MAX - 2, max_value=U64_MAX + 2),
).map(str)
pre_release = st.from_regex(re.compile(r"[a-z0-9]{1,8}(\.[a-z0-9]{1,8}){0,3}"), fullmatch=True)


@st.composite
def near_versions(draw: st.DrawFn) -> str:
    """Versions that are valid or one edit away from valid."""
    core = ".".join(draw(numbers) for _ in range(3))
    version = core
    if draw(st.booleans()):
        version += "-" + draw(pre_release)
    if draw(st.booleans()):
        position = draw(st.integers(min_value=0, max_value=len(version)))
        junk = draw(st.sampled_from(["0", ".", "-", "+", "A", "a", "", "..", "+b", " ", "é"]))
        cut = draw(st.integers(min_value=0, max_value=1))
        version = version[:position] + junk + version[position + cut :]
    return version


long_versions = st.builds(
    lambda core, size: core + "-" + "a" * size,
    st.sampled_from(["1.2.3", "10.20.30", "0.0.0"]),
    st.integers(min_value=110, max_value=125),
)

version_text = st.one_of(
    st.from_regex(VERSION_RE, fullmatch=True).filter(lambda v: len(v) <= 128),
    near_versions(),
    long_versions,
    st.text(alphabet="0123456789.-+abzAZ", max_size=40),
    st.text(max_size=130),
)


@SETTINGS
@given(version_text)
def test_version_validation_matches_the_oracle(version: str) -> None:
    assert accepted(rp.validate_version, version) == version_is_valid(version)


@SETTINGS
@given(near_versions())
def test_version_errors_carry_the_input(version: str) -> None:
    assume(not version_is_valid(version))
    try:
        rp.validate_version(version)
    except rp.InvalidVersionError as err:
        assert err.value == version
        assert err.reason
    else:
        raise AssertionError(f"{version!r} accepted")


def triple(version: str) -> tuple[int, int, int]:
    major, minor, patch = version.split("-", 1)[0].split(".")
    return int(major), int(minor), int(patch)


small_versions = st.builds(
    lambda a, b, c, pre: f"{a}.{b}.{c}" + (f"-{pre}" if pre else ""),
    st.integers(0, 30),
    st.integers(0, 30),
    st.integers(0, 30),
    st.one_of(st.just(""), pre_release),
)


@SETTINGS
@given(small_versions, small_versions)
def test_min_version_compares_numeric_triples(floor: str, wanted: str) -> None:
    sd = rp.ServiceDefinition(
        service_name="svc", binary_path="/b", per_version_binary_dir="/", min_version=floor
    )
    assert admitted(sd, wanted) == (triple(wanted) >= triple(floor))


@SETTINGS
@given(st.lists(small_versions, max_size=5), small_versions)
def test_allow_list_is_exact(allow: list[str], wanted: str) -> None:
    sd = rp.ServiceDefinition(
        service_name="svc", binary_path="/b", per_version_binary_dir="/", version_allow_list=allow
    )
    assert admitted(sd, wanted) == (not allow or wanted in allow)


# --- value strategies -------------------------------------------------------------

no_nul_text = st.text(
    alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=40
)
absolute_paths = no_nul_text.map(lambda s: "/" + s)
label_keys = st.from_regex(re.compile(r"[A-Za-z0-9._/-]{1,24}"), fullmatch=True)
label_values = st.text(alphabet=st.characters(blacklist_categories=["Cc", "Cs"]), max_size=40)
valid_versions = st.from_regex(VERSION_RE, fullmatch=True).filter(version_is_valid)


@st.composite
def service_definitions(draw: st.DrawFn) -> rp.ServiceDefinition:
    isolation = draw(st.sampled_from([rp.Isolation.PRIVATE, rp.Isolation.SHARED, rp.Isolation.EXPLICIT]))
    explicit = draw(valid_names) if isolation == rp.Isolation.EXPLICIT else ""
    return rp.ServiceDefinition(
        service_name=draw(valid_names),
        binary_path=draw(absolute_paths),
        per_version_binary_dir=draw(absolute_paths),
        isolation=isolation,
        explicit_instance=explicit,
        min_version=draw(st.one_of(st.just(""), valid_versions)),
        version_allow_list=draw(st.lists(valid_versions, max_size=4)),
        labels=draw(st.dictionaries(label_keys, label_values, max_size=8)),
    )


printable_ascii = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64
)
socket_paths = absolute_paths.filter(lambda p: len(p.encode()) <= 107)


@st.composite
def daemon_processes(draw: st.DrawFn) -> rp.DaemonProcess:
    idle: Optional[int] = draw(st.one_of(st.none(), st.integers(0, 2**32 - 1)))
    return rp.DaemonProcess(
        pid=draw(st.integers(1, 2**31 - 1)),
        exe_path=draw(absolute_paths),
        exe_sha256=draw(st.binary(min_size=32, max_size=32)),
        boot_id=draw(printable_ascii),
        ipc_endpoint=rp.Endpoint(draw(printable_ascii), draw(socket_paths)),
        started_at_unix_ms=draw(st.integers(0, U64_MAX)),
        idle_timeout_secs=idle,
        exe_blake3=draw(st.one_of(st.none(), st.binary(min_size=32, max_size=32))),
    )


hex_digits = "0123456789abcdef"


def lower_hex(length: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=hex_digits, min_size=length, max_size=length)


@st.composite
def traceparents(draw: st.DrawFn) -> str:
    version = draw(lower_hex(2).filter(lambda v: v != "ff"))
    trace_id = draw(lower_hex(32).filter(lambda v: v != "0" * 32))
    parent_id = draw(lower_hex(16).filter(lambda v: v != "0" * 16))
    flags = draw(lower_hex(2))
    value = f"{version}-{trace_id}-{parent_id}-{flags}"
    if version != "00" and draw(st.booleans()):
        value += "-" + draw(
            st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20)
        )
    return value


tracestate_keys = st.from_regex(re.compile(r"[a-z][a-z0-9_*/-]{0,15}"), fullmatch=True)
tracestate_values = st.from_regex(
    re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,15}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"), fullmatch=True
)


@st.composite
def trace_contexts(draw: st.DrawFn) -> rp.TraceContext:
    request_id = draw(st.integers(0, U64_MAX))
    if draw(st.integers(0, 4)) == 0:
        return rp.TraceContext(request_id=request_id)
    traceparent = draw(traceparents())
    state = draw(st.dictionaries(tracestate_keys, tracestate_values, max_size=8))
    tracestate = ",".join(f"{k}={v}" for k, v in state.items())
    return rp.TraceContext(request_id=request_id, traceparent=traceparent, tracestate=tracestate)


def repr_namespace() -> dict[str, Any]:
    namespace = dict(vars(rp))
    namespace["bytes"] = bytes
    return namespace


def check_pickle_and_repr(value: Any) -> None:
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        restored = pickle.loads(pickle.dumps(value, protocol=protocol))
        assert restored == value
        assert hash(restored) == hash(value)
    assert eval(repr(value), repr_namespace()) == value  # noqa: S307


# --- round trips ------------------------------------------------------------------


@SETTINGS
@given(service_definitions())
def test_service_definition_round_trips(sd: rp.ServiceDefinition) -> None:
    data = sd.to_bytes()
    restored = rp.ServiceDefinition.from_bytes(data)
    assert restored == sd
    assert restored.to_bytes() == data
    assert restored.labels == sd.labels
    assert restored.version_allow_list == sd.version_allow_list
    check_pickle_and_repr(sd)
    assert rp.BrokerInstanceKey.from_service_definition(sd).isolation == sd.isolation


@SETTINGS
@given(daemon_processes())
def test_daemon_process_round_trips(dp: rp.DaemonProcess) -> None:
    data = dp.to_bytes()
    assert rp.DaemonProcess.from_bytes(data) == dp
    text = dp.to_json()
    assert rp.DaemonProcess.from_json(text) == dp
    parsed = json.loads(text)
    if dp.exe_blake3 is None:
        assert dp.exe_hash_algorithm == "sha256"
        assert bytes(parsed["exe_sha256"]) == dp.exe_sha256 == dp.exe_hash
    else:
        assert dp.exe_hash_algorithm == parsed["exe_hash_algorithm"] == "blake3"
        assert bytes(parsed["exe_hash"]) == dp.exe_blake3 == dp.exe_hash
        assert bytes(parsed["legacy_exe_sha256"]) == dp.exe_sha256
        assert "exe_sha256" not in parsed
    assert dp.exe_hash.hex() == dp.exe_hash_hex
    assert parsed["started_at_unix_ms"] == dp.started_at_unix_ms
    assert parsed.get("idle_timeout_secs") == dp.idle_timeout_secs
    check_pickle_and_repr(dp)


@SETTINGS
@given(trace_contexts())
def test_trace_context_round_trips(tc: rp.TraceContext) -> None:
    check_pickle_and_repr(tc)
    assert (
        rp.TraceContext(request_id=tc.request_id, traceparent=tc.traceparent, tracestate=tc.tracestate) == tc
    )
    if tc.traceparent:
        assert tc.trace_id == tc.traceparent[3:35]
        assert tc.parent_id == tc.traceparent[36:52]
        assert tc.trace_flags == int(tc.traceparent[53:55], 16)
        assert tc.sampled == bool(int(tc.traceparent[53:55], 16) & 1)
    else:
        assert tc.trace_id is None and not tc.sampled


@SETTINGS
@given(
    st.builds(
        rp.BackendKey,
        st.one_of(
            st.just(rp.BrokerInstanceKey.shared()),
            valid_names.map(rp.BrokerInstanceKey.private),
            valid_names.map(rp.BrokerInstanceKey.explicit),
        ),
        valid_names,
        valid_versions,
    )
)
def test_keys_round_trip(key: rp.BackendKey) -> None:
    check_pickle_and_repr(key)
    check_pickle_and_repr(key.instance)
    assert rp.BrokerInstanceKey.from_id(key.instance.id()) == key.instance
    assert str(key) == f"{key.instance.id()}/{key.service_name}@{key.service_version}"


# --- traceparent oracle ----------------------------------------------------------

TRACEPARENT_00_RE = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


def traceparent_00_is_valid(value: str) -> bool:
    match = TRACEPARENT_00_RE.fullmatch(value)
    return match is not None and match.group(1) != "0" * 32 and match.group(2) != "0" * 16


@st.composite
def mutated_traceparents(draw: st.DrawFn) -> str:
    """A valid version-00 traceparent with a few characters replaced, inserted
    or removed (never touching the version, so the version-00 rules apply)."""
    value = "00-" + draw(traceparents())[3:55]
    for _ in range(draw(st.integers(0, 3))):
        position = draw(st.integers(3, len(value)))
        char = draw(st.sampled_from(list("0af-gAF \x00é") + ["0" * 16]))
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        if action == "replace":
            value = value[:position] + char + value[position + 1 :]
        elif action == "insert":
            value = value[:position] + char + value[position:]
        else:
            value = value[:position] + value[position + 1 :]
    return value


@st.composite
def zeroed_traceparents(draw: st.DrawFn) -> str:
    value = "00-" + draw(traceparents())[3:55]
    if draw(st.booleans()):
        return value[:3] + "0" * 32 + value[35:]
    return value[:36] + "0" * 16 + value[52:]


@SETTINGS
@given(st.one_of(mutated_traceparents(), zeroed_traceparents()))
def test_version_00_traceparent_matches_the_oracle(value: str) -> None:
    assert value.startswith("00")
    assert accepted(lambda v: rp.TraceContext(traceparent=v), value) == traceparent_00_is_valid(value)
