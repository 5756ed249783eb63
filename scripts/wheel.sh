#!/usr/bin/env bash
# Builds what users install and proves it installs: an abi3 wheel for
# CPython 3.9 and later, tagged manylinux2014 (glibc 2.17 and later), and the
# sdist, both into WHEEL_OUT (default dist/). Then it checks the wheel's tag,
# the C library symbols its extension takes (none newer than glibc 2.17, none
# unversioned), installs it into a fresh virtual environment from the wheel
# alone (no index, no source build, no Rust toolchain on PATH) and, from
# there, runs the demo and launches, verifies and stops the installed example
# backend. The sdist is unpacked and type-checked on its own, so it holds
# what a source build needs.
#
# The build tools (maturin, zig through the `ziglang` package, auditwheel)
# come from the package index into a virtual environment under RP_CACHE_DIR
# (default ~/.cache/running-process), with the cargo target directory beside
# it, so later runs rebuild only what changed. A first run takes about two
# minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
CACHE_DIR=${RP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/running-process}
OUT=${WHEEL_OUT:-dist}
BUILD_VENV=$CACHE_DIR/wheel-venv
ARCH=$(uname -m)

[ -x "$BUILD_VENV/bin/python" ] || "$PYTHON" -m venv "$BUILD_VENV"
"$BUILD_VENV/bin/python" -m pip install -q --upgrade pip
"$BUILD_VENV/bin/python" -m pip install -q 'maturin>=1.8,<2' 'ziglang>=0.13,<0.18' 'auditwheel>=6,<7'

rm -rf "$OUT"
mkdir -p "$OUT"
# zig links against the glibc 2.17 symbol set, whatever this machine runs;
# maturin finds it as `python3 -m ziglang`, so the build environment goes
# first on PATH.
PATH="$BUILD_VENV/bin:$PATH" maturin build --release --zig --compatibility manylinux2014 \
    --target-dir "$CACHE_DIR/wheel-target" --out "$OUT"
PATH="$BUILD_VENV/bin:$PATH" maturin sdist --out "$OUT"

shopt -s nullglob
wheels=("$OUT"/*.whl)
sdists=("$OUT"/*.tar.gz)
[ "${#wheels[@]}" -eq 1 ] || { echo "expected one wheel in $OUT, found ${#wheels[@]}" >&2; exit 1; }
[ "${#sdists[@]}" -eq 1 ] || { echo "expected one sdist in $OUT, found ${#sdists[@]}" >&2; exit 1; }
wheel=${wheels[0]}
case "$(basename "$wheel")" in
    running_process-*-cp39-abi3-manylinux2014_"$ARCH".manylinux_2_17_"$ARCH".whl) ;;
    *) echo "wheel tag is not cp39-abi3-manylinux2014_$ARCH: $(basename "$wheel")" >&2; exit 1 ;;
esac
"$BUILD_VENV/bin/auditwheel" show "$wheel" | tee "$OUT/auditwheel.txt"
tr -s ' \n' ' ' <"$OUT/auditwheel.txt" | grep -q "consistent with the following platform tag: \"manylinux_2_17_$ARCH\"" ||
    { echo "auditwheel does not place the wheel at manylinux_2_17_$ARCH" >&2; exit 1; }
"$BUILD_VENV/bin/python" scripts/wheel_symbols.py "$wheel"

check=$(mktemp -d)
trap 'rm -rf "$check"' EXIT

# The sdist holds everything a source build needs: it type-checks on its own.
mkdir "$check/sdist"
tar -xzf "${sdists[0]}" -C "$check/sdist"
(cd "$check"/sdist/* && CARGO_TARGET_DIR="$CACHE_DIR/sdist-target" cargo check -q --locked --features python)
echo "sdist: complete (cargo check --features python passes in the unpacked tree)"

# A fresh environment that can only take the wheel (a source build would
# fail), installed and used with no Rust toolchain on PATH.
"$PYTHON" -m venv "$check/venv"
# The few tools used below, found while the whole PATH is there (a system
# Rust may live in /usr/bin).
mkdir_=$(command -v mkdir)
cp_=$(command -v cp)
no_rust_path=$(printf '%s\n' "$PATH" | tr ':' '\n' | while read -r dir; do
    if [ -n "$dir" ] && [ ! -e "$dir/cargo" ] && [ ! -e "$dir/rustc" ]; then printf '%s:' "$dir"; fi
done)
(
    export PATH="${no_rust_path%:}"
    if command -v cargo >/dev/null || command -v rustc >/dev/null; then
        echo "a Rust toolchain is still on PATH" >&2
        exit 1
    fi
    "$check/venv/bin/python" -m pip install -q --no-index --only-binary :all: "$wheel"
    cd "$check"
    export XDG_RUNTIME_DIR="$check/run" XDG_STATE_HOME="$check/state" XDG_CONFIG_HOME="$check/config"
    "$mkdir_" -m 700 "$XDG_RUNTIME_DIR"
    venv/bin/running-process demo
    "$mkdir_" -p echo/1.0.0
    "$cp_" venv/bin/running-process-echo-backend echo/1.0.0/echo
    venv/bin/running-process servicedef write echo --isolation shared --binary echo/1.0.0/echo --root echo/1.0.0
    venv/bin/running-process launch echo --version 1.0.0
    venv/bin/running-process ls
    venv/bin/running-process stop shared/echo@1.0.0
)
printf '\nwheel and sdist in %s:\n' "$OUT"
ls -l "$OUT"
