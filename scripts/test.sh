#!/usr/bin/env bash
# The whole test suite, from a bare machine with Rust and Python 3.9+:
# builds and installs the package with its test extras into .venv, then runs
# format and lint checks (rustfmt, clippy, ruff), the Rust tests, every
# pytest suite (the real-process, hostile and soak ones included), mypy
# --strict, stubtest, a short run of every fuzz target (scripts/fuzz.sh;
# FUZZ_SECONDS per target), a smoke run of the benchmark harness, the wheel
# build and its install check (scripts/wheel.sh) and the demo. Exits
# non-zero on the first failure and prints how long each step took.
#
# A developer's quick check before a commit is `pytest` alone: its default
# selection leaves out the suites marked slow, hostile and soak.
#
# Build products that do not belong to the checkout (the instrumented fuzz
# build, the wheel's build tools and target directory) live under
# RP_CACHE_DIR (default ~/.cache/running-process), so a fresh clone does not
# rebuild them.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
CACHE_DIR=${RP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/running-process}
PYTEST_WORKERS=${PYTEST_WORKERS:-2}

started=$SECONDS
step_started=$SECONDS
step_name=""
timings=()
finish_step() {
    if [ -n "$step_name" ]; then
        timings+=("$(printf '%5ss  %s' "$((SECONDS - step_started))" "$step_name")")
    fi
}
step() {
    finish_step
    step_name=$*
    step_started=$SECONDS
    printf '\n==> %s\n' "$*"
}

step "virtualenv $VENV and package install (release build)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q --force-reinstall --no-deps .
"$VENV/bin/python" -m pip install -q '.[test,bench]'

step "format: cargo fmt --check, ruff format --check"
cargo fmt --check
"$VENV/bin/python" -m ruff format --check python tests bench

step "lint: cargo clippy (core, and core + Python bindings), ruff check"
cargo clippy --all-targets -- -D warnings
cargo clippy --all-targets --features python,bench -- -D warnings
"$VENV/bin/python" -m ruff check python tests bench

step "cargo test"
cargo test

step "pytest, every suite (slow, hostile and soak included) on $PYTEST_WORKERS workers"
"$VENV/bin/python" -m pytest -m "" -n "$PYTEST_WORKERS"

step "mypy --strict"
"$VENV/bin/python" -m mypy --strict

step "stubtest"
"$VENV/bin/python" -m mypy.stubtest running_process._native

step "fuzz smoke (every fuzz target of fuzz/ for ${FUZZ_SECONDS:-5} s; fails on any crash)"
FUZZ_TARGET_DIR="$CACHE_DIR/fuzz-target" scripts/fuzz.sh "${FUZZ_SECONDS:-5}"

step "benchmark harness smoke (bench/run.py --quick: every figure measured once, no target asserted)"
"$VENV/bin/python" bench/run.py --quick --out "$(mktemp -d)" >/dev/null

step "wheel and sdist: manylinux2014 abi3 build, tag and symbol checks, install from the wheel alone and launch (scripts/wheel.sh)"
wheel_out=$(mktemp -d)
WHEEL_OUT=$wheel_out scripts/wheel.sh >/dev/null
rm -rf "$wheel_out"

step "demo"
"$VENV/bin/python" -m running_process demo >/dev/null

finish_step
printf '\nstep times:\n'
printf '%s\n' "${timings[@]}"
printf '%5ss  total\n' "$((SECONDS - started))"
printf '\nall checks passed\n'
