"""Every function and method accepts its arguments by the keyword names of the
stubs (``_native.pyi``)."""

from __future__ import annotations

from pathlib import Path

import pytest

import running_process as rp
from support.values import HASH, TOKEN, W3C_TRACEPARENT, make_dp, make_sd


def test_free_functions_by_keyword(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"x")
    assert len(rp.sha256_file(path=blob)) == 32
    rp.validate_service_name(name="a")
    rp.validate_instance_name(name="a")
    rp.validate_version(version="1.0.0")
    assert rp.backend_socket_name(user_sid_hash=HASH, token_hex=TOKEN).endswith(".sock")
    assert rp.shared_broker_socket_name(user_sid_hash=HASH).endswith("-shared.sock")
    assert rp.service_broker_socket_name(user_sid_hash=HASH, service_name="a").endswith("-svc-a.sock")
    assert rp.instance_broker_socket_name(user_sid_hash=HASH, instance_name="a").endswith("-inst-a.sock")


def test_isolation_by_keyword() -> None:
    assert rp.Isolation.from_value(value=2) == rp.Isolation.EXPLICIT


def test_service_definition_methods_by_keyword(tmp_path: Path) -> None:
    sd = make_sd(min_version="", version_allow_list=[])
    sd.check_version(version="1.0.0")
    assert rp.ServiceDefinition.from_bytes(data=sd.to_bytes()) == sd
    path = sd.save(dir=tmp_path / "defs")
    assert rp.ServiceDefinition.load(service_name="zccache", dir=tmp_path / "defs") == sd
    assert rp.ServiceDefinition.load_file(path=path) == sd


def test_keys_by_keyword() -> None:
    sd = make_sd(isolation=rp.Isolation.PRIVATE)
    assert rp.BrokerInstanceKey.private(service_name="a").id() == "private:a"
    assert rp.BrokerInstanceKey.explicit(name="a").id() == "explicit:a"
    assert rp.BrokerInstanceKey.from_id(id="shared") == rp.BrokerInstanceKey.shared()
    assert rp.BrokerInstanceKey.from_service_definition(sd=sd).id() == "private:zccache"
    assert (
        rp.BrokerInstanceKey.shared().socket_path(user_sid_hash=HASH, socket_dir="/run").startswith("/run/")
    )
    key = rp.BackendKey.for_service(service_definition=sd, version="1.0.0")
    assert str(key) == "private:zccache/zccache@1.0.0"


def test_instance_keys_have_no_public_constructor() -> None:
    with pytest.raises(TypeError):
        rp.BrokerInstanceKey()


def test_trace_context_by_keyword() -> None:
    assert rp.TraceContext.new_root(request_id=3).request_id == 3
    assert rp.TraceContext(traceparent=W3C_TRACEPARENT).sampled


def test_daemon_process_by_keyword() -> None:
    dp = make_dp()
    assert rp.DaemonProcess.from_bytes(data=dp.to_bytes()) == dp
    assert rp.DaemonProcess.from_json(text=dp.to_json()) == dp


def test_allocator_by_keyword(short_dir: Path) -> None:
    alloc = rp.BackendEndpointAllocator(
        user_sid_hash=HASH, namespace_id="shared", max_attempts=2, socket_dir=short_dir / "b"
    )
    endpoint = alloc.allocate_with(random_source=lambda: bytes(16))
    assert alloc.is_reserved(path=endpoint.path)
    assert alloc.release(path=endpoint.path)
    assert alloc.reserve_path(path=endpoint.path)
