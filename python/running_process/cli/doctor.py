"""``running-process doctor``: directories, host identity and the
``sun_path`` budget."""

from __future__ import annotations

import argparse
import os
import stat
import sys
from typing import Any, Optional

import running_process as rp
from running_process.cli.commands import make_launcher
from running_process.cli.hints import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_REFUSED,
    PROG,
    emit_json,
    one_line,
    print_rows,
)


def check_dir(path: str) -> dict[str, Any]:
    """Ownership and mode of a private directory: ``status`` is ``ok``,
    ``missing`` (created 0700 on first use) or ``insecure``."""
    info: dict[str, Any] = {
        "path": path,
        "exists": False,
        "owner_uid": None,
        "mode": None,
        "status": "missing",
        "problem": None,
    }
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
    state_dir = args.state_dir or rp.BackendPool(make_launcher()).state_dir
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
        problems.append(f"boot id unreadable: {one_line(str(err))}")
    try:
        sid: Optional[str] = rp.user_sid_hash()
    except rp.HostIdentityError as err:
        sid = None
        problems.append(f"user sid hash unavailable: {one_line(str(err))}")
    if not machine_ids:
        problems.append("no /etc/machine-id (nor /var/lib/dbus/machine-id)")
    socket_path_len = len(sock_dir) + 1 + BACKEND_SOCKET_NAME_LEN
    budget = rp.SUN_PATH_MAX - socket_path_len
    if budget < 0:
        problems.append(
            f"backend socket paths would be {socket_path_len} bytes, over the {rp.SUN_PATH_MAX} limit"
        )
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
        emit_json(report)
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
        print_rows(rows)
        verdict = "all OK" if code == EXIT_OK else "INSECURE" if insecure else "PROBLEMS FOUND"
        print(f"doctor: {verdict}")
    if insecure:
        print(f"{PROG}: InsecureDirectoryError: {'; '.join(insecure)}", file=sys.stderr)
        print(
            "hint: chmod 700 the directory and make sure you own it (it is refused, never repaired)",
            file=sys.stderr,
        )
    elif problems:
        print(f"{PROG}: DoctorError: {'; '.join(problems)}", file=sys.stderr)
        if budget < 0:
            print("hint: set XDG_RUNTIME_DIR to a shorter private directory", file=sys.stderr)
    return code
