#!/usr/bin/env bash
# loadtest/bench.sh — side-by-side load runs: direct, HAProxy (splice-auto, no splice, forced
# splice) and rolegate, interleaved in rounds, medians and ratios in one markdown table.
#
#   loadtest/bench.sh                  full run: 3 rounds (~20 min on 2 cores), results written to
#                                      loadtest/results/<date>-<rev>.md and .json
#   loadtest/bench.sh --rounds 5       more rounds (medians of 5; ~35 min)
#   loadtest/bench.sh --smoke          everything tiny, 1 round (well under a minute; CI runs it
#                                      from tests/it/loadtest_smoke.rs); results go to a temp dir
#   loadtest/bench.sh --only iperf_1_fwd,churn   some workloads only (diagnosis)
#   loadtest/bench.sh --rolegate-b OTHER_BIN [--rolegate-b-env K=V]   a sixth column: A/B of a change
#
# Needs root (apt-get installs haproxy, iperf3, redis-tools/server, pgbench when missing, with a
# policy-rc.d that keeps their services from starting) and the lab's PostgreSQL
# (loadtest/lab.sh up pg is run here). Loopback only; every run is bounded in time; everything
# started is stopped by pid. Workloads and setups: see docs/performance.md.
#
# Environment: CARGO_TARGET_DIR (where the release build lands), ROLEGATE_BIN (use this binary
# instead of building; BENCH_REV labels it in the results), BENCH_PORT_BASE (default 27000; ports
# BASE..BASE+699 must be free), BENCH_OUT (results directory), LAB_DIR (the lab's state directory).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=loadtest/bench/lib.sh
source "$ROOT/loadtest/bench/lib.sh"

smoke=0
args=()
for a in "$@"; do
    case $a in
        --smoke) smoke=1; args+=("$a") ;;
        -h|--help) sed -n '2,/^set -euo/{/^#/p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) args+=("$a") ;;
    esac
done

ensure_pkgs haproxy=haproxy iperf3=iperf3 redis-benchmark=redis-tools redis-server=redis-server \
    pgbench=postgresql-client psql=postgresql-client bpftool=bpftool

# The lab's PostgreSQL pair (pgbench's target, and what the rolegate postgres cluster checks).
bash "$ROOT/loadtest/lab.sh" up pg >&2
eval "$(bash "$ROOT/loadtest/lab.sh" env)"

if [[ -n ${ROLEGATE_BIN:-} ]]; then
    bin=$ROLEGATE_BIN
else
    echo "building rolegate (release)..." >&2
    bin=$(build_rolegate "$ROOT")
fi
[[ -x $bin ]] || { echo "no rolegate binary at $bin" >&2; exit 1; }

rev=$(git -C "$ROOT" rev-parse --short=10 HEAD 2>/dev/null || echo unknown)
if ! git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null; then
    rev="$rev+dirty"   # src/ differs from the commit: the binary is not exactly $rev
fi
export BENCH_REV=${BENCH_REV:-$rev}   # override when ROLEGATE_BIN is a binary built elsewhere

out=${BENCH_OUT:-}
if [[ -z $out && $smoke == 1 ]]; then out=${TMPDIR:-/tmp}/rolegate-bench-smoke; fi
[[ -n $out ]] && args+=(--out "$out")

exec /usr/bin/python3 "$ROOT/loadtest/bench/bench.py" --rolegate "$bin" "${args[@]}"
