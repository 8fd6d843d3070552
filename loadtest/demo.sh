#!/usr/bin/env bash
# loadtest/demo.sh — README's first command: the lab's replicated PostgreSQL, MariaDB and Redis
# pairs, with rolegate in front of all three (config/demo.yaml).
#
#   bash loadtest/demo.sh                 bring everything up, print endpoints, run until Ctrl-C
#   bash loadtest/demo.sh switchover pg   (in another terminal) swap roles and watch the route move
#   bash loadtest/demo.sh status          rolegate's view: GET /status
#   bash loadtest/demo.sh stop            stop the rolegate the demo started (the lab keeps running;
#                                         `bash loadtest/lab.sh down` stops it)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB="$ROOT/loadtest/lab.sh"
STATE=${DEMO_DIR:-/tmp/rolegate-demo}
PIDFILE=$STATE/rolegate.pid
ADMIN=http://127.0.0.1:9813

running_pid() {
    [[ -f $PIDFILE ]] || return 1
    local pid
    pid=$(<"$PIDFILE")
    kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# GET from the admin port without needing curl: the binary has no client, so use bash's /dev/tcp.
admin_get() {
    exec 3<>/dev/tcp/127.0.0.1/9813
    printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$1" >&3
    sed '1,/^\r$/d' <&3
    exec 3<&-
}

cmd_status() { admin_get /status; }

cmd_stop() {
    local pid
    if pid=$(running_pid); then
        kill -TERM "$pid"
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$PIDFILE"
        echo "rolegate (pid $pid) stopped"
    else
        echo "no demo rolegate running"
    fi
}

# Waits (bounded) until /readyz answers 200: every listener has a backend.
wait_ready() {
    for _ in $(seq 1 100); do
        if exec 3<>/dev/tcp/127.0.0.1/9813 2>/dev/null; then
            printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3
            if head -1 <&3 | grep -q ' 200 '; then exec 3<&-; return 0; fi
            exec 3<&-
        fi
        sleep 0.1
    done
    echo "rolegate did not become ready within 10 s; see $STATE/rolegate.log" >&2
    return 1
}

route_of() { # LISTENER -> the listener's current backends, e.g. ['pg-a']
    admin_get /status | python3 -c "
import json, sys
for l in json.load(sys.stdin)['listeners']:
    if l['name'] == sys.argv[1]:
        print(l['backends'])" "$1"
}

cmd_switchover() {
    local engine=${1:?engine: pg | mysql | redis}
    local listener before after
    case $engine in pg) listener=pg-rw ;; mysql) listener=mysql-rw ;; redis) listener=redis-rw ;; *) echo "unknown engine $engine" >&2; exit 2 ;; esac
    before=$(route_of "$listener")
    echo "$listener routes to $before"
    bash "$LAB" switchover "$engine"
    # Bounded wait (10 s) for rolegate to follow; it normally takes a few check intervals.
    for _ in $(seq 1 100); do
        after=$(route_of "$listener")
        [[ $after != "$before" && $after != "[]" ]] && break
        sleep 0.1
    done
    echo "$listener routes to $after"
}

cmd_up() {
    mkdir -p "$STATE"
    if pid=$(running_pid); then
        echo "rolegate already running (pid $pid); 'bash loadtest/demo.sh stop' first" >&2
        exit 1
    fi
    bash "$LAB" up
    eval "$(bash "$LAB" env)"
    export PG_MONITOR_PASSWORD=$LAB_MONITOR_PASSWORD MYSQL_MONITOR_PASSWORD=$LAB_MONITOR_PASSWORD REDIS_MONITOR_PASSWORD=$LAB_MONITOR_PASSWORD
    echo "building rolegate (release)..."
    cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
    "$ROOT/target/release/rolegate" check-config "$ROOT/config/demo.yaml"
    "$ROOT/target/release/rolegate" --config "$ROOT/config/demo.yaml" >"$STATE/rolegate.log" 2>&1 &
    echo $! >"$PIDFILE"
    wait_ready
    cat <<EOT

rolegate is up (pid $(<"$PIDFILE"), log $STATE/rolegate.log). Endpoints:

  PostgreSQL  write 127.0.0.1:25432   read 127.0.0.1:25433
    PGPASSWORD=$LAB_APP_PASSWORD psql -h 127.0.0.1 -p 25432 -U app app -c 'select inet_server_port(), pg_is_in_recovery()'
  MariaDB     write 127.0.0.1:23306   read 127.0.0.1:23307
    mariadb -h 127.0.0.1 -P 23306 -u app -p$LAB_APP_PASSWORD app -e 'select @@port, @@read_only'
  Redis       write 127.0.0.1:26379   read 127.0.0.1:26380
    redis-cli -p 26379 --user app --pass $LAB_APP_PASSWORD --no-auth-warning info server | grep tcp_port

  Admin: curl -s $ADMIN/status | less     curl -s $ADMIN/metrics | grep rolegate_backend_role

Try a live failover in another terminal:   bash loadtest/demo.sh switchover pg
Stop: Ctrl-C here (or bash loadtest/demo.sh stop).
EOT
    trap 'cmd_stop' INT TERM
    if [[ ${DEMO_DETACH:-0} == 1 ]]; then
        trap - INT TERM
        return 0
    fi
    while running_pid >/dev/null; do sleep 1; done
}

case ${1:-up} in
    up) cmd_up ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    switchover) shift; cmd_switchover "$@" ;;
    *) echo "usage: $0 [up|stop|status|switchover ENGINE]" >&2; exit 2 ;;
esac
