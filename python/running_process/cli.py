"""The ``running-process`` command line (also ``python -m running_process``).

Commands (each prints text by default and JSON with ``--json``, accepted
before or after the command):

``demo``
    Launches the example echo backend that ships with the package in a
    temporary per-version directory, verifies it, prints its identity and the
    launch time, exchanges a message with it and shuts it down. It leaves
    nothing behind.
``servicedef write NAME --binary PATH --root DIR [...]``
    Builds a service definition and saves ``NAME.servicedef`` (mode 0600) in
    ``--dir`` or the service definition directory; prints the path.
``servicedef show NAME``
    Prints the fields of a saved definition.
``servicedef validate FILE``
    Loads a ``.servicedef`` file by path and reports ``ok`` or the error.
``launch NAME|FILE --version V``
    Launches (or adopts) the backend through the pool, so it is recorded
    there and keeps running after the command exits; prints its verified
    identity and the time taken. A progress line goes to stderr when a launch
    takes longer than half a second and stderr is a terminal.
``ls``
    The backends recorded in the pool: key, pid, version, endpoint, uptime,
    alive.
``stop KEY`` / ``stop --all``
    Stops a backend of the pool (KEY is ``instance/service@version``, e.g.
    ``shared/zccache@1.11.20``), or all of them.
``probe KEY``
    Verifies a recorded backend without launching anything: the manifest
    entry exists, its process is alive, it was started in this boot, its
    socket file is present, its executable still has the recorded SHA-256,
    and it passes the full verification of a launch (peer credentials,
    ``/proc/<pid>/exe``, nonce probe).
``doctor``
    Checks the socket, pool state and service definition directories
    (ownership, mode, symlinks), the machine id, boot id, XDG_RUNTIME_DIR and
    the ``sun_path`` budget left for backend socket paths.

Exit codes:

* 0 (``EXIT_OK``): success.
* 1 (``EXIT_FAILURE``): the operation failed (launch failed, backend dead,
  invalid definition file, probe check failed, doctor found a problem).
* 2 (``EXIT_USAGE``): usage error: bad arguments, a malformed name, version,
  key or trace context.
* 3 (``EXIT_NOT_FOUND``): not found: no such service definition or file, no
  backend recorded for the key (``probe``), nothing running for the key
  (``stop KEY``).
* 4 (``EXIT_REFUSED``): refused or insecure: an insecure directory, a version
  the definition's policy refuses, a binary the launch policy refuses.

A failure prints one line ``running-process: <ErrorClass>: <message>`` on
stderr, followed by a ``hint: ...`` line when there is something to suggest;
with ``--json`` an object ``{"ok": false, "error", "message", "hint",
"exit_code"}`` is also printed on stdout.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
from importlib import resources
from typing import Any, Callable, Optional, Sequence, TextIO, TypeVar

import running_process as rp

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_REFUSED = 4

EXIT_CODES_HELP = """exit codes:
  0  success
  1  the operation failed (launch failed, backend dead, invalid file, doctor problem)
  2  usage error (bad arguments, malformed name, version, key or trace context)
  3  not found (no such service definition, no backend recorded / running for KEY)
  4  refused or insecure (insecure directory, version or binary refused by policy)

KEY is the backend key instance/service@version, e.g. shared/zccache@1.11.20
or private:zccache/zccache@1.11.20 (see `running-process ls`)."""

PROGRESS_AFTER = 0.5
"""Seconds a launch may take before a progress line appears (TTY only)."""
PROGRESS_INTERVAL = 0.1

PROG = "running-process"

_T = TypeVar("_T")

DEMO_SERVICE = "demo-echo"
DEMO_VERSION = "1.0.0"


def _install_example_backend(root: str) -> tuple[str, str]:
    """Writes the example backend into ``root/<version>/`` with a ``#!`` line
    naming this interpreter; returns (binary path, per-version directory)."""
    version_dir = os.path.join(root, DEMO_VERSION)
    os.mkdir(version_dir, 0o755)
    source = resources.files("running_process.examples").joinpath("echo_backend.py").read_text()
    binary = os.path.join(version_dir, "demo-echo-backend")
    with open(binary, "w") as f:
        f.write(f"#!{sys.executable}\n{source}")
    os.chmod(binary, 0o755)
    return binary, version_dir


def run_demo() -> dict[str, Any]:
    """Launches, verifies, uses and stops the example backend; returns what
    happened as JSON-ready data."""
    root = tempfile.mkdtemp(prefix="running-process-demo-")
    try:
        binary, version_dir = _install_example_backend(root)
        sd = rp.ServiceDefinition(
            service_name=DEMO_SERVICE,
            binary_path=binary,
            per_version_binary_dir=version_dir,
            isolation=rp.Isolation.SHARED,
            min_version="1.0.0",
            labels={"purpose": "demo"},
        )
        key = rp.BackendKey.for_service(sd, DEMO_VERSION)
        launcher = rp.CommandBackendLauncher.for_current_user(idle_timeout_secs=30)
        trace = rp.TraceContext.new_root()
        started = time.perf_counter()
        handle = launcher.launch(key, sd, trace)
        launch_ms = (time.perf_counter() - started) * 1000.0
        with handle:
            daemon = handle.daemon
            message = f"hello from pid {os.getpid()}".encode()
            with handle.connect() as conn:
                conn.sendall(message)
                conn.shutdown(1)
                echoed = b""
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    echoed += chunk
            started = time.perf_counter()
            handle.verify(trace)
            verify_ms = (time.perf_counter() - started) * 1000.0
            facts: dict[str, Any] = {
                "backend_key": str(key),
                "pid": daemon.pid,
                "exe_path": daemon.exe_path,
                "exe_sha256": daemon.exe_sha256_hex,
                "boot_id": daemon.boot_id,
                "endpoint": daemon.ipc_endpoint.path,
                "namespace_id": daemon.ipc_endpoint.namespace_id,
                "log_path": handle.log_path,
                "user_sid_hash": launcher.user_sid_hash,
                "socket_dir": launcher.socket_dir,
                "socket_dir_mode": f"{stat.S_IMODE(os.lstat(launcher.socket_dir).st_mode):04o}",
                "traceparent": trace.traceparent,
                "launch_ms": round(launch_ms, 2),
                "reverify_ms": round(verify_ms, 2),
                "sent": message.decode(),
                "echoed": echoed.decode(errors="replace"),
            }
        facts["returncode"] = handle.returncode
        facts["socket_file_removed"] = not os.path.exists(facts["endpoint"])
        facts["ok"] = facts["echoed"] == facts["sent"] and facts["socket_file_removed"]
        return facts
    finally:
        shutil.rmtree(root)


def _print_demo(facts: dict[str, Any]) -> None:
    rows = [
        ("backend", facts["backend_key"]),
        ("pid", str(facts["pid"])),
        ("executable", facts["exe_path"]),
        ("sha-256", facts["exe_sha256"]),
        ("boot id", facts["boot_id"]),
        ("endpoint", facts["endpoint"]),
        ("socket dir", f"{facts['socket_dir']} (mode {facts['socket_dir_mode']})"),
        ("trace", facts["traceparent"]),
        ("launch", f"{facts['launch_ms']:.1f} ms including full verification"),
        ("re-verify", f"{facts['reverify_ms']:.2f} ms"),
        ("sent", repr(facts["sent"])),
        ("echoed", repr(facts["echoed"])),
        (
            "shutdown",
            f"return code {facts['returncode']}, socket file "
            f"{'removed' if facts['socket_file_removed'] else 'LEFT BEHIND'}",
        ),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")



# --- errors ------------------------------------------------------------------------


class CliError(Exception):
    """A failure of the command line itself (not of the library): printed like
    a library error, with its own exit code and hint."""

    def __init__(self, name: str, message: str, code: int, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.code = code
        self.hint = hint


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _last_log_line(log_tail: object) -> Optional[str]:
    lines = [line.strip() for line in str(log_tail or "").splitlines() if line.strip()]
    return lines[-1] if lines else None


def exit_code_for(err: BaseException) -> int:
    """The exit code of an error raised by the library or the OS."""
    if isinstance(err, CliError):
        return err.code
    if isinstance(err, rp.ServiceDefinitionNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(err, (rp.InsecureDirectoryError, rp.VersionRefusedError, rp.BinaryPolicyError)):
        return EXIT_REFUSED
    if isinstance(err, (rp.InvalidVersionError, rp.InvalidNameError, rp.InvalidTraceContextError)):
        return EXIT_USAGE
    if isinstance(err, OSError) and err.errno == errno.ENOENT:
        return EXIT_NOT_FOUND
    if isinstance(err, PermissionError):
        return EXIT_REFUSED
    return EXIT_FAILURE


def hint_for(err: BaseException) -> Optional[str]:
    """One line of advice for an error, or None."""
    if isinstance(err, CliError):
        return err.hint
    if isinstance(err, rp.ServiceDefinitionNotFoundError):
        return (
            f"write it with `{PROG} servicedef write {err.service_name} --binary PATH --root DIR`, "
            "or pass --dir with the directory that holds it"
        )
    if isinstance(err, rp.InsecureDirectoryError):
        return (
            f"make {err.path} a real directory owned by you with mode 0700 (chmod 700); "
            f"it is refused, never repaired; `{PROG} doctor` checks all directories"
        )
    if isinstance(err, rp.VersionRefusedError):
        return f"the definition's {err.rule} refuses {err.version}; see `{PROG} servicedef show {err.service_name}`"
    if isinstance(err, rp.InvalidVersionError):
        return "a version is MAJOR.MINOR.PATCH with an optional -prerelease, e.g. 1.2.3 or 1.2.3-rc.1"
    if isinstance(err, rp.InvalidNameError):
        if err.kind == "instance id":
            return "KEY is instance/service@version, e.g. shared/zccache@1.11.20 (see `running-process ls`)"
        return "names are 1 to 64 characters of a-z, 0-9 and -"
    if isinstance(err, rp.InvalidTraceContextError):
        return "a traceparent is 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>, lowercase"
    if isinstance(err, rp.BinaryPolicyError):
        return (
            "the binary must be an executable file inside the definition's per-version directory, "
            "neither of them writable by group or other"
        )
    if isinstance(err, rp.NotReadyError):
        line = _last_log_line(err.log_tail)
        extra = f"; last log line: {line}" if line else ""
        return f"raise --ready-timeout if the backend is just slow to start{extra}"
    if isinstance(err, rp.BackendExitedError):
        line = _last_log_line(err.log_tail)
        return f"last log line: {line}" if line else "the backend printed nothing before it exited"
    if isinstance(err, (rp.PathTooLongError, rp.EndpointError)):
        return f"set XDG_RUNTIME_DIR to a shorter private directory; `{PROG} doctor` shows the sun_path budget"
    if isinstance(err, rp.HostIdentityError):
        return "the machine id and boot id are needed to name sockets; see `running-process doctor`"
    if isinstance(err, (rp.DecodeError, rp.ServiceDefinitionStemMismatchError)):
        return f"rewrite the file with `{PROG} servicedef write`"
    if isinstance(err, rp.BackendLaunchError):
        return f"`{PROG} doctor` checks the directories a launch needs"
    return None


def report_error(err: BaseException, as_json: bool) -> int:
    """Prints the one-line failure (and hint) on stderr; returns the exit code."""
    code = exit_code_for(err)
    name = err.name if isinstance(err, CliError) else type(err).__name__
    message = _one_line(err.message if isinstance(err, CliError) else str(err))
    hint = hint_for(err)
    print(f"{PROG}: {name}: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {_one_line(hint)}", file=sys.stderr)
    if as_json:
        _emit_json({"ok": False, "error": name, "message": message, "hint": hint, "exit_code": code})
    return code


def _emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def _print_rows(rows: Sequence[tuple[str, str]]) -> None:
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")


# --- shared helpers -------------------------------------------------------------


def parse_key(text: str) -> rp.BackendKey:
    """Parses ``instance/service@version`` (the ``str()`` of a BackendKey)."""
    rest, at, version = text.rpartition("@")
    instance, slash, service = rest.partition("/")
    if not at or not slash or not instance or not service or not version:
        raise CliError(
            "InvalidKeyError",
            f"{text!r} is not a backend key",
            EXIT_USAGE,
            "KEY is instance/service@version, e.g. shared/zccache@1.11.20 (see `running-process ls`)",
        )
    return rp.BackendKey(rp.BrokerInstanceKey.from_id(instance), service, version)


def _launcher(ready_timeout: Optional[float] = None, idle_timeout: Optional[int] = None) -> rp.CommandBackendLauncher:
    kwargs: dict[str, Any] = {}
    if ready_timeout is not None:
        kwargs["ready_timeout"] = ready_timeout
    if idle_timeout is not None:
        kwargs["idle_timeout_secs"] = idle_timeout if idle_timeout > 0 else None
    return rp.CommandBackendLauncher.for_current_user(**kwargs)


def _pool(state_dir: Optional[str], launcher: Optional[rp.CommandBackendLauncher] = None) -> rp.BackendPool:
    return rp.BackendPool(launcher if launcher is not None else _launcher(), state_dir)


def sd_fields(sd: rp.ServiceDefinition) -> dict[str, Any]:
    return {
        "service_name": sd.service_name,
        "binary_path": sd.binary_path,
        "per_version_binary_dir": sd.per_version_binary_dir,
        "isolation": sd.isolation.name.lower(),
        "explicit_instance": sd.explicit_instance,
        "instance_id": rp.BrokerInstanceKey.from_service_definition(sd).id(),
        "min_version": sd.min_version,
        "version_allow_list": sd.version_allow_list,
        "labels": sd.labels,
    }


def _print_sd(fields: dict[str, Any]) -> None:
    labels = fields["labels"]
    _print_rows(
        [
            ("service", fields["service_name"]),
            ("binary", fields["binary_path"]),
            ("per-version dir", fields["per_version_binary_dir"]),
            ("isolation", fields["isolation"]),
            ("instance", fields["instance_id"]),
            ("min version", fields["min_version"] or "(any)"),
            ("allow list", ", ".join(fields["version_allow_list"]) or "(any)"),
            ("labels", ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "(none)"),
        ]
    )


def _load_sd(name: str, directory: Optional[str]) -> rp.ServiceDefinition:
    """A definition by service name, or by path when ``name`` names a file."""
    if name.endswith(".servicedef") or os.sep in name:
        return rp.ServiceDefinition.load_file(os.path.abspath(name))
    return rp.ServiceDefinition.load(name, directory)


def _format_duration(seconds: float) -> str:
    total = max(0, int(seconds))
    days, rem = divmod(total, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def entry_fields(entry: rp.PoolEntry, now_ms: Optional[int] = None) -> dict[str, Any]:
    now = int(time.time() * 1000) if now_ms is None else now_ms
    daemon = entry.daemon
    uptime = max(0.0, (now - daemon.started_at_unix_ms) / 1000.0)
    return {
        "key": str(entry.key),
        "instance": entry.key.instance.id(),
        "service": entry.key.service_name,
        "version": entry.key.service_version,
        "pid": daemon.pid,
        "endpoint": daemon.ipc_endpoint.path,
        "exe_path": daemon.exe_path,
        "exe_sha256": daemon.exe_sha256_hex,
        "boot_id": daemon.boot_id,
        "started_at_unix_ms": daemon.started_at_unix_ms,
        "uptime_secs": round(uptime, 3),
        "alive": entry.alive,
    }


def _run_with_progress(what: str, work: Callable[[], _T], enabled: bool, stream: TextIO) -> _T:
    """Runs ``work``; when ``enabled`` and it takes longer than
    PROGRESS_AFTER seconds, keeps a progress line on ``stream`` (a TTY)."""
    if not enabled:
        return work()
    done = threading.Event()
    result: list[_T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result.append(work())
        except BaseException as e:  # handed to the main thread
            failure.append(e)
        finally:
            done.set()

    started = time.monotonic()
    thread = threading.Thread(target=target, name="running-process-launch", daemon=True)
    thread.start()
    shown = False
    frames = "|/-\\"
    tick = 0
    if not done.wait(PROGRESS_AFTER):
        while not done.wait(PROGRESS_INTERVAL if shown else 0):
            elapsed = time.monotonic() - started
            stream.write(f"\r{frames[tick % 4]} {what} ... {elapsed:.1f} s")
            stream.flush()
            shown = True
            tick += 1
    thread.join()
    if shown:
        stream.write("\r\033[K")
        stream.flush()
    if failure:
        raise failure[0]
    return result[0]


# --- commands --------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    facts = run_demo()
    if args.json:
        _emit_json(facts)
    else:
        print(f"running-process {rp.__version__}: verified launch of the example backend")
        _print_demo(facts)
    return EXIT_OK if facts["ok"] else EXIT_FAILURE


def _parse_labels(items: Sequence[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise CliError(
                "InvalidLabelError", f"label {item!r} is not key=value", EXIT_USAGE, "write labels as --label team=build"
            )
        labels[key] = value
    return labels


def cmd_servicedef_write(args: argparse.Namespace) -> int:
    isolation_name = args.isolation or ("explicit" if args.instance else "private")
    isolation = getattr(rp.Isolation, isolation_name.upper())
    kwargs: dict[str, Any] = {
        "service_name": args.name,
        "binary_path": os.path.abspath(args.binary),
        "per_version_binary_dir": os.path.abspath(args.root),
        "isolation": isolation,
        "version_allow_list": list(args.allow or []),
        "labels": _parse_labels(args.label or []),
    }
    if args.instance:
        kwargs["explicit_instance"] = args.instance
    if args.min_version:
        kwargs["min_version"] = args.min_version
    try:
        sd = rp.ServiceDefinition(**kwargs)
    except rp.InvalidServiceDefinitionError as err:
        raise CliError(type(err).__name__, str(err), EXIT_USAGE, f"fix --{_flag_for(err.field)}") from err
    path = sd.save(args.dir)
    if args.json:
        _emit_json({"ok": True, "path": path, "service_definition": sd_fields(sd)})
    else:
        print(path)
    return EXIT_OK


def _flag_for(field: str) -> str:
    return {
        "service_name": "name",
        "binary_path": "binary",
        "per_version_binary_dir": "root",
        "explicit_instance": "instance",
        "min_version": "min-version",
        "version_allow_list": "allow",
        "labels": "label",
        "isolation": "isolation",
    }.get(field.split("[")[0].split(".")[0], field)


def cmd_servicedef_show(args: argparse.Namespace) -> int:
    sd = _load_sd(args.name, args.dir)
    fields = sd_fields(sd)
    if args.json:
        _emit_json(fields)
    else:
        _print_sd(fields)
    return EXIT_OK


def cmd_servicedef_validate(args: argparse.Namespace) -> int:
    path = os.path.abspath(args.file)
    sd = rp.ServiceDefinition.load_file(path)
    if args.json:
        _emit_json({"ok": True, "path": path, "service_definition": sd_fields(sd)})
    else:
        print(f"{path}: ok (service {sd.service_name})")
    return EXIT_OK


def cmd_launch(args: argparse.Namespace) -> int:
    sd = _load_sd(args.name, args.dir)
    rp.validate_version(args.version)
    sd.check_version(args.version)
    if args.traceparent or args.tracestate:
        trace = rp.TraceContext(traceparent=args.traceparent or "", tracestate=args.tracestate or "")
    else:
        trace = rp.TraceContext.new_root()
    key = rp.BackendKey.for_service(sd, args.version)
    pool = _pool(args.state_dir, _launcher(args.ready_timeout, args.idle_timeout))
    before = {str(e.key): e.daemon.pid for e in pool.list() if e.alive}
    started = time.perf_counter()
    show_progress = not args.json and sys.stderr.isatty()
    handle = _run_with_progress(
        f"launching {key}", lambda: pool.get_or_launch(key, sd, trace), show_progress, sys.stderr
    )
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    daemon = handle.daemon
    facts: dict[str, Any] = {
        "ok": True,
        "key": str(key),
        "pid": daemon.pid,
        "exe_path": daemon.exe_path,
        "exe_sha256": daemon.exe_sha256_hex,
        "endpoint": daemon.ipc_endpoint.path,
        "namespace_id": daemon.ipc_endpoint.namespace_id,
        "log_path": handle.log_path,
        "traceparent": trace.traceparent,
        "reused": before.get(str(key)) == daemon.pid,
        "elapsed_ms": round(elapsed_ms, 2),
        "state_dir": pool.state_dir,
    }
    if args.json:
        _emit_json(facts)
    else:
        verb = "adopted running" if facts["reused"] else "launched"
        print(f"{verb} {key} (verified) in {elapsed_ms:.1f} ms")
        _print_rows(
            [
                ("key", facts["key"]),
                ("pid", str(facts["pid"])),
                ("executable", facts["exe_path"]),
                ("sha-256", facts["exe_sha256"]),
                ("endpoint", facts["endpoint"]),
                ("log", facts["log_path"]),
                ("trace", facts["traceparent"] or "(none)"),
                ("time", f"{elapsed_ms:.1f} ms"),
            ]
        )
    return EXIT_OK


def cmd_ls(args: argparse.Namespace) -> int:
    pool = _pool(args.state_dir)
    rows = [entry_fields(e) for e in pool.list()]
    rows.sort(key=lambda r: str(r["key"]))
    if args.json:
        _emit_json(rows)
        return EXIT_OK
    if not rows:
        print(f"no backends recorded in {pool.state_dir}")
        return EXIT_OK
    header = ("KEY", "PID", "VERSION", "UPTIME", "ALIVE", "ENDPOINT")
    table = [
        (r["key"], str(r["pid"]), r["version"], _format_duration(r["uptime_secs"]), "yes" if r["alive"] else "no", r["endpoint"])
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(len(header) - 1)]
    for row in [header, *table]:
        cells = [f"{str(cell):<{widths[i]}}" for i, cell in enumerate(row[:-1])]
        print("  ".join([*cells, str(row[-1])]))
    return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    pool = _pool(args.state_dir)
    if args.all:
        count = pool.stop_all(timeout=args.timeout)
        if args.json:
            _emit_json({"ok": True, "stopped": count})
        else:
            print(f"stopped {count} backend{'s' if count != 1 else ''}")
        return EXIT_OK
    key = parse_key(args.key)
    if not pool.stop(key, timeout=args.timeout):
        raise CliError(
            "NotRunningError",
            f"no backend running for {key}",
            EXIT_NOT_FOUND,
            f"`{PROG} ls` lists the backends of the pool",
        )
    if args.json:
        _emit_json({"ok": True, "stopped": 1, "key": str(key)})
    else:
        print(f"stopped {key}")
    return EXIT_OK


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


def cmd_probe(args: argparse.Namespace) -> int:
    key = parse_key(args.key)
    pool = _pool(args.state_dir)
    entry = next((e for e in pool.list() if e.key == key), None)
    if entry is None:
        raise CliError(
            "NotFoundError", f"no backend recorded for {key} in {pool.state_dir}", EXIT_NOT_FOUND,
            f"`{PROG} ls` lists the backends of the pool; `{PROG} launch` starts one",
        )
    facts = entry_fields(entry)
    daemon = entry.daemon
    checks: dict[str, bool] = {"alive": entry.alive}
    try:
        checks["same_boot"] = daemon.boot_id == rp.boot_id()
    except rp.HostIdentityError:
        checks["same_boot"] = False
    checks["socket_present"] = _is_socket(daemon.ipc_endpoint.path)
    try:
        checks["exe_sha256_matches"] = rp.sha256_file(daemon.exe_path) == daemon.exe_sha256
    except (rp.RunningProcessError, OSError):
        checks["exe_sha256_matches"] = False
    # The full verification of a launch: peer credentials, /proc/<pid>/exe
    # and the hashed file's stamp, and the nonce probe.
    checks["verified"] = checks["alive"] and pool.get(key) is not None
    ok = all(checks.values())
    failed = ", ".join(name for name, passed in checks.items() if not passed)
    hint = (
        f"`{PROG} launch` starts a new one; `{PROG} stop {key}` forgets it"
        if not checks["alive"]
        else f"`{PROG} stop {key}` and launch it again"
    )
    facts["checks"] = checks
    facts["ok"] = ok
    if not ok:
        facts.update(error="ProbeFailedError", message=f"{key}: check failed: {failed}", hint=hint, exit_code=EXIT_FAILURE)
    if args.json:
        _emit_json(facts)
    else:
        print(f"{key}: {'ok' if ok else 'FAILED'}")
        _print_rows(
            [
                ("pid", str(facts["pid"])),
                ("executable", facts["exe_path"]),
                ("sha-256", facts["exe_sha256"]),
                ("boot id", facts["boot_id"]),
                ("endpoint", facts["endpoint"]),
                ("uptime", _format_duration(facts["uptime_secs"])),
                *[(name.replace("_", " "), "ok" if passed else "FAILED") for name, passed in checks.items()],
            ]
        )
    if not ok:
        print(f"{PROG}: ProbeFailedError: {key}: check failed: {failed}", file=sys.stderr)
        print(f"hint: {hint}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def check_dir(path: str) -> dict[str, Any]:
    """Ownership and mode of a private directory: ``status`` is ``ok``,
    ``missing`` (created 0700 on first use) or ``insecure``."""
    info: dict[str, Any] = {"path": path, "exists": False, "owner_uid": None, "mode": None, "status": "missing", "problem": None}
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return info
    info["exists"] = True
    info["owner_uid"] = st.st_uid
    info["mode"] = f"{stat.S_IMODE(st.st_mode):04o}"
    problem: Optional[str] = None
    if stat.S_ISLNK(st.st_mode):
        problem = "is a symlink"
    elif not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory"
    elif st.st_uid != os.getuid():
        problem = f"owned by uid {st.st_uid}, not {os.getuid()}"
    elif st.st_mode & 0o077:
        problem = f"mode {stat.S_IMODE(st.st_mode):04o} grants group or other access"
    info["status"] = "insecure" if problem else "ok"
    info["problem"] = problem
    return info


BACKEND_SOCKET_NAME_LEN = len("rpb-v1-") + 16 + len("-be-") + 32 + len(".sock")


def cmd_doctor(args: argparse.Namespace) -> int:
    sock_dir = rp.socket_dir()
    state_dir = args.state_dir or rp.BackendPool(_launcher()).state_dir
    def_dir = args.dir or rp.service_def_dir()
    dirs = {
        "socket_dir": check_dir(sock_dir),
        "state_dir": check_dir(state_dir),
        "service_def_dir": check_dir(def_dir),
    }
    machine_ids = [p for p in ("/etc/machine-id", "/var/lib/dbus/machine-id") if os.path.isfile(p)]
    problems: list[str] = []
    try:
        boot: Optional[str] = rp.boot_id()
    except rp.HostIdentityError as err:
        boot = None
        problems.append(f"boot id unreadable: {_one_line(str(err))}")
    try:
        sid: Optional[str] = rp.user_sid_hash()
    except rp.HostIdentityError as err:
        sid = None
        problems.append(f"user sid hash unavailable: {_one_line(str(err))}")
    if not machine_ids:
        problems.append("no /etc/machine-id (nor /var/lib/dbus/machine-id)")
    socket_path_len = len(sock_dir) + 1 + BACKEND_SOCKET_NAME_LEN
    budget = rp.SUN_PATH_MAX - socket_path_len
    if budget < 0:
        problems.append(f"backend socket paths would be {socket_path_len} bytes, over the {rp.SUN_PATH_MAX} limit")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    insecure = [f"{name} {d['path']} {d['problem']}" for name, d in dirs.items() if d["status"] == "insecure"]
    code = EXIT_REFUSED if insecure else EXIT_FAILURE if problems else EXIT_OK
    report: dict[str, Any] = {
        "ok": code == EXIT_OK,
        "directories": dirs,
        "machine_id": machine_ids[0] if machine_ids else None,
        "boot_id": boot,
        "user_sid_hash": sid,
        "xdg_runtime_dir": xdg,
        "uid": os.getuid(),
        "sun_path_max": rp.SUN_PATH_MAX,
        "backend_socket_path_len": socket_path_len,
        "sun_path_budget": budget,
        "insecure": insecure,
        "problems": problems,
        "exit_code": code,
    }
    if args.json:
        _emit_json(report)
    else:
        rows: list[tuple[str, str]] = []
        for name, d in dirs.items():
            if d["exists"]:
                detail = f"uid {d['owner_uid']}, mode {d['mode']}"
                verdict = "OK" if d["status"] == "ok" else f"INSECURE: {d['problem']}"
                rows.append((name.replace("_", " "), f"{d['path']} ({detail}) {verdict}"))
            else:
                rows.append((name.replace("_", " "), f"{d['path']} (missing; created 0700 on first use) OK"))
        rows += [
            ("machine id", machine_ids[0] if machine_ids else "MISSING"),
            ("boot id", boot or "UNREADABLE"),
            ("user sid hash", sid or "UNAVAILABLE"),
            ("XDG_RUNTIME_DIR", xdg if xdg else "(unset: sockets go under /tmp)"),
            (
                "sun_path budget",
                f"{budget} bytes spare ({socket_path_len} of {rp.SUN_PATH_MAX} used by backend socket paths)"
                + ("" if budget >= 0 else " TOO LONG"),
            ),
        ]
        _print_rows(rows)
        verdict = "all OK" if code == EXIT_OK else "INSECURE" if insecure else "PROBLEMS FOUND"
        print(f"doctor: {verdict}")
    if insecure:
        print(f"{PROG}: InsecureDirectoryError: {'; '.join(insecure)}", file=sys.stderr)
        print("hint: chmod 700 the directory and make sure you own it (it is refused, never repaired)", file=sys.stderr)
    elif problems:
        print(f"{PROG}: DoctorError: {'; '.join(problems)}", file=sys.stderr)
        if budget < 0:
            print("hint: set XDG_RUNTIME_DIR to a shorter private directory", file=sys.stderr)
    return code


# --- parser ----------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def _parser() -> argparse.ArgumentParser:
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of text")
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Launch, verify and reuse on-demand backend daemons.",
        epilog=EXIT_CODES_HELP,
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {rp.__version__}")
    parser.add_argument("--json", action="store_true", default=False, help="print JSON instead of text")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def sub(parent: Any, name: str, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(
            name, help=help, description=help, parents=[json_flag], epilog=EXIT_CODES_HELP, formatter_class=fmt
        )
        return p

    demo = sub(commands, "demo", "launch, verify, use and stop the example backend")
    demo.set_defaults(func=cmd_demo)

    sdp = sub(commands, "servicedef", "write, show or validate service definitions")
    sdcmds = sdp.add_subparsers(dest="servicedef_command", required=True, metavar="ACTION")
    write = sub(sdcmds, "write", "build and save NAME.servicedef; prints its path")
    write.add_argument("name", metavar="NAME", help="service name ([a-z0-9-]{1,64})")
    write.add_argument("--binary", required=True, metavar="PATH", help="the backend executable")
    write.add_argument("--root", required=True, metavar="DIR", help="the per-version binary directory (allow-list root)")
    write.add_argument("--isolation", choices=("private", "shared", "explicit"), help="broker isolation (default: private, or explicit with --instance)")
    write.add_argument("--instance", metavar="NAME", help="explicit broker instance name")
    write.add_argument("--min-version", metavar="V", help="lowest version admitted")
    write.add_argument("--allow", action="extend", nargs="+", metavar="V", help="exact versions admitted (repeatable)")
    write.add_argument("--label", action="extend", nargs="+", metavar="K=V", help="labels (repeatable)")
    write.add_argument("--dir", metavar="DIR", help="service definition directory (default: rp.service_def_dir())")
    write.set_defaults(func=cmd_servicedef_write)
    show = sub(sdcmds, "show", "print the fields of a saved definition")
    show.add_argument("name", metavar="NAME", help="service name, or a path to a .servicedef file")
    show.add_argument("--dir", metavar="DIR", help="service definition directory")
    show.set_defaults(func=cmd_servicedef_show)
    validate = sub(sdcmds, "validate", "load a .servicedef file and report ok or the error")
    validate.add_argument("file", metavar="FILE")
    validate.set_defaults(func=cmd_servicedef_validate)

    launch = sub(commands, "launch", "launch (or adopt) a verified backend through the pool; it keeps running")
    launch.add_argument("name", metavar="NAME", help="service name, or a path to a .servicedef file")
    launch.add_argument("--version", required=True, dest="service_version", metavar="V", help="service version")
    launch.add_argument("--dir", metavar="DIR", help="service definition directory")
    launch.add_argument("--traceparent", metavar="TP", help="W3C traceparent (default: a new root trace)")
    launch.add_argument("--tracestate", metavar="TS", help="W3C tracestate (needs --traceparent)")
    launch.add_argument("--ready-timeout", type=_positive_float, metavar="SECS", help="seconds to wait for the backend (default 10)")
    launch.add_argument("--idle-timeout", type=int, metavar="SECS", help="idle seconds before the backend exits (default 30; 0: never)")
    launch.add_argument("--state-dir", metavar="DIR", help="pool state directory")
    launch.set_defaults(func=cmd_launch)

    ls = sub(commands, "ls", "list the backends recorded in the pool")
    ls.add_argument("--state-dir", metavar="DIR", help="pool state directory")
    ls.set_defaults(func=cmd_ls)

    stop = sub(commands, "stop", "stop a backend of the pool (exit 3 if none ran), or --all (exit 0)")
    stop.add_argument("key", nargs="?", metavar="KEY", help="instance/service@version")
    stop.add_argument("--all", action="store_true", help="stop every backend of the pool")
    stop.add_argument("--timeout", type=_positive_float, default=5.0, metavar="SECS", help="SIGTERM grace before SIGKILL (default 5)")
    stop.add_argument("--state-dir", metavar="DIR", help="pool state directory")
    stop.set_defaults(func=cmd_stop)

    probe = sub(
        commands,
        "probe",
        "check a recorded backend without launching: alive, same boot, socket present, executable digest unchanged",
    )
    probe.add_argument("key", metavar="KEY", help="instance/service@version")
    probe.add_argument("--state-dir", metavar="DIR", help="pool state directory")
    probe.set_defaults(func=cmd_probe)

    doctor = sub(commands, "doctor", "check directories, host identity and the sun_path budget")
    doctor.add_argument("--state-dir", metavar="DIR", help="pool state directory to check")
    doctor.add_argument("--dir", metavar="DIR", help="service definition directory to check")
    doctor.set_defaults(func=cmd_doctor)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit code (argparse's 2 for usage
    errors, 0 for --help)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if args.command == "stop" and bool(args.all) == bool(args.key):
        print(f"usage: {PROG} stop [--json] (KEY | --all) [--timeout SECS] [--state-dir DIR]", file=sys.stderr)
        print(f"{PROG} stop: error: give exactly one of KEY or --all", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "launch":
        args.version = args.service_version
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except CliError as err:
        return report_error(err, bool(args.json))
    except (rp.RunningProcessError, OSError) as err:
        return report_error(err, bool(args.json))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
