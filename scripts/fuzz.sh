#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/) for a short time: `scripts/fuzz.sh [SECONDS]`
# (default 30 per target; 0 = only build them). Two targets at a time (JOBS=2), at
# `nice -n 19` (NICE), each until SECONDS or RUNS executions (default 10 million),
# whichever comes first, with libFuzzer's 10 s per-input timeout and a 2 GB RSS
# limit. A full campaign (the numbers in fuzz/README.md) is
# `scripts/fuzz.sh 600`: 19 targets, two at a time, at most 95 minutes on 2 cores
# (a target stops earlier once it reaches 10 million executions).
#
# Needs a nightly toolchain (libFuzzer's instrumentation); without one it says so and
# exits 0: CI does not run it. Crashes, timeouts and OOMs land in
# fuzz/artifacts/TARGET/ and make the script exit 1; logs in fuzz/logs/.
set -uo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-30}"
RUNS="${RUNS:-10000000}"
JOBS="${JOBS:-2}"
NICE="${NICE:-19}"

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly' || ! cargo +nightly --version >/dev/null 2>&1; then
    echo "scripts/fuzz.sh: skipped: no nightly toolchain (rustup toolchain install nightly); the property tests in tests/properties.rs cover the same invariants on stable"
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "scripts/fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked || { echo "scripts/fuzz.sh: skipped: cannot install cargo-fuzz"; exit 0; }
fi

cd fuzz
# -O: release with debug assertions; no sanitizer: the library is safe Rust, and
# libFuzzer still catches panics, timeouts and memory blow-ups
FLAGS=(-O -s none)
nice -n "$NICE" cargo +nightly fuzz build "${FLAGS[@]}" || exit 1
[ "$SECS" = 0 ] && exit 0
mapfile -t TARGETS < <(cargo +nightly fuzz list)

dict_of() {
    case "$1" in
        cookie_header | session_cookies | set_cookie) echo dict/cookie.dict ;;
        jws_verify | jwe_open | remint) echo dict/token.dict ;;
        path_normalise | return_path | matcher_compile | regex_differential) echo dict/path.dict ;;
        config_load | manifest) echo dict/config.dict ;;
        vault_handle | vault_claims) echo dict/vault.dict ;;
        *) echo dict/headers.dict ;;
    esac
}

run_one() {
    local t="$1" log="logs/$1.log"
    mkdir -p "corpus/$t" "artifacts/$t" logs
    nice -n "$NICE" cargo +nightly fuzz run "${FLAGS[@]}" "$t" -- \
        -max_total_time="$SECS" -runs="$RUNS" -timeout=10 -rss_limit_mb=2048 \
        -dict="$(dict_of "$t")" -print_final_stats=1 >"$log" 2>&1
    local rc=$?
    # the last status line: "#N ... cov: C ft: F ... exec/s: E ..."
    local last
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    local runs cov ft eps
    runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$')
    cov=$(grep -oE 'cov: [0-9]+' <<<"$last" | grep -oE '[0-9]+')
    ft=$(grep -oE 'ft: [0-9]+' <<<"$last" | grep -oE '[0-9]+')
    eps=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$')
    printf '%s\texit=%s\truns=%s\texec/s=%s\tcov=%s\tft=%s\tsecs=%s\n' \
        "$t" "$rc" "${runs:-?}" "${eps:-?}" "${cov:-?}" "${ft:-?}" \
        "$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log" | grep -oE 'in [0-9]+' | grep -oE '[0-9]+')"
    return $rc
}

mkdir -p logs
failed=0
pids=()
for t in "${TARGETS[@]}"; do
    run_one "$t" >"logs/$t.summary" &
    pids+=($!)
    if [ "${#pids[@]}" -ge "$JOBS" ]; then
        wait "${pids[0]}" || failed=1
        pids=("${pids[@]:1}")
    fi
done
for p in "${pids[@]}"; do wait "$p" || failed=1; done
cat logs/*.summary
if [ "$failed" != 0 ]; then
    echo "scripts/fuzz.sh: a target failed: see fuzz/artifacts/ and fuzz/logs/" >&2
fi
exit "$failed"
