"""Environment variable names of the contract (spec section 1) and the
package's public surface."""

from __future__ import annotations

from pathlib import Path

import running_process as rp
from running_process import _native


def test_v1_env_names_are_the_seven_of_the_contract_in_order() -> None:
    assert rp.V1_ENV_NAMES == (
        "RUNNING_PROCESS_BROKER_V1_SERVICE_NAME",
        "RUNNING_PROCESS_BROKER_V1_SERVICE_VERSION",
        "RUNNING_PROCESS_BROKER_V1_BACKEND_PIPE",
        "RUNNING_PROCESS_BROKER_V1_BACKEND_NAMESPACE",
        "RUNNING_PROCESS_BROKER_V1_INSTANCE",
        "RUNNING_PROCESS_BROKER_V1_TRACEPARENT",
        "RUNNING_PROCESS_BROKER_V1_TRACESTATE",
    )
    assert isinstance(rp.V1_ENV_NAMES, tuple)


def test_each_env_constant() -> None:
    assert rp.ENV_SERVICE_NAME == "RUNNING_PROCESS_BROKER_V1_SERVICE_NAME"
    assert rp.ENV_SERVICE_VERSION == "RUNNING_PROCESS_BROKER_V1_SERVICE_VERSION"
    assert rp.ENV_BACKEND_PIPE == "RUNNING_PROCESS_BROKER_V1_BACKEND_PIPE"
    assert rp.ENV_BACKEND_NAMESPACE == "RUNNING_PROCESS_BROKER_V1_BACKEND_NAMESPACE"
    assert rp.ENV_INSTANCE == "RUNNING_PROCESS_BROKER_V1_INSTANCE"
    assert rp.ENV_TRACEPARENT == "RUNNING_PROCESS_BROKER_V1_TRACEPARENT"
    assert rp.ENV_TRACESTATE == "RUNNING_PROCESS_BROKER_V1_TRACESTATE"
    assert rp.ENV_IDLE_TIMEOUT_SECS == "RUNNING_PROCESS_BROKER_V1_IDLE_TIMEOUT_SECS"
    assert rp.ENV_SERVICE_DEF_DIR == "RUNNING_PROCESS_SERVICE_DEF_DIR"


def test_constants_follow_v1_env_names() -> None:
    assert rp.V1_ENV_NAMES == (
        rp.ENV_SERVICE_NAME,
        rp.ENV_SERVICE_VERSION,
        rp.ENV_BACKEND_PIPE,
        rp.ENV_BACKEND_NAMESPACE,
        rp.ENV_INSTANCE,
        rp.ENV_TRACEPARENT,
        rp.ENV_TRACESTATE,
    )


def test_own_variables_use_the_v1_prefix_and_are_not_v1_names() -> None:
    assert rp.ENV_IDLE_TIMEOUT_SECS.startswith("RUNNING_PROCESS_BROKER_V1_")
    assert rp.ENV_IDLE_TIMEOUT_SECS not in rp.V1_ENV_NAMES


def test_sun_path_max() -> None:
    assert rp.SUN_PATH_MAX == 107


def test_public_names_are_exported() -> None:
    for name in rp.__all__:
        assert hasattr(rp, name), name
    for name in _native.__all__:
        assert name in rp.__all__, name
        assert getattr(rp, name) is getattr(_native, name)


def test_the_version_is_the_crates() -> None:
    cargo = (Path(__file__).resolve().parents[1] / "Cargo.toml").read_text()
    assert f'\nversion = "{rp.__version__}"\n' in cargo
    assert rp.__version__ == rp._native.__version__
