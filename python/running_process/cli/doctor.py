"""``running-process doctor``: directories, host identity and the
``sun_path`` budget."""

from __future__ import annotations

import argparse
import os
import stat
import sys
from typing import Any, Callable, Optional

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


def check_dir(
    path: str, base: Optional[str] = None, check: Optional[Callable[[str], list[str]]] = None
) -> dict[str, Any]:
    """A private directory as a launch judges it (``rp.check_private_dir``:
    the trusted ``base``, default the parent, and every directory from it
    down to ``path``): ``status`` is ``ok``, ``missing`` (created 0700 on
    first use) or ``insecure``, with the offending directory and the reason
    in ``problem``. Owner and mode are reported for display only. ``check``
    replaces the private-directory rule (the definition directory is judged
    by ``rp.check_service_def_dir``, as a load judges it)."""
    info: dict[str, Any] = {
        "path": path,
        "exists": False,
        "owner_uid": None,
        "mode": None,
        "status": "ok",
        "problem": None,
        "would_create": [],
    }
    try:
        st = os.lstat(path)
        info["exists"] = True
        info["owner_uid"] = st.st_uid
        info["mode"] = f"{stat.S_IMODE(st.st_mode):04o}"
    except OSError:
        pass
    try:
        info["would_create"] = check(path) if check is not None else rp.check_private_dir(path, base)
    except rp.InsecureDirectoryError as err:
        info["status"] = "insecure"
        info["problem"] = err.reason if err.path == path else f"{err.path} {err.reason}"
        return info
    except rp.FilesystemError as err:
        info["status"] = "insecure"
        info["problem"] = f"cannot inspect {err.path}: {one_line(str(err))}"
        return info
    if info["would_create"]:
        info["status"] = "missing"
    return info


def _tmp_tree_report(xdg: Optional[str], sock_dir: str) -> Optional[dict[str, Any]]:
    """Without a usable XDG_RUNTIME_DIR: the per-user /tmp tree in use and,
    when another user took the v1 name first, whose it is (the tree then
    moved to a private alternative; see the security model)."""
    if xdg and os.path.isabs(xdg):
        return None
    v1 = f"/tmp/running-process-{os.getuid()}"
    taken: Optional[int] = None
    try:
        st = os.lstat(v1)
        if not (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()):
            taken = st.st_uid
    except OSError:
        pass
    return {"v1_path": v1, "path": os.path.dirname(sock_dir), "taken_by_uid": taken}


def _environment_report(def_dir: Optional[str]) -> dict[str, Any]:
    """The scrub list, which variables of this environment it would keep
    from a backend, and the environment policy of each saved definition."""
    scrub = list(rp.DEFAULT_ENV_SCRUB)

    def scrubbed(name: str) -> bool:
        return any(name.startswith(r[:-1]) if r.endswith("*") else name == r for r in scrub)

    definitions: dict[str, str] = {}
    if def_dir is not None and os.path.isdir(def_dir):
        for entry in sorted(os.listdir(def_dir)):
            if not entry.endswith(".servicedef"):
                continue
            try:
                sd = rp.ServiceDefinition.load_file(os.path.join(def_dir, entry))
            except rp.RunningProcessError as err:
                definitions[entry[: -len(".servicedef")]] = f"unreadable: {one_line(str(err))}"
                continue
            definitions[sd.service_name] = sd.env_summary
    return {
        "scrub": scrub,
        "scrubbed_here": sorted(name for name in os.environ if scrubbed(name)),
        "definitions": definitions,
    }


def cmd_doctor(args: argparse.Namespace) -> int:
    sock_dir = rp.socket_dir()
    state_dir = args.state_dir or rp.BackendPool(make_launcher()).state_dir
    # Made absolute against the working directory as the store does.
    def_dir = os.path.join(os.getcwd(), args.dir or rp.service_def_dir())
    base = rp.socket_dir_base()
    dirs = {
        "socket_dir": check_dir(sock_dir, base),
        # The pool's default state directory hangs from the same base as the
        # sockets; one given on the command line from its parent.
        "state_dir": check_dir(state_dir, None if args.state_dir else base),
        "service_def_dir": check_dir(def_dir, check=rp.check_service_def_dir),
    }
    machine_ids = [p for p in rp.MACHINE_ID_PATHS if os.path.isfile(p)]
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
        problems.append(f"no machine id ({' nor '.join(rp.MACHINE_ID_PATHS)})")
    # The v1 name where it fits, else the compact one (see the allocator).
    dir_len = len(os.fsencode(sock_dir)) + 1
    compact_names = dir_len + rp.BACKEND_SOCKET_NAME_LEN > rp.SUN_PATH_MAX
    name_len = rp.COMPACT_BACKEND_SOCKET_NAME_LEN if compact_names else rp.BACKEND_SOCKET_NAME_LEN
    socket_path_len = dir_len + name_len
    budget = rp.SUN_PATH_MAX - socket_path_len
    if budget < 0:
        problems.append(
            f"backend socket paths would be {socket_path_len} bytes even with compact names, "
            f"over the {rp.SUN_PATH_MAX} limit"
        )
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    tmp_tree = _tmp_tree_report(xdg, sock_dir)
    environment = _environment_report(def_dir if dirs["service_def_dir"]["status"] != "insecure" else None)
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
        "tmp_tree": tmp_tree,
        "sun_path_max": rp.SUN_PATH_MAX,
        "backend_socket_path_len": socket_path_len,
        "sun_path_budget": budget,
        "compact_socket_names": compact_names,
        "environment": environment,
        "insecure": insecure,
        "problems": problems,
        "exit_code": code,
    }
    if args.json:
        emit_json(report)
    else:
        rows: list[tuple[str, str]] = []
        for name, d in dirs.items():
            if d["status"] == "insecure":
                detail = f" (uid {d['owner_uid']}, mode {d['mode']})" if d["exists"] else ""
                rows.append((name.replace("_", " "), f"{d['path']}{detail} INSECURE: {d['problem']}"))
            elif d["exists"]:
                detail = f"uid {d['owner_uid']}, mode {d['mode']}"
                rows.append((name.replace("_", " "), f"{d['path']} ({detail}) OK"))
            else:
                rows.append((name.replace("_", " "), f"{d['path']} (missing; created 0700 on first use) OK"))
        rows += [
            ("machine id", machine_ids[0] if machine_ids else "MISSING"),
            ("boot id", boot or "UNREADABLE"),
            ("user sid hash", sid or "UNAVAILABLE"),
            ("XDG_RUNTIME_DIR", xdg if xdg else "(unset: sockets go under /tmp)"),
            *(
                [
                    (
                        "/tmp tree",
                        f"{tmp_tree['v1_path']} belongs to uid {tmp_tree['taken_by_uid']} (another user "
                        "took its name); "
                        + (
                            f"using {tmp_tree['path']} instead"
                            if tmp_tree["path"] != tmp_tree["v1_path"]
                            else "set HOME (or XDG_RUNTIME_DIR) so a private alternative can be used"
                        ),
                    )
                ]
                if tmp_tree and tmp_tree["taken_by_uid"] is not None
                else []
            ),
            (
                "sun_path budget",
                f"{budget} bytes spare ({socket_path_len} of {rp.SUN_PATH_MAX} used by backend socket paths"
                + (", compact names" if compact_names else "")
                + ")"
                + ("" if budget >= 0 else " TOO LONG"),
            ),
        ]
        scrubbed = environment["scrubbed_here"]
        rows.append(
            (
                "env scrub",
                f"{len(environment['scrub'])} rules; "
                + (f"would remove {', '.join(scrubbed)} from here" if scrubbed else "nothing to remove here"),
            )
        )
        rows += [(f"env of {name}", summary) for name, summary in environment["definitions"].items()]
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
