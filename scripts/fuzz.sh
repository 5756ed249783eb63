#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ on stable Rust and runs each one in
# turn for SECONDS (default 60), starting from the committed seed corpus.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# New corpus entries go to $FUZZ_TARGET_DIR/corpus/<target> (kept between runs,
# never committed); a crash, an outsized allocation, a leak of descriptors or
# a timeout leaves its input in fuzz/artifacts/<target>/ and makes the script
# exit 1 after the remaining targets have run. Prints one line of figures per
# target. Environment: FUZZ_JOBS_NICE (niceness, default 0), FUZZ_RSS_MB
# (default 2048), FUZZ_TARGET_DIR (where the instrumented build, the grown
# corpus and the logs go; default fuzz/target).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${1:-60}
shift $(( $# > 0 ? 1 : 0 ))
ALL_TARGETS=(frame probe probe_socket daemon_process daemon_json service_definition servicedef_store pool_manifest)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")
RSS_MB=${FUZZ_RSS_MB:-2048}
NICE=${FUZZ_JOBS_NICE:-0}

# Longest input per target: frames and files of a few KiB reach every
# branch; the JSON decoders get more room for nesting and escapes.
max_len() {
    case "$1" in
        daemon_json | pool_manifest) echo 16384 ;;
        *) echo 8192 ;;
    esac
}

HOST=$(rustc -vV | sed -n 's/^host: //p')
# Coverage instrumentation with stable flags (what cargo-fuzz passes), so
# neither nightly nor cargo-fuzz is needed. Built for an explicit --target
# so build scripts and proc macros are not instrumented, into a target
# directory of its own so the main target/ directory is left alone.
export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing"
TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/fuzz/target}
mkdir -p "$TARGET_DIR"
export CARGO_TARGET_DIR="$TARGET_DIR"
unset CARGO_BUILD_TARGET

printf '==> building fuzz targets (%s)\n' "$HOST"
build_started=$(date +%s)
# fuzz/Cargo.lock pins the fuzz crate's own dependencies; not --locked, so a
# dependency added to the main crate does not break this build.
(cd fuzz && cargo build --release --target "$HOST" --bins -q)
printf 'built in %ss\n' "$(( $(date +%s) - build_started ))"

BIN_DIR=$TARGET_DIR/$HOST/release
failed=()
printf '\n%-20s %10s %9s %6s %7s %7s %8s %7s %s\n' \
    target execs exec/s secs cov ft corpus rss_mb result
for target in "${TARGETS[@]}"; do
    work=$TARGET_DIR/corpus/$target
    artifacts=fuzz/artifacts/$target
    mkdir -p "$work" "$artifacts" "fuzz/corpus/$target"
    log=$TARGET_DIR/$target.log
    status=0
    nice -n "$NICE" "$BIN_DIR/$target" \
        -max_total_time="$SECONDS_PER_TARGET" \
        -rss_limit_mb="$RSS_MB" \
        -max_len="$(max_len "$target")" \
        -timeout=20 \
        -print_final_stats=1 \
        -artifact_prefix="$artifacts/" \
        "$work" "fuzz/corpus/$target" >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corpus=$(find "$work" -type f | wc -l)
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    if [ "$status" -eq 0 ]; then
        result=ok
    else
        result="FAILED (exit $status; log $log, inputs in $artifacts/)"
        failed+=("$target")
    fi
    printf '%-20s %10s %9s %6s %7s %7s %8s %7s %s\n' \
        "$target" "${execs:--}" "${speed:--}" "${secs:--}" "${cov:--}" "${ft:--}" \
        "$corpus" "${rss:--}" "$result"
done

if [ ${#failed[@]} -gt 0 ]; then
    printf '\nfuzzing found failures in: %s\n' "${failed[*]}" >&2
    for target in "${failed[@]}"; do
        printf '\n--- %s (from %s/%s.log)\n' "$target" "$TARGET_DIR" "$target" >&2
        grep -m 6 -A 1 -E 'panicked at|^fuzz: |ERROR: libFuzzer' "$TARGET_DIR/$target.log" >&2 || true
        tail -n 6 "$TARGET_DIR/$target.log" >&2
    done
    exit 1
fi
printf '\nno crashes\n'
