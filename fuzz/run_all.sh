#!/usr/bin/env bash
# fuzz/run_all.sh — runs every fuzz target for a number of inputs and prints one line of figures
# per target (the table in docs/reliability.md comes from here).
#
#   bash fuzz/run_all.sh                  1,000,000 inputs per target
#   RUNS=20000 bash fuzz/run_all.sh       fewer
#   TARGETS="config" bash fuzz/run_all.sh one target
#
# Each run starts from the committed seeds (fuzz/corpus/<target>) and grows a working corpus
# in $WORK/<target> (default /tmp/rolegate-fuzz), which is never committed; `cargo fuzz cmin`
# can shrink it into fuzz/corpus when new seeds are worth keeping. Per-input timeout and an RSS
# limit make a hang or unbounded memory a crash. Crashes land in fuzz/artifacts/<target>/.
#
# cargo-fuzz passes nightly-only flags (-Zsanitizer=address); on a stable toolchain
# RUSTC_BOOTSTRAP=1 allows them (set here). Needs: cargo install cargo-fuzz.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
export RUSTC_BOOTSTRAP=1
RUNS=${RUNS:-1000000}
WORK=${WORK:-/tmp/rolegate-fuzz}
TIMEOUT=${TIMEOUT:-5}         # seconds per input
RSS_MB=${RSS_MB:-2048}        # whole process, ASan included
MAX_TIME=${MAX_TIME:-7200}    # seconds per target, a safety net
TARGETS=${TARGETS:-"config redis_reply postgres_status mysql_status admin_request"}

cargo fuzz build >/dev/null
printf '%-16s %10s %8s %8s %10s %10s %8s\n' target inputs seconds exec/s corpus_n corpus_kb rss_mb
for t in $TARGETS; do
    mkdir -p "$WORK/$t"
    log="$WORK/$t.log"
    start=$(date +%s)
    cargo fuzz run "$t" "$WORK/$t" "corpus/$t" -- \
        -runs="$RUNS" -max_total_time="$MAX_TIME" -timeout="$TIMEOUT" \
        -rss_limit_mb="$RSS_MB" -malloc_limit_mb="$RSS_MB" -print_final_stats=1 \
        >"$log" 2>&1 || { echo "$t: FAILED, see $log and fuzz/artifacts/$t"; tail -40 "$log"; exit 1; }
    secs=$(( $(date +%s) - start ))
    done_line=$(grep -E '#[0-9]+[[:space:]]+DONE' "$log" | tail -1)
    execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$')
    rate=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$')
    rss=$(grep -oE 'stat::peak_rss_mb: *[0-9]+' "$log" | grep -oE '[0-9]+$')
    n=$(find "$WORK/$t" -type f | wc -l)
    kb=$(du -sk "$WORK/$t" | cut -f1)
    printf '%-16s %10s %8s %8s %10s %10s %8s\n' "$t" "$execs" "$secs" "$rate" "$n" "$kb" "$rss"
    echo "    $done_line"
done
