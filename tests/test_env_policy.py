"""The environment a backend starts with: the definition's policy, the scrub
list, ``env_allow`` and ``env_set``, read from the real backend's
``/proc/<pid>/environ``; the policy's ``PATH`` is where a ``#!/usr/bin/env``
script's program is found; the fields survive the wire and the CLI shows
them."""

from __future__ import annotations

import json
import os
import pwd
import sys
from pathlib import Path
from typing import Any

import pytest

import running_process as rp
from support.launch import BackendDirs, Launches, key_for

INJECTION = {
    "PYTHONPATH": "/tmp/evil",
    "PYTHONSTARTUP": "/tmp/evil.py",
    "PYTHONHOME": "/tmp/evil-home",
    "NODE_OPTIONS": "--require /tmp/evil.js",
    "PERL5OPT": "-Mevil",
    "PERL5LIB": "/tmp/evil",
    "RUBYOPT": "-revil",
    "JAVA_TOOL_OPTIONS": "-javaagent:/tmp/evil.jar",
    "BASH_ENV": "/tmp/evil.sh",
    "ENV": "/tmp/evil.sh",
    "BASH_FUNC_ls%%": "() { evil; }",
    "GLIBC_TUNABLES": "glibc.malloc.check=3",
    "MALLOC_ARENA_MAX": "1",
}


def environ_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        entries = f.read().split(b"\0")
    pairs = (entry.decode(errors="replace").partition("=") for entry in entries if entry)
    return {name: value for name, _, value in pairs}


def launched_env(dirs: BackendDirs, launches: Launches, sd: rp.ServiceDefinition) -> dict[str, str]:
    handle = launches.launch(dirs.launcher(), key_for(sd), sd)
    handle.verify()
    return environ_of(handle.pid)


def without_launch_values(env: dict[str, str]) -> dict[str, str]:
    """What stays the same from one launch to the next (not the endpoint,
    trace, listener, digest or log of this launch)."""
    varying = ("RUNNING_PROCESS_BROKER_", "RUNNING_PROCESS_EXE_DIGEST", "RUNNING_PROCESS_LOG_")
    return {k: v for k, v in env.items() if not k.startswith(varying)}


def test_inherit_keeps_the_callers_environment_without_injection_variables(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in INJECTION.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TOOL_SETTING", "kept")
    env = launched_env(dirs, launches, dirs.sd())
    assert sorted(set(INJECTION) & set(env)) == []
    assert env["TOOL_SETTING"] == "kept"
    assert env["PATH"] == os.environ["PATH"]
    assert rp.ENV_IS_DAEMON not in env
    assert set(INJECTION) - {"BASH_FUNC_ls%%", "MALLOC_ARENA_MAX"} <= set(rp.DEFAULT_ENV_SCRUB)


def test_baseline_is_the_login_environment_whoever_launches(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two callers with different environments get the same backend
    environment: USER, LOGNAME, HOME and SHELL from the password database,
    PATH rebuilt, the locale carried, what env_allow names (never what the
    scrub list holds), env_set, and RUNNING_PROCESS_IS_DAEMON=1."""
    sd = dirs.sd(
        env_policy=rp.EnvPolicy.BASELINE,
        env_allow=["ZCCACHE_*", "PYTHONPATH"],
        env_set={"RUST_LOG": "info"},
    )
    account = pwd.getpwuid(os.geteuid())
    seen = []
    for caller in ("first", "second"):
        monkeypatch.setenv("HOME", f"/nonexistent/{caller}")
        monkeypatch.setenv("USER", caller)
        monkeypatch.setenv("SHELL", "/bin/false")
        monkeypatch.setenv("TOOL_SETTING", caller)
        monkeypatch.setenv("PYTHONPATH", f"/tmp/{caller}")
        monkeypatch.setenv("LANG", "C.UTF-8")
        monkeypatch.setenv("ZCCACHE_DIR", "/cache")
        env = without_launch_values(launched_env(dirs, launches, sd))
        seen.append(env)
    assert seen[0] == seen[1]
    env = seen[0]
    assert (env["USER"], env["LOGNAME"], env["HOME"], env["SHELL"]) == (
        account.pw_name,
        account.pw_name,
        account.pw_dir,
        account.pw_shell,
    )
    login_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert env["PATH"] == (login_path if os.geteuid() == 0 else "/usr/local/bin:/usr/bin:/bin")
    assert env["LANG"] == "C.UTF-8" and env["ZCCACHE_DIR"] == "/cache"
    assert env["RUST_LOG"] == "info" and env[rp.ENV_IS_DAEMON] == "1"
    assert "TOOL_SETTING" not in env and "PYTHONPATH" not in env


def test_clean_takes_only_what_is_allowed_and_set(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOOL_TOKEN", "abc")
    monkeypatch.setenv("TOOL_SETTING", "dropped")
    sd = dirs.sd(env_policy=rp.EnvPolicy.CLEAN, env_allow=["TOOL_TOKEN"], env_set={"MODE": "ci"})
    env = without_launch_values(launched_env(dirs, launches, sd))
    assert env == {"TOOL_TOKEN": "abc", "MODE": "ci"}


def env_shebang(dirs: BackendDirs) -> Path:
    return dirs.script_with("env-backend", "/usr/bin/env rp-test-python")


def test_an_env_script_finds_its_program_on_the_policys_path(
    dirs: BackendDirs, launches: Launches, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``#!/usr/bin/env NAME`` is looked up on the PATH the backend gets,
    not on the caller's: found through env_set under CLEAN although the
    caller's PATH lacks it; not found under BASELINE although the caller's
    PATH has it."""
    tools = dirs.root / "tools"
    tools.mkdir(mode=0o755)
    (tools / "rp-test-python").symlink_to(sys.executable)
    script = env_shebang(dirs)
    clean = dirs.sd(script, env_policy=rp.EnvPolicy.CLEAN, env_set={"PATH": str(tools)})
    handle = launches.launch(dirs.launcher(), key_for(clean), clean)
    assert os.readlink(f"/proc/{handle.pid}/exe") == os.path.realpath(sys.executable)
    handle.verify()
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    baseline = dirs.sd(script, env_policy=rp.EnvPolicy.BASELINE)
    with pytest.raises(rp.BinaryPolicyError) as info:
        baseline.check_binary()
    assert info.value.variant == "BadInterpreter"
    assert "not on the launch PATH" in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("env_allow", ["A B"]),
        ("env_allow", ["1X"]),
        ("env_allow", ["*"]),
        ("env_allow", ["X=1"]),
        ("env_allow", [f"V{i}" for i in range(65)]),
        ("env_set", {"RUNNING_PROCESS_BROKER_V1_BACKEND_PIPE": "/forged"}),
        ("env_set", {"LISTEN_FDS": "1"}),
        ("env_set", {"RUNNING_PROCESS_IS_DAEMON": "0"}),
        ("env_set", {"A=B": "1"}),
        ("env_set", {"": "1"}),
        ("env_set", {"X": "a\0b"}),
        ("env_set", {"X": "x" * 4097}),
    ],
)
def test_bad_environment_fields_are_refused(dirs: BackendDirs, field: str, value: Any) -> None:
    fields: dict[str, Any] = {field: value}
    with pytest.raises(rp.InvalidServiceDefinitionError) as info:
        dirs.sd(None, **fields)
    assert info.value.field == field


def test_the_environment_fields_survive_the_wire_and_show_in_repr(dirs: BackendDirs) -> None:
    sd = dirs.sd(
        env_policy=rp.EnvPolicy.BASELINE,
        env_allow=["ZCCACHE_*", "TOOL_TOKEN"],
        env_set={"RUST_LOG": "info", "MODE": "ci"},
    )
    again = rp.ServiceDefinition.from_bytes(sd.to_bytes())
    assert again == sd
    assert (again.env_policy, again.env_allow, again.env_set) == (
        rp.EnvPolicy.BASELINE,
        ["ZCCACHE_*", "TOOL_TOKEN"],
        {"MODE": "ci", "RUST_LOG": "info"},
    )
    assert "env_policy=EnvPolicy.BASELINE" in repr(sd)
    assert "env_set={'MODE': 'ci', 'RUST_LOG': 'info'}" in repr(sd)
    assert sd.env_summary == "baseline +ZCCACHE_*,TOOL_TOKEN set MODE,RUST_LOG"
    assert dirs.sd().env_summary == "inherit"
    # A definition without the fields (as a first-generation peer writes
    # it) decodes to the defaults.
    assert rp.ServiceDefinition.from_bytes(dirs.sd().to_bytes()).env_policy == rp.EnvPolicy.INHERIT


def test_an_unknown_policy_on_the_wire_is_a_decode_error(dirs: BackendDirs) -> None:
    # Field 1003 (key varint 0xD8 0x3E), value 7: no such policy.
    data = dirs.sd().to_bytes() + bytes([0xD8, 0x3E, 7])
    with pytest.raises(rp.DecodeError):
        rp.ServiceDefinition.from_bytes(data)


def test_the_pool_records_the_policy_for_ls(dirs: BackendDirs) -> None:
    pool = rp.BackendPool(dirs.launcher(), dirs.root / "state")
    sd = dirs.sd(env_policy=rp.EnvPolicy.CLEAN, env_allow=["TOOL_*"])
    try:
        pool.get_or_launch(key_for(sd), sd)
        (entry,) = pool.list()
        assert entry.environment == "clean +TOOL_*"
        manifest = json.loads(next((dirs.root / "state").glob("*.json")).read_text())
        assert manifest["environment"] == "clean +TOOL_*"
    finally:
        pool.stop_all()


def test_another_process_adopts_an_env_script_on_the_policys_path_too(
    dirs: BackendDirs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The adopter looks the interpreter up where the launch did (the
    policy's PATH), not on its own PATH, which here lacks it: the backend is
    adopted, not replaced."""
    tools = dirs.root / "tools"
    tools.mkdir(mode=0o755)
    (tools / "rp-test-python").symlink_to(sys.executable)
    sd = dirs.sd(env_shebang(dirs), env_policy=rp.EnvPolicy.CLEAN, env_set={"PATH": str(tools)})
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    state = dirs.root / "state"
    first = rp.BackendPool(dirs.launcher(), state)
    try:
        handle = first.get_or_launch(key_for(sd), sd)
        other = rp.BackendPool(dirs.launcher(), state)
        assert other.get_or_launch(key_for(sd), sd).pid == handle.pid
    finally:
        first.stop_all()
