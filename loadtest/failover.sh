#!/usr/bin/env bash
# loadtest/failover.sh — failover figures: real clients writing through a proxy (a new connection
# every 20 ms + one long-lived session) while the lab moves the primary, for PostgreSQL, MariaDB
# and Redis, against rolegate (default config) and HAProxy configured the common way (Redis
# tcp-check on `role:master`; PostgreSQL/MariaDB httpchk `OPTIONS /primary`, against Patroni's
# REST API for the Patroni rows and a Patroni-style role responder for the plain pairs).
# Rows: switchover (without and with `rolegate hold`), hang (SIGSTOP + promote + resume), split
# (promote with the primary up, then demote it), patroni-switchover, patroni-kill,
# sentinel-failover. Prints one markdown table per row and writes
# loadtest/results/<date>-<rev>-failover.md/.json.
#
#   loadtest/failover.sh                         every row x engine x setup that applies (~20 min)
#   loadtest/failover.sh --smoke                 switchover x every engine x {rolegate default, HAProxy} + hang, split on redis (CI)
#   loadtest/failover.sh --rows hang,split --engines redis --setups "rolegate default,HAProxy"
#   loadtest/failover.sh --rows patroni,sentinel   (starts `lab.sh up patroni|sentinel` if down)
#   loadtest/failover.sh --rows patroni-kill --connect-timeout 20   clients that wait out a Patroni TTL
#   loadtest/failover/failover.py --help         every option (--detect, --split-for, --after-resume, --connect-timeout)
#
# Needs root (apt-get: haproxy, python3-psycopg, python3-pymysql, python3-redis; lab.sh up).
# Takes the lab tests' lock (${TMPDIR:-/tmp}/rolegate-lab-tests.lock) for the whole run, and puts
# the engine back with `lab.sh reset <engine>` before and after each scenario, also on failure.
# Environment: CARGO_TARGET_DIR, ROLEGATE_BIN (+ BENCH_REV to label it), FAILOVER_PORT_BASE (default 27600), BENCH_OUT, LAB_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=loadtest/bench/lib.sh
source "$ROOT/loadtest/bench/lib.sh"

smoke=0
for a in "$@"; do
    case $a in
        --smoke) smoke=1 ;;
        -h|--help) sed -n '2,/^set -euo/{/^#/p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    esac
done

ensure_pkgs haproxy=haproxy psql=postgresql-client mariadb=mariadb-client \
    py:psycopg=python3-psycopg py:pymysql=python3-pymysql py:redis=python3-redis

bash "$ROOT/loadtest/lab.sh" up >&2
eval "$(bash "$ROOT/loadtest/lab.sh" env)"

if [[ -n ${ROLEGATE_BIN:-} ]]; then
    bin=$ROLEGATE_BIN
else
    echo "building rolegate (release)..." >&2
    bin=$(build_rolegate "$ROOT")
fi
[[ -x $bin ]] || { echo "no rolegate binary at $bin" >&2; exit 1; }

rev=$(git -C "$ROOT" rev-parse --short=10 HEAD 2>/dev/null || echo unknown)
if ! git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null; then rev="$rev+dirty"; fi
export BENCH_REV=${BENCH_REV:-$rev}   # override when ROLEGATE_BIN is a binary built elsewhere

out=${BENCH_OUT:-}
if [[ -z $out && $smoke == 1 ]]; then out=${TMPDIR:-/tmp}/rolegate-failover-smoke; fi
extra=()
[[ -n $out ]] && extra+=(--out "$out")

exec /usr/bin/python3 "$ROOT/loadtest/failover/failover.py" --rolegate "$bin" "${extra[@]}" "$@"
