#!/usr/bin/env bash
# loadtest/lab.sh — the rolegate "real-server lab".
#
# Runs replicated pairs of real database servers on loopback so that tests, the demo and the
# load tests have something true to route to:
#
#   pg     PostgreSQL 15   A 127.0.0.1:15432 (primary)  B 127.0.0.1:15433 (streaming standby)
#   mysql  MariaDB         A 127.0.0.1:13306 (primary)  B 127.0.0.1:13307 (GTID replica, read_only)
#   redis  Redis           A 127.0.0.1:16379 (master)   B 127.0.0.1:16380 (replicaof A)
#
# Every server also speaks TLS with a throwaway CA made at `up` ($LAB_DIR/tls/ca.pem, exported as
# LAB_TLS_CA): PostgreSQL and MariaDB on their usual ports (TLS optional there, plain keeps
# working), Redis on an extra port per node (A 127.0.0.1:16389, B 127.0.0.1:16390).
#
# Usage: lab.sh <command> [engine] [args]      engine: pg | mysql | redis | all (default all)
#   up [engine]              install what is missing, initialise, start, enforce A=primary/B=replica
#   down [engine]            stop every server the lab started (data is kept)
#   destroy [engine]         down + delete the state
#   reset [engine]           back to the canonical topology from any state (rebuilds B if needed)
#   status [engine]          one grep-able line per node: "pg A 127.0.0.1:15432 up primary pid=123"
#   primary <engine>         print "A 127.0.0.1:15432" for the node that is primary now
#   switchover <engine>      clean role swap; prints "switchover pg from=A to=B start=.. demoted=.. promoted=.. done=.."
#   kill <engine>            kill -9 the primary, promote the replica; prints the same timestamps
#   hang <engine>            SIGSTOP the primary             resume <engine>   SIGCONT any stopped node
#   promote <engine>         promote the replica, leave the primary alone (split brain)
#   stop|start <engine> <A|B>  stop / start one node (start keeps the node's current role)
#   env                      "export LAB_...=..." lines: eval "$(loadtest/lab.sh env)"
#   psql|mariadb|redis-cli <A|B> [args...]   client as the app user on that node
#
# Everything lives in ${LAB_DIR:-/tmp/rolegate-lab} (data, configs, sockets, pid files, logs).
# Only processes whose pid files live there are ever signalled. The passwords are test-only secrets.
# See loadtest/README.md.
set -euo pipefail
shopt -s nullglob

# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------

# The state dir, made absolute before we leave the caller's cwd.
LAB_DIR=${LAB_DIR:-/tmp/rolegate-lab}
[[ $LAB_DIR == /* ]] || LAB_DIR=$PWD/$LAB_DIR
LAB_DIR=${LAB_DIR%/}
[[ -n $LAB_DIR && $LAB_DIR != / ]] || { echo "lab: LAB_DIR must not be /" >&2; exit 1; }
SELF=$(readlink -f "${BASH_SOURCE[0]}")
# Nothing we run (and no server we start) may depend on the caller's cwd, which may be a
# directory the unprivileged lab user cannot enter, or one that is deleted later.
cd /

# Settings that can be overridden from the environment. They are recorded in $LAB_DIR/lab.env
# when the state is first created; later runs use the recorded values and refuse a conflicting
# override (ports and passwords are baked into the data directories).
CONFIG_VARS=(LAB_OS_USER LAB_PG_VERSION
    LAB_PG_A_PORT LAB_PG_B_PORT LAB_MY_A_PORT LAB_MY_B_PORT LAB_REDIS_A_PORT LAB_REDIS_B_PORT
    LAB_REDIS_A_TLS_PORT LAB_REDIS_B_TLS_PORT
    LAB_MONITOR_PASSWORD LAB_APP_PASSWORD LAB_MD5_PASSWORD LAB_REPL_PASSWORD LAB_NATIVE_PASSWORD
    LAB_ED25519_PASSWORD)
declare -A CONFIG_DEFAULTS=(
    [LAB_OS_USER]=rolegate-lab [LAB_PG_VERSION]=15
    [LAB_PG_A_PORT]=15432 [LAB_PG_B_PORT]=15433
    [LAB_MY_A_PORT]=13306 [LAB_MY_B_PORT]=13307
    [LAB_REDIS_A_PORT]=16379 [LAB_REDIS_B_PORT]=16380
    [LAB_REDIS_A_TLS_PORT]=16389 [LAB_REDIS_B_TLS_PORT]=16390
    [LAB_MONITOR_PASSWORD]=monitor-secret [LAB_APP_PASSWORD]=app-secret
    [LAB_MD5_PASSWORD]=md5-secret [LAB_REPL_PASSWORD]=repl-secret
    [LAB_NATIVE_PASSWORD]=native-secret [LAB_ED25519_PASSWORD]=ed25519-secret)

# Fixed user names (documented in README.md and exported by `env`).
MONITOR_USER=rolegate_monitor   # what rolegate's health checks log in as
APP_USER=app                    # what clients/tests/load generators log in as
MD5_USER=md5user                # PostgreSQL only: password stored as md5, md5 line in pg_hba
REPL_USER=replicator            # replication (PostgreSQL and MariaDB)
NATIVE_USER=native_user         # MariaDB only: explicitly IDENTIFIED VIA mysql_native_password
ED25519_USER=ed25519_user       # MariaDB only, when the auth_ed25519 plugin ships: IDENTIFIED VIA ed25519
APP_DB=app

RUN_DIR=$LAB_DIR/run            # pid files and unix sockets
LOG_DIR=$LAB_DIR/log
LOCK_FILE=$LAB_DIR.lock         # beside the state dir so that `destroy` can hold it while deleting
TLS_DIR=$LAB_DIR/tls            # throwaway CA (ca.pem) and the servers' certificate and key

ENGINES=(pg mysql redis)

# Server and client binaries (Debian 12 paths; PG_BIN is set once the config is loaded).
MARIADBD=/usr/sbin/mariadbd
MARIADB=/usr/bin/mariadb
MARIADB_DUMP=/usr/bin/mariadb-dump
MARIADB_INSTALL_DB=/usr/bin/mariadb-install-db
MARIADB_ED25519_PLUGIN=/usr/lib/mysql/plugin/auth_ed25519.so
REDIS_SERVER=/usr/bin/redis-server
REDIS_CLI=/usr/bin/redis-cli

# ------------------------------------------------------------------------------------------------
# Small utilities
# ------------------------------------------------------------------------------------------------

log() { printf '[lab %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf 'lab: error: %s\n' "$*" >&2; exit 1; }

# Wall-clock timestamp "seconds.micros" (no fork), for the switchover/kill measurement lines.
now() { local t=$EPOCHREALTIME; printf '%s' "${t/,/.}"; }
now_us() { local t=$EPOCHREALTIME; printf '%s' "${t/[.,]/}"; }

# try_for SECONDS CMD...: run CMD every 0.1 s until it succeeds (0) or SECONDS have passed (1).
try_for() {
    local secs=$1; shift
    local t=$EPOCHREALTIME
    local deadline=$(( ${t/[.,]/} + secs * 1000000 ))
    while true; do
        if "$@"; then return 0; fi
        t=$EPOCHREALTIME
        if (( ${t/[.,]/} >= deadline )); then return 1; fi
        sleep 0.1
    done
}

# wait_for SECONDS DESCRIPTION CMD...: like try_for, but a timeout is fatal with a clear message.
wait_for() {
    local secs=$1 what=$2; shift 2
    try_for "$secs" "$@" || die "timed out after ${secs}s waiting for $what"
}

# Run a command as the unprivileged lab user (PostgreSQL refuses to run as root).
as_lab() { runuser -u "$LAB_OS_USER" -- "$@"; }

# detached_exec CMD...: replace the current (sub)shell by CMD in a new session, stdin from
# /dev/null and every fd above 2 closed, so a server never inherits our lock or a caller's pipe
# (which would make `$(lab.sh up)` hang) and is not hit by signals sent to the caller's process
# group. Call it in a subshell or in the background; the caller redirects stdout/stderr.
detached_exec() {
    local fd
    for fd in /proc/"$BASHPID"/fd/*; do
        fd=${fd##*/}
        if (( fd > 2 )); then eval "exec $fd>&-"; fi
    done
    exec setsid "$@" </dev/null
}

# proc_stat PID: sets PSTATE (R, S, T = stopped, Z = zombie, ...); fails if the pid is gone.
proc_stat() {
    local s
    { read -r s </proc/"$1"/stat; } 2>/dev/null || return 1
    read -r PSTATE _ <<<"${s##*) }"
}
proc_state() { proc_stat "$1" || return 1; printf '%s' "$PSTATE"; }

# proc_matches PID NEEDLE: PID is a live (non-zombie) process whose command line contains
# NEEDLE. Guards every signal we send against a recycled pid.
proc_matches() {
    local pid=$1 needle=$2 cmd state
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    cmd=$(tr '\0' ' ' 2>/dev/null </proc/"$pid"/cmdline) || return 1
    [[ $cmd == *"$needle"* ]] || return 1
    state=$(proc_state "$pid") || return 1
    [[ $state != Z && $state != X ]]
}

pid_gone() { ! proc_matches "$1" "$2"; }

# Something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() { timeout 2 bash -c ': <>/dev/tcp/127.0.0.1/'"$1" 2>/dev/null; }

need_root() { [[ $EUID -eq 0 ]] || die "'$CMD' must run as root (it installs packages and runs servers as $LAB_OS_USER)"; }

# Write a file from stdin, owned by the lab user.
write_lab_file() { # PATH [MODE]
    cat >"$1"
    chmod "${2:-0644}" "$1"
    chown "$LAB_OS_USER:$LAB_OS_USER" "$1"
}

# Make sure a log file exists and is writable by the lab user (servers append to it).
lab_log() { touch "$1"; chown "$LAB_OS_USER:$LAB_OS_USER" "$1"; printf '%s' "$1"; }

mkdir_lab() { install -d -o "$LAB_OS_USER" -g "$LAB_OS_USER" -m "${2:-0755}" "$1"; }

other() { if [[ $1 == A ]]; then echo B; else echo A; fi; }

# ------------------------------------------------------------------------------------------------
# Config loading, locking, installation
# ------------------------------------------------------------------------------------------------

load_config() {
    local f=$LAB_DIR/lab.env k v
    if [[ -f $f ]]; then
        while IFS='=' read -r k v; do
            [[ -n ${CONFIG_DEFAULTS[$k]+x} ]] || continue
            if [[ -n ${!k+x} && ${!k} != "$v" ]]; then
                die "$k is set to a different value than the one $LAB_DIR was created with (see $f); run 'lab.sh destroy' first or use another LAB_DIR"
            fi
            printf -v "$k" '%s' "$v"
        done <"$f"
    fi
    for k in "${CONFIG_VARS[@]}"; do
        [[ -n ${!k+x} ]] || printf -v "$k" '%s' "${CONFIG_DEFAULTS[$k]}"
    done
    # Passwords and ports end up in config files and connection strings unquoted: keep them tame.
    for k in LAB_MONITOR_PASSWORD LAB_APP_PASSWORD LAB_MD5_PASSWORD LAB_REPL_PASSWORD LAB_NATIVE_PASSWORD LAB_ED25519_PASSWORD; do
        [[ ${!k} =~ ^[A-Za-z0-9._~+@%=-]+$ ]] || die "$k may only contain letters, digits and ._~+@%=-"
    done
    for k in LAB_PG_A_PORT LAB_PG_B_PORT LAB_MY_A_PORT LAB_MY_B_PORT LAB_REDIS_A_PORT LAB_REDIS_B_PORT \
        LAB_REDIS_A_TLS_PORT LAB_REDIS_B_TLS_PORT; do
        [[ ${!k} =~ ^[0-9]+$ ]] || die "$k must be a port number"
    done
    PG_BIN=/usr/lib/postgresql/$LAB_PG_VERSION/bin
    declare -gA PORT=(
        [pg:A]=$LAB_PG_A_PORT [pg:B]=$LAB_PG_B_PORT
        [mysql:A]=$LAB_MY_A_PORT [mysql:B]=$LAB_MY_B_PORT
        [redis:A]=$LAB_REDIS_A_PORT [redis:B]=$LAB_REDIS_B_PORT
        [redis-tls:A]=$LAB_REDIS_A_TLS_PORT [redis-tls:B]=$LAB_REDIS_B_TLS_PORT)
}

# Records the settings in lab.env: all of them for a new state, and for a state made by an older
# lab.sh the ones it did not know yet (so their values are pinned from now on, like the others).
record_config() {
    local f=$LAB_DIR/lab.env k
    for k in "${CONFIG_VARS[@]}"; do
        if [[ ! -f $f ]] || ! grep -q "^$k=" "$f"; then printf '%s=%s\n' "$k" "${!k}" >>"$f"; fi
    done
}

# Serialise commands that change servers (status/env/primary/client wrappers do not lock).
take_lock() {
    exec {LOCK_FD}>>"$LOCK_FILE"
    flock -w 600 "$LOCK_FD" || die "another lab.sh has held $LOCK_FILE for 10 minutes"
}

# Cleanup hooks run at exit (used to restore /usr/sbin/policy-rc.d if an install is interrupted).
EXIT_HOOKS=()
run_exit_hooks() { local h; for h in "${EXIT_HOOKS[@]}"; do eval "$h" || true; done; }
trap run_exit_hooks EXIT

missing_packages() { # ENGINE... -> prints the Debian packages to install
    local e
    command -v openssl >/dev/null || echo openssl     # the lab's TLS certificates
    for e; do
        case $e in
            pg) [[ -x $PG_BIN/postgres && -x $PG_BIN/pg_basebackup && -x $PG_BIN/pg_rewind && -x $PG_BIN/psql ]] ||
                echo "postgresql-$LAB_PG_VERSION postgresql-client-$LAB_PG_VERSION" ;;
            mysql) [[ -x $MARIADBD && -x $MARIADB && -x $MARIADB_DUMP && -x $MARIADB_INSTALL_DB ]] ||
                echo "mariadb-server mariadb-client" ;;
            redis) [[ -x $REDIS_SERVER && -x $REDIS_CLI ]] || echo "redis-server redis-tools" ;;
        esac
    done
}

POLICY_RC=/usr/sbin/policy-rc.d
POLICY_BACKUP=""
restore_policy_rc() {
    if [[ -n $POLICY_BACKUP ]]; then
        mv -f "$POLICY_BACKUP" "$POLICY_RC"
    else
        rm -f "$POLICY_RC"
    fi
    EXIT_HOOKS=()
}

ensure_packages() { # ENGINE...
    local -a pkgs
    read -r -a pkgs <<<"$(missing_packages "$@" | tr '\n' ' ')"
    (( ${#pkgs[@]} )) || return 0
    need_root
    command -v apt-get >/dev/null || die "missing ${pkgs[*]} and no apt-get to install them"
    log "installing ${pkgs[*]} (apt-get; default services are kept from starting)"
    # A policy-rc.d that exits 101 tells invoke-rc.d / deb-systemd-invoke not to start services
    # from the packages' maintainer scripts. Keep whatever was there before and put it back.
    if [[ -e $POLICY_RC ]]; then
        POLICY_BACKUP=$(mktemp /tmp/policy-rc.d.XXXXXX)
        cp -p "$POLICY_RC" "$POLICY_BACKUP"
    fi
    EXIT_HOOKS+=(restore_policy_rc)
    printf '#!/bin/sh\n# written by rolegate loadtest/lab.sh for the duration of apt-get install\nexit 101\n' >"$POLICY_RC"
    chmod 0755 "$POLICY_RC"
    local rc=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -q &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}"
    } >"/tmp/rolegate-lab-apt.log" 2>&1 || rc=$?
    restore_policy_rc
    if (( rc != 0 )); then
        tail -n 30 /tmp/rolegate-lab-apt.log >&2
        die "apt-get install ${pkgs[*]} failed (full log: /tmp/rolegate-lab-apt.log)"
    fi
    stop_default_services
    local left
    left=$(missing_packages "$@")
    [[ -z $left ]] || die "installed packages but still missing binaries for: $left"
}

# The distro's default instances (5432/3306/6379) must not be left running: they would take the
# ports rolegate itself listens on. Only called right after we installed packages.
stop_default_services() {
    local ver cluster _port status _rest unit pidf
    if command -v pg_lsclusters >/dev/null; then
        while read -r ver cluster _port status _rest; do
            if [[ $status == online* ]]; then
                log "stopping the distro's default PostgreSQL cluster $ver/$cluster"
                pg_ctlcluster "$ver" "$cluster" stop || true
            fi
        done < <(pg_lsclusters --no-header 2>/dev/null || true)
    fi
    for pidf in /run/mysqld/mysqld.pid:mariadb /run/redis/redis-server.pid:redis-server; do
        unit=${pidf#*:}; pidf=${pidf%%:*}
        if [[ -s $pidf ]] && kill -0 "$(<"$pidf")" 2>/dev/null; then
            log "stopping the distro's default $unit service"
            if [[ -x /etc/init.d/$unit ]]; then "/etc/init.d/$unit" stop || true; fi
        fi
    done
    # On a systemd machine the units would still start at the next boot: disable them.
    if [[ -d /run/systemd/system ]]; then
        for unit in postgresql mariadb redis-server; do
            systemctl disable --now --quiet "$unit" 2>/dev/null || true
        done
    fi
}

ensure_user() {
    id -u "$LAB_OS_USER" >/dev/null 2>&1 && return 0
    log "creating system user $LAB_OS_USER"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin "$LAB_OS_USER"
}

ensure_dirs() {
    mkdir -p "$LAB_DIR"
    chmod 0755 "$LAB_DIR"
    as_lab test -x "$LAB_DIR" ||
        die "$LAB_OS_USER cannot reach $LAB_DIR (a parent directory is not world-searchable); pick another LAB_DIR"
    mkdir_lab "$RUN_DIR"
    mkdir_lab "$LOG_DIR"
    record_config
}

# ------------------------------------------------------------------------------------------------
# TLS
# One throwaway CA and one server certificate (SAN 127.0.0.1 and localhost) shared by every server
# of the lab, made with openssl at `up` when missing. The CA's key is deleted right after signing:
# nothing else is ever signed with it, and a lost certificate is simply made again (with a new CA,
# and the servers reloaded/restarted by `up`). Tests verify against $TLS_DIR/ca.pem (LAB_TLS_CA).
# ------------------------------------------------------------------------------------------------

TLS_DAYS=3650
TLS_NEW=0                       # set by ensure_tls when it made new certificates in this run

tls_ready() { [[ -s $TLS_DIR/ca.pem && -s $TLS_DIR/server.pem && -s $TLS_DIR/server.key ]]; }

ensure_tls() {
    local tmp
    tls_ready && return 0
    log "tls: creating a throwaway CA and a server certificate for 127.0.0.1/localhost in $TLS_DIR"
    tmp=$(mktemp -d "$LAB_DIR/.tls.XXXXXX")
    if ! (
        cd "$tmp" &&
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
                -keyout ca.key -out ca.pem -days "$TLS_DAYS" -subj "/CN=rolegate lab CA (throwaway)" \
                -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" &&
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
                -keyout server.key -out server.csr -subj "/CN=localhost" &&
            printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
                "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >server.ext &&
            openssl x509 -req -sha256 -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                -days "$TLS_DAYS" -extfile server.ext -out server.pem
    ) >>"$LOG_DIR/tls.log" 2>&1; then
        rm -rf "$tmp"
        die "openssl could not make the lab's certificates (see $LOG_DIR/tls.log)"
    fi
    rm -rf "$TLS_DIR"
    mkdir_lab "$TLS_DIR" 0755
    install -o "$LAB_OS_USER" -g "$LAB_OS_USER" -m 0644 "$tmp/ca.pem" "$tmp/server.pem" "$TLS_DIR/"
    # PostgreSQL refuses a key file that others can read.
    install -o "$LAB_OS_USER" -g "$LAB_OS_USER" -m 0600 "$tmp/server.key" "$TLS_DIR/"
    rm -rf "$tmp"    # with ca.key
    TLS_NEW=1
}

# ------------------------------------------------------------------------------------------------
# PostgreSQL
# Roles live in the data directory: standby.signal + primary_conninfo (in postgresql.conf,
# which the lab regenerates whenever it changes a node's role). Admin access is the `postgres`
# superuser over the unix socket in $RUN_DIR (trust); all TCP access needs a password.
# ------------------------------------------------------------------------------------------------

pg_dd() { printf '%s' "$LAB_DIR/pg/$1"; }
pg_log() { printf '%s' "$LOG_DIR/pg-$1.log"; }

pg_pid() { # NODE -> prints the postmaster pid if our postmaster for that node is alive
    local n=$1 dd pid=""
    dd=$(pg_dd "$n")
    [[ -s $RUN_DIR/pg-$n.pid ]] && pid=$(<"$RUN_DIR/pg-$n.pid")
    if ! proc_matches "$pid" "-D $dd"; then
        pid=""
        [[ -s $dd/postmaster.pid ]] && { read -r pid <"$dd/postmaster.pid" || true; }
        proc_matches "$pid" "-D $dd" || return 1
        [[ -d $RUN_DIR ]] && echo "$pid" >"$RUN_DIR/pg-$n.pid"
    fi
    printf '%s\n' "$pid"
}

# pg_sql NODE SQL [DB]: run SQL as superuser over the socket; prints unaligned tuples.
pg_sql() {
    PGCONNECT_TIMEOUT=3 timeout 30 "$PG_BIN/psql" -X -qAtw -v ON_ERROR_STOP=1 -h "$RUN_DIR" \
        -p "${PORT[pg:$1]}" -U postgres -d "${3:-postgres}" -c "$2"
}

pg_role() { # NODE -> primary | replica (fails if it cannot tell)
    local r
    r=$(pg_sql "$1" "SELECT pg_is_in_recovery()" 2>/dev/null) || return 1
    case $r in t) echo replica ;; f) echo primary ;; *) return 1 ;; esac
}

pg_replica_info() { # NODE -> " upstream=A link=streaming"
    local port st up='?' n
    IFS='|' read -r port st < <(pg_sql "$1" \
        "SELECT coalesce((SELECT sender_port FROM pg_stat_wal_receiver)::text, substring(current_setting('primary_conninfo') from 'port=([0-9]+)'), ''), coalesce((SELECT status FROM pg_stat_wal_receiver), 'none')" 2>/dev/null || true)
    for n in A B; do [[ $port == "${PORT[pg:$n]}" ]] && up=$n; done
    printf ' upstream=%s link=%s' "$up" "${st:-?}"
}

pg_write_conf() { # NODE primary|standby [UPSTREAM]
    local n=$1 role=$2 up=${3:-} dd
    dd=$(pg_dd "$n")
    {
        echo "# Generated by loadtest/lab.sh; rewritten whenever the lab changes this node's role."
        echo "listen_addresses = '127.0.0.1'"
        echo "port = ${PORT[pg:$n]}"
        echo "unix_socket_directories = '$RUN_DIR'"
        echo "cluster_name = 'lab-$n'"
        echo "max_connections = 300"
        echo "shared_buffers = 32MB"
        echo "fsync = off                      # test lab: speed over durability"
        echo "full_page_writes = on            # needed by pg_rewind"
        echo "wal_level = replica"
        echo "wal_log_hints = on               # lets pg_rewind repair an old primary"
        echo "max_wal_senders = 10"
        echo "wal_keep_size = 256MB"
        echo "hot_standby = on"
        echo "hot_standby_feedback = on"
        echo "wal_sender_timeout = 10s"
        echo "wal_receiver_timeout = 10s"
        echo "wal_retrieve_retry_interval = 500ms"
        echo "recovery_target_timeline = 'latest'"
        echo "password_encryption = 'scram-sha-256'"
        echo "log_line_prefix = '%m [%p] %q%u@%d '"
        echo "lc_messages = 'C'"
        echo "timezone = 'UTC'"
        pg_tls_conf
        if [[ $role == standby ]]; then
            echo "primary_conninfo = 'host=127.0.0.1 port=${PORT[pg:$up]} user=$REPL_USER password=$LAB_REPL_PASSWORD application_name=lab-$n connect_timeout=3'"
        fi
    } | write_lab_file "$dd/postgresql.conf" 0600
    pg_write_hba "$n"
    echo "# ALTER SYSTEM is not used by the lab; see postgresql.conf" | write_lab_file "$dd/postgresql.auto.conf" 0600
    if [[ $role == standby ]]; then
        : | write_lab_file "$dd/standby.signal" 0600
    else
        rm -f "$dd/standby.signal"
    fi
}

# The TLS lines of postgresql.conf (ssl can be switched on by a reload since PostgreSQL 10). None
# while the certificate is missing (a state made by an older lab.sh until `up` runs): a server
# told to use a missing certificate would not start.
pg_tls_conf() {
    tls_ready || return 0
    echo "ssl = on                         # optional for clients: plain TCP keeps working"
    echo "ssl_cert_file = '$TLS_DIR/server.pem'"
    echo "ssl_key_file = '$TLS_DIR/server.key'"
}

pg_write_hba() { # NODE
    cat <<EOF | write_lab_file "$(pg_dd "$1")/pg_hba.conf" 0600
# Generated by loadtest/lab.sh. Socket: trust (lab admin). TCP: passwords only, TLS or not
# (hostssl lines match TLS sessions only; host lines match both).
local   all          all                          trust
local   replication  all                          trust
host    replication  $REPL_USER   127.0.0.1/32    scram-sha-256
hostssl all          $MD5_USER    127.0.0.1/32    md5
hostssl all          all          127.0.0.1/32    scram-sha-256
host    all          $MD5_USER    127.0.0.1/32    md5
host    all          all          127.0.0.1/32    scram-sha-256
EOF
}

pg_ssl_on() { [[ $(pg_sql "$1" "SHOW ssl" 2>/dev/null) == on ]]; }

# Brings a node made by an older lab.sh (or whose certificate was just remade) to TLS: the lines
# are added to its config, and a running server reloads (no restart needed).
pg_tls() {
    local n dd changed
    for n in A B; do
        dd=$(pg_dd "$n")
        [[ -f $dd/postgresql.conf ]] || continue
        changed=$TLS_NEW
        if ! grep -q '^ssl = on' "$dd/postgresql.conf"; then
            log "pg $n: enabling TLS"
            pg_tls_conf >>"$dd/postgresql.conf"
            pg_write_hba "$n"
            changed=1
        fi
        if [[ $changed == 1 ]] && pg_pid "$n" >/dev/null; then
            as_lab "$PG_BIN/pg_ctl" reload -D "$dd" -s >&2 || die "pg $n: reload failed"
            wait_for 30 "pg $n to serve TLS" pg_ssl_on "$n"
        fi
    done
}

pg_start() { # NODE: start with whatever role its data directory has
    local n=$1 dd pid
    pg_pid "$n" >/dev/null && return 0
    dd=$(pg_dd "$n")
    [[ -f $dd/PG_VERSION ]] || { log "pg $n has no data directory ($dd)"; return 1; }
    port_in_use "${PORT[pg:$n]}" &&
        die "pg $n: 127.0.0.1:${PORT[pg:$n]} is taken by a process the lab did not start"
    # Stale lock files: pg_pid and port_in_use just established that no live postmaster owns
    # them. (Postgres itself would refuse to start while the old pid merely exists, and a killed
    # postmaster can linger as a zombie when PID 1 is slow to reap.)
    rm -f "$dd/postmaster.pid" "$RUN_DIR/.s.PGSQL.${PORT[pg:$n]}" "$RUN_DIR/.s.PGSQL.${PORT[pg:$n]}.lock"
    log "pg $n: starting"
    if ! (detached_exec runuser -u "$LAB_OS_USER" -- "$PG_BIN/pg_ctl" start -D "$dd" -l "$(lab_log "$(pg_log "$n")")" -w -t 60 -s >&2); then
        pg_pid "$n" >/dev/null || { tail -n 15 "$(pg_log "$n")" >&2; return 1; }
        log "pg $n: running but not yet accepting connections"
        return 1
    fi
    pid=$(pg_pid "$n") || die "pg $n: pg_ctl said started but there is no postmaster"
    echo "$pid" >"$RUN_DIR/pg-$n.pid"
}

pg_stop() { # NODE: fast shutdown (falls back to immediate, then SIGKILL of the process group)
    local n=$1 dd pid
    pid=$(pg_pid "$n") || { rm -f "$RUN_DIR/pg-$n.pid"; return 0; }
    dd=$(pg_dd "$n")
    pg_signal "$n" CONT    # a SIGSTOPped server cannot shut down
    log "pg $n: stopping (pid $pid)"
    if ! as_lab "$PG_BIN/pg_ctl" stop -D "$dd" -m fast -w -t 30 -s >&2; then
        as_lab "$PG_BIN/pg_ctl" stop -D "$dd" -m immediate -w -t 10 -s >&2 || pg_kill "$n"
    fi
    wait_for 30 "pg $n (pid $pid) to exit" pid_gone "$pid" "-D $dd"
    rm -f "$RUN_DIR/pg-$n.pid"
}

# children_of PID: the pids whose parent is PID (from /proc; no procps needed).
children_of() {
    local f pid ppid s
    for f in /proc/[0-9]*/stat; do
        { read -r s <"$f"; } 2>/dev/null || continue
        read -r _ ppid _ <<<"${s##*) }"
        if [[ $ppid == "$1" ]]; then pid=${f#/proc/}; echo "${pid%/stat}"; fi
    done
}

# Send SIG to the whole instance, postmaster and every child (each backend is its own session
# and process group, so a process-group kill would miss them): a real crash or hang takes the
# backends and walsenders too. Children are listed first, while they are still ours.
pg_signal() { # NODE SIG
    local pid kids
    pid=$(pg_pid "$1") || return 0
    kids=$(children_of "$pid")
    if [[ $2 == CONT ]]; then
        kill -s CONT "$pid" 2>/dev/null || true
        # shellcheck disable=SC2086  # list of pids
        [[ -z $kids ]] || kill -s CONT $kids 2>/dev/null || true
    else
        # shellcheck disable=SC2086
        [[ -z $kids ]] || kill -s "$2" $kids 2>/dev/null || true
        kill -s "$2" "$pid" 2>/dev/null || true
    fi
}

pg_kill() { # NODE: SIGKILL every process of the instance
    local n=$1 pid dd kids
    pid=$(pg_pid "$n") || return 0
    dd=$(pg_dd "$n")
    kids=$(children_of "$pid")
    pg_signal "$n" KILL
    wait_for 10 "pg $n (pid $pid) to die" pid_gone "$pid" "-D $dd"
    # shellcheck disable=SC2086
    try_for 10 pids_gone $kids || log "pg $n: some children of $pid linger"
}

pids_gone() { local p; for p; do [[ $(proc_state "$p" 2>/dev/null) =~ ^(Z|X|)$ ]] || return 1; done; }

pg_promote() { # NODE: promote a standby and wait until it is writable
    local n=$1
    as_lab "$PG_BIN/pg_ctl" promote -D "$(pg_dd "$n")" -w -t 30 -s >&2 || die "pg $n: pg_ctl promote failed"
    wait_for 30 "pg $n to leave recovery" pg_is "$n" primary
}

pg_is() { [[ $(pg_role "$1" 2>/dev/null) == "$2" ]]; }
pg_answers() { pg_role "$1" >/dev/null 2>&1; }

# pg_caught_up PRIMARY REPLICA LSN: REPLICA streams from PRIMARY and has replayed LSN.
pg_caught_up() {
    local r
    r=$(pg_sql "$2" "SELECT coalesce((SELECT status = 'streaming' AND sender_port = ${PORT[pg:$1]} FROM pg_stat_wal_receiver), false) AND pg_last_wal_replay_lsn() >= '$3'::pg_lsn" 2>/dev/null) || return 1
    [[ $r == t ]]
}

pg_wait_caught_up() { # PRIMARY REPLICA SECONDS [soft]
    local lsn
    lsn=$(pg_sql "$1" "SELECT pg_current_wal_lsn()") || { [[ ${4:-} == soft ]] && return 1; die "pg $1: cannot read the WAL position"; }
    if [[ ${4:-} == soft ]]; then
        try_for "$3" pg_caught_up "$1" "$2" "$lsn"
    else
        wait_for "$3" "pg $2 to stream from $1 and replay up to $lsn" pg_caught_up "$1" "$2" "$lsn"
    fi
}

# Rebuild TARGET from scratch as a streaming standby of SOURCE (pg_basebackup).
pg_rebuild() { # TARGET SOURCE
    local t=$1 s=$2 dd
    dd=$(pg_dd "$t")
    pg_stop "$t"
    log "pg $t: re-cloning from $s with pg_basebackup"
    rm -rf "$dd"
    as_lab "$PG_BIN/pg_basebackup" -h "$RUN_DIR" -p "${PORT[pg:$s]}" -U postgres -D "$dd" \
        -X stream -c fast -R -N >&2 || die "pg_basebackup of pg $t from $s failed"
    pg_write_conf "$t" standby "$s"
    pg_start "$t" || die "pg $t: the fresh standby did not start (see $(pg_log "$t"))"
    pg_wait_caught_up "$s" "$t" 60
}

# Turn the stopped old primary OLD into a standby of NEW: pg_rewind (a no-op after a clean
# switchover), falling back to a fresh clone.
pg_rejoin() { # OLD NEW
    local o=$1 nw=$2
    # pg_rewind reads the timeline from the source's control file, which a freshly promoted
    # server only updates at its end-of-recovery checkpoint: force it now.
    pg_sql "$nw" "CHECKPOINT" >/dev/null || die "pg $nw: CHECKPOINT failed"
    if as_lab "$PG_BIN/pg_rewind" --no-sync --target-pgdata="$(pg_dd "$o")" \
        --source-server="host=$RUN_DIR port=${PORT[pg:$nw]} user=postgres dbname=postgres" \
        >>"$(pg_log "$o")" 2>&1; then
        pg_write_conf "$o" standby "$nw"
        if pg_start "$o" && pg_wait_caught_up "$nw" "$o" 30 soft; then return 0; fi
        log "pg $o: did not catch up after pg_rewind; re-cloning"
    else
        log "pg $o: pg_rewind failed (see $(pg_log "$o")); re-cloning"
    fi
    pg_rebuild "$o" "$nw"
}

pg_switchover() { # PRIMARY REPLICA
    local p=$1 r=$2 t0 t1 t2 t3
    pg_wait_caught_up "$p" "$r" 30
    t0=$(now)
    pg_stop "$p"        # fast shutdown: the standby receives everything up to the shutdown checkpoint
    t1=$(now)
    pg_promote "$r"
    t2=$(now)
    pg_rejoin "$p" "$r"
    t3=$(now)
    echo "switchover pg from=$p to=$r start=$t0 demoted=$t1 promoted=$t2 done=$t3"
}

# Is P primary with R streaming from it and caught up (waiting up to SECONDS for that)?
pg_canonical() { # P R SECONDS
    local p=$1 r=$2
    pg_is "$p" primary && pg_is "$r" replica || return 1
    [[ $(pg_sql "$r" "SELECT substring(current_setting('primary_conninfo') from 'port=([0-9]+)')" 2>/dev/null) == "${PORT[pg:$p]}" ]] || return 1
    pg_wait_caught_up "$p" "$r" "$3" soft
}

pg_reset() {
    local n
    for n in A B; do pg_signal "$n" CONT; done
    pg_start A || true
    pg_start B || true
    pg_canonical A B 10 && return 0
    if pg_canonical B A 5; then
        log "pg: B is primary with A following: switching back"
        pg_switchover B A >/dev/null
        return 0
    fi
    log "pg: forcing the canonical topology (A authoritative, B re-cloned)"
    pg_stop B
    pg_start A || die "pg A does not start (see $(pg_log A)); 'lab.sh destroy pg && lab.sh up pg' starts over"
    wait_for 30 "pg A to answer" pg_answers A
    pg_is A replica && pg_promote A
    pg_rebuild B A
}

pg_initialised() { [[ -f $LAB_DIR/pg/.initialised ]]; }

pg_init() {
    local n
    for n in A B; do pg_stop "$n"; done
    rm -rf "$LAB_DIR/pg"
    mkdir_lab "$LAB_DIR/pg" 0750
    log "pg: initdb"
    as_lab "$PG_BIN/initdb" -D "$(pg_dd A)" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        -E UTF8 --locale=C --no-instructions -N >>"$LOG_DIR/pg-initdb.log" 2>&1 ||
        die "initdb failed (see $LOG_DIR/pg-initdb.log)"
    pg_write_conf A primary
    pg_start A || die "pg A did not start (see $(pg_log A))"
    log "pg: creating roles, database $APP_DB and table writes"
    PGCONNECT_TIMEOUT=3 timeout 60 "$PG_BIN/psql" -X -qw -v ON_ERROR_STOP=1 -h "$RUN_DIR" \
        -p "${PORT[pg:A]}" -U postgres -d postgres -f - >/dev/null <<SQL
SET password_encryption = 'scram-sha-256';
CREATE ROLE $REPL_USER LOGIN REPLICATION PASSWORD '$LAB_REPL_PASSWORD';
CREATE ROLE $MONITOR_USER LOGIN PASSWORD '$LAB_MONITOR_PASSWORD';
GRANT pg_monitor TO $MONITOR_USER;
CREATE ROLE $APP_USER LOGIN PASSWORD '$LAB_APP_PASSWORD';
CREATE DATABASE $APP_DB OWNER $APP_USER;
SET password_encryption = 'md5';
CREATE ROLE $MD5_USER LOGIN PASSWORD '$LAB_MD5_PASSWORD';
\connect $APP_DB
SET ROLE $APP_USER;
CREATE TABLE writes (id bigserial PRIMARY KEY, node text, at timestamptz DEFAULT now());
GRANT SELECT, INSERT ON writes TO $MD5_USER;
GRANT USAGE ON SEQUENCE writes_id_seq TO $MD5_USER;
GRANT SELECT ON writes TO $MONITOR_USER;
SQL
    pg_rebuild B A
    touch "$LAB_DIR/pg/.initialised"
}

# ------------------------------------------------------------------------------------------------
# MariaDB
# Each node: $LAB_DIR/mysql/N (datadir), N.cnf (generated), N.role.cnf (read_only=ON|OFF, kept
# in step with the role so a restart keeps it). Replication state lives in the datadir
# (master.info), so a restarted replica resumes by itself. Admin is root over the unix socket
# (unix_socket auth: we are root).
# ------------------------------------------------------------------------------------------------

my_dd() { printf '%s' "$LAB_DIR/mysql/$1"; }
my_cnf() { printf '%s' "$LAB_DIR/mysql/$1.cnf"; }
my_sock() { printf '%s' "$RUN_DIR/mysql-$1.sock"; }
my_err() { printf '%s' "$LOG_DIR/mysql-$1.err"; }

my_pid() {
    local pid=""
    [[ -s $RUN_DIR/mysql-$1.pid ]] && pid=$(<"$RUN_DIR/mysql-$1.pid")
    proc_matches "$pid" "--defaults-file=$(my_cnf "$1")" || return 1
    printf '%s\n' "$pid"
}

# my_sql NODE SQL [TIMEOUT]: tab-separated rows, no header (MY_HEADERS=1 keeps column names,
# which the vertical \G format needs).
my_sql() {
    local -a opts=(--batch --skip-column-names)
    [[ ${MY_HEADERS:-} == 1 ]] && opts=(--batch)
    timeout "${3:-30}" "$MARIADB" --no-defaults --protocol=socket --socket="$(my_sock "$1")" \
        --user=root "${opts[@]}" --connect-timeout=3 -e "$2"
}

my_ping() { [[ $(my_sql "$1" "SELECT 1" 2>/dev/null) == 1 ]]; }

my_role() {
    local r
    r=$(my_sql "$1" "SELECT @@global.read_only" 2>/dev/null) || return 1
    case $r in 0) echo primary ;; 1) echo replica ;; *) return 1 ;; esac
}

my_is() { [[ $(my_role "$1" 2>/dev/null) == "$2" ]]; }

# my_slave NODE: load SHOW SLAVE STATUS into the associative array SS (empty if not a replica).
declare -A SS=()
my_slave() {
    local line k v
    SS=()
    while IFS= read -r line; do
        [[ $line == *": "* ]] || continue
        k=${line%%: *}; k=${k##* }; v=${line#*: }
        SS[$k]=$v
    done < <(MY_HEADERS=1 my_sql "$1" "SHOW SLAVE STATUS\\G" 2>/dev/null || true)
}

my_replica_info() {
    local up='?' n
    my_slave "$1"
    for n in A B; do [[ ${SS[Master_Port]:-} == "${PORT[mysql:$n]}" ]] && up=$n; done
    printf ' upstream=%s io=%s sql=%s' "$up" "${SS[Slave_IO_Running]:-none}" "${SS[Slave_SQL_Running]:-none}"
}

my_write_role() { # NODE primary|replica
    local ro=OFF
    [[ $2 == replica ]] && ro=ON
    printf '[mariadbd]\n# role kept by lab.sh: %s\nread_only = %s\n' "$2" "$ro" | write_lab_file "$LAB_DIR/mysql/$1.role.cnf"
}

my_write_cnf() { # NODE
    local n=$1 id=1
    [[ $n == B ]] && id=2
    cat <<EOF | write_lab_file "$(my_cnf "$n")"
# Generated by loadtest/lab.sh
[mariadbd]
user = $LAB_OS_USER
datadir = $(my_dd "$n")
socket = $(my_sock "$n")
pid-file = $RUN_DIR/mysql-$n.pid
log-error = $(my_err "$n")
port = ${PORT[mysql:$n]}
bind-address = 127.0.0.1
skip-name-resolve
server-id = $id
log-bin = binlog
relay-log = relay-bin
log-slave-updates = ON
binlog-format = ROW
slave-net-timeout = 6
max-connections = 1000
# a TCP health check must never get 127.0.0.1 blocked for "too many connection errors"
max-connect-errors = 1000000000
character-set-server = utf8mb4
performance-schema = OFF
innodb-buffer-pool-size = 64M
innodb-log-file-size = 16M
innodb-flush-log-at-trx-commit = 2
innodb-doublewrite = 0
sync-binlog = 0
$( [[ -f $MARIADB_ED25519_PLUGIN ]] && echo "plugin-load-add = auth_ed25519" )
$( tls_ready && printf '%s\n' "# TLS offered, not required (plain clients keep working)" \
    "ssl-cert = $TLS_DIR/server.pem" "ssl-key = $TLS_DIR/server.key" "ssl-ca = $TLS_DIR/ca.pem" )
!include $LAB_DIR/mysql/$n.role.cnf
EOF
}

# Brings nodes made by an older lab.sh (or whose certificate was just remade) to TLS: the config
# is regenerated (it does not depend on the role) and a running server restarted once; a
# replica resumes from its master.info, and `up`'s reset then checks the topology.
my_tls() {
    local n changed
    for n in B A; do
        [[ -f $(my_cnf "$n") ]] || continue
        changed=$TLS_NEW
        if ! grep -q '^ssl-cert' "$(my_cnf "$n")"; then
            log "mysql $n: enabling TLS"
            my_write_cnf "$n"
            changed=1
        fi
        if [[ $changed == 1 ]] && my_pid "$n" >/dev/null; then
            my_stop "$n"
            my_start "$n" || die "mysql $n did not start with TLS (see $(my_err "$n"))"
        fi
    done
}

my_start() {
    local n=$1 pid i
    my_pid "$n" >/dev/null && return 0
    [[ -d $(my_dd "$n")/mysql ]] || { log "mysql $n has no data directory"; return 1; }
    port_in_use "${PORT[mysql:$n]}" &&
        die "mysql $n: 127.0.0.1:${PORT[mysql:$n]} is taken by a process the lab did not start"
    rm -f "$RUN_DIR/mysql-$n.pid" "$(my_sock "$n")"
    log "mysql $n: starting"
    detached_exec "$MARIADBD" --defaults-file="$(my_cnf "$n")" >>"$LOG_DIR/mysql-$n.out" 2>&1 &
    pid=$!
    for ((i = 0; i < 600; i++)); do     # up to 60 s
        my_ping "$n" && return 0
        if ! kill -0 "$pid" 2>/dev/null && ! my_pid "$n" >/dev/null; then
            tail -n 15 "$(my_err "$n")" >&2 || true
            log "mysql $n: mariadbd exited during start-up (see $(my_err "$n"))"
            return 1
        fi
        sleep 0.1
    done
    log "mysql $n: not accepting connections after 60 s (see $(my_err "$n"))"
    return 1
}

my_stop() {
    local n=$1 pid needle
    pid=$(my_pid "$n") || return 0
    needle="--defaults-file=$(my_cnf "$n")"
    log "mysql $n: stopping (pid $pid)"
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    if ! try_for 60 pid_gone "$pid" "$needle"; then
        log "mysql $n: did not stop within 60 s, SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_for 10 "mysql $n (pid $pid) to die" pid_gone "$pid" "$needle"
    fi
}

my_signal() { local pid; pid=$(my_pid "$1") || return 0; kill -s "$2" "$pid" 2>/dev/null || true; }

my_kill() {
    local pid
    pid=$(my_pid "$1") || return 0
    kill -KILL "$pid" 2>/dev/null || true
    wait_for 10 "mysql $1 (pid $pid) to die" pid_gone "$pid" "--defaults-file=$(my_cnf "$1")"
}

# Make NODE a read-only GTID replica of UPSTREAM, starting at NODE's gtid_slave_pos.
my_follow() { # NODE UPSTREAM
    my_write_role "$1" replica
    my_sql "$1" "SET GLOBAL read_only = ON; STOP SLAVE; RESET SLAVE ALL;
        CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=${PORT[mysql:$2]},
          MASTER_USER='$REPL_USER', MASTER_PASSWORD='$LAB_REPL_PASSWORD',
          MASTER_CONNECT_RETRY=1, MASTER_USE_GTID=slave_pos;
        START SLAVE;" >/dev/null || die "mysql $1: could not point replication at $2"
}

# Make NODE a writable primary with no replication configured.
my_make_primary() {
    my_sql "$1" "STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = OFF;" >/dev/null ||
        die "mysql $1: could not promote"
    my_write_role "$1" primary
}

my_threads_running() { my_slave "$1"; [[ ${SS[Slave_IO_Running]:-} == Yes && ${SS[Slave_SQL_Running]:-} == Yes ]]; }

# REPLICA has both threads running, follows PRIMARY and has applied PRIMARY's binlog position.
my_wait_caught_up() { # PRIMARY REPLICA SECONDS [soft]
    local p=$1 r=$2 secs=$3 pos res
    if ! try_for "$secs" my_threads_running "$r"; then
        [[ ${4:-} == soft ]] && return 1
        die "mysql $r: replication threads not running (IO=${SS[Slave_IO_Running]:-none} SQL=${SS[Slave_SQL_Running]:-none} ${SS[Last_IO_Error]:-}${SS[Last_SQL_Error]:-})"
    fi
    pos=$(my_sql "$p" "SELECT @@global.gtid_binlog_pos") || { [[ ${4:-} == soft ]] && return 1; die "mysql $p: cannot read gtid_binlog_pos"; }
    res=$(my_sql "$r" "SELECT MASTER_GTID_WAIT('$pos', $secs)" $((secs + 10)) 2>/dev/null || echo err)
    [[ $res == 0 ]] && return 0
    [[ ${4:-} == soft ]] && return 1
    die "mysql $r: did not apply $p's GTID position '$pos' within ${secs}s"
}

my_switchover() { # PRIMARY REPLICA
    local p=$1 r=$2 t0 t1 t2 t3
    my_wait_caught_up "$p" "$r" 30
    t0=$(now)
    my_sql "$p" "SET GLOBAL read_only = ON" >/dev/null || die "mysql $p: cannot set read_only"
    my_write_role "$p" replica
    t1=$(now)
    my_wait_caught_up "$p" "$r" 30
    my_make_primary "$r"
    t2=$(now)
    # The old primary resumes from exactly what it has written itself.
    my_sql "$p" "STOP SLAVE; RESET SLAVE ALL; SET GLOBAL gtid_slave_pos = @@global.gtid_binlog_pos" >/dev/null ||
        die "mysql $p: cannot reset its replication position"
    my_follow "$p" "$r"
    my_wait_caught_up "$r" "$p" 30
    t3=$(now)
    echo "switchover mysql from=$p to=$r start=$t0 demoted=$t1 promoted=$t2 done=$t3"
}

# Promote a replica whose primary is gone (kill) or still alive (split brain): apply what it
# has already received, then stop replicating and accept writes.
my_promote() {
    local n=$1
    my_sql "$n" "STOP SLAVE IO_THREAD" >/dev/null 2>&1 || true
    my_slave "$n"
    if [[ -n ${SS[Gtid_IO_Pos]:-} ]]; then
        my_sql "$n" "SELECT MASTER_GTID_WAIT('${SS[Gtid_IO_Pos]}', 10)" 20 >/dev/null 2>&1 || true
    fi
    my_make_primary "$n"
}

my_canonical() { # P R SECONDS
    local p=$1 r=$2
    my_is "$p" primary && my_is "$r" replica || return 1
    my_slave "$p"; [[ -z ${SS[Master_Port]:-} ]] || return 1
    my_slave "$r"; [[ ${SS[Master_Port]:-} == "${PORT[mysql:$p]}" ]] || return 1
    if [[ ${SS[Slave_IO_Running]:-} != Yes || ${SS[Slave_SQL_Running]:-} != Yes ]]; then
        my_sql "$r" "START SLAVE" >/dev/null 2>&1 || true    # e.g. stopped after an error
    fi
    my_wait_caught_up "$p" "$r" "$3" soft
}

# Re-seed TARGET from SOURCE: fresh datadir (copy of the pristine template), users and data
# from mariadb-dump, GTID state set so that replication — and later switchovers — line up.
my_reseed() { # TARGET SOURCE
    local t=$1 s=$2 dd dump pos dbs
    dd=$(my_dd "$t")
    dump=$LAB_DIR/mysql/seed.sql
    my_stop "$t"
    log "mysql $t: re-seeding from $s (mariadb-dump)"
    rm -rf "$dd"
    cp -a "$LAB_DIR/mysql/template" "$dd"
    my_write_role "$t" replica
    my_start "$t" || die "mysql $t: fresh datadir did not start (see $(my_err "$t"))"
    dbs=$(my_sql "$s" "SELECT GROUP_CONCAT(schema_name SEPARATOR ' ') FROM information_schema.schemata
        WHERE schema_name NOT IN ('mysql','information_schema','performance_schema','sys')") ||
        die "mysql $s: cannot list databases"
    {
        echo "SET SESSION sql_log_bin = 0;"
        timeout 120 "$MARIADB_DUMP" --no-defaults --protocol=socket --socket="$(my_sock "$s")" --user=root \
            --system=users --insert-ignore --skip-comments 2>/dev/null
        # shellcheck disable=SC2086  # $dbs is a list of plain identifiers
        timeout 300 "$MARIADB_DUMP" --no-defaults --protocol=socket --socket="$(my_sock "$s")" --user=root \
            --single-transaction --gtid --master-data=2 --routines --triggers --events --databases $dbs
    } >"$dump" || die "mariadb-dump from mysql $s failed"
    pos=$(sed -n "s/^-- SET GLOBAL gtid_slave_pos='\\([^']*\\)'.*/\\1/p" "$dump" | head -n 1)
    timeout 300 "$MARIADB" --no-defaults --protocol=socket --socket="$(my_sock "$t")" --user=root <"$dump" ||
        die "loading the dump into mysql $t failed"
    rm -f "$dump"
    my_sql "$t" "FLUSH PRIVILEGES; RESET MASTER; SET GLOBAL gtid_binlog_state = '$pos'; SET GLOBAL gtid_slave_pos = '$pos';" >/dev/null ||
        die "mysql $t: cannot set the GTID position '$pos'"
    my_follow "$t" "$s"
    my_wait_caught_up "$s" "$t" 60
}

my_reset() {
    local n
    for n in A B; do my_signal "$n" CONT; done
    my_start A || true
    my_start B || true
    my_canonical A B 10 && return 0
    if my_canonical B A 5; then
        log "mysql: B is primary with A following: switching back"
        my_switchover B A >/dev/null
        return 0
    fi
    log "mysql: forcing the canonical topology (A authoritative, B re-seeded)"
    my_stop B
    my_start A || die "mysql A does not start (see $(my_err A)); 'lab.sh destroy mysql && lab.sh up mysql' starts over"
    my_make_primary A
    my_reseed B A
}

my_initialised() { [[ -f $LAB_DIR/mysql/.initialised ]]; }

my_init() {
    local n extra="" privs
    for n in A B; do my_stop "$n"; done
    rm -rf "$LAB_DIR/mysql"
    mkdir_lab "$LAB_DIR/mysql" 0750
    log "mysql: mariadb-install-db (pristine template datadir)"
    # The template is copied for A, B and every later re-seed (copying beats re-running install-db).
    printf '[mariadbd]\ninnodb-log-file-size = 16M\ninnodb-buffer-pool-size = 64M\n' |
        write_lab_file "$LAB_DIR/mysql/template.cnf"
    "$MARIADB_INSTALL_DB" --defaults-file="$LAB_DIR/mysql/template.cnf" --user="$LAB_OS_USER" \
        --datadir="$LAB_DIR/mysql/template" --auth-root-authentication-method=socket \
        --skip-test-db >>"$LOG_DIR/mysql-install-db.log" 2>&1 ||
        die "mariadb-install-db failed (see $LOG_DIR/mysql-install-db.log)"
    for n in A B; do
        cp -a "$LAB_DIR/mysql/template" "$(my_dd "$n")"
        my_write_cnf "$n"
    done
    my_write_role A primary
    my_write_role B replica
    my_start A || die "mysql A did not start (see $(my_err A))"
    my_start B || die "mysql B did not start (see $(my_err B))"
    log "mysql: creating users, database $APP_DB and table writes"
    # SLAVE MONITOR (10.5.9+) is what SHOW SLAVE STATUS needs; REPLICATION CLIENT is the old name
    # of BINLOG MONITOR. Grant what this version knows.
    privs=$(my_sql A "SHOW PRIVILEGES") || die "mysql A: SHOW PRIVILEGES failed"
    if [[ $privs == *$'\n'"Slave monitor"$'\t'* ]]; then extra=", SLAVE MONITOR"; fi
    my_sql A "
        CREATE USER '$REPL_USER'@'%' IDENTIFIED BY '$LAB_REPL_PASSWORD';
        GRANT REPLICATION SLAVE ON *.* TO '$REPL_USER'@'%';
        CREATE USER '$MONITOR_USER'@'%' IDENTIFIED BY '$LAB_MONITOR_PASSWORD';
        CREATE USER '$MONITOR_USER'@'localhost' IDENTIFIED BY '$LAB_MONITOR_PASSWORD';
        GRANT REPLICATION CLIENT$extra ON *.* TO '$MONITOR_USER'@'%';
        GRANT REPLICATION CLIENT$extra ON *.* TO '$MONITOR_USER'@'localhost';
        CREATE USER '$APP_USER'@'%' IDENTIFIED BY '$LAB_APP_PASSWORD';
        CREATE USER '$NATIVE_USER'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('$LAB_NATIVE_PASSWORD');
        CREATE DATABASE $APP_DB;
        GRANT ALL ON $APP_DB.* TO '$APP_USER'@'%';
        GRANT ALL ON $APP_DB.* TO '$NATIVE_USER'@'%';
        CREATE TABLE $APP_DB.writes (id BIGINT AUTO_INCREMENT PRIMARY KEY, node VARCHAR(64),
            at TIMESTAMP DEFAULT CURRENT_TIMESTAMP) ENGINE=InnoDB;
    " >/dev/null || die "mysql A: creating users/database failed"
    if [[ -f $MARIADB_ED25519_PLUGIN ]]; then
        my_sql A "CREATE USER '$ED25519_USER'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('$LAB_ED25519_PASSWORD');
            GRANT ALL ON $APP_DB.* TO '$ED25519_USER'@'%';" >/dev/null || die "mysql A: creating the ed25519 user failed"
    fi
    # B starts from the same empty template, so replaying A's whole binlog brings it level.
    my_follow B A
    my_wait_caught_up A B 60
    touch "$LAB_DIR/mysql/.initialised"
}

# ------------------------------------------------------------------------------------------------
# Redis
# Each node: $LAB_DIR/redis/N.conf (generated) including N.role.conf ("replicaof ..." or empty),
# which the lab keeps in step with the runtime role. No persistence: a restarted node is empty.
# Admin is the default user, whose password (requirepass) is LAB_MONITOR_PASSWORD.
# ------------------------------------------------------------------------------------------------

rd_conf() { printf '%s' "$LAB_DIR/redis/$1.conf"; }

redis_pid() {
    local pid=""
    [[ -s $RUN_DIR/redis-$1.pid ]] && pid=$(<"$RUN_DIR/redis-$1.pid")
    proc_matches "$pid" "127.0.0.1:${PORT[redis:$1]}" || return 1
    printf '%s\n' "$pid"
}

rd_cli() { # NODE ARGS...
    local n=$1; shift
    timeout 10 "$REDIS_CLI" --no-auth-warning -h 127.0.0.1 -p "${PORT[redis:$n]}" \
        -a "$LAB_MONITOR_PASSWORD" "$@"
}

rd_ping() { [[ $(rd_cli "$1" PING 2>/dev/null) == PONG ]]; }

# rd_info NODE: INFO replication into the associative array RI.
declare -A RI=()
rd_info() {
    local line
    RI=()
    while IFS= read -r line; do
        line=${line%$'\r'}
        [[ $line == *:* ]] && RI[${line%%:*}]=${line#*:}
    done < <(rd_cli "$1" INFO replication 2>/dev/null || true)
    [[ -n ${RI[role]:-} ]]
}

redis_role() {
    rd_info "$1" || return 1
    case ${RI[role]} in master) echo primary ;; slave) echo replica ;; *) return 1 ;; esac
}

rd_is() { [[ $(redis_role "$1" 2>/dev/null) == "$2" ]]; }

redis_replica_info() {
    local up='?' n
    rd_info "$1" || true
    for n in A B; do [[ ${RI[master_port]:-} == "${PORT[redis:$n]}" ]] && up=$n; done
    printf ' upstream=%s link=%s' "$up" "${RI[master_link_status]:-?}"
}

rd_write_role() { # NODE primary | NODE replica UPSTREAM
    if [[ $2 == replica ]]; then
        echo "replicaof 127.0.0.1 ${PORT[redis:$3]}"
    else
        echo "# primary (no replicaof)"
    fi | write_lab_file "$LAB_DIR/redis/$1.role.conf"
}

rd_write_conf() {
    local n=$1
    mkdir_lab "$LAB_DIR/redis/$n" 0750
    cat <<EOF | write_lab_file "$(rd_conf "$n")" 0640
# Generated by loadtest/lab.sh
bind 127.0.0.1
port ${PORT[redis:$n]}
protected-mode yes
daemonize yes
pidfile $RUN_DIR/redis-$n.pid
logfile $LOG_DIR/redis-$n.log
dir $LAB_DIR/redis/$n
save ""
appendonly no
maxclients 10000
# default user (admin, replication): requirepass/masterauth
requirepass $LAB_MONITOR_PASSWORD
masterauth $LAB_MONITOR_PASSWORD
user $MONITOR_USER on >$LAB_MONITOR_PASSWORD -@all +ping +info +role +auth +hello +client +echo +command
user $APP_USER on >$LAB_APP_PASSWORD ~* &* +@all
repl-diskless-sync yes
repl-diskless-sync-delay 0
repl-ping-replica-period 1
repl-timeout 10
shutdown-timeout 2
$( tls_ready && printf '%s\n' \
    "# TLS on its own port (the plain port is unchanged); no client certificate asked for;" \
    "# replication stays on the plain port." \
    "tls-port ${PORT[redis-tls:$n]}" "tls-cert-file $TLS_DIR/server.pem" \
    "tls-key-file $TLS_DIR/server.key" "tls-ca-cert-file $TLS_DIR/ca.pem" "tls-auth-clients no" )
include $LAB_DIR/redis/$n.role.conf
EOF
}

# Brings nodes made by an older lab.sh (or whose certificate was just remade) to TLS: the config
# is regenerated (the role lives in N.role.conf) and a running server restarted once — which,
# without persistence, empties it (a replica resyncs from its master).
redis_tls() {
    local n changed
    for n in B A; do
        [[ -f $(rd_conf "$n") ]] || continue
        changed=$TLS_NEW
        if ! grep -q '^tls-port' "$(rd_conf "$n")"; then
            log "redis $n: enabling TLS on port ${PORT[redis-tls:$n]}"
            rd_write_conf "$n"
            changed=1
        fi
        if [[ $changed == 1 ]] && redis_pid "$n" >/dev/null; then
            redis_stop "$n"
            redis_start "$n" || die "redis $n did not start with TLS (see $LOG_DIR/redis-$n.log)"
        fi
    done
}

redis_start() {
    local n=$1
    redis_pid "$n" >/dev/null && return 0
    [[ -f $(rd_conf "$n") ]] || { log "redis $n has no config"; return 1; }
    port_in_use "${PORT[redis:$n]}" &&
        die "redis $n: 127.0.0.1:${PORT[redis:$n]} is taken by a process the lab did not start"
    port_in_use "${PORT[redis-tls:$n]}" &&
        die "redis $n: 127.0.0.1:${PORT[redis-tls:$n]} (TLS) is taken by a process the lab did not start"
    rm -f "$RUN_DIR/redis-$n.pid"
    log "redis $n: starting"
    (detached_exec runuser -u "$LAB_OS_USER" -- "$REDIS_SERVER" "$(rd_conf "$n")") >>"$LOG_DIR/redis-$n.out" 2>&1 ||
        { tail -n 10 "$LOG_DIR/redis-$n.log" >&2 || true; return 1; }
    try_for 30 rd_ping "$n" || { tail -n 10 "$LOG_DIR/redis-$n.log" >&2 || true; return 1; }
    redis_pid "$n" >/dev/null || { log "redis $n: answers but its pid file does not name it"; return 1; }
}

redis_stop() {
    local n=$1 pid needle
    pid=$(redis_pid "$n") || return 0
    needle="127.0.0.1:${PORT[redis:$n]}"
    log "redis $n: stopping (pid $pid)"
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    if ! try_for 30 pid_gone "$pid" "$needle"; then
        kill -KILL "$pid" 2>/dev/null || true
        wait_for 10 "redis $n (pid $pid) to die" pid_gone "$pid" "$needle"
    fi
    rm -f "$RUN_DIR/redis-$n.pid"
}

redis_signal() { local pid; pid=$(redis_pid "$1") || return 0; kill -s "$2" "$pid" 2>/dev/null || true; }

redis_kill() {
    local pid
    pid=$(redis_pid "$1") || return 0
    kill -KILL "$pid" 2>/dev/null || true
    wait_for 10 "redis $1 (pid $pid) to die" pid_gone "$pid" "127.0.0.1:${PORT[redis:$1]}"
}

rd_expect_ok() { # NODE ARGS...: the reply must be OK
    local out
    out=$(rd_cli "$@" 2>&1) || true
    [[ $out == OK* ]] || die "redis $1: '${*:2}' answered: $out"
}

rd_make_primary() { rd_expect_ok "$1" REPLICAOF NO ONE; rd_write_role "$1" primary; }
rd_follow() { rd_expect_ok "$1" REPLICAOF 127.0.0.1 "${PORT[redis:$2]}"; rd_write_role "$1" replica "$2"; }

# R follows P, link up, and has processed P's replication offset OFFSET.
rd_caught_up() { # P R OFFSET
    rd_info "$2" || return 1
    [[ ${RI[role]} == slave && ${RI[master_port]:-} == "${PORT[redis:$1]}" && ${RI[master_link_status]:-} == up ]] || return 1
    (( ${RI[slave_repl_offset]:-0} >= $3 ))
}

rd_wait_caught_up() { # P R SECONDS [soft]
    local off
    if ! rd_info "$1"; then [[ ${4:-} == soft ]] && return 1; die "redis $1: no INFO"; fi
    off=${RI[master_repl_offset]:-0}
    if [[ ${4:-} == soft ]]; then
        try_for "$3" rd_caught_up "$1" "$2" "$off"
    else
        wait_for "$3" "redis $2 to replicate from $1 up to offset $off" rd_caught_up "$1" "$2" "$off"
    fi
}

redis_switchover() { # PRIMARY REPLICA
    local p=$1 r=$2 t0 t1 t2 t3
    rd_wait_caught_up "$p" "$r" 30
    t0=$(now)
    # Writes on the old master now block (not fail) until it is a replica, then get -READONLY.
    rd_expect_ok "$p" CLIENT PAUSE 30000 WRITE
    t1=$(now)
    if ! rd_wait_caught_up "$p" "$r" 20 soft; then
        rd_cli "$p" CLIENT UNPAUSE >/dev/null || true
        die "redis $r did not catch up with $p; switchover aborted, $p unpaused"
    fi
    rd_make_primary "$r"
    t2=$(now)
    rd_follow "$p" "$r"
    rd_expect_ok "$p" CLIENT UNPAUSE
    rd_wait_caught_up "$r" "$p" 30
    t3=$(now)
    echo "switchover redis from=$p to=$r start=$t0 demoted=$t1 promoted=$t2 done=$t3"
}

redis_promote() { rd_make_primary "$1"; }

redis_canonical() { # P R SECONDS
    rd_is "$1" primary || return 1
    rd_info "$2" || return 1
    [[ ${RI[role]} == slave && ${RI[master_port]:-} == "${PORT[redis:$1]}" ]] || return 1
    rd_wait_caught_up "$1" "$2" "$3" soft
}

redis_reset() {
    local n
    for n in A B; do redis_signal "$n" CONT; done
    redis_start A || true
    redis_start B || true
    redis_canonical A B 10 && return 0
    if redis_canonical B A 5; then
        log "redis: B is primary with A following: switching back"
        redis_switchover B A >/dev/null
        return 0
    fi
    log "redis: forcing the canonical topology (A authoritative, B resynced)"
    redis_start A || die "redis A does not start (see $LOG_DIR/redis-A.log)"
    rd_is A primary || rd_make_primary A
    rd_write_role A primary
    [[ -f $(rd_conf B) ]] || { rd_write_conf B; rd_write_role B replica A; }
    redis_start B || die "redis B does not start (see $LOG_DIR/redis-B.log)"
    rd_follow B A
    rd_wait_caught_up A B 60
}

redis_initialised() { [[ -f $LAB_DIR/redis/.initialised ]]; }

redis_init() {
    local n
    for n in A B; do redis_stop "$n"; done
    rm -rf "$LAB_DIR/redis"
    mkdir_lab "$LAB_DIR/redis" 0750
    for n in A B; do rd_write_conf "$n"; done
    rd_write_role A primary
    rd_write_role B replica A
    redis_start A || die "redis A did not start (see $LOG_DIR/redis-A.log)"
    redis_start B || die "redis B did not start (see $LOG_DIR/redis-B.log)"
    rd_wait_caught_up A B 30
    touch "$LAB_DIR/redis/.initialised"
}

# ------------------------------------------------------------------------------------------------
# Engine dispatch: the per-engine function names, so commands can be written once.
# ------------------------------------------------------------------------------------------------

declare -A FN=(
    [pg:pid]=pg_pid [pg:start]=pg_start [pg:stop]=pg_stop [pg:signal]=pg_signal [pg:kill]=pg_kill
    [pg:role]=pg_role [pg:info]=pg_replica_info [pg:promote]=pg_promote [pg:switchover]=pg_switchover
    [pg:reset]=pg_reset [pg:init]=pg_init [pg:initialised]=pg_initialised [pg:tls]=pg_tls
    [mysql:pid]=my_pid [mysql:start]=my_start [mysql:stop]=my_stop [mysql:signal]=my_signal
    [mysql:kill]=my_kill [mysql:role]=my_role [mysql:info]=my_replica_info [mysql:promote]=my_promote
    [mysql:switchover]=my_switchover [mysql:reset]=my_reset [mysql:init]=my_init
    [mysql:initialised]=my_initialised [mysql:tls]=my_tls
    [redis:pid]=redis_pid [redis:start]=redis_start [redis:stop]=redis_stop [redis:signal]=redis_signal
    [redis:kill]=redis_kill [redis:role]=redis_role [redis:info]=redis_replica_info
    [redis:promote]=redis_promote [redis:switchover]=redis_switchover [redis:reset]=redis_reset
    [redis:init]=redis_init [redis:initialised]=redis_initialised [redis:tls]=redis_tls)

call() { local e=$1 op=$2; shift 2; "${FN[$e:$op]}" "$@"; }

# node_state ENGINE NODE -> sets STATE (up|down|stopped), PID, ROLE (primary|replica|unknown|-)
node_state() {
    local e=$1 n=$2 st
    STATE=down PID=- ROLE=-
    PID=$(call "$e" pid "$n") || { PID=-; return 0; }
    st=$(proc_state "$PID" || echo '?')
    if [[ $st == T ]]; then STATE=stopped ROLE=unknown; return 0; fi
    STATE=up
    ROLE=$(call "$e" role "$n" 2>/dev/null) || ROLE=unknown
}

# find_pair ENGINE: sets P to the single running primary and R to the other node. R is checked
# to be a running replica when the second argument is "need-replica".
find_pair() {
    local e=$1 n prim=()
    for n in A B; do
        node_state "$e" "$n"
        [[ $STATE == up && $ROLE == primary ]] && prim+=("$n")
    done
    (( ${#prim[@]} == 1 )) || die "$e: expected exactly one running primary, found ${#prim[@]} (${prim[*]:-none}); see 'lab.sh status $e' or run 'lab.sh reset $e'"
    P=${prim[0]}
    R=$(other "$P")
    if [[ ${2:-} == need-replica ]]; then
        node_state "$e" "$R"
        [[ $STATE == up && $ROLE == replica ]] || die "$e: node $R is not a running replica ($STATE/$ROLE); run 'lab.sh reset $e'"
    fi
}

# ------------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------------

parse_engines() { # [engine|all] -> ENGS array
    case ${1:-all} in
        all) ENGS=("${ENGINES[@]}") ;;
        pg | mysql | redis) ENGS=("$1") ;;
        postgres | postgresql) ENGS=(pg) ;;
        mariadb) ENGS=(mysql) ;;
        *) die "unknown engine '$1' (pg | mysql | redis | all)" ;;
    esac
}

one_engine() { # engine (required, not "all")
    [[ -n ${1:-} && ${1:-} != all ]] || die "'$CMD' needs an engine: pg | mysql | redis"
    parse_engines "$1"
    E=${ENGS[0]}
}

one_node() { [[ ${1:-} == A || ${1:-} == B ]] || die "'$CMD' needs a node: A or B"; }

require_state() { # ENGINE
    call "$1" initialised || die "$1 is not set up in $LAB_DIR; run 'lab.sh up $1'"
}

status_lines() {
    local e n extra
    for e in "${ENGS[@]}"; do
        for n in A B; do
            extra=""
            if call "$e" initialised; then
                node_state "$e" "$n"
                [[ $ROLE == replica ]] && extra=$(call "$e" info "$n")
            else
                STATE=absent PID=- ROLE=-
            fi
            printf '%s %s 127.0.0.1:%s %s %s pid=%s%s\n' "$e" "$n" "${PORT[$e:$n]}" "$STATE" "$ROLE" "$PID" "$extra"
        done
    done
}

cmd_up() {
    local e t0 i
    t0=$(now_us)
    need_root
    parse_engines "${1:-all}"
    ensure_packages "${ENGS[@]}"
    ensure_user
    ensure_dirs
    ensure_tls      # before any config is written: every config names the certificate
    # Engines are independent (own dirs, ports, logs): initialise the missing ones in parallel
    # (mariadb-install-db alone takes a few seconds).
    local -a pids=() names=()
    local -A fresh=()
    for e in "${ENGS[@]}"; do
        if ! call "$e" initialised; then
            (call "$e" init) &
            pids+=("$!") names+=("$e")
            fresh[$e]=1
        fi
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || die "initialising ${names[$i]} failed (see the messages above and $LOG_DIR)"
    done
    # State made by an older lab.sh, or a certificate just remade: TLS on (once), then reset.
    for e in "${ENGS[@]}"; do [[ -n ${fresh[$e]:-} ]] || call "$e" tls; done
    for e in "${ENGS[@]}"; do call "$e" reset; done
    status_lines
    for e in "${ENGS[@]}"; do
        printf 'endpoint %s primary=127.0.0.1:%s replica=127.0.0.1:%s\n' "$e" "${PORT[$e:A]}" "${PORT[$e:B]}"
    done
    log "tls: CA $TLS_DIR/ca.pem (LAB_TLS_CA); redis TLS ports A=${PORT[redis-tls:A]} B=${PORT[redis-tls:B]}"
    log "up in $(( ($(now_us) - t0) / 1000 )) ms; state in $LAB_DIR"
}

cmd_down() {
    local e n
    parse_engines "${1:-all}"
    [[ -d $LAB_DIR ]] || return 0
    for e in "${ENGS[@]}"; do
        for n in A B; do call "$e" stop "$n"; done
    done
}

cmd_destroy() {
    local e
    parse_engines "${1:-all}"
    [[ -d $LAB_DIR ]] || return 0
    cmd_down "${1:-all}"
    if [[ ${1:-all} == all ]]; then
        log "removing $LAB_DIR"
        rm -rf "$LAB_DIR"
    else
        for e in "${ENGS[@]}"; do rm -rf "${LAB_DIR:?}/$e"; done
    fi
}

cmd_reset() {
    local e
    need_root
    parse_engines "${1:-all}"
    for e in "${ENGS[@]}"; do
        require_state "$e"
        call "$e" reset
    done
    status_lines
}

cmd_status() {
    parse_engines "${1:-all}"
    [[ $EUID -eq 0 ]] || log "warning: not root; MariaDB roles need root (unix_socket admin login)"
    status_lines
}

cmd_primary() {
    local n found=()
    one_engine "${1:-}"
    for n in A B; do
        node_state "$E" "$n"
        [[ $STATE == up && $ROLE == primary ]] && found+=("$n")
    done
    for n in "${found[@]}"; do echo "$n 127.0.0.1:${PORT[$E:$n]}"; done
    case ${#found[@]} in
        1) return 0 ;;
        0) log "$E: no node is primary"; return 1 ;;
        *) log "$E: split brain: both nodes claim primary"; return 2 ;;
    esac
}

cmd_switchover() {
    one_engine "${1:-}"
    require_state "$E"
    find_pair "$E" need-replica
    log "$E: switchover $P -> $R"
    call "$E" switchover "$P" "$R"
}

cmd_kill() {
    local t0 t1 t2 t3
    one_engine "${1:-}"
    require_state "$E"
    find_pair "$E" need-replica
    log "$E: kill -9 $P, promote $R"
    t0=$(now)
    call "$E" kill "$P"
    t1=$(now)
    call "$E" promote "$R"
    t2=$(now)
    t3=$(now)
    echo "kill $E from=$P to=$R start=$t0 demoted=$t1 promoted=$t2 done=$t3"
}

cmd_hang() {
    local pid
    one_engine "${1:-}"
    require_state "$E"
    find_pair "$E"
    pid=$(call "$E" pid "$P")
    call "$E" signal "$P" STOP
    echo "hang $E node=$P pid=$pid at=$(now)"
}

cmd_resume() {
    local n
    one_engine "${1:-}"
    require_state "$E"
    for n in A B; do
        node_state "$E" "$n"
        if [[ $STATE == stopped ]]; then
            call "$E" signal "$n" CONT
            echo "resume $E node=$n pid=$PID at=$(now)"
        fi
    done
}

cmd_promote() {
    local n r=""
    one_engine "${1:-}"
    require_state "$E"
    for n in A B; do
        node_state "$E" "$n"
        [[ $STATE == up && $ROLE == replica ]] && r=$n
    done
    [[ -n $r ]] || die "$E: no running replica to promote"
    call "$E" promote "$r"
    echo "promote $E node=$r at=$(now)"
}

cmd_stop() {
    one_engine "${1:-}"; one_node "${2:-}"
    require_state "$E"
    call "$E" stop "$2"
    echo "stop $E node=$2 at=$(now)"
}

cmd_start() {
    one_engine "${1:-}"; one_node "${2:-}"
    need_root
    require_state "$E"
    call "$E" start "$2" || die "$E $2 did not start (see $LOG_DIR)"
    echo "start $E node=$2 at=$(now)"
}

cmd_env() {
    local k bin
    printf 'export LAB_DIR=%q\n' "$LAB_DIR"
    for k in "${CONFIG_VARS[@]}"; do printf 'export %s=%q\n' "$k" "${!k}"; done
    printf 'export LAB_MONITOR_USER=%q LAB_APP_USER=%q LAB_APP_DB=%q\n' "$MONITOR_USER" "$APP_USER" "$APP_DB"
    printf 'export LAB_MD5_USER=%q LAB_REPL_USER=%q LAB_NATIVE_USER=%q LAB_ED25519_USER=%q\n' \
        "$MD5_USER" "$REPL_USER" "$NATIVE_USER" "$ED25519_USER"
    printf 'export LAB_PG_A_ADDR=127.0.0.1:%s LAB_PG_B_ADDR=127.0.0.1:%s\n' "${PORT[pg:A]}" "${PORT[pg:B]}"
    printf 'export LAB_MY_A_ADDR=127.0.0.1:%s LAB_MY_B_ADDR=127.0.0.1:%s\n' "${PORT[mysql:A]}" "${PORT[mysql:B]}"
    printf 'export LAB_REDIS_A_ADDR=127.0.0.1:%s LAB_REDIS_B_ADDR=127.0.0.1:%s\n' "${PORT[redis:A]}" "${PORT[redis:B]}"
    printf 'export LAB_REDIS_A_TLS_ADDR=127.0.0.1:%s LAB_REDIS_B_TLS_ADDR=127.0.0.1:%s\n' "${PORT[redis-tls:A]}" "${PORT[redis-tls:B]}"
    printf 'export LAB_TLS_CA=%q\n' "$TLS_DIR/ca.pem"
    printf 'export LAB_PG_BIN=%q\n' "$PG_BIN"
    bin=$PG_BIN/psql; [[ -x $bin ]] || bin=$(command -v psql || echo psql)
    printf 'export LAB_PSQL=%q\n' "$bin"
    printf 'export LAB_MARIADB=%q\n' "$MARIADB"
    printf 'export LAB_REDIS_CLI=%q\n' "$REDIS_CLI"
    printf 'export LAB_SH=%q\n' "$SELF"
}

# Client wrappers: the app user on node A or B, over TCP like a real client.
cmd_client() { # TOOL NODE ARGS...
    local tool=$1 n=${2:-}
    CMD=$tool; one_node "$n"; shift 2
    case $tool in
        psql) PGPASSWORD=$LAB_APP_PASSWORD PGCONNECT_TIMEOUT=5 exec "$PG_BIN/psql" -X \
                -h 127.0.0.1 -p "${PORT[pg:$n]}" -U "$APP_USER" -d "$APP_DB" "$@" ;;
        mariadb) MYSQL_PWD=$LAB_APP_PASSWORD exec "$MARIADB" --no-defaults --protocol=tcp \
                -h 127.0.0.1 -P "${PORT[mysql:$n]}" -u "$APP_USER" --database="$APP_DB" --connect-timeout=5 "$@" ;;
        redis-cli) exec "$REDIS_CLI" --no-auth-warning -h 127.0.0.1 -p "${PORT[redis:$n]}" \
                --user "$APP_USER" --pass "$LAB_APP_PASSWORD" "$@" ;;
    esac
}

usage() {
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$SELF"
}

main() {
    CMD=${1:-help}
    [[ $# -gt 0 ]] && shift
    load_config
    case $CMD in
        up | down | destroy | reset | switchover | kill | hang | resume | promote | stop | start)
            need_root
            take_lock ;;
    esac
    case $CMD in
        up) cmd_up "$@" ;;
        down) cmd_down "$@" ;;
        destroy) cmd_destroy "$@" ;;
        reset) cmd_reset "$@" ;;
        status) cmd_status "$@" ;;
        primary) cmd_primary "$@" ;;
        switchover) cmd_switchover "$@" ;;
        kill) cmd_kill "$@" ;;
        hang) cmd_hang "$@" ;;
        resume) cmd_resume "$@" ;;
        promote) cmd_promote "$@" ;;
        stop) cmd_stop "$@" ;;
        start) cmd_start "$@" ;;
        env) cmd_env ;;
        psql | mariadb | mysql | redis-cli)
            [[ $CMD == mysql ]] && CMD=mariadb
            cmd_client "$CMD" "$@" ;;
        help | -h | --help) usage ;;
        *) usage >&2; die "unknown command '$CMD'" ;;
    esac
}

main "$@"
