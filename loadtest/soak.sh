#!/usr/bin/env bash
# loadtest/soak.sh — the soak: mixed traffic through rolegate to the lab's PostgreSQL, MariaDB
# and Redis pairs (new connections, long sessions, 1 MiB bulk round trips) with a switchover
# every 20 s and a config reload (SIGHUP) every 5 s; then asserts no misrouted and no lost
# write, no fd or memory leak, no unexpected log line, and metrics that match the clients'
# counts. Prints a table; exit status 1 if anything failed. See loadtest/soak/soak.py.
#
#   loadtest/soak.sh                      60 s (what CI runs, via tests/it/soak_smoke.rs)
#   loadtest/soak.sh --duration 1h        the real thing (suffixes s, m, h)
#
# Needs root (apt-get: python3-psycopg, python3-pymysql, python3-redis; lab.sh up).
# Takes the lab tests' lock (${TMPDIR:-/tmp}/rolegate-lab-tests.lock) for the whole run unless
# SOAK_LAB_LOCK_HELD=1 says the caller holds it (tests/it/soak_smoke.rs does); never holds the
# lab's own $LAB_DIR.lock (lab.sh takes that itself).
# Environment: ROLEGATE_BIN (else a release build), SOAK_PORT_BASE (default 27800; ports
# BASE..BASE+2 and BASE+9), SOAK_OUT (report directory), LAB_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=loadtest/bench/lib.sh
source "$ROOT/loadtest/bench/lib.sh"

duration=60
while (($#)); do
    case $1 in
        --duration) duration=${2:?--duration needs a value}; shift 2 ;;
        --duration=*) duration=${1#*=}; shift ;;
        -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
case $duration in
    *h) seconds=$(( ${duration%h} * 3600 )) ;;
    *m) seconds=$(( ${duration%m} * 60 )) ;;
    *s) seconds=${duration%s} ;;
    *) seconds=$duration ;;
esac
[[ $seconds =~ ^[0-9]+$ && $seconds -ge 20 ]] || { echo "--duration must be at least 20s" >&2; exit 2; }

ensure_pkgs py:psycopg=python3-psycopg py:pymysql=python3-pymysql py:redis=python3-redis

if [[ ${SOAK_LAB_LOCK_HELD:-0} != 1 ]]; then
    exec 9>"${TMPDIR:-/tmp}/rolegate-lab-tests.lock"
    echo "waiting for the lab lock..." >&2
    flock 9
fi

bash "$ROOT/loadtest/lab.sh" up >&2
eval "$(bash "$ROOT/loadtest/lab.sh" env)"

if [[ -n ${ROLEGATE_BIN:-} ]]; then
    bin=$ROLEGATE_BIN
else
    echo "building rolegate (release)..." >&2
    bin=$(build_rolegate "$ROOT")
fi
[[ -x $bin ]] || { echo "no rolegate binary at $bin" >&2; exit 1; }

args=(--rolegate "$bin" --duration "$seconds")
[[ -n ${SOAK_OUT:-} ]] && args+=(--out "$SOAK_OUT")
exec /usr/bin/python3 "$ROOT/loadtest/soak/soak.py" "${args[@]}"
