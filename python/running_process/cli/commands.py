"""The commands that work on service definitions and on the pool:
``servicedef``, ``launch``, ``ls``, ``stop`` and ``probe``."""

from __future__ import annotations

import argparse
import os
import shlex
import stat
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional, TextIO, TypeVar

import running_process as rp
from running_process.cli.hints import (
    EXIT_FAILURE,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    CliError,
    emit_json,
    print_rows,
    printable,
)

PROGRESS_AFTER = 0.5
"""Seconds a launch may take before a progress line appears (TTY only)."""
PROGRESS_INTERVAL = 0.1

_T = TypeVar("_T")


def parse_key(text: str) -> rp.BackendKey:
    """Parses ``instance/service@version`` (the ``str()`` of a BackendKey)
    with ``BackendKey.parse``; text that is not shaped like a key is a usage
    error, a key with an invalid part the library's own error."""
    try:
        return rp.BackendKey.parse(text)
    except rp.InvalidNameError as err:
        if err.kind != "backend key":
            raise
        raise CliError(
            "InvalidKeyError",
            f"{text!r} is not a backend key",
            EXIT_USAGE,
            "KEY is instance/service@version, e.g. shared/zccache@1.11.20 (see `running-process ls`)",
        ) from None


def make_launcher(
    ready_timeout: Optional[float] = None, idle_timeout: Optional[int] = None
) -> rp.CommandBackendLauncher:
    kwargs: dict[str, Any] = {}
    if ready_timeout is not None:
        kwargs["ready_timeout"] = ready_timeout
    if idle_timeout is not None:
        kwargs["idle_timeout_secs"] = idle_timeout if idle_timeout > 0 else None
    return rp.CommandBackendLauncher.for_current_user(**kwargs)


def make_pool(
    state_dir: Optional[str],
    launcher: Optional[rp.CommandBackendLauncher] = None,
    must_exist: bool = True,
) -> rp.BackendPool:
    """The pool of ``state_dir`` (default: the user's). For the commands
    that only read or stop (``must_exist``), a ``--state-dir`` given
    explicitly must exist: a typo there would otherwise read as an empty
    pool. ``launch`` creates it (0700), as it creates the default one."""
    if must_exist and state_dir is not None and not os.path.isdir(state_dir):
        what = "is not a directory" if os.path.lexists(state_dir) else "does not exist"
        raise CliError(
            "StateDirNotFoundError",
            f"state directory {printable(state_dir)} {what}",
            EXIT_NOT_FOUND,
            f"check --state-dir; create a new one with `mkdir -m 700 DIR`, or leave it out for the "
            f"default (`{PROG} doctor` shows it)",
        )
    return rp.BackendPool(launcher if launcher is not None else make_launcher(), state_dir)


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
        "args": sd.args,
        "listener": sd.listener.name.lower(),
        "env_policy": sd.env_policy.name.lower(),
        "env_allow": sd.env_allow,
        "env_set": sd.env_set,
        "environment": sd.env_summary,
    }


def _print_sd(fields: dict[str, Any]) -> None:
    labels = fields["labels"]
    print_rows(
        [
            ("service", fields["service_name"]),
            ("binary", fields["binary_path"]),
            ("per-version dir", fields["per_version_binary_dir"]),
            ("isolation", fields["isolation"]),
            ("instance", fields["instance_id"]),
            ("min version", fields["min_version"] or "(any)"),
            ("allow list", ", ".join(fields["version_allow_list"]) or "(any)"),
            ("labels", ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "(none)"),
            ("args", " ".join(shlex.quote(a) for a in fields["args"]) or "(none)"),
            ("listener", fields["listener"]),
            ("environment", fields["environment"]),
        ]
    )


def _load_sd(name: str, directory: Optional[str]) -> rp.ServiceDefinition:
    """A definition by service name, or by path when ``name`` names a file."""
    if name.endswith(".servicedef") or os.sep in name:
        return rp.ServiceDefinition.load_file(os.path.abspath(name))
    return rp.ServiceDefinition.load(name, directory)


def format_duration(seconds: float) -> str:
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
        "exe_hash_algorithm": daemon.exe_hash_algorithm,
        "exe_hash": daemon.exe_hash_hex,
        "boot_id": daemon.boot_id,
        "started_at_unix_ms": daemon.started_at_unix_ms,
        "uptime_secs": round(uptime, 3),
        "alive": entry.alive,
        "retired": entry.retired,
        "environment": entry.environment,
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


def _parse_pairs(
    items: Sequence[str], flag: str, example: str, error: str = "InvalidArgumentError"
) -> dict[str, str]:
    """``NAME=value`` items of ``flag`` as a dict; a missing ``=`` or name is
    a usage error (``error``) that shows the form to write."""
    pairs: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(
                error,
                f"{flag} {printable(repr(item))} has no '=' after a name",
                EXIT_USAGE,
                f"write {example}",
            )
        pairs[name] = value
    return pairs


def cmd_servicedef_write(args: argparse.Namespace) -> int:
    isolation_name = args.isolation or ("explicit" if args.instance else "private")
    isolation = getattr(rp.Isolation, isolation_name.upper())
    kwargs: dict[str, Any] = {
        "service_name": args.name,
        "binary_path": os.path.abspath(args.binary),
        "per_version_binary_dir": os.path.abspath(args.root),
        "isolation": isolation,
        "version_allow_list": list(args.allow or []),
        "labels": _parse_pairs(args.label or [], "--label", "--label team=build", "InvalidLabelError"),
        "args": list(args.arg or []),
        "listener": getattr(rp.Listener, (args.listener or "inherit").upper()),
        "env_policy": getattr(rp.EnvPolicy, (args.env_policy or "inherit").upper()),
        "env_allow": list(args.env_allow or []),
        "env_set": _parse_pairs(
            args.env_set or [], "--env-set", "--env-set RUST_LOG=info", "InvalidEnvSetError"
        ),
    }
    if args.instance:
        kwargs["explicit_instance"] = args.instance
    if args.min_version:
        kwargs["min_version"] = args.min_version
    try:
        sd = rp.ServiceDefinition(**kwargs)
    except rp.InvalidServiceDefinitionError as err:
        raise CliError(type(err).__name__, str(err), EXIT_USAGE, f"fix --{_flag_for(err.field)}") from err
    # The binary and its root pass the checks of a launch now, not at the
    # first launch; nothing is written otherwise.
    sd.check_binary()
    path = sd.save(args.dir)
    if args.json:
        emit_json({"ok": True, "path": path, "service_definition": sd_fields(sd)})
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
        "args": "arg",
        "isolation": "isolation",
        "env_policy": "env-policy",
        "env_allow": "env-allow",
        "env_set": "env-set",
    }.get(field.split("[")[0].split(".")[0], field)


def cmd_servicedef_show(args: argparse.Namespace) -> int:
    sd = _load_sd(args.name, args.dir)
    fields = sd_fields(sd)
    if args.json:
        emit_json(fields)
    else:
        _print_sd(fields)
    return EXIT_OK


def cmd_servicedef_validate(args: argparse.Namespace) -> int:
    path = os.path.abspath(args.file)
    sd = rp.ServiceDefinition.load_file(path)
    if args.json:
        emit_json({"ok": True, "path": path, "service_definition": sd_fields(sd)})
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
    arg_values = _parse_pairs(args.arg_value or [], "--arg-value", "--arg-value config=/etc/x.toml")
    launcher = make_launcher(args.ready_timeout, args.idle_timeout)
    show_progress = not args.json and sys.stderr.isatty()
    started = time.perf_counter()
    if args.endpoint:
        # A fixed endpoint: the launcher's own single flight and adoption
        # (the pool records allocated endpoints only).
        endpoint = rp.Endpoint(args.namespace, os.path.abspath(args.endpoint))
        handle = _run_with_progress(
            f"launching {key} at {endpoint.path}",
            lambda: launcher.launch(key, sd, trace, endpoint=endpoint, arg_values=arg_values),
            show_progress,
            sys.stderr,
        )
        reused = all(daemon.pid != handle.pid for _, daemon in launcher.live_children())
        state_dir: Optional[str] = None
    else:
        pool = make_pool(args.state_dir, launcher, must_exist=False)
        before = {str(e.key): e.daemon.pid for e in pool.list() if e.alive}
        if arg_values:
            raise CliError("InvalidArgumentError", "--arg-value needs --endpoint", EXIT_USAGE, None)
        handle = _run_with_progress(
            f"launching {key}", lambda: pool.get_or_launch(key, sd, trace), show_progress, sys.stderr
        )
        reused = before.get(str(key)) == handle.pid
        state_dir = pool.state_dir
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    daemon = handle.daemon
    facts: dict[str, Any] = {
        "ok": True,
        "key": str(key),
        "pid": daemon.pid,
        "exe_path": daemon.exe_path,
        "exe_sha256": daemon.exe_sha256_hex,
        "exe_hash_algorithm": daemon.exe_hash_algorithm,
        "exe_hash": daemon.exe_hash_hex,
        "endpoint": daemon.ipc_endpoint.path,
        "namespace_id": daemon.ipc_endpoint.namespace_id,
        "log_path": handle.log_path,
        "traceparent": trace.traceparent,
        "reused": reused,
        "elapsed_ms": round(elapsed_ms, 2),
        "state_dir": state_dir,
    }
    if args.json:
        emit_json(facts)
    else:
        verb = "adopted running" if facts["reused"] else "launched"
        print(f"{verb} {key} (verified) in {elapsed_ms:.1f} ms")
        print_rows(
            [
                ("key", facts["key"]),
                ("pid", str(facts["pid"])),
                ("executable", facts["exe_path"]),
                (facts["exe_hash_algorithm"], facts["exe_hash"]),
                ("endpoint", facts["endpoint"]),
                ("log", facts["log_path"]),
                ("trace", facts["traceparent"] or "(none)"),
                ("time", f"{elapsed_ms:.1f} ms"),
            ]
        )
    return EXIT_OK


def cmd_ls(args: argparse.Namespace) -> int:
    pool = make_pool(args.state_dir)
    rows = [entry_fields(e) for e in pool.list()]
    rows.sort(key=lambda r: str(r["key"]))
    if args.json:
        emit_json(rows)
        return EXIT_OK
    if not rows:
        print(f"no backends recorded in {pool.state_dir}")
        return EXIT_OK
    header = ("KEY", "PID", "VERSION", "UPTIME", "ALIVE", "ENV", "ENDPOINT")
    table = [
        (
            r["key"],
            str(r["pid"]),
            r["version"],
            format_duration(r["uptime_secs"]),
            ("retired" if r["retired"] else "yes") if r["alive"] else "no",
            r["environment"] or "?",
            r["endpoint"],
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(len(header) - 1)]
    for row in [header, *table]:
        cells = [f"{str(cell):<{widths[i]}}" for i, cell in enumerate(row[:-1])]
        print("  ".join([*cells, str(row[-1])]))
    return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    key = None if args.all else parse_key(args.key)
    pool = make_pool(args.state_dir)
    if key is None:
        count = pool.stop_all(timeout=args.timeout, keep_log=args.keep_log)
        if args.json:
            emit_json({"ok": True, "stopped": count})
        else:
            print(f"stopped {count} backend{'s' if count != 1 else ''}")
        return EXIT_OK
    if not pool.stop(key, timeout=args.timeout, keep_log=args.keep_log):
        raise CliError(
            "NotRunningError",
            f"no backend running for {key}",
            EXIT_NOT_FOUND,
            f"`{PROG} ls` lists the backends of the pool",
        )
    if args.json:
        emit_json({"ok": True, "stopped": 1, "key": str(key)})
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
    pool = make_pool(args.state_dir)
    entry = next((e for e in pool.list() if e.key == key), None)
    if entry is None:
        raise CliError(
            "NotFoundError",
            f"no backend recorded for {key} in {pool.state_dir}",
            EXIT_NOT_FOUND,
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
    hash_file = rp.blake3_file if daemon.exe_hash_algorithm == "blake3" else rp.sha256_file
    try:
        checks["exe_hash_matches"] = hash_file(daemon.exe_path) == daemon.exe_hash
    except (rp.RunningProcessError, OSError):
        checks["exe_hash_matches"] = False
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
        facts.update(
            error="ProbeFailedError",
            message=f"{key}: check failed: {failed}",
            hint=hint,
            exit_code=EXIT_FAILURE,
        )
    if args.json:
        emit_json(facts)
    else:
        print(f"{key}: {'ok' if ok else 'FAILED'}")
        print_rows(
            [
                ("pid", str(facts["pid"])),
                ("executable", facts["exe_path"]),
                (facts["exe_hash_algorithm"], facts["exe_hash"]),
                ("boot id", facts["boot_id"]),
                ("endpoint", facts["endpoint"]),
                ("uptime", format_duration(facts["uptime_secs"])),
                *[(name.replace("_", " "), "ok" if passed else "FAILED") for name, passed in checks.items()],
            ]
        )
    if not ok:
        print(f"{PROG}: ProbeFailedError: {key}: check failed: {failed}", file=sys.stderr)
        print(f"hint: {hint}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1048576:.1f} MiB"


def cmd_gc(args: argparse.Namespace) -> int:
    """Removes what ended backends left behind (see ``BackendPool.gc``)."""
    pool = make_pool(args.state_dir)
    report = pool.gc(dry_run=args.dry_run, min_age=args.min_age)
    kinds = ("records", "locks", "temporary", "logs", "sockets")
    if args.json:
        emit_json({"ok": True, "dry_run": args.dry_run, **report})
        return EXIT_OK
    verb = "would remove" if args.dry_run else "removed"
    counts = ", ".join(f"{len(report[k])} {k}" for k in kinds)
    print(f"{verb} {counts} ({_size(report['bytes'])})")
    for kind in kinds:
        for path in report[kind]:
            print(f"  {kind:<9}  {printable(path)}")
    return EXIT_OK
