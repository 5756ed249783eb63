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
    ``shared/zccache@1.11.20``), or all of them. The log of a backend that
    stops cleanly is removed unless ``--keep-log``.
``gc [--dry-run] [--min-age SECS]``
    Removes what ended backends left behind, in the user's own private
    directories only: records of backends that are provably gone, lock
    files of keys with no record, temporary files of interrupted writes,
    log files that no process has open and no live record names, socket
    files nothing listens on; files younger than ``--min-age`` (60 s) stay.
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
"exit_code"}`` is also printed on stdout. ``-v`` adds the error's details
and the backend's log tail below them, and shows the library's log records
(hidden otherwise). ``ls``, ``stop``, ``probe`` and ``gc`` refuse a
``--state-dir`` that does not exist (``launch`` creates it). When the reader
of stdout goes away (``... | head -1``), the rest of the output is dropped
and the command ends with its own exit code.

Layout: :mod:`.hints` (exit codes, hints, the one-line failure report),
:mod:`.commands` (``servicedef``, ``launch``, ``ls``, ``stop``, ``probe``),
:mod:`.doctor`, :mod:`.demo`; this module holds the parser and :func:`main`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, Callable, NoReturn, Optional

import running_process as rp
from running_process.cli.commands import (
    PROGRESS_AFTER,
    PROGRESS_INTERVAL,
    cmd_gc,
    cmd_launch,
    cmd_ls,
    cmd_probe,
    cmd_servicedef_show,
    cmd_servicedef_validate,
    cmd_servicedef_write,
    cmd_stop,
    entry_fields,
    parse_key,
    sd_fields,
)
from running_process.cli.demo import DEMO_SERVICE, DEMO_VERSION, cmd_demo, run_demo
from running_process.cli.doctor import check_dir, cmd_doctor
from running_process.cli.hints import (
    EXIT_CODES_HELP,
    EXIT_FAILURE,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    PROG,
    CliError,
    exit_code_for,
    hint_for,
    printable,
    report_error,
)
from running_process.cli.output import closed_pipe_quiet, library_log

# --- parser ----------------------------------------------------------------------


MAX_WAIT_SECS = 86_400.0
"""Longest wait a command line accepts (a day): beyond it, a typo."""
MAX_IDLE_SECS = 2**32 - 1
"""Longest idle timeout the contract can carry (a u32)."""


def _positive_float(text: str) -> float:
    """Seconds to wait: a finite number above 0 and at most a day."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{printable(repr(text))} is not a number") from None
    if not 0 < value <= MAX_WAIT_SECS:
        raise argparse.ArgumentTypeError(
            f"{printable(repr(text))} must be more than 0 and at most {MAX_WAIT_SECS:.0f} seconds"
        )
    return value


def _age_seconds(text: str) -> float:
    """An age in seconds: a finite number from 0 up to a day."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{printable(repr(text))} is not a number") from None
    if not 0 <= value <= MAX_WAIT_SECS:
        raise argparse.ArgumentTypeError(
            f"{printable(repr(text))} must be from 0 to {MAX_WAIT_SECS:.0f} seconds"
        )
    return value


def _idle_seconds(text: str) -> int:
    """Idle seconds: 0 (never) or a whole number the contract can carry."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{printable(repr(text))} is not a whole number of seconds"
        ) from None
    if not 0 <= value <= MAX_IDLE_SECS:
        raise argparse.ArgumentTypeError(
            f"{printable(repr(text))} must be 0 (never) or a number of seconds up to {MAX_IDLE_SECS}"
        )
    return value


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line with every
    character that a terminal would act on escaped (an unrecognized argument
    may hold escape sequences)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {printable(message)}\n")


def _parser() -> argparse.ArgumentParser:
    json_flag = _Parser(add_help=False)
    json_flag.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of text"
    )
    json_flag.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="on failure, show the error's details and the backend's log tail; show the library's log",
    )
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog=PROG,
        description="Launch, verify and reuse on-demand backend daemons.",
        epilog=EXIT_CODES_HELP,
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {rp.__version__}")
    parser.add_argument("--json", action="store_true", default=False, help="print JSON instead of text")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False,
        help="on failure, show the error's details and the backend's log tail; show the library's log",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def sub(parent: Any, name: str, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(
            name,
            help=help,
            description=help,
            parents=[json_flag],
            epilog=EXIT_CODES_HELP,
            formatter_class=fmt,
        )
        return p

    demo = sub(commands, "demo", "launch, verify, use and stop the example backend")
    demo.set_defaults(func=cmd_demo)

    sdp = sub(commands, "servicedef", "write, show or validate service definitions")
    sdcmds = sdp.add_subparsers(dest="servicedef_command", required=True, metavar="ACTION")
    write = sub(sdcmds, "write", "build and save NAME.servicedef; prints its path")
    write.add_argument("name", metavar="NAME", help="service name ([a-z0-9-]{1,64})")
    write.add_argument("--binary", required=True, metavar="PATH", help="the backend executable")
    write.add_argument(
        "--root", required=True, metavar="DIR", help="the per-version binary directory (allow-list root)"
    )
    write.add_argument(
        "--isolation",
        choices=("private", "shared", "explicit"),
        help="broker isolation (default: private, or explicit with --instance)",
    )
    write.add_argument("--instance", metavar="NAME", help="explicit broker instance name")
    write.add_argument("--min-version", metavar="V", help="lowest version admitted")
    write.add_argument(
        "--allow", action="extend", nargs="+", metavar="V", help="exact versions admitted (repeatable)"
    )
    write.add_argument("--label", action="extend", nargs="+", metavar="K=V", help="labels (repeatable)")
    write.add_argument(
        "--arg",
        action="append",
        metavar="TEMPLATE",
        help="a command-line argument of the backend (repeatable, in order; {endpoint}, {log_file}, "
        "{namespace}, {service}, {version} or a name given at launch; write --arg=--flag for one "
        "that starts with -)",
    )
    write.add_argument(
        "--listener",
        choices=["inherit", "bind"],
        help="who binds the endpoint: the launcher, passing its listener (inherit, the default), "
        "or the backend itself (bind)",
    )
    write.add_argument(
        "--env-policy",
        choices=["inherit", "baseline", "clean"],
        help="the backend's environment: the caller's minus the scrub list (inherit, the default), "
        "a login baseline (baseline) or only what --env-allow names (clean)",
    )
    write.add_argument(
        "--env-allow",
        action="append",
        metavar="NAME",
        help="a variable (or PREFIX*) taken from the caller under baseline and clean (repeatable)",
    )
    write.add_argument(
        "--env-set",
        action="append",
        metavar="NAME=VALUE",
        help="a variable set for the backend, whatever the policy (repeatable)",
    )
    write.add_argument(
        "--dir", metavar="DIR", help="service definition directory (default: rp.service_def_dir())"
    )
    write.set_defaults(func=cmd_servicedef_write)
    show = sub(sdcmds, "show", "print the fields of a saved definition")
    show.add_argument("name", metavar="NAME", help="service name, or a path to a .servicedef file")
    show.add_argument("--dir", metavar="DIR", help="service definition directory")
    show.set_defaults(func=cmd_servicedef_show)
    validate = sub(sdcmds, "validate", "load a .servicedef file and report ok or the error")
    validate.add_argument("file", metavar="FILE")
    validate.set_defaults(func=cmd_servicedef_validate)

    launch = sub(
        commands, "launch", "launch (or adopt) a verified backend through the pool; it keeps running"
    )
    launch.add_argument("name", metavar="NAME", help="service name, or a path to a .servicedef file")
    launch.add_argument(
        "--version", required=True, dest="service_version", metavar="V", help="service version"
    )
    launch.add_argument("--dir", metavar="DIR", help="service definition directory")
    launch.add_argument("--traceparent", metavar="TP", help="W3C traceparent (default: a new root trace)")
    launch.add_argument("--tracestate", metavar="TS", help="W3C tracestate (needs --traceparent)")
    launch.add_argument(
        "--ready-timeout",
        type=_positive_float,
        metavar="SECS",
        help="seconds to wait for the backend (default 10)",
    )
    launch.add_argument(
        "--idle-timeout",
        type=_idle_seconds,
        metavar="SECS",
        help="idle seconds before the backend exits (default 30; 0: never)",
    )
    launch.add_argument("--state-dir", metavar="DIR", help="pool state directory")
    launch.add_argument(
        "--endpoint",
        metavar="PATH",
        help="serve at this fixed socket path (its directory private to you) instead of through the pool; "
        "a verified backend already there is adopted",
    )
    launch.add_argument(
        "--namespace",
        default="default",
        metavar="ID",
        help="namespace id of a fixed endpoint (default: default)",
    )
    launch.add_argument(
        "--arg-value",
        action="append",
        metavar="NAME=VALUE",
        help="a value for an argument placeholder (repeatable)",
    )
    launch.set_defaults(func=cmd_launch)

    ls = sub(commands, "ls", "list the backends recorded in the pool")
    ls.add_argument("--state-dir", metavar="DIR", help="pool state directory")
    ls.set_defaults(func=cmd_ls)

    stop = sub(commands, "stop", "stop a backend of the pool (exit 3 if none ran), or --all (exit 0)")
    stop.add_argument("key", nargs="?", metavar="KEY", help="instance/service@version")
    stop.add_argument("--all", action="store_true", help="stop every backend of the pool")
    stop.add_argument(
        "--timeout",
        type=_positive_float,
        default=5.0,
        metavar="SECS",
        help="SIGTERM grace before SIGKILL (default 5)",
    )
    stop.add_argument(
        "--keep-log",
        action="store_true",
        help="keep the log file of a backend that stops cleanly (it is removed by default)",
    )
    stop.add_argument("--state-dir", metavar="DIR", help="pool state directory")
    stop.set_defaults(func=cmd_stop)

    gc = sub(
        commands,
        "gc",
        "remove what ended backends left behind: dead records, unused logs, stale sockets",
    )
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    gc.add_argument(
        "--min-age",
        type=_age_seconds,
        default=60.0,
        metavar="SECS",
        help="leave files younger than this alone (default 60)",
    )
    gc.add_argument("--state-dir", metavar="DIR", help="pool state directory")
    gc.set_defaults(func=cmd_gc)

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
    undecodable = [a for a in (sys.argv[1:] if argv is None else argv) if not _is_utf8(a)]
    if args.command == "stop" and bool(args.all) == bool(args.key):
        print(
            f"usage: {PROG} stop [--json] (KEY | --all) [--timeout SECS] [--state-dir DIR]", file=sys.stderr
        )
        print(f"{PROG} stop: error: give exactly one of KEY or --all", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "launch":
        args.version = args.service_version
    func: Callable[[argparse.Namespace], int] = args.func
    verbose = bool(args.verbose)
    with library_log(verbose), closed_pipe_quiet():
        return _run(func, args, undecodable, verbose)


def _run(
    func: Callable[[argparse.Namespace], int],
    args: argparse.Namespace,
    undecodable: list[str],
    verbose: bool,
) -> int:
    try:
        return func(args)
    except UnicodeError:
        # A name or value that is not UTF-8 (the contract carries text);
        # paths need not be, so this is only known once one is used.
        shown = ", ".join(printable(repr(a)) for a in undecodable) or "an argument"
        return report_error(
            CliError("InvalidArgumentError", f"{shown} is not valid UTF-8", EXIT_USAGE, None),
            bool(args.json),
        )
    except CliError as err:
        return report_error(err, bool(args.json), verbose)
    except (rp.RunningProcessError, OSError) as err:
        return report_error(err, bool(args.json), verbose)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


__all__ = [
    "DEMO_SERVICE",
    "DEMO_VERSION",
    "EXIT_CODES_HELP",
    "EXIT_FAILURE",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "PROG",
    "PROGRESS_AFTER",
    "PROGRESS_INTERVAL",
    "CliError",
    "check_dir",
    "cmd_demo",
    "cmd_doctor",
    "cmd_gc",
    "cmd_launch",
    "cmd_ls",
    "cmd_probe",
    "cmd_servicedef_show",
    "cmd_servicedef_validate",
    "cmd_servicedef_write",
    "cmd_stop",
    "entry_fields",
    "exit_code_for",
    "hint_for",
    "printable",
    "main",
    "parse_key",
    "report_error",
    "run_demo",
    "sd_fields",
]
