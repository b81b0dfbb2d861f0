#!/usr/bin/env bash
# Usage: fuzz/run.sh SECONDS [TARGET...]
#
# Installs cargo-fuzz when missing, seeds the corpora (seed.sh), builds every target once, then
# runs each named target (all of them by default) for SECONDS with libFuzzer, one after the
# other. Prints one summary line per target and exits non-zero if any target crashed (the input
# is left in fuzz/artifacts/<target>/; replay it with `fuzz/target/<triple>/release/<target> FILE`).
#
# Environment:
#   FUZZ_LOG        append the summary lines to this file
#   FUZZ_SANITIZER  libFuzzer build sanitizer (default none: the project forbids unsafe code, and
#                   overflow checks and debug assertions are on either way); e.g. address
#   FUZZ_JOBS       cargo build jobs (default 1, to leave the machine to others)
#   FUZZ_TIMEOUT    seconds one input may take before libFuzzer calls it a hang (default 25)
set -euo pipefail

usage() { echo "usage: $0 SECONDS [TARGET...]" >&2; exit 2; }
[[ $# -ge 1 && $1 =~ ^[0-9]+$ && $1 -gt 0 ]] || usage
seconds=$1
shift

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
all=(envelope queue_message delivery_message entity_classify codec_decode stream_record webhook_headers domain)
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${all[@]}")
for t in "${targets[@]}"; do
    [[ -f fuzz_targets/$t.rs ]] || { echo "unknown target $t (have: ${all[*]})" >&2; exit 2; }
done

# Inputs longer than the body limit's order of magnitude only slow the search down; the id and
# domain parsers refuse anything near these lengths long before the end.
declare -A max_len=([domain]=1024 [entity_classify]=4096)

sanitizer=${FUZZ_SANITIZER:-none}
jobs=${FUZZ_JOBS:-1}
export CARGO_BUILD_JOBS=$jobs

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    nice -n 19 cargo install cargo-fuzz --locked -j "$jobs"
fi

echo "== seeding"
./seed.sh

echo "== building (sanitizer: $sanitizer)"
start=$(date +%s)
nice -n 19 cargo +nightly fuzz build -s "$sanitizer"
echo "== built in $(($(date +%s) - start)) s"

triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
bin=$here/target/$triple/release
mkdir -p target/logs

failed=0
summary=()
printf '%-18s %8s %12s %8s  %s\n' target seconds executions corpus result
for t in "${targets[@]}"; do
    mkdir -p "artifacts/$t" "corpus/$t"
    log=target/logs/$t.log
    t0=$(date +%s)
    set +e
    nice -n 19 "$bin/$t" "corpus/$t" \
        -max_total_time="$seconds" -timeout="${FUZZ_TIMEOUT:-25}" -rss_limit_mb=2048 \
        -max_len="${max_len[$t]:-65536}" -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" >"$log" 2>&1
    rc=$?
    set -e
    took=$(($(date +%s) - t0))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    # A crash ends the run before the final stats: take the last status line's count instead.
    [[ -n $execs ]] || execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    files=$(find "corpus/$t" -type f | wc -l)
    if [[ $rc -eq 0 ]]; then
        result=ok
    else
        failed=1
        artifact=$(grep -oE "artifacts/$t/[^ ]+" "$log" | tail -1 || true)
        result="FAILED (exit $rc${artifact:+, $artifact}; log $here/$log)"
        grep -E '^(==[0-9]+==|thread .* panicked|SUMMARY|panicked at)' "$log" | head -5 >&2 || true
    fi
    line=$(printf '%-18s %8s %12s %8s  %s' "$t" "$took" "${execs:-?}" "$files" "$result")
    echo "$line"
    summary+=("$line")
done

if [[ -n ${FUZZ_LOG:-} ]]; then
    {
        echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) fuzz/run.sh $seconds ${targets[*]}"
        printf '%s\n' "${summary[@]}"
    } >>"$FUZZ_LOG"
fi
exit $failed
