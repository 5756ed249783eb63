"""Exceptions raised by running_process.

Every error the package raises is a :class:`RunningProcessError`. Each family
has its own subclass carrying the offending input and the reason as
attributes, so callers can act on them without parsing messages. Families that
describe bad input also derive from :class:`ValueError`; file system and host
failures also derive from :class:`OSError` (with ``errno`` set where the
operating system gave one).

All exceptions pickle with their attributes, so they cross process pools.
"""

from __future__ import annotations

import errno as _errno

from running_process._native import EXCEPTION_FIELDS as _EXCEPTION_FIELDS

# `typing` is left unimported at run time: it is a noticeable part of import time.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any, ClassVar, Optional

__all__ = [
    "RunningProcessError",
    "InvalidNameError",
    "InvalidVersionError",
    "VersionRefusedError",
    "InvalidServiceDefinitionError",
    "ServiceDefinitionStemMismatchError",
    "ServiceDefinitionNotFoundError",
    "InvalidTraceContextError",
    "InvalidIdentityError",
    "DecodeError",
    "InsecureDirectoryError",
    "InsecureFileError",
    "FilesystemError",
    "HostIdentityError",
    "PathTooLongError",
    "AllocationExhaustedError",
    "BackendLaunchError",
    "BinaryPolicyError",
    "EndpointError",
    "SpawnError",
    "BackendExitedError",
    "NotReadyError",
    "VerificationError",
    "ProbeError",
    "StaleIdentityError",
    "LauncherError",
    "KeyBusyError",
    "BackendLimitError",
    "BackendServerError",
    "RefusedError",
]


def _rebuild(cls: type[RunningProcessError], message: str, fields: dict[str, Any]) -> RunningProcessError:
    return cls(message, **fields)


class RunningProcessError(Exception):
    """Root of every exception raised by running_process."""

    _fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, message: str, **fields: Any) -> None:
        missing = [name for name in self._fields if name not in fields]
        unknown = [name for name in fields if name not in self._fields]
        if missing or unknown:
            raise TypeError(
                f"{type(self).__name__} needs fields {self._fields}; missing {missing}, unknown {unknown}"
            )
        super().__init__(message)
        for name, value in fields.items():
            setattr(self, name, value)

    @property
    def message(self) -> str:
        """The human-readable message (also ``str(error)``)."""
        return str(self.args[0])

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        fields = {name: getattr(self, name) for name in self._fields}
        return (_rebuild, (type(self), self.message, fields))


class BackendLaunchError(RunningProcessError):
    """A launch failed. Whatever was started has been killed and reaped, its
    socket file and log removed, and its endpoint released."""

    reason: str


class InvalidNameError(RunningProcessError, ValueError):
    """A service name, instance name, per-user hash or instance id with a bad
    shape. ``kind`` says which (``"service name"``, ``"instance name"``,
    ``"user sid hash"``, ``"endpoint token"``, ``"instance id"``, ``"backend key"``)."""

    kind: str
    value: str
    reason: str


class InvalidVersionError(RunningProcessError, ValueError):
    """A version that is not ``MAJOR.MINOR.PATCH[-pre]``."""

    value: str
    reason: str


class VersionRefusedError(BackendLaunchError):
    """A valid version that a service definition's policy refuses
    (below ``min_version`` or outside ``version_allow_list``). Raised by
    ``check_version`` and by a launch, before anything is spawned."""

    service_name: str
    version: str
    rule: str
    """``"min_version"`` or ``"version_allow_list"``: the field that refused."""
    reason: str


class InvalidServiceDefinitionError(RunningProcessError, ValueError):
    """A service definition field that breaks a rule of the contract."""

    field: str
    value: str
    reason: str


class ServiceDefinitionStemMismatchError(InvalidServiceDefinitionError):
    """A ``.servicedef`` file whose name differs from the service it defines."""

    path: str
    stem: str


class ServiceDefinitionNotFoundError(RunningProcessError, FileNotFoundError):
    """No ``.servicedef`` file for the requested service."""

    service_name: str
    path: str

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.errno = _errno.ENOENT
        self.filename = fields.get("path")


class InvalidTraceContextError(RunningProcessError, ValueError):
    """A ``traceparent`` or ``tracestate`` that breaks the W3C grammar."""

    field: str
    value: str
    reason: str


class InvalidIdentityError(RunningProcessError, ValueError):
    """A daemon identity or endpoint field that cannot be right (a hash that
    is not 32 bytes, pid 0, a relative path, ...)."""

    field: str
    value: str
    reason: str


class DecodeError(RunningProcessError, ValueError):
    """Bytes or text that do not decode into the expected message. ``what``
    names the message (``"ServiceDefinition"``, ``"DaemonProcess"``, ...)."""

    what: str
    reason: str


class InsecureDirectoryError(RunningProcessError):
    """A directory that is a symlink, belongs to someone else, or grants group
    or other access. It is refused, never repaired."""

    path: str
    reason: str


class InsecureFileError(RunningProcessError):
    """A file that is trusted like a binary (a service definition) but
    belongs to someone other than this user or root, or that group or other
    can write. It is refused, never repaired."""

    path: str
    reason: str


class FilesystemError(RunningProcessError, OSError):
    """An operating system call on a file or directory failed."""

    path: str
    operation: str
    os_errno: Optional[int]

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.errno = fields.get("os_errno")


class HostIdentityError(RunningProcessError, OSError):
    """A fact about this host (machine id, boot id, OS randomness) that could
    not be read. ``what`` says which."""

    what: str
    path: Optional[str]
    reason: str


class PathTooLongError(RunningProcessError, ValueError):
    """A Unix socket path that would not fit ``sun_path``; names are never
    truncated."""

    path: str
    length: int
    limit: int


class AllocationExhaustedError(RunningProcessError):
    """Every attempt to draw a free endpoint path collided."""

    attempts: int
    dir: str


class BinaryPolicyError(BackendLaunchError):
    """The backend binary or its allow-list root was refused before anything
    was spawned. ``variant`` names the rule: ``EmptyBinaryPath``,
    ``EmptyPerVersionBinaryDir``, ``CanonicalizeBinary``,
    ``CanonicalizeBinaryRoot``, ``BinaryOutsideAllowRoot``, ``NotExecutable``,
    ``InsecurePermissions`` or ``BadInterpreter``."""

    variant: str
    path: Optional[str]


class EndpointError(BackendLaunchError):
    """No endpoint could be allocated (the cause is chained as
    ``__cause__``: ``InsecureDirectoryError``, ``PathTooLongError``, ...), or
    a fixed endpoint cannot be used (its directory is not private, another
    user owns the socket, something other than a verified backend of the
    definition serves it; ``reason`` says which)."""


class SpawnError(BackendLaunchError, OSError):
    """The backend process could not be started; ``os_errno`` is the kernel's
    answer to exec (``ENOENT``, ``EACCES``, ``ENOEXEC``, ...), or to a launch
    step that ran out of descriptors, memory or processes (``EMFILE``,
    ``ENFILE``, ``ENOMEM``, ``EAGAIN``; the message names the step)."""

    path: str
    os_errno: Optional[int]

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.errno = fields.get("os_errno")


class BackendExitedError(BackendLaunchError):
    """The backend ended before it was ready. ``returncode`` follows
    :mod:`subprocess`: the exit status, or minus the signal number."""

    pid: int
    returncode: int
    log_tail: str


class NotReadyError(BackendLaunchError):
    """The backend did not accept and answer the probe within
    ``ready_timeout`` seconds."""

    pid: int
    timeout: float
    log_tail: str


class VerificationError(BackendLaunchError):
    """The running backend is not provably the one launched: ``field``
    (``peer pid``, ``peer uid``, ``exe_path``, ``exe_sha256``, ``boot_id``,
    ``pid``, ``ipc_endpoint.path``, ``script``, ...) differs."""

    field: str
    expected: str
    actual: str


class ProbeError(BackendLaunchError):
    """The identity probe failed: the backend answered garbage, the wrong
    nonce or request id, or closed the connection."""


class StaleIdentityError(BackendLaunchError):
    """An identity (from an identity file, a manifest, a ``DaemonProcess``)
    describes a process that is gone: ``field`` is ``pid`` (it has ended) or
    ``boot_id`` (it ran in another boot). It was not trusted and nothing was
    signalled."""

    field: str


class LauncherError(BackendLaunchError):
    """A launcher implemented in Python failed or returned something that is
    not a ``BackendHandle``."""


class KeyBusyError(BackendLaunchError):
    """Another process still held the key's lock (it was launching or
    stopping the key's backend) when the wait's limit ran out. The holder
    is named by ``holder_pid`` and ``holder_state`` (its ``/proc`` state
    letter) where the system tells; a stopped holder loses the key instead
    of causing this. ``waited`` is in seconds."""

    path: str
    waited: float
    holder_pid: Optional[int]
    holder_state: Optional[str]


class BackendLimitError(BackendLaunchError):
    """The user already runs ``running`` backends in the socket directory
    ``dir``, the launcher's limit (``limit``; ``max_backends``, or
    ``RUNNING_PROCESS_MAX_BACKENDS``) or more. Nothing was spawned."""

    limit: int
    running: int
    dir: str


class BackendServerError(RunningProcessError):
    """A backend could not start serving: ``variable`` names the environment
    variable of the contract that is missing or invalid (None for other
    causes: the endpoint is in use by a live listener, something that is not
    a socket is at the path, ...)."""

    variable: Optional[str]
    reason: str


class RefusedError(RunningProcessError):
    """A router refused the request: ``code`` is the v1 error code
    (``ErrorCode``), ``retry_after_ms`` a hint for RATE_LIMITED."""

    code: Any
    reason: str
    retry_after_ms: int


# The attributes of each class come from the core's one table of them, which
# is also what the core names the values after when it raises.
for _name, _names in _EXCEPTION_FIELDS.items():
    globals()[_name]._fields = _names
del _name, _names
