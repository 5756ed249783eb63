"""Exit codes, hints and the one-line failure report of the command line."""

from __future__ import annotations

import errno
import json
import sys
from collections.abc import Sequence
from typing import Any, Optional

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

PROG = "running-process"


class CliError(Exception):
    """A failure of the command line itself (not of the library): printed like
    a library error, with its own exit code and hint."""

    def __init__(self, name: str, message: str, code: int, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.code = code
        self.hint = hint


def printable(text: str) -> str:
    """``text`` with every control character (C0, DEL, C1; escape sequences
    of a backend's log or of a hostile name among them) shown as an escape,
    so nothing printed can drive the terminal; tabs and newlines too, as
    every line printed is one line."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii") for c in text
    )


def one_line(text: str) -> str:
    return printable(" ".join(str(text).split()))


def _last_log_line(log_tail: object) -> Optional[str]:
    lines = [line.strip() for line in str(log_tail or "").splitlines() if line.strip()]
    return lines[-1] if lines else None


def exit_code_for(err: BaseException) -> int:
    """The exit code of an error raised by the library or the OS."""
    if isinstance(err, CliError):
        return err.code
    if isinstance(err, rp.ServiceDefinitionNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(
        err, (rp.InsecureDirectoryError, rp.InsecureFileError, rp.VersionRefusedError, rp.BinaryPolicyError)
    ):
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
        if "sticky" in err.reason or "neither this user" in err.reason:
            return (
                f"{err.path} must be owned by you or root and writable by nobody else "
                f"(chmod go-w {err.path}); it is refused, never repaired"
            )
        return (
            f"make {err.path} a real directory owned by you with mode 0700 (chmod 700); "
            f"it is refused, never repaired; `{PROG} doctor` checks all directories"
        )
    if isinstance(err, rp.InsecureFileError):
        return (
            f"a definition file is trusted like a binary: owned by you or root and writable by "
            f"nobody else (chmod go-w {err.path}); it is refused, never repaired"
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
        return (
            f"socket directories of up to {rp.SUN_PATH_MAX - 1 - rp.COMPACT_BACKEND_SOCKET_NAME_LEN} bytes work "
            f"(XDG_RUNTIME_DIR up to 36); set XDG_RUNTIME_DIR to a shorter private directory; "
            f"`{PROG} doctor` shows the sun_path budget"
        )
    if isinstance(err, rp.BackendLimitError):
        return (
            f"`{PROG} ls` lists them; `{PROG} stop KEY` or `stop --all` ends some, or set "
            f"{rp.ENV_MAX_BACKENDS} to a higher limit (0: none)"
        )
    if isinstance(err, rp.HostIdentityError):
        return "the machine id and boot id are needed to name sockets; see `running-process doctor`"
    if isinstance(err, (rp.DecodeError, rp.ServiceDefinitionStemMismatchError)):
        return f"rewrite the file with `{PROG} servicedef write`"
    if isinstance(err, rp.BackendLaunchError):
        return f"`{PROG} doctor` checks the directories a launch needs"
    return None


def details_of(err: BaseException) -> list[tuple[str, str]]:
    """The fields of a library error (path, pid, reason, ...) as text, the
    log tail last: what ``-v`` adds below the one-line failure."""
    fields: list[tuple[str, str]] = []
    shown = one_line(str(err))
    tail = ""
    for name in getattr(err, "_fields", ()):
        value = getattr(err, name, None)
        if value is None or value == "":
            continue
        if name == "log_tail":
            tail = str(value)
            continue
        text = one_line(str(value))
        if text != shown:
            fields.append((name, text))
    cause = err.__cause__
    if cause is not None:
        fields.append(("cause", one_line(f"{type(cause).__name__}: {cause}")))
    if tail:
        fields.append(("log tail", ""))
        fields.extend(("", printable(line)) for line in tail.splitlines())
    return fields


def report_error(err: BaseException, as_json: bool, verbose: bool = False) -> int:
    """Prints the one-line failure and its hint on stderr (with ``verbose``,
    the error's details and the backend's log tail below them); returns the
    exit code."""
    code = exit_code_for(err)
    name = err.name if isinstance(err, CliError) else type(err).__name__
    message = one_line(err.message if isinstance(err, CliError) else str(err))
    hint = hint_for(err)
    print(f"{PROG}: {name}: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {one_line(hint)}", file=sys.stderr)
    if verbose:
        for label, value in details_of(err):
            print(f"  {label + ':' if label else '':<12}{value}".rstrip(), file=sys.stderr)
    if as_json:
        emit_json({"ok": False, "error": name, "message": message, "hint": hint, "exit_code": code})
    return code


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def print_rows(rows: Sequence[tuple[str, str]]) -> None:
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
