"""running_process: launch, verify and reuse on-demand backend daemons.

Compatible with the running-process broker v1 contract. Every class here wraps
one type of the Rust core (``running_process._native``); see ``_native.pyi``
for the full API with docstrings, and :mod:`running_process.errors` for the
exceptions.
"""

from __future__ import annotations

from running_process._native import (
    ENV_BACKEND_NAMESPACE,
    ENV_BACKEND_PIPE,
    ENV_EXE_DIGEST,
    ENV_IDLE_TIMEOUT_SECS,
    ENV_INSTANCE,
    ENV_SERVICE_DEF_DIR,
    ENV_SERVICE_NAME,
    ENV_SERVICE_VERSION,
    ENV_TRACEPARENT,
    ENV_TRACESTATE,
    SUN_PATH_MAX,
    V1_ENV_NAMES,
    BackendEndpointAllocator,
    BackendHandle,
    BackendKey,
    BackendPool,
    BackendRegistry,
    BackendServer,
    BrokerInstanceKey,
    CommandBackendLauncher,
    DaemonProcess,
    Endpoint,
    ErrorCode,
    HelloRouter,
    Isolation,
    Negotiated,
    PoolEntry,
    Refused,
    ServiceDefinition,
    TraceContext,
    backend_socket_name,
    boot_id,
    instance_broker_socket_name,
    refresh_logging,
    service_broker_socket_name,
    service_def_dir,
    sha256_file,
    shared_broker_socket_name,
    socket_dir,
    user_sid_hash,
    validate_instance_name,
    validate_service_name,
    validate_version,
)
from running_process.errors import (
    AllocationExhaustedError,
    BackendExitedError,
    BackendLaunchError,
    BackendServerError,
    BinaryPolicyError,
    DecodeError,
    EndpointError,
    FilesystemError,
    HostIdentityError,
    InsecureDirectoryError,
    InvalidIdentityError,
    InvalidNameError,
    InvalidServiceDefinitionError,
    InvalidTraceContextError,
    InvalidVersionError,
    LauncherError,
    NotReadyError,
    PathTooLongError,
    ProbeError,
    RefusedError,
    RunningProcessError,
    ServiceDefinitionNotFoundError,
    ServiceDefinitionStemMismatchError,
    SpawnError,
    VerificationError,
    VersionRefusedError,
)
from running_process.launcher import BackendLauncher

# `BackendConnection` subclasses socket.socket; the `socket` module is imported
# only when a backend needs it, which keeps `import running_process` cheap for
# clients.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from running_process.backend import BackendConnection


def __getattr__(name: str) -> object:
    if name == "BackendConnection":
        from running_process.backend import BackendConnection

        return BackendConnection
    raise AttributeError(f"module 'running_process' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "PoolEntry",
    "BackendPool",
    "RefusedError",
    "Refused",
    "Negotiated",
    "HelloRouter",
    "ErrorCode",
    "BackendRegistry",
    "ENV_BACKEND_NAMESPACE",
    "ENV_BACKEND_PIPE",
    "ENV_IDLE_TIMEOUT_SECS",
    "ENV_INSTANCE",
    "ENV_SERVICE_DEF_DIR",
    "ENV_EXE_DIGEST",
    "ENV_SERVICE_NAME",
    "ENV_SERVICE_VERSION",
    "ENV_TRACEPARENT",
    "ENV_TRACESTATE",
    "SUN_PATH_MAX",
    "V1_ENV_NAMES",
    "AllocationExhaustedError",
    "BackendConnection",
    "BackendEndpointAllocator",
    "BackendExitedError",
    "BackendHandle",
    "BackendLaunchError",
    "BackendLauncher",
    "BackendServer",
    "BackendServerError",
    "BinaryPolicyError",
    "CommandBackendLauncher",
    "EndpointError",
    "LauncherError",
    "NotReadyError",
    "ProbeError",
    "SpawnError",
    "VerificationError",
    "BackendKey",
    "BrokerInstanceKey",
    "DaemonProcess",
    "DecodeError",
    "Endpoint",
    "FilesystemError",
    "HostIdentityError",
    "InsecureDirectoryError",
    "InvalidIdentityError",
    "InvalidNameError",
    "InvalidServiceDefinitionError",
    "InvalidTraceContextError",
    "InvalidVersionError",
    "Isolation",
    "PathTooLongError",
    "RunningProcessError",
    "ServiceDefinition",
    "ServiceDefinitionNotFoundError",
    "ServiceDefinitionStemMismatchError",
    "TraceContext",
    "VersionRefusedError",
    "backend_socket_name",
    "boot_id",
    "instance_broker_socket_name",
    "refresh_logging",
    "service_broker_socket_name",
    "service_def_dir",
    "sha256_file",
    "shared_broker_socket_name",
    "socket_dir",
    "user_sid_hash",
    "validate_instance_name",
    "validate_service_name",
    "validate_version",
]
