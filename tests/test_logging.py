"""Rust log records reach Python's logging under the ``running_process`` logger."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

import running_process as rp
from support.values import HASH


@pytest.fixture
def rust_debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG, logger="running_process")
    rp.refresh_logging()
    try:
        yield caplog
    finally:
        # caplog restores the level after the test; make the bridge see it.
        rp.refresh_logging()


def ours(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("running_process")]


def test_allocate_logs_the_directory_and_endpoint(
    rust_debug_logs: pytest.LogCaptureFixture, short_dir: Path
) -> None:
    socket_dir = short_dir / "broker"
    endpoint = rp.BackendEndpointAllocator(HASH, "shared", socket_dir=socket_dir).allocate()
    records = ours(rust_debug_logs)
    messages = [r.getMessage() for r in records]
    assert any(str(socket_dir) in m for m in messages), messages
    assert any(endpoint.path in m for m in messages), messages
    for record in records:
        assert record.name == "running_process" or record.name.startswith("running_process.")


def test_created_directory_is_logged_once(rust_debug_logs: pytest.LogCaptureFixture, short_dir: Path) -> None:
    socket_dir = short_dir / "broker"
    alloc = rp.BackendEndpointAllocator(HASH, "shared", socket_dir=socket_dir)
    alloc.allocate()
    alloc.allocate()
    created = [
        r for r in ours(rust_debug_logs) if str(socket_dir) in r.getMessage() and "creat" in r.getMessage()
    ]
    assert len(created) == 1, [r.getMessage() for r in created]
    assert created[0].levelno >= logging.DEBUG


def test_save_logs(rust_debug_logs: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    sd = rp.ServiceDefinition(service_name="logged", binary_path="/a", per_version_binary_dir="/")
    path = sd.save(tmp_path / "defs")
    assert any(path in r.getMessage() for r in ours(rust_debug_logs))


def test_records_below_the_configured_level_are_not_logged(
    caplog: pytest.LogCaptureFixture, short_dir: Path
) -> None:
    caplog.set_level(logging.ERROR, logger="running_process")
    rp.refresh_logging()
    try:
        rp.BackendEndpointAllocator(HASH, "shared", socket_dir=short_dir / "b").allocate()
    finally:
        rp.refresh_logging()
    assert [r for r in ours(caplog) if r.levelno < logging.ERROR] == []
