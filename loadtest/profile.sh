#!/usr/bin/env bash
# loadtest/profile.sh — where a proxy's time goes, per forwarded request and per connection:
# system calls (strace -c) and CPU (utime+stime from /proc), rolegate next to HAProxy (no splice,
# nbthread = rolegate's workers), on the same Redis and the same redis-benchmark runs.
#
#   loadtest/profile.sh                      release build of this tree vs HAProxy
#   ROLEGATE_BIN=/path/rolegate loadtest/profile.sh   a given binary
#   loadtest/profile.sh --requests 20000 --connections 3000   sizes (defaults shown)
#
# Prints one markdown table to stdout. The strace runs are separate from the CPU runs (tracing
# slows a process down many times). Needs root for apt-get (strace, haproxy, redis). Loopback
# only (ports PROFILE_PORT_BASE..+3, default 29370); every run is bounded by its request count and
# `timeout`; everything started is stopped by pid. perf is not available on these machines;
# for user-space instructions run the proxy under `valgrind --tool=callgrind` (docs/performance.md).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=loadtest/bench/lib.sh
source "$ROOT/loadtest/bench/lib.sh"

requests=20000
connections=3000
while [[ $# -gt 0 ]]; do
    case $1 in
        --requests) requests=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/{/^#/p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

ensure_pkgs haproxy=haproxy strace=strace redis-benchmark=redis-tools redis-server=redis-server \
    redis-cli=redis-tools
bin=${ROLEGATE_BIN:-$(build_rolegate "$ROOT")}
[[ -x $bin ]] || { echo "no rolegate binary at $bin" >&2; exit 1; }

base=${PROFILE_PORT_BASE:-29370}
redis_port=$base proxy_port=$((base + 1)) admin_port=$((base + 2))
work=$(mktemp -d "${TMPDIR:-/tmp}/rolegate-profile.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

workers=$(nproc)
cat > "$work/rolegate.yaml" <<EOF
admin: { listen: "127.0.0.1:$admin_port" }
clusters:
  - name: redis
    protocol: tcp
    backends: [ { name: a, address: "127.0.0.1:$redis_port" } ]
listeners:
  - { name: redis, bind: "127.0.0.1:$proxy_port", cluster: redis }
EOF
cat > "$work/haproxy.cfg" <<EOF
global
    nbthread $workers
    maxconn 4000
defaults
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h
listen redis
    bind 127.0.0.1:$proxy_port
    server a 127.0.0.1:$redis_port
EOF

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no > "$work/redis.log" 2>&1 &
pids+=($!)

# start_proxy NAME: starts it on $proxy_port, sets $proxy, waits until it forwards a PING.
start_proxy() {
    case $1 in
        rolegate) "$bin" run --config "$work/rolegate.yaml" > "$work/rolegate.log" 2>&1 & ;;
        haproxy) haproxy -db -f "$work/haproxy.cfg" > "$work/haproxy.log" 2>&1 & ;;
    esac
    proxy=$!
    pids+=("$proxy")
    for _ in $(seq 100); do
        if timeout 1 redis-cli -p "$proxy_port" ping 2>/dev/null | grep -q PONG; then return; fi
        sleep 0.1
    done
    echo "$1 does not forward to Redis; its log: $work/$1.log" >&2
    cat "$work/$1.log" >&2
    exit 1
}

stop_proxy() {
    kill "$proxy"
    wait "$proxy" 2>/dev/null || true
}

# load KIND: one bounded redis-benchmark run, `p1` (GET, 50 clients, kept connections) or `churn`
# (PING_INLINE, a new connection per request).
load() {
    case $1 in
        p1) timeout 120 redis-benchmark -p "$proxy_port" -n "$requests" -c 50 -t get -q > /dev/null ;;
        churn) timeout 120 redis-benchmark -p "$proxy_port" -n "$connections" -c 20 -k 0 \
            -t ping_inline -q > /dev/null 2>&1 ;;
    esac
}

ticks() { awk '{print $14 + $15}' "/proc/$proxy/stat"; }

declare -A result
for setup in rolegate haproxy; do
    start_proxy "$setup"
    for kind in p1 churn; do
        ops=$requests
        [[ $kind == churn ]] && ops=$connections
        load "$kind" # warm-up
        t0=$(ticks)
        load "$kind"
        t1=$(ticks)
        hz=$(getconf CLK_TCK)
        result[$setup.$kind.cpu]=$(awk -v t="$((t1 - t0))" -v hz="$hz" -v n="$ops" \
            'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
        timeout 300 strace -f -c -o "$work/strace.$setup.$kind" -p "$proxy" 2> /dev/null &
        tracer=$!
        # strace attaches to every thread before it counts; wait until it says so in /proc.
        for _ in $(seq 50); do
            grep -q "TracerPid:[[:space:]]*$tracer" "/proc/$proxy/status" 2>/dev/null && break
            sleep 0.1
        done
        load "$kind"
        kill -INT "$tracer"
        wait "$tracer" 2>/dev/null || true
        result[$setup.$kind.ops]=$ops
    done
    stop_proxy
done

# per_op SETUP KIND: "syscall=calls/op ..." for the main calls, and the total.
per_op() {
    awk -v n="${result[$1.$2.ops]}" '
        $NF == "total" { total = $(NF - 2) }
        NF >= 5 && $1 ~ /^[0-9.]+$/ && $NF != "total" { calls[$NF] = $4 }
        END {
            printf "%.1f |", total / n
            m = 0
            for (c in calls) if (calls[c] / n >= 0.05) list[m++] = c
            # sort by count, descending
            for (i = 0; i < m; i++) for (j = i + 1; j < m; j++)
                if (calls[list[j]] > calls[list[i]]) { t = list[i]; list[i] = list[j]; list[j] = t }
            for (i = 0; i < m; i++) printf " %s %.2f", list[i], calls[list[i]] / n
            printf " |"
        }' "$work/strace.$1.$2"
}

echo "# Where the time goes: rolegate vs HAProxy ($(nproc) cores, $(uname -r))"
echo
echo "rolegate: $("$bin" --version 2>/dev/null || echo "$bin"), default config, $workers workers;"
echo "HAProxy $(haproxy -v 2>/dev/null | head -1 | awk '{print $3}') nbthread $workers, no splice."
echo "p1 = redis-benchmark GET, 50 clients, $requests requests (one request and one reply each);"
echo "churn = PING_INLINE with a new connection per request, 20 clients, $connections connections."
echo
echo "| setup | workload | proxy CPU µs per op | syscalls per op | per op, by call (≥ 0.05) |"
echo "|---|---|---:|---:|---|"
for setup in rolegate haproxy; do
    for kind in p1 churn; do
        echo "| $setup | $kind | ${result[$setup.$kind.cpu]} | $(per_op "$setup" "$kind")"
    done
done
