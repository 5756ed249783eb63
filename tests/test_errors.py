"""The exception hierarchy of running_process.errors: classes, attributes and
pickling, both for exceptions built directly and for those the core raises."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path
from typing import Any, Callable

import pytest

import running_process as rp
from running_process import errors

PROTOCOLS = list(range(2, pickle.HIGHEST_PROTOCOL + 1))

# class, its fields with sample values, the builtin bases it must also have
SAMPLES: list[tuple[type[rp.RunningProcessError], dict[str, Any], tuple[type[BaseException], ...]]] = [
    (rp.RunningProcessError, {}, ()),
    (rp.InvalidNameError, {"kind": "service name", "value": "Bad", "reason": "upper"}, (ValueError,)),
    (rp.InvalidVersionError, {"value": "1.2", "reason": "short"}, (ValueError,)),
    (
        rp.VersionRefusedError,
        {"service_name": "a", "version": "1.0.0", "rule": "min_version", "reason": "old"},
        (rp.BackendLaunchError,),
    ),
    (
        rp.InvalidServiceDefinitionError,
        {"field": "binary_path", "value": "rel", "reason": "absolute"},
        (ValueError,),
    ),
    (
        rp.ServiceDefinitionStemMismatchError,
        {"field": "service_name", "value": "a", "reason": "r", "path": "/d/b.servicedef", "stem": "b"},
        (ValueError,),
    ),
    (
        rp.ServiceDefinitionNotFoundError,
        {"service_name": "a", "path": "/d/a.servicedef"},
        (FileNotFoundError, OSError),
    ),
    (rp.InvalidTraceContextError, {"field": "traceparent", "value": "x", "reason": "r"}, (ValueError,)),
    (rp.InvalidIdentityError, {"field": "pid", "value": "0", "reason": "r"}, (ValueError,)),
    (rp.DecodeError, {"what": "DaemonProcess", "reason": "r"}, (ValueError,)),
    (rp.InsecureDirectoryError, {"path": "/d", "reason": "mode 0755"}, ()),
    (
        rp.KeyBusyError,
        {"reason": "busy", "path": "/s/k.lock", "waited": 9.5, "holder_pid": 42, "holder_state": "S"},
        (),
    ),
    (rp.BackendLimitError, {"reason": "full", "limit": 64, "running": 64, "dir": "/run/s"}, ()),
    (rp.InsecureFileError, {"path": "/d/x.servicedef", "reason": "mode 0666"}, ()),
    (rp.FilesystemError, {"path": "/f", "operation": "open", "os_errno": 2}, (OSError,)),
    (rp.FilesystemError, {"path": "/f", "operation": "open", "os_errno": None}, (OSError,)),
    (rp.HostIdentityError, {"what": "boot id", "path": "/proc/x", "reason": "r"}, (OSError,)),
    (rp.HostIdentityError, {"what": "random source", "path": None, "reason": "r"}, (OSError,)),
    (rp.PathTooLongError, {"path": "/x", "length": 120, "limit": 107}, (ValueError,)),
    (rp.AllocationExhaustedError, {"attempts": 16, "dir": "/d"}, ()),
    (rp.BackendLaunchError, {"reason": "r"}, ()),
    (
        rp.BinaryPolicyError,
        {"reason": "r", "variant": "BinaryOutsideAllowRoot", "path": "/x"},
        (rp.BackendLaunchError,),
    ),
    (rp.EndpointError, {"reason": "r"}, (rp.BackendLaunchError,)),
    (rp.SpawnError, {"reason": "r", "path": "/x", "os_errno": 8}, (rp.BackendLaunchError, OSError)),
    (
        rp.BackendExitedError,
        {"reason": "r", "pid": 5, "returncode": 3, "log_tail": "bye"},
        (rp.BackendLaunchError,),
    ),
    (
        rp.NotReadyError,
        {"reason": "r", "pid": 5, "timeout": 1.5, "log_tail": ""},
        (rp.BackendLaunchError,),
    ),
    (
        rp.VerificationError,
        {"reason": "r", "field": "peer pid", "expected": "5", "actual": "6"},
        (rp.BackendLaunchError,),
    ),
    (rp.ProbeError, {"reason": "r"}, (rp.BackendLaunchError,)),
    (rp.StaleIdentityError, {"reason": "r", "field": "pid"}, (rp.BackendLaunchError,)),
    (rp.LauncherError, {"reason": "r"}, (rp.BackendLaunchError,)),
    (rp.BackendServerError, {"variable": "RUNNING_PROCESS_BROKER_V1_BACKEND_PIPE", "reason": "r"}, ()),
    (rp.RefusedError, {"code": rp.ErrorCode.RATE_LIMITED, "reason": "r", "retry_after_ms": 1500}, ()),
]

IDS = [f"{cls.__name__}-{i}" for i, (cls, _, _) in enumerate(SAMPLES)]


def test_every_exported_error_is_sampled() -> None:
    sampled = {cls for cls, _, _ in SAMPLES}
    exported = {getattr(errors, name) for name in errors.__all__}
    assert sampled == exported


def test_errors_are_reexported_at_top_level() -> None:
    for name in errors.__all__:
        assert getattr(rp, name) is getattr(errors, name)


@pytest.mark.parametrize(("cls", "fields", "bases"), SAMPLES, ids=IDS)
def test_construction_sets_attributes(
    cls: type[rp.RunningProcessError], fields: dict[str, Any], bases: tuple[type[BaseException], ...]
) -> None:
    err = cls("the message", **fields)
    assert str(err) == "the message"
    assert err.message == "the message"
    for name, value in fields.items():
        assert getattr(err, name) == value
    assert isinstance(err, rp.RunningProcessError)
    assert isinstance(err, Exception)
    for base in bases:
        assert isinstance(err, base)


@pytest.mark.parametrize(("cls", "fields", "bases"), SAMPLES, ids=IDS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_pickle_round_trip(
    cls: type[rp.RunningProcessError],
    fields: dict[str, Any],
    bases: tuple[type[BaseException], ...],
    protocol: int,
) -> None:
    err = cls("the message", **fields)
    restored = pickle.loads(pickle.dumps(err, protocol=protocol))
    assert type(restored) is cls
    assert str(restored) == "the message"
    assert restored.message == "the message"
    assert restored.args == err.args
    for name, value in fields.items():
        assert getattr(restored, name) == value


@pytest.mark.parametrize(("cls", "fields", "bases"), SAMPLES, ids=IDS)
def test_missing_or_unknown_fields_are_type_errors(
    cls: type[rp.RunningProcessError], fields: dict[str, Any], bases: tuple[type[BaseException], ...]
) -> None:
    with pytest.raises(TypeError):
        cls("m", **fields, unexpected_field=1)
    if fields:
        first = next(iter(fields))
        partial = {k: v for k, v in fields.items() if k != first}
        with pytest.raises(TypeError):
            cls("m", **partial)


def test_value_errors_are_not_os_errors() -> None:
    assert not issubclass(rp.InvalidNameError, OSError)
    assert not issubclass(rp.FilesystemError, ValueError)


def test_stem_mismatch_is_an_invalid_service_definition() -> None:
    assert issubclass(rp.ServiceDefinitionStemMismatchError, rp.InvalidServiceDefinitionError)


def test_filesystem_error_errno() -> None:
    err = rp.FilesystemError("m", path="/f", operation="open", os_errno=errno.EACCES)
    assert err.errno == errno.EACCES
    restored = pickle.loads(pickle.dumps(err))
    assert restored.errno == errno.EACCES
    assert restored.os_errno == errno.EACCES


# --- errors raised by the core -----------------------------------------------------


def raise_name() -> None:
    rp.validate_service_name("Bad")


def raise_version() -> None:
    rp.validate_version("1.2")


def raise_refused() -> None:
    rp.ServiceDefinition(
        service_name="a", binary_path="/a", per_version_binary_dir="/", min_version="2.0.0"
    ).check_version("1.0.0")


def raise_sd() -> None:
    rp.ServiceDefinition(service_name="a", binary_path="rel", per_version_binary_dir="/")


def raise_trace() -> None:
    rp.TraceContext(tracestate="k=v")


def raise_identity() -> None:
    rp.Endpoint("", "/x")


def raise_decode() -> None:
    rp.DaemonProcess.from_bytes(b"\xff\xff")


def raise_fs() -> None:
    rp.sha256_file("/nonexistent/running-process-test")


def raise_too_long() -> None:
    rp.BrokerInstanceKey.shared().socket_path("0123456789abcdef", "/" + "x" * 100)


RAISERS: list[tuple[Callable[[], None], type[rp.RunningProcessError], tuple[str, ...]]] = [
    (raise_name, rp.InvalidNameError, ("kind", "value", "reason")),
    (raise_version, rp.InvalidVersionError, ("value", "reason")),
    (raise_refused, rp.VersionRefusedError, ("service_name", "version", "reason")),
    (raise_sd, rp.InvalidServiceDefinitionError, ("field", "value", "reason")),
    (raise_trace, rp.InvalidTraceContextError, ("field", "value", "reason")),
    (raise_identity, rp.InvalidIdentityError, ("field", "value", "reason")),
    (raise_decode, rp.DecodeError, ("what", "reason")),
    (raise_fs, rp.FilesystemError, ("path", "operation", "os_errno", "errno")),
    (raise_too_long, rp.PathTooLongError, ("path", "length", "limit")),
]


@pytest.mark.parametrize(("raiser", "cls", "attrs"), RAISERS, ids=[r[1].__name__ for r in RAISERS])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_core_errors_pickle_with_their_attributes(
    raiser: Callable[[], None],
    cls: type[rp.RunningProcessError],
    attrs: tuple[str, ...],
    protocol: int,
) -> None:
    with pytest.raises(cls) as info:
        raiser()
    err = info.value
    assert type(err) is cls
    assert str(err)
    restored = pickle.loads(pickle.dumps(err, protocol=protocol))
    assert type(restored) is cls
    assert str(restored) == str(err)
    for name in attrs:
        assert getattr(restored, name) == getattr(err, name), name


def test_core_error_message_mentions_the_input() -> None:
    with pytest.raises(rp.InvalidNameError) as info:
        rp.validate_service_name("Bad-Name")
    assert "Bad-Name" in str(info.value)


def test_not_found_pickles(tmp_path: Path) -> None:
    directory = tmp_path / "defs"
    directory.mkdir(mode=0o700)
    with pytest.raises(rp.ServiceDefinitionNotFoundError) as info:
        rp.ServiceDefinition.load("ghost", directory)
    restored = pickle.loads(pickle.dumps(info.value))
    assert type(restored) is rp.ServiceDefinitionNotFoundError
    assert restored.service_name == "ghost"
    assert restored.path == str(directory / "ghost.servicedef")
    assert isinstance(restored, FileNotFoundError)


def test_insecure_directory_pickles(tmp_path: Path) -> None:
    directory = tmp_path / "defs"
    rp.ServiceDefinition(service_name="ghost", binary_path="/a", per_version_binary_dir="/").save(directory)
    os.chmod(directory, 0o777)
    with pytest.raises(rp.InsecureDirectoryError) as info:
        rp.ServiceDefinition.load("ghost", directory)
    restored = pickle.loads(pickle.dumps(info.value))
    assert type(restored) is rp.InsecureDirectoryError
    assert restored.path == str(directory)
    assert restored.reason == info.value.reason


def test_stem_mismatch_pickles(tmp_path: Path) -> None:
    directory = tmp_path / "defs"
    sd = rp.ServiceDefinition(service_name="real", binary_path="/a", per_version_binary_dir="/")
    Path(sd.save(directory)).rename(directory / "fake.servicedef")
    with pytest.raises(rp.ServiceDefinitionStemMismatchError) as info:
        rp.ServiceDefinition.load("fake", directory)
    restored = pickle.loads(pickle.dumps(info.value))
    assert type(restored) is rp.ServiceDefinitionStemMismatchError
    for name in ("field", "value", "reason", "path", "stem"):
        assert getattr(restored, name) == getattr(info.value, name)
    assert restored.stem == "fake"


def test_allocation_exhausted_pickles(short_dir: Path) -> None:
    alloc = rp.BackendEndpointAllocator(
        "0123456789abcdef", "shared", max_attempts=2, socket_dir=short_dir / "b"
    )
    alloc.allocate_with(lambda: bytes(16))
    with pytest.raises(rp.AllocationExhaustedError) as info:
        alloc.allocate_with(lambda: bytes(16))
    restored = pickle.loads(pickle.dumps(info.value))
    assert type(restored) is rp.AllocationExhaustedError
    assert restored.attempts == 2
    assert restored.dir == str(short_dir / "b")


def test_the_core_table_is_the_one_list_of_attributes() -> None:
    with_fields = {name for name in errors.__all__ if getattr(errors, name)._fields}
    assert set(rp._native.EXCEPTION_FIELDS) == with_fields
    for name, fields in rp._native.EXCEPTION_FIELDS.items():
        assert getattr(errors, name)._fields == fields
    # The samples above name their attributes independently of the table.
    for cls, sample, _ in SAMPLES:
        assert tuple(sample) == cls._fields, cls.__name__
