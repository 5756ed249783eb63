"""Type stubs and API reference of ``running_process._native``, the Rust core.

Every class is an immutable value (``__eq__``, ``__hash__``, ``__repr__``,
pickling) unless said otherwise. Constructors validate: an instance that exists
obeys every rule of the broker v1 contract. Errors are the classes of
:mod:`running_process.errors`.
"""

import os
import socket
from collections.abc import Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any, Callable, ClassVar, Final, Literal, Optional, Union, final

from typing_extensions import Self

from running_process.backend import BackendConnection

__all__ = [
    "ENV_SERVICE_NAME",
    "ENV_SERVICE_VERSION",
    "ENV_BACKEND_PIPE",
    "ENV_BACKEND_NAMESPACE",
    "ENV_INSTANCE",
    "ENV_TRACEPARENT",
    "ENV_TRACESTATE",
    "ENV_IDLE_TIMEOUT_SECS",
    "ENV_SERVICE_DEF_DIR",
    "ENV_EXE_DIGEST",
    "ENV_LISTENER_FD",
    "ENV_OWNED_BIND",
    "ENV_IS_DAEMON",
    "ENV_MAX_BACKENDS",
    "DEFAULT_MAX_BACKENDS",
    "DEFAULT_MAX_LOG_BYTES",
    "ENV_LOG_FILE",
    "ENV_LOG_MAX_BYTES",
    "DEFAULT_ENV_SCRUB",
    "ENV_SETTLE_MS",
    "V1_ENV_NAMES",
    "SUN_PATH_MAX",
    "BACKEND_SOCKET_NAME_LEN",
    "COMPACT_BACKEND_SOCKET_NAME_LEN",
    "MACHINE_ID_PATHS",
    "Isolation",
    "Listener",
    "EnvPolicy",
    "ServiceDefinition",
    "Endpoint",
    "BrokerInstanceKey",
    "BackendKey",
    "TraceContext",
    "DaemonProcess",
    "BackendEndpointAllocator",
    "CommandBackendLauncher",
    "BackendHandle",
    "BackendServer",
    "ErrorCode",
    "Negotiated",
    "Refused",
    "BackendRegistry",
    "HelloRouter",
    "PoolEntry",
    "BackendPool",
    "refresh_logging",
    "user_sid_hash",
    "boot_id",
    "socket_dir",
    "socket_dir_base",
    "check_private_dir",
    "check_service_def_dir",
    "service_def_dir",
    "sha256_file",
    "blake3_file",
    "try_read_identity_file",
    "read_identity_file",
    "write_identity_file",
    "validate_service_name",
    "validate_instance_name",
    "validate_version",
    "backend_socket_name",
    "shared_broker_socket_name",
    "service_broker_socket_name",
    "instance_broker_socket_name",
]

_Path = Union[str, "os.PathLike[str]"]

ENV_SERVICE_NAME: Final[str]
"""``RUNNING_PROCESS_BROKER_V1_SERVICE_NAME``: service name of the backend key."""
ENV_SERVICE_VERSION: Final[str]
"""``RUNNING_PROCESS_BROKER_V1_SERVICE_VERSION``: service version of the backend key."""
ENV_BACKEND_PIPE: Final[str]
"""``RUNNING_PROCESS_BROKER_V1_BACKEND_PIPE``: the Unix socket path the backend binds."""
ENV_BACKEND_NAMESPACE: Final[str]
"""``RUNNING_PROCESS_BROKER_V1_BACKEND_NAMESPACE``: endpoint namespace id."""
ENV_INSTANCE: Final[str]
"""``RUNNING_PROCESS_BROKER_V1_INSTANCE``: broker instance id."""
ENV_TRACEPARENT: Final[str]
"""``RUNNING_PROCESS_BROKER_V1_TRACEPARENT``: W3C traceparent, set only when non-empty."""
ENV_TRACESTATE: Final[str]
"""``RUNNING_PROCESS_BROKER_V1_TRACESTATE``: W3C tracestate, set only when non-empty."""
ENV_IDLE_TIMEOUT_SECS: Final[str]
"""``RUNNING_PROCESS_BROKER_V1_IDLE_TIMEOUT_SECS``: idle seconds before a backend exits."""
ENV_SERVICE_DEF_DIR: Final[str]
"""``RUNNING_PROCESS_SERVICE_DEF_DIR``: first choice of service definition directory."""
ENV_SETTLE_MS: Final[str]
"""``RUNNING_PROCESS_SETTLE_MS``: milliseconds a binary on a file system with
nanosecond timestamps must have stayed unchanged before its stamp vouches
for its digest, when more than the system's own granule (four ticks of the
kernel's coarse clock, at least 5 ms) is wanted. Only lengthens the wait."""
ENV_LISTENER_FD: Final[str]
"""``RUNNING_PROCESS_BROKER_LISTENER_FD``: the number of the listening socket
the launcher bound for the backend and passed to it; a backend that gets it
serves on that socket (listening on it again) instead of binding the path."""
ENV_OWNED_BIND: Final[str]
"""``RUNNING_PROCESS_BROKER_OWNED_BIND``: set to ``0``, ``false``, ``no`` or
``off`` in the launcher's environment, it turns the launcher-side bind off for
every definition, as if each said ``Listener.BIND``."""
ENV_IS_DAEMON: Final[str]
"""``RUNNING_PROCESS_IS_DAEMON``: set to ``1`` for a backend started with the
login baseline environment (``EnvPolicy.BASELINE``), as the current
generation of the contract marks the daemons it spawns."""
ENV_MAX_BACKENDS: Final[str]
"""``RUNNING_PROCESS_MAX_BACKENDS``: read by the launcher, not passed on: the
most backends of the user that may run at once (``0``: no limit); it
overrides a launcher's ``max_backends``."""
DEFAULT_MAX_BACKENDS: Final[int]
"""The default ``max_backends`` of a launcher (64)."""
DEFAULT_MAX_LOG_BYTES: Final[int]
"""The default ``max_log_bytes`` of a launcher (16 MiB)."""
ENV_LOG_FILE: Final[str]
"""``RUNNING_PROCESS_LOG_FILE``: the backend's log (its standard output and
error), set with ``RUNNING_PROCESS_LOG_MAX_BYTES`` by a launcher that bounds
logs; a backend built on the SDK rotates it to ``<log>.1`` past the bound."""
ENV_LOG_MAX_BYTES: Final[str]
"""``RUNNING_PROCESS_LOG_MAX_BYTES``: the size the backend's log may reach
before the SDK rotates it."""
DEFAULT_ENV_SCRUB: Final[list[str]]
"""The variables removed from everything a backend takes from the caller,
unless a launcher is given its own ``env_scrub`` (a trailing ``*`` matches a
prefix): the dynamic loader's, glibc's set-uid list, and the start-up hooks
of interpreters and shells (``PYTHONPATH``, ``NODE_OPTIONS``, ``PERL5OPT``,
``BASH_ENV``, ``BASH_FUNC_*``...)."""
ENV_EXE_DIGEST: Final[str]
"""``RUNNING_PROCESS_EXE_DIGEST``: the launcher's SHA-256 of the executable it
started, with the stamp of the file it hashed (this project's addition, set
only when the stamp vouches for the digest); the backend SDK reports it
instead of hashing its executable again while the file keeps that stamp."""
V1_ENV_NAMES: Final[tuple[str, ...]]
"""The seven environment names of the v1 contract, in the contract's order."""
SUN_PATH_MAX: Final[int]
"""Longest Unix socket path in bytes (107: ``sun_path`` holds 108 with the NUL)."""
BACKEND_SOCKET_NAME_LEN: Final[int]
"""Length of a backend socket's file name, ``rpb-v1-{16 hex}-be-{32 hex}.sock``
(64): a socket directory longer than ``SUN_PATH_MAX - 1 - 64`` bytes cannot
hold a backend endpoint."""
COMPACT_BACKEND_SOCKET_NAME_LEN: Final[int]
"""Length of the compact backend socket file name ``rpb-v1-be-{32 hex}.sock``
(47), which the allocator uses where the v1 name would not fit ``sun_path``:
socket directories up to ``SUN_PATH_MAX - 1 - 47`` bytes work."""
MACHINE_ID_PATHS: Final[tuple[str, ...]]
"""Where the machine id is read from, in order."""
EXCEPTION_FIELDS: Final[dict[str, tuple[str, ...]]]
"""The attributes of each exception class of :mod:`running_process.errors`
that carries data, in order: the one table both the core and the Python
classes take them from."""
__version__: Final[str]
"""The version of the package (the crate's)."""

@final
class Isolation:
    """Which broker instance serves a service (``BrokerIsolation`` of the contract)."""

    PRIVATE: ClassVar[Isolation]
    """One broker per service (the default); wire value 0."""
    SHARED: ClassVar[Isolation]
    """One broker for all services of the user; wire value 1."""
    EXPLICIT: ClassVar[Isolation]
    """A named broker instance (``explicit_instance``); wire value 2."""

    @staticmethod
    def from_value(value: int) -> Isolation:
        """The member with wire value ``value``; ``ValueError`` for others."""
    @property
    def name(self) -> str:
        """``"PRIVATE"``, ``"SHARED"`` or ``"EXPLICIT"``."""
    @property
    def value(self) -> int:
        """The wire value (0, 1, 2)."""
    def __int__(self) -> int: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Listener:
    """Who binds a backend's endpoint (protobuf field 1002 of the definition,
    this package's addition)."""

    INHERIT: ClassVar[Listener]
    """The launcher binds the endpoint (mode 0600, in its private directory)
    before the spawn and passes the listening socket to the backend in
    ``RUNNING_PROCESS_BROKER_LISTENER_FD`` (the default, as in the current
    generation of the v1 contract); wire value 0."""
    BIND: ClassVar[Listener]
    """The backend binds the endpoint itself (first-generation backends,
    daemons that do not take a passed listener); wire value 1."""

    @staticmethod
    def from_value(value: int) -> Listener:
        """The member with wire value ``value``; ``ValueError`` for others."""
    @property
    def name(self) -> str:
        """``"INHERIT"`` or ``"BIND"``."""
    @property
    def value(self) -> int:
        """The wire value (0, 1)."""
    def __int__(self) -> int: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class EnvPolicy:
    """Which environment a backend starts with (protobuf field 1003 of the
    definition, this package's addition). Whatever the policy, the scrub
    list applies to what is taken from the caller, the contract's variables
    are the launcher's, and ``env_set`` is applied last."""

    INHERIT: ClassVar[EnvPolicy]
    """The caller's environment minus the scrub list (the default); wire
    value 0."""
    BASELINE: ClassVar[EnvPolicy]
    """A login baseline, as the current generation of the contract spawns
    daemons: ``USER``, ``LOGNAME``, ``HOME``, ``SHELL`` from the password
    database, ``PATH`` rebuilt (``/usr/local/bin:/usr/bin:/bin``, with the
    ``sbin`` directories for root), ``LANG``, ``TZ``, ``TMPDIR``,
    ``XDG_RUNTIME_DIR`` and ``LC_*`` carried over, ``RUNNING_PROCESS_IS_DAEMON=1``,
    plus the names in ``env_allow``; wire value 1."""
    CLEAN: ClassVar[EnvPolicy]
    """Nothing from the caller but the names in ``env_allow``; wire value 2."""

    @staticmethod
    def from_value(value: int) -> EnvPolicy:
        """The member with wire value ``value``; ``ValueError`` for others."""
    @property
    def name(self) -> str:
        """``"INHERIT"``, ``"BASELINE"`` or ``"CLEAN"``."""
    @property
    def value(self) -> int:
        """The wire value (0, 1, 2)."""
    def __int__(self) -> int: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class ServiceDefinition:
    """A backend service: the v1 ``ServiceDefinition`` message.

    The constructor applies every rule: a valid service name, absolute
    ``binary_path`` and ``per_version_binary_dir`` without NUL bytes,
    ``explicit_instance`` set exactly when ``isolation`` is EXPLICIT (and then a
    valid name), valid versions in ``min_version`` and ``version_allow_list``,
    and at most 64 labels with keys of ``[A-Za-z0-9._/-]{1,128}`` and values of
    at most 1024 bytes without control characters.

    ``args`` (this package's addition, carried in protobuf field 1001 that
    other peers skip) are the backend's command-line argument templates:
    ``{name}`` stands for a value the launch fills (``{endpoint}``,
    ``{log_file}``, ``{namespace}``, ``{service}``, ``{version}``, or a name
    given in ``arg_values``), ``{{`` and ``}}`` for literal braces. At most
    256 arguments of at most 4096 bytes; they reach the backend as a list,
    never through a shell.

    ``listener`` says who binds the endpoint (see :class:`Listener`): by
    default the launcher, which hands the listening socket over; ``BIND`` for
    a backend that binds it itself.

    ``env_policy``, ``env_allow`` and ``env_set`` (fields 1003-1005) decide
    the backend's environment (see :class:`EnvPolicy`): ``env_allow`` names
    the variables (or ``PREFIX*``) taken from the caller under ``BASELINE``
    and ``CLEAN``; ``env_set`` sets variables whatever the policy (not the
    contract's own). At most 64 entries each; names of letters, digits and
    ``_``; values of at most 4096 bytes without NUL.
    """

    def __new__(
        cls,
        service_name: str,
        binary_path: _Path,
        per_version_binary_dir: _Path,
        isolation: Isolation = ...,
        explicit_instance: str = ...,
        min_version: str = ...,
        version_allow_list: Sequence[str] = ...,
        labels: Optional[Mapping[str, str]] = None,
        args: Sequence[str] = ...,
        listener: Listener = ...,
        env_policy: EnvPolicy = ...,
        env_allow: Sequence[str] = ...,
        env_set: Mapping[str, str] = ...,
    ) -> Self: ...
    @property
    def service_name(self) -> str: ...
    @property
    def binary_path(self) -> str: ...
    @property
    def per_version_binary_dir(self) -> str: ...
    @property
    def isolation(self) -> Isolation: ...
    @property
    def explicit_instance(self) -> str: ...
    @property
    def min_version(self) -> str: ...
    @property
    def version_allow_list(self) -> list[str]:
        """A copy of the allow-list (exact pins; empty admits any version)."""
    @property
    def labels(self) -> dict[str, str]:
        """A copy of the labels."""
    @property
    def args(self) -> list[str]:
        """A copy of the argument templates."""
    @property
    def listener(self) -> Listener:
        """Who binds the endpoint."""
    @property
    def env_policy(self) -> EnvPolicy:
        """Which environment the backend starts with."""
    @property
    def env_allow(self) -> list[str]:
        """A copy of the names taken from the caller under ``BASELINE`` and ``CLEAN``."""
    @property
    def env_set(self) -> dict[str, str]:
        """A copy of the variables set for the backend."""
    @property
    def env_summary(self) -> str:
        """The environment policy in one line (``"inherit"``,
        ``"baseline +ZCCACHE_*"``, ``"clean +TOKEN set PATH"``), as
        ``running-process ls`` shows it."""
    def validate(self) -> None:
        """Re-applies every rule; raises the first broken one."""
    def check_version(self, version: str) -> None:
        """Raises ``InvalidVersionError`` if ``version`` is malformed and
        ``VersionRefusedError`` if it is below ``min_version`` (numeric
        MAJOR.MINOR.PATCH comparison) or outside a non-empty allow-list."""
    def check_binary(self) -> None:
        """The binary checks a launch makes, spawning nothing: the
        per-version directory exists, the binary is a regular executable file
        inside it, neither is writable by anyone but this user or root, and a
        ``#!`` interpreter resolves to such a file. Raises
        ``BinaryPolicyError`` (or ``SpawnError`` for a missing file) as the
        launch would. GIL released (the file is hashed)."""
    def to_bytes(self) -> bytes:
        """Protobuf encoding (deterministic: labels sorted by key)."""
    @staticmethod
    def from_bytes(data: bytes) -> ServiceDefinition:
        """Decodes and validates; ``DecodeError`` for bytes that do not parse."""
    def save(self, dir: Optional[_Path] = None) -> str:
        """Writes ``{service_name}.servicedef`` atomically (mode 0600) in ``dir``
        or :func:`service_def_dir`, creating the directory 0700 if missing; an
        existing one must pass the check :meth:`load_file` makes
        (``InsecureDirectoryError`` otherwise). Returns the file path."""
    @staticmethod
    def load(service_name: str, dir: Optional[_Path] = None) -> ServiceDefinition:
        """Loads ``{service_name}.servicedef`` from ``dir`` or
        :func:`service_def_dir`. The file is trusted like a binary: it and
        every directory above it must be owned by this user or root and not
        writable by group or other (a sticky directory such as ``/tmp``
        excepted). Raises ``ServiceDefinitionNotFoundError`` (a missing file
        or directory), ``InsecureDirectoryError``, ``InsecureFileError``,
        ``ServiceDefinitionStemMismatchError``, ``DecodeError`` or a
        validation error."""
    @staticmethod
    def load_file(path: _Path) -> ServiceDefinition:
        """Loads a ``.servicedef`` file by path (same rules as :meth:`load`).
        Anything but a regular file (a FIFO, a directory) is refused at once
        with ``FilesystemError``."""
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Endpoint:
    """Where a backend listens: a namespace id (the broker instance id) and an
    absolute Unix socket path that fits ``sun_path``. ``os.fspath()`` gives the
    path."""

    def __new__(cls, namespace_id: str, path: _Path) -> Self: ...
    @property
    def namespace_id(self) -> str: ...
    @property
    def path(self) -> str: ...
    def __fspath__(self) -> str: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class BrokerInstanceKey:
    """A broker instance: ``shared``, ``private:<service>`` or
    ``explicit:<name>``. Made by the static constructors below; ``str()`` gives
    the instance id."""

    @staticmethod
    def shared() -> BrokerInstanceKey: ...
    @staticmethod
    def private(service_name: str) -> BrokerInstanceKey: ...
    @staticmethod
    def explicit(name: str) -> BrokerInstanceKey: ...
    @staticmethod
    def from_service_definition(sd: ServiceDefinition) -> BrokerInstanceKey:
        """The instance the definition's isolation asks for."""
    @staticmethod
    def from_id(id: str) -> BrokerInstanceKey:
        """Parses an instance id; ``InvalidNameError`` (kind ``"instance id"``)
        for anything else."""
    def id(self) -> str:
        """The instance id of the contract."""
    @property
    def isolation(self) -> Isolation: ...
    @property
    def name(self) -> Optional[str]:
        """The service (PRIVATE) or instance (EXPLICIT) name; None for SHARED."""
    def socket_path(self, user_sid_hash: str, socket_dir: Optional[_Path] = None) -> str:
        """Path of this instance's broker socket in ``socket_dir`` (default: the
        user's socket directory); ``PathTooLongError`` if it would not fit."""
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class BackendKey:
    """One backend: a service at a version, served by a broker instance.
    ``str()`` gives ``instance/service@version``."""

    def __new__(cls, instance: BrokerInstanceKey, service_name: str, service_version: str) -> Self: ...
    @staticmethod
    def parse(text: str) -> BackendKey:
        """Parses ``instance/service@version``, the text ``str()`` gives.
        ``InvalidNameError`` with ``kind == "backend key"`` when the text is
        not shaped like a key; the error of the part otherwise."""
    @staticmethod
    def for_service(service_definition: ServiceDefinition, version: str) -> BackendKey:
        """The key of ``service_definition`` at ``version`` (the version must be
        well formed; the version policy is applied at launch)."""
    @property
    def instance(self) -> BrokerInstanceKey: ...
    @property
    def service_name(self) -> str: ...
    @property
    def service_version(self) -> str: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class TraceContext:
    """A W3C trace context, validated, and the request id it travels with.

    ``traceparent`` is empty (no trace) or a W3C traceparent: version-00 is
    exactly ``00-<32 hex>-<16 hex>-<2 hex>`` in lowercase with non-zero ids;
    version ``ff`` is invalid; a later version may carry extra ``-`` fields,
    at most 512 characters in all. ``tracestate`` needs a traceparent and
    holds at most 32 list members and 512 characters of valid W3C keys and
    values, without duplicate keys.
    """

    def __new__(cls, request_id: int = 0, traceparent: str = ..., tracestate: str = ...) -> Self: ...
    @staticmethod
    def new_root(request_id: int = 0) -> TraceContext:
        """A fresh context with random trace and parent ids, sampled."""
    @staticmethod
    def from_env() -> TraceContext:
        """The context in ``RUNNING_PROCESS_BROKER_V1_TRACEPARENT`` and
        ``_TRACESTATE`` (empty when unset); raises on invalid values."""
    @property
    def request_id(self) -> int: ...
    @property
    def traceparent(self) -> str: ...
    @property
    def tracestate(self) -> str: ...
    @property
    def trace_id(self) -> Optional[str]:
        """The 32-hex-digit trace id, or None without a traceparent."""
    @property
    def parent_id(self) -> Optional[str]:
        """The 16-hex-digit parent id, or None without a traceparent."""
    @property
    def trace_flags(self) -> Optional[int]:
        """The flags byte, or None without a traceparent."""
    @property
    def sampled(self) -> bool:
        """Whether the sampled flag is set (False without a traceparent)."""
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class DaemonProcess:
    """The identity of a running backend (the v1 ``DaemonProcess`` message),
    of either generation of the contract.

    A first-generation identity (running-process 4.5.x) names its executable
    by ``exe_sha256``; a current one (4.10.x) by ``exe_blake3``, with
    ``exe_sha256`` as the legacy slot (a real SHA-256, or zeros for a
    BLAKE3-only peer; pass ``None`` for zeros). Digests are 32 bytes,
    ``pid`` between 1 and 2**31-1, ``exe_path`` absolute, ``boot_id``
    printable ASCII.
    """

    def __new__(
        cls,
        pid: int,
        exe_path: str,
        exe_sha256: Optional[bytes],
        boot_id: str,
        ipc_endpoint: Endpoint,
        started_at_unix_ms: int,
        idle_timeout_secs: Optional[int] = None,
        *,
        exe_blake3: Optional[bytes] = None,
    ) -> Self: ...
    @property
    def pid(self) -> int: ...
    @property
    def exe_path(self) -> str: ...
    @property
    def exe_sha256(self) -> bytes:
        """SHA-256 of the executable (zeros for a BLAKE3-only identity)."""
    @property
    def exe_sha256_hex(self) -> str:
        """``exe_sha256`` as 64 lowercase hex digits."""
    @property
    def exe_blake3(self) -> Optional[bytes]:
        """BLAKE3 of the executable; ``None`` for a first-generation identity."""
    @property
    def exe_hash_algorithm(self) -> Literal["sha256", "blake3"]:
        """``"blake3"`` for the current generation, ``"sha256"`` for the first."""
    @property
    def exe_hash(self) -> bytes:
        """The executable hash of :attr:`exe_hash_algorithm`."""
    @property
    def exe_hash_hex(self) -> str:
        """``exe_hash`` as 64 lowercase hex digits."""
    @property
    def boot_id(self) -> str: ...
    @property
    def ipc_endpoint(self) -> Endpoint: ...
    @property
    def started_at_unix_ms(self) -> int: ...
    @property
    def idle_timeout_secs(self) -> Optional[int]: ...
    def to_bytes(self) -> bytes:
        """Protobuf encoding as a probe answer carries it: for the current
        generation fields 8 and 9 with the legacy SHA-256 (field 3) appended
        last, so probers of both generations read it."""
    @staticmethod
    def from_bytes(data: bytes) -> DaemonProcess:
        """Decodes and validates a protobuf encoding of either generation."""
    def to_json(self, form: Optional[Literal["current", "legacy"]] = None, *, pretty: bool = False) -> str:
        """JSON of the identity's own generation (``form=None``), of the
        current one (4.10: ``exe_hash_algorithm``, ``exe_hash``,
        ``legacy_exe_sha256``) or of the first (4.5: ``exe_sha256``), digests
        as arrays of 32 integers; a form that would need a digest the
        identity lacks raises ``InvalidIdentityError``."""
    @staticmethod
    def from_json(text: str) -> DaemonProcess:
        """Decodes and validates JSON of any of the three forms (4.10, 4.5,
        and this package's first, with a hex ``exe_sha256``); unknown fields
        are ignored; a duplicated or missing field, an array in place of an
        object, or a str with no UTF-8 form (a lone surrogate) is a
        ``DecodeError``; a mix of two generations' hash fields, an unknown
        algorithm or a digest that is not 32 bytes an
        ``InvalidIdentityError`` naming the field."""
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class BackendEndpointAllocator:
    """Hands out unguessable backend socket paths in one namespace.

    Each path is ``{socket_dir}/rpb-v1-{user_sid_hash}-be-{32 hex}.sock`` with
    128 random bits. The socket directory (default: :func:`socket_dir`) is
    created 0700 when missing and refused (``InsecureDirectoryError``) when it
    is a symlink, has another owner, or grants group/other access. Paths handed
    out stay reserved until :meth:`release`. Safe to share between threads.
    Not a value: no equality, hashing or pickling.
    """

    def __new__(
        cls,
        user_sid_hash: str,
        namespace_id: str,
        max_attempts: int = 16,
        socket_dir: Optional[_Path] = None,
    ) -> Self: ...
    def allocate(self) -> Endpoint:
        """A free endpoint; ``PathTooLongError`` before touching the disk if the
        path would not fit ``sun_path``; ``AllocationExhaustedError`` after
        ``max_attempts`` collisions."""
    def allocate_with(self, random_source: Callable[[], bytes]) -> Endpoint:
        """Like :meth:`allocate`, calling ``random_source()`` for the 16 random
        bytes of each attempt."""
    def reserve_path(self, path: _Path) -> bool:
        """Marks ``path`` taken; True if it was not reserved before."""
    def release(self, path: _Path) -> bool:
        """Forgets a reserved path; True if it was reserved."""
    def is_reserved(self, path: _Path) -> bool: ...
    @property
    def reserved_count(self) -> int: ...
    @property
    def user_sid_hash(self) -> str: ...
    @property
    def namespace_id(self) -> str: ...
    @property
    def socket_dir(self) -> str: ...
    @property
    def max_attempts(self) -> int: ...

@final
class CommandBackendLauncher:
    """Launches backends as children of this process and verifies them.

    A launch validates the key and definition, applies the version policy,
    requires the canonical binary inside the canonical
    ``per_version_binary_dir`` (neither writable by group or other), hashes
    the binary once and executes that same descriptor, starts it detached (new
    session, stdin ``/dev/null``, output to a private log file, cwd ``/``,
    umask 077, no inherited descriptors, the v1 environment with loader and
    interpreter injection variables scrubbed), waits until it accepts, and
    verifies peer credentials, ``/proc/<pid>/exe``, the hashed file, boot id
    and the nonce probe. Any failure after the spawn kills and reaps the
    process and removes its socket file and log.
    """

    def __new__(
        cls,
        user_sid_hash: str,
        idle_timeout_secs: Optional[int] = ...,
        ready_timeout: float = 10.0,
        log_dir: Optional[_Path] = None,
        socket_dir: Optional[_Path] = None,
        env_scrub: Optional[Sequence[str]] = None,
        full_probe_interval: float = 5.0,
        max_backends: Optional[int] = ...,
        max_log_bytes: Optional[int] = ...,
    ) -> Self: ...
    @staticmethod
    def for_current_user(
        idle_timeout_secs: Optional[int] = ...,
        ready_timeout: float = 10.0,
        log_dir: Optional[_Path] = None,
        socket_dir: Optional[_Path] = None,
        env_scrub: Optional[Sequence[str]] = None,
        full_probe_interval: float = 5.0,
        max_backends: Optional[int] = ...,
        max_log_bytes: Optional[int] = ...,
    ) -> CommandBackendLauncher:
        """A launcher for the calling user. ``idle_timeout_secs`` is passed to
        the backend (default 30; None: never idle out); ``env_scrub`` lists variable names
        removed from the backend's environment (a trailing ``*`` matches a
        prefix; default: ``DEFAULT_ENV_SCRUB``, the loader's variables and
        the start-up hooks of interpreters and shells).
        ``max_backends`` is the most backends of the user that may run at
        once in the socket directory (None: no limit); one launch more is a
        ``BackendLimitError`` before anything is spawned;
        ``RUNNING_PROCESS_MAX_BACKENDS`` overrides it (``0``: no limit).
        ``max_log_bytes`` (default 16 MiB; None: unbounded) is the size a
        backend's log may reach before a backend built on the SDK rotates
        it to ``<log>.1``.
        Logs go to ``log_dir``, by default ``logs`` beside the user's default
        socket directory (also when ``socket_dir`` is given).

        ``full_probe_interval``: for this many seconds after this process
        fully verified a backend (launched it, or adopted it with the nonce
        probe), adopting it again (a pool hit) checks only what the kernel
        attests: the listener's peer credentials, the process's start time
        and state (a stopped one always gets the full probe), and the
        executable's stamp, with no probe round trip. 0: every adoption
        probes."""
    def launch(
        self,
        key: BackendKey,
        service_definition: ServiceDefinition,
        trace_context: Optional[TraceContext] = None,
        *,
        endpoint: Optional[Endpoint] = None,
        arg_values: Optional[Mapping[str, str]] = None,
    ) -> BackendHandle:
        """Launches and verifies a backend, with the GIL released. Raises a
        ``BackendLaunchError`` subclass (or a validation error before any side
        effect).

        ``arg_values`` fills the definition's own argument placeholders (a
        placeholder without a value is an ``InvalidServiceDefinitionError``
        before anything is done). ``endpoint`` serves the backend at that
        fixed endpoint instead of an allocated one: its directory must be
        private to this user (``EndpointError`` otherwise), launches of it
        from any process take turns on ``<path>.lock``, and a verified backend
        of this definition already serving it is handed out instead of a
        second launch (a stale socket is removed; anything else serving it is
        an ``EndpointError`` and is left alone)."""
    def adopt(
        self,
        key: BackendKey,
        service_definition: ServiceDefinition,
        daemon: DaemonProcess,
        trace_context: Optional[TraceContext] = None,
        timeout: float = 5.0,
    ) -> BackendHandle:
        """A handle on a daemon another process started, after the whole
        verification of a launch (the definition's binary with every digest
        ``daemon`` carries, ``/proc/<pid>/exe``, boot, peer credentials,
        nonce probe). A daemon that has ended or ran in another boot raises
        ``StaleIdentityError``; any other difference ``VerificationError``
        naming the field. Its endpoint is one of this launcher's or a fixed
        endpoint checked as ``launch`` checks one. The daemon is not our
        child: ``shutdown`` sends it SIGTERM (then SIGKILL) through its
        pidfd, so a reused pid is never signalled."""
    def adopt_identity_file(
        self,
        key: BackendKey,
        service_definition: ServiceDefinition,
        path: _Path,
        trace_context: Optional[TraceContext] = None,
        timeout: float = 5.0,
    ) -> BackendHandle:
        """``adopt`` of the daemon the identity file at ``path`` describes
        (read strictly: an absent or malformed file raises)."""
    def launch_async(
        self,
        key: BackendKey,
        service_definition: ServiceDefinition,
        trace_context: Optional[TraceContext] = None,
        *,
        endpoint: Optional[Endpoint] = None,
        arg_values: Optional[Mapping[str, str]] = None,
    ) -> Coroutine[Any, Any, BackendHandle]:
        """:meth:`launch` as a coroutine that never blocks the event loop; if
        cancelled, a backend the launch started is killed once the launch
        completes (a daemon found serving a fixed endpoint is left running)."""
    @property
    def user_sid_hash(self) -> str: ...
    @property
    def idle_timeout_secs(self) -> Optional[int]: ...
    @property
    def ready_timeout(self) -> float: ...
    @property
    def full_probe_interval(self) -> float:
        """See :meth:`for_current_user`."""
    @property
    def log_dir(self) -> str: ...
    @property
    def socket_dir(self) -> str: ...
    @property
    def env_scrub(self) -> list[str]: ...
    def live_children(self) -> list[tuple[BackendKey, DaemonProcess]]:
        """The backends this launcher started that still run (not yet
        reaped), whoever holds their handles."""
    def kill_children(self) -> list[tuple[BackendKey, DaemonProcess]]:
        """Kills (through the pidfd, then reaped) every backend this launcher
        started that still runs, and returns them. GIL released."""

@final
class BackendHandle:
    """A verified, running backend started by :class:`CommandBackendLauncher`.
    A context manager: leaving the block shuts the backend down. The backend
    is reaped as soon as it exits, whoever ends it, and a socket file it left
    (a killed backend cannot remove its own) is removed then."""

    @property
    def daemon(self) -> DaemonProcess:
        """The verified identity."""
    @property
    def endpoint(self) -> Endpoint: ...
    @property
    def key(self) -> BackendKey: ...
    @property
    def service_name(self) -> str: ...
    @property
    def service_version(self) -> str: ...
    @property
    def pid(self) -> int: ...
    @property
    def log_path(self) -> str:
        """The backend's stdout and stderr (mode 0600 in a private directory).
        Removed by a clean :meth:`shutdown`; kept when the backend ends any
        other way."""
    @property
    def returncode(self) -> Optional[int]:
        """None while running; then the exit status, or minus the signal.
        Always None for a backend this process did not start (a pool may hand
        out one started by another process, whose parent gets its status)."""
    def is_alive(self) -> bool:
        """Whether the process runs (checked through its pidfd)."""
    def verify(self, trace_context: Optional[TraceContext] = None, timeout: float = 5.0) -> None:
        """Re-runs the full verification; raises a ``BackendLaunchError``."""
    def connect(self) -> socket.socket:
        """A new connection to the backend."""
    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """The return code once the backend exits, or None after ``timeout``."""
    def shutdown(self, timeout: float = 5.0) -> Optional[int]:
        """SIGTERM, ``timeout`` seconds, then SIGKILL; the return code. A
        socket file the backend left is removed, and so is the log file when
        the backend ended cleanly (exit 0 or the SIGTERM)."""
    def kill(self) -> Optional[int]:
        """SIGKILL (and its process group); the return code."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

@final
class BackendServer:
    """The backend side of the contract (see :mod:`running_process.backend`).

    Binds the endpoint named by the environment (socket 0600 in a private
    directory, a stale socket replaced, a live one left alone), computes its
    identity once, answers identity probes on its own threads, and hands every
    other connection to the application with no byte consumed. Ends itself
    after the idle timeout with no open application connection, on SIGTERM or
    SIGINT, or on :meth:`shutdown`, removing its socket file.
    """

    @staticmethod
    def from_env(
        exe_path: Optional[_Path] = None,
        exit_on_sigterm: bool = True,
        identity_file: Optional[_Path] = None,
    ) -> BackendServer:
        """Reads the v1 environment and binds. ``exe_path`` is the file the
        identity names (default: the running script, else the interpreter).
        With ``identity_file`` the identity is published there once bound
        (JSON of the current generation, atomic, mode 0600) and removed when
        the server ends cleanly.
        Raises ``BackendServerError`` naming a missing or invalid variable
        (an endpoint path with a ``.``/``..`` segment or a control character,
        or whose directory does not exist: the launcher creates it), and
        ``InsecureDirectoryError`` if that directory is not private."""
    def accept(self, timeout: Optional[float] = None) -> Optional[BackendConnection]:
        """The next application connection, or None once the server has shut
        down (or after ``timeout`` seconds)."""
    def connection_closed(self) -> None:
        """Reports an accepted connection finished (``BackendConnection`` does
        this itself when closed)."""
    @property
    def open_connections(self) -> int: ...
    @property
    def identity(self) -> DaemonProcess: ...
    @property
    def endpoint(self) -> Endpoint: ...
    @property
    def service_name(self) -> str: ...
    @property
    def service_version(self) -> str: ...
    @property
    def trace_context(self) -> TraceContext: ...
    @property
    def shutdown_reason(self) -> Optional[str]:
        """None while serving; then ``"requested"``, ``"idle"``,
        ``"signal SIGTERM"``, ..."""
    def wait_for_shutdown(self, timeout: Optional[float] = None) -> Optional[str]:
        """Blocks until the server stops; the reason (None on timeout)."""
    def shutdown(self) -> None:
        """Stops accepting, removes the socket file, wakes :meth:`accept`."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

@final
class ErrorCode:
    """Error codes of a v1 ``Refused`` reply; members compare and hash equal
    to their wire values."""

    UNSPECIFIED: ClassVar[ErrorCode]
    VERSION_UNSUPPORTED: ClassVar[ErrorCode]
    """Malformed version, or below the definition's ``min_version``."""
    SERVICE_UNKNOWN: ClassVar[ErrorCode]
    """Malformed service name, or no definition in the catalog."""
    BACKEND_SPAWN_FAILED: ClassVar[ErrorCode]
    """The launch failed (the reason carries the launch error)."""
    RATE_LIMITED: ClassVar[ErrorCode]
    """The key's spawn budget is spent; see ``retry_after_ms``."""
    SHUTTING_DOWN: ClassVar[ErrorCode]
    PEER_REJECTED: ClassVar[ErrorCode]
    INTERNAL: ClassVar[ErrorCode]
    """The catalog could not be read (an insecure or corrupt definition)."""
    VERSION_BLOCKED: ClassVar[ErrorCode]
    """Not in the definition's ``version_allow_list``."""
    FD_PRESSURE: ClassVar[ErrorCode]
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...
    def __int__(self) -> int: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Negotiated:
    """A request answered with a verified backend."""

    @property
    def handle(self) -> BackendHandle: ...
    @property
    def endpoint(self) -> Endpoint: ...
    @property
    def daemon_version(self) -> str: ...

@final
class Refused:
    """A request refused with a v1 error code."""

    @property
    def code(self) -> ErrorCode: ...
    @property
    def reason(self) -> str: ...
    @property
    def retry_after_ms(self) -> int:
        """For RATE_LIMITED: milliseconds until an attempt may be admitted."""

@final
class BackendRegistry:
    """Live backends by key (thread-safe). Not a value: no pickling."""

    def __new__(cls) -> Self: ...
    def insert(self, key: BackendKey, handle: BackendHandle) -> Optional[BackendHandle]:
        """Registers ``handle``; returns the handle it replaces."""
    def get(self, key: BackendKey) -> Optional[BackendHandle]: ...
    def remove(self, key: BackendKey) -> Optional[BackendHandle]:
        """Removes the entry; the backend keeps running."""
    def items(self) -> list[tuple[BackendKey, BackendHandle]]: ...
    def prune_stale(self) -> list[BackendKey]:
        """Removes entries whose process has exited (pidfd); their keys."""
    def __len__(self) -> int: ...
    def __contains__(self, key: BackendKey, /) -> bool: ...

@final
class HelloRouter:
    """Routes "service S at version V" to a verified backend.

    The whole request is validated first (name, version, the service in the
    catalog, its version policy) with no side effect. A live registry entry
    is reused (re-verified per ``reverify``: ``"never"``, ``"always"`` or a
    number of seconds); a dead or failing one is replaced by one launch.
    Concurrent requests for one key share the one launch in flight. Each key
    may start ``spawn_budget`` launches per ``budget_window`` seconds (a
    success resets it), beyond which requests are RATE_LIMITED with a retry
    hint; at most ``max_concurrent_launches`` launches run at once; with
    ``max_live_backends`` set, the least recently used other backend is shut
    down gracefully when a new one exceeds the cap.

    ``launcher`` is a :class:`CommandBackendLauncher` or any object with a
    ``launch(key, service_definition, trace_context)`` method returning a
    ``BackendHandle`` (see :class:`running_process.BackendLauncher`).
    ``catalog`` is a ``.servicedef`` directory or a mapping of service name
    to :class:`ServiceDefinition`.
    """

    def __new__(
        cls,
        launcher: Any,
        catalog: Union[_Path, Mapping[str, ServiceDefinition]],
        reverify: Union[str, float, None] = None,
        spawn_budget: int = 3,
        budget_window: float = 30.0,
        max_concurrent_launches: int = 4,
        max_live_backends: Optional[int] = None,
        verify_timeout: float = 5.0,
        shutdown_grace: float = 5.0,
    ) -> Self: ...
    def route(
        self,
        service_name: str,
        wanted_version: str,
        trace_context: Optional[TraceContext] = None,
    ) -> Union[Negotiated, Refused]:
        """Answers one request (the GIL is released)."""
    def get_backend(
        self,
        service_name: str,
        wanted_version: str,
        trace_context: Optional[TraceContext] = None,
    ) -> BackendHandle:
        """The verified handle, or ``RefusedError(code, reason, retry_after_ms)``."""
    def route_async(
        self,
        service_name: str,
        wanted_version: str,
        trace_context: Optional[TraceContext] = None,
    ) -> Coroutine[Any, Any, Union[Negotiated, Refused]]:
        """:meth:`route` as a coroutine that never blocks the event loop."""
    def get_backend_async(
        self,
        service_name: str,
        wanted_version: str,
        trace_context: Optional[TraceContext] = None,
    ) -> Coroutine[Any, Any, BackendHandle]:
        """:meth:`get_backend` as a coroutine that never blocks the loop."""
    @property
    def registry(self) -> BackendRegistry: ...
    @property
    def launch_count(self) -> int:
        """Launches started by this router."""
    def shutdown_all(self) -> None:
        """Shuts every registered backend down gracefully."""
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

@final
class PoolEntry:
    """One backend recorded in a :class:`BackendPool`."""

    @property
    def key(self) -> BackendKey: ...
    @property
    def daemon(self) -> DaemonProcess: ...
    @property
    def alive(self) -> bool:
        """Whether the recorded process still runs: a pidfd on its pid shows
        a running process whose start time, uid and executable stamp are the
        recorded ones, on the recorded boot (a recycled pid, or a manifest
        that records no start time, is not alive). No probe is made."""
    @property
    def environment(self) -> Optional[str]:
        """The environment policy it was started with, in one line (see
        :attr:`ServiceDefinition.env_summary`); None for records written
        before it was kept."""
    @property
    def retired(self) -> bool:
        """Whether it was set aside while busy (it gave no probe answer in
        time while its threads kept running): no longer handed out, never
        signalled by the pool, left to finish with its clients; ``stop``
        and ``stop_all`` still end it."""

@final
class BackendPool:
    """One verified backend per key for every process of the user.

    Each key has a lock file and a manifest (the verified identity, JSON,
    mode 0600, written atomically) in ``state_dir`` (default: ``state``
    beside the socket directory, created 0700). :meth:`get_or_launch` first
    adopts the recorded backend without locking, verifying it as a launch
    would (the key and definition agree and the definition admits the
    version, same boot, pid alive, the allow-listed binary with the recorded
    digest, peer credentials, nonce probe); otherwise it tries the key's
    ``flock`` without blocking, and if another process holds it, waits in
    shared mode with every other waiter and then adopts what the holder
    recorded, without any lock; only when there is still no usable backend
    does it take the exclusive lock (re-checking that the locked file is
    still the one at the path), read the manifest again, and launch and
    record. The request is checked (definition, key, version rules) before
    anything touches ``state_dir``, and a launch that fails and leaves no
    manifest removes the key's lock file. A manifest's recorded digest is
    trusted only to verify its own backend, and cached for later launches
    only once that backend has verified. A manifest that fails verification
    is replaced; the socket file of a recorded backend that is provably gone
    is removed (only a socket in the launcher's socket directory to which a
    connect is refused). The process it named is
    killed (SIGKILL through a pidfd) only if it fails again under the lock
    for a reason of its own (no answer within ``verify_timeout``, a wrong
    answer, not at its endpoint, no longer the recorded binary) and is
    provably the recorded backend of this key: the manifest records its
    start time, uid and executable stamp with the pid and boot id, all of
    which must still hold, and the environment it was started with must
    name this key and the recorded endpoint. Any other process, and the
    process of a manifest written before these were recorded, is never
    signalled. A backend handed out from another process's manifest is not
    our child: its ``returncode`` stays None.
    """

    def __new__(
        cls,
        launcher: CommandBackendLauncher,
        state_dir: Optional[_Path] = None,
        verify_timeout: float = 5.0,
    ) -> Self: ...
    def get_or_launch(
        self,
        key: BackendKey,
        service_definition: ServiceDefinition,
        trace_context: Optional[TraceContext] = None,
    ) -> BackendHandle:
        """The verified backend of ``key`` (the GIL is released)."""
    def get_or_launch_async(
        self,
        key: BackendKey,
        service_definition: ServiceDefinition,
        trace_context: Optional[TraceContext] = None,
    ) -> Coroutine[Any, Any, BackendHandle]:
        """:meth:`get_or_launch` as a coroutine that never blocks the loop."""
    def get(self, key: BackendKey, trace_context: Optional[TraceContext] = None) -> Optional[BackendHandle]:
        """The recorded backend of ``key`` if it passes full verification
        (boot, pid, executable and digest, peer credentials, nonce probe);
        None otherwise. Never launches."""
    def list(self) -> list[PoolEntry]: ...
    def stop(self, key: BackendKey, timeout: float = 5.0, keep_log: bool = False) -> bool:
        """Stops ``key``'s backend if it verifies, or kills it if it fails
        but is provably the recorded process; True if one was running. The
        backend's log file is removed when it ended within ``timeout`` of the
        SIGTERM, unless ``keep_log``; a killed backend keeps its log."""
    def stop_all(self, timeout: float = 5.0, keep_log: bool = False) -> int:
        """Stops every backend of the pool; how many were running. Logs go
        as with :meth:`stop`."""
    def gc(self, dry_run: bool = False, min_age: float = 60.0) -> dict[str, Any]:
        """Removes (or with ``dry_run`` only lists) what ended backends left
        behind in this user's private directories: ``records`` of backends
        that are provably gone, unused ``locks``, ``temporary`` files of
        interrupted writes, ``logs`` no process has open and no live record
        names, ``sockets`` nothing listens on (a connect is refused). Only
        files owned by this user and older than ``min_age`` seconds; a key
        whose lock someone holds is left alone. Returns the paths per kind
        and ``bytes`` freed. GIL released."""
    @property
    def state_dir(self) -> str: ...
    @property
    def verify_timeout(self) -> float:
        """Seconds the verification of a recorded backend may take."""

def user_sid_hash() -> str:
    """16 lowercase hex digits: the first 8 bytes of BLAKE3 over
    ``"{uid}:{machine_id}"`` (real uid; ``/etc/machine-id``, else
    ``/var/lib/dbus/machine-id``)."""

def boot_id() -> str:
    """The trimmed ``/proc/sys/kernel/random/boot_id``."""

def socket_dir() -> str:
    """``$XDG_RUNTIME_DIR/running-process/broker``, or
    ``/tmp/running-process-{uid}/broker`` when XDG_RUNTIME_DIR is unset, empty
    or relative. Not created by this call."""

def socket_dir_base() -> str:
    """The directory the socket directory's private tree hangs from
    (``$XDG_RUNTIME_DIR``, or ``/tmp``); it must be owned by this user or
    root, and sticky if others can write to it."""

def check_service_def_dir(path: _Path) -> list[str]:
    """The check a save or load of a ``.servicedef`` makes of its directory,
    changing nothing: for a missing directory, the directories a save would
    create (0700); for an existing one, every directory from it up to ``/``
    owned by this user or root and writable by nobody else unless sticky.
    Raises ``InsecureDirectoryError`` or ``FilesystemError``. GIL released."""

def check_private_dir(path: _Path, base: Optional[_Path] = None) -> list[str]:
    """The check a launch makes of a private directory, creating nothing:
    ``base`` (default: the parent of ``path``) must be a trusted base and
    every existing directory below it, down to ``path``, a real directory
    of this (effective) user with mode 0700 or stricter. Returns the
    directories a launch would create; raises ``InsecureDirectoryError`` or
    ``FilesystemError`` as the launch would. GIL released."""

def service_def_dir() -> str:
    """``$RUNNING_PROCESS_SERVICE_DEF_DIR``, else
    ``$XDG_CONFIG_HOME/running-process/services``, else
    ``~/.config/running-process/services``. Not created by this call."""

def sha256_file(path: _Path) -> bytes:
    """SHA-256 of a file, streamed in fixed-size chunks with the GIL released."""

def blake3_file(path: _Path) -> bytes:
    """BLAKE3 of a file (the current generation's executable hash), on
    several threads for a large file, with the GIL released."""

def write_identity_file(
    path: _Path, daemon: DaemonProcess, form: Literal["current", "legacy"] = "current"
) -> None:
    """Writes ``daemon`` to the identity file at ``path``: pretty JSON of the
    current (4.10) or legacy (4.5) form, atomically (temporary file renamed
    into place), mode 0600. The directory must exist."""

def read_identity_file(path: _Path) -> DaemonProcess:
    """The identity in the file at ``path``, in any of the three JSON forms;
    ``FilesystemError`` if it cannot be read (symlinks refused, at most 64
    KiB), ``DecodeError``/``InvalidIdentityError`` if it is not an identity."""

def try_read_identity_file(path: _Path) -> Optional[DaemonProcess]:
    """``read_identity_file``, with an absent, unreadable or malformed file
    read as ``None``."""

def validate_service_name(name: str) -> None:
    """Raises ``InvalidNameError`` unless ``name`` matches ``[a-z0-9-]{1,64}``."""

def validate_instance_name(name: str) -> None:
    """Raises ``InvalidNameError`` unless ``name`` matches ``[a-z0-9-]{1,64}``."""

def validate_version(version: str) -> None:
    """Raises ``InvalidVersionError`` unless ``version`` is MAJOR.MINOR.PATCH
    (decimal, no leading zeros) with an optional ``-`` and ``[a-z0-9.]+``
    pre-release; no ``+build``; at most 128 bytes."""

def backend_socket_name(user_sid_hash: str, token_hex: str) -> str:
    """``rpb-v1-{user_sid_hash}-be-{token_hex}.sock`` (token: 32 lowercase hex)."""

def shared_broker_socket_name(user_sid_hash: str) -> str:
    """``rpb-v1-{user_sid_hash}-shared.sock``."""

def service_broker_socket_name(user_sid_hash: str, service_name: str) -> str:
    """``rpb-v1-{user_sid_hash}-svc-{service_name}.sock``."""

def instance_broker_socket_name(user_sid_hash: str, instance_name: str) -> str:
    """``rpb-v1-{user_sid_hash}-inst-{instance_name}.sock``."""

def refresh_logging() -> None:
    """Call after changing ``logging`` levels at run time: Rust log records
    cache logger levels so that disabled records cost nothing."""
