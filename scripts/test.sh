#!/usr/bin/env bash
# The whole test suite, from a bare machine with Rust and Python 3.9+:
# builds and installs the package with its test extras into .venv, then runs
# format and lint checks, the Rust tests, pytest, mypy --strict, stubtest and
# a short run of every fuzz target (scripts/fuzz.sh; FUZZ_SECONDS per target)
# and a smoke run of the benchmark harness.
# Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

step() { printf '\n==> %s\n' "$*"; }

step "virtualenv $VENV and package install (release build)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q --force-reinstall --no-deps .
"$VENV/bin/python" -m pip install -q '.[test]'

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy (core, and core + Python bindings)"
cargo clippy --all-targets -- -D warnings
cargo clippy --all-targets --features python -- -D warnings

step "cargo test"
cargo test

step "pytest"
"$VENV/bin/python" -m pytest

step "mypy --strict"
"$VENV/bin/python" -m mypy --strict

step "stubtest"
"$VENV/bin/python" -m mypy.stubtest running_process._native

step "fuzz smoke (every fuzz target of fuzz/ for ${FUZZ_SECONDS:-5} s; fails on any crash)"
scripts/fuzz.sh "${FUZZ_SECONDS:-5}"

step "benchmark harness smoke (bench/run.py --quick: every figure measured once, no target asserted)"
"$VENV/bin/python" bench/run.py --quick --out "$(mktemp -d)" >/dev/null

step "demo"
"$VENV/bin/python" -m running_process demo >/dev/null

printf '\nall checks passed\n'
