#!/usr/bin/env bash
# loadtest/lab_selftest.sh — drives loadtest/lab.sh through every scenario against the real
# servers and checks, with real client writes as the app user, which node accepts writes after
# each step (a replica / read-only / dead / hung node must refuse or time out).
#
# Usage: loadtest/lab_selftest.sh [pg|mysql|redis|etcd|patroni|sentinel ...]   (default: pg mysql redis)
# Needs a lab that is up (it runs `lab.sh up` first). Leaves the lab in the canonical topology.
# The fleet engines (etcd, patroni, sentinel) are brought up, checked, switched over / failed
# over once, and torn down again (`lab.sh destroy ENGINE`) unless FLEET_KEEP=1.
set -euo pipefail

LAB=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lab.sh
engines=("$@")
(( ${#engines[@]} )) || engines=(pg mysql redis)
pairs=()
for e in "${engines[@]}"; do [[ $e == etcd || $e == patroni || $e == sentinel ]] || pairs+=("$e"); done
if (( ${#pairs[@]} )); then "$LAB" up "${pairs[@]}" >/dev/null; fi
eval "$("$LAB" env)"

FAILS=0
RUN_ID=$$
SEQ=0
pass() { printf '  ok    %s\n' "$*"; }
fail() { printf '  FAIL  %s\n' "$*"; FAILS=$((FAILS + 1)); }

# try_write ENGINE NODE TAG: 0 when NODE accepted the write (bounded by a 3 s timeout).
try_write() {
    local out
    case $1 in
        pg) timeout 3 "$LAB" psql "$2" -qAt -v ON_ERROR_STOP=1 \
                -c "INSERT INTO writes(node) VALUES ('$3')" >/dev/null 2>&1 ;;
        mysql) timeout 3 "$LAB" mariadb "$2" -e "INSERT INTO writes(node) VALUES ('$3')" >/dev/null 2>&1 ;;
        redis) out=$(timeout 3 "$LAB" redis-cli "$2" SET "w:$3" "$3" 2>&1) || return 1
               [[ $out == OK ]] ;;
    esac
}

# has_row ENGINE NODE TAG: 0 when the write tagged TAG is readable on NODE.
has_row() {
    local out
    case $1 in
        pg) out=$(timeout 3 "$LAB" psql "$2" -qAt -c "SELECT count(*) FROM writes WHERE node = '$3'" 2>/dev/null) ;;
        mysql) out=$(timeout 3 "$LAB" mariadb "$2" -N -e "SELECT count(*) FROM writes WHERE node = '$3'" 2>/dev/null) ;;
        redis) out=$(timeout 3 "$LAB" redis-cli "$2" EXISTS "w:$3" 2>/dev/null) ;;
    esac
    [[ $out == 1 ]]
}

check() { # DESCRIPTION CMD...
    if "${@:2}"; then pass "$1"; else fail "$1"; fi
}

# node_is ENGINE NODE STATE: `lab.sh status` reports NODE in STATE (up/down/stopped).
node_is() { local st; st=$("$LAB" status "$1"); [[ $st == *"$1 $2 "*" $3 "* ]]; }

tag() { SEQ=$((SEQ + 1)); TAG="t$RUN_ID-$SEQ"; }

# expect ENGINE STEP A=<rw|ro> B=<rw|ro>: write to each node and compare with the expectation.
expect() {
    local e=$1 step=$2 spec n mode
    shift 2
    for spec; do
        n=${spec%%=*} mode=${spec#*=}
        tag
        if try_write "$e" "$n" "$TAG"; then
            if [[ $mode == rw ]]; then pass "$e $step: $n accepts writes"; else fail "$e $step: $n accepted a write but should not"; fi
        else
            if [[ $mode == rw ]]; then fail "$e $step: $n refused a write but should accept"; else pass "$e $step: $n refuses writes"; fi
        fi
    done
}

# replicates ENGINE STEP FROM TO: a write on FROM shows up on TO within 10 s.
replicates() {
    local e=$1 step=$2 i
    tag
    try_write "$e" "$3" "$TAG" || { fail "$e $step: write on $3 failed"; return; }
    for ((i = 0; i < 100; i++)); do
        if has_row "$e" "$4" "$TAG"; then pass "$e $step: write on $3 replicated to $4"; return; fi
        sleep 0.1
    done
    fail "$e $step: write on $3 not visible on $4 after 10 s"
}

expect_primary() { # ENGINE STEP WANT(A|B|split)
    local out rc=0
    out=$("$LAB" primary "$1" 2>/dev/null) || rc=$?
    case $3 in
        split) check "$1 $2: 'primary' reports split brain (rc=$rc)" test "$rc" = 2 ;;
        *) check "$1 $2: primary is $3 (rc=$rc, '$out')" test "$rc" = 0 -a "${out%% *}" = "$3" ;;
    esac
}

timed() { # CMD...: run a lab.sh command, show its timestamp line and how long it took
    local t0 t1 out ms
    t0=${EPOCHREALTIME/[.,]/}
    out=$("$@" 2>/dev/null) || { fail "'${*:2}' failed"; return 0; }
    t1=${EPOCHREALTIME/[.,]/}
    ms=$(( (t1 - t0) / 1000 ))
    out=$(grep -v -E '^((pg|mysql|redis|patroni) [AB]|etcd e[0-9]|sentinel S[0-9]|endpoint) ' <<<"$out" || true)
    printf '        %-22s %5d ms  %s\n' "${*:2}" "$ms" "$out"
}

for_engine() {
    local e=$1
    echo "== $e"
    timed "$LAB" reset "$e"
    expect_primary "$e" canonical A
    expect "$e" canonical A=rw B=ro
    replicates "$e" canonical A B

    timed "$LAB" switchover "$e"
    expect_primary "$e" switchover-1 B
    expect "$e" switchover-1 A=ro B=rw
    replicates "$e" switchover-1 B A

    timed "$LAB" switchover "$e"
    expect_primary "$e" switchover-2 A
    expect "$e" switchover-2 A=rw B=ro
    replicates "$e" switchover-2 A B

    timed "$LAB" kill "$e"
    expect_primary "$e" kill B
    expect "$e" kill A=ro B=rw
    check "$e kill: status reports A down" node_is "$e" A down
    timed "$LAB" reset "$e"
    expect_primary "$e" kill+reset A
    expect "$e" kill+reset A=rw B=ro
    replicates "$e" kill+reset A B

    timed "$LAB" hang "$e"
    check "$e hang: status reports A stopped" node_is "$e" A stopped
    expect "$e" hang A=ro B=ro
    timed "$LAB" resume "$e"
    expect "$e" resume A=rw B=ro
    timed "$LAB" reset "$e"
    expect "$e" hang+reset A=rw B=ro
    replicates "$e" hang+reset A B

    timed "$LAB" promote "$e"
    expect_primary "$e" promote split
    expect "$e" promote A=rw B=rw
    # the end of the split brain: the old primary fenced, the promoted one stays
    timed "$LAB" demote "$e" A
    expect_primary "$e" demote B
    expect "$e" demote A=ro B=rw
    timed "$LAB" reset "$e"
    expect_primary "$e" promote+reset A
    expect "$e" promote+reset A=rw B=ro
    replicates "$e" promote+reset A B

    timed "$LAB" stop "$e" A
    expect "$e" stop-A A=ro B=ro
    timed "$LAB" start "$e" A
    timed "$LAB" reset "$e"
    expect "$e" stop+start+reset A=rw B=ro
    replicates "$e" stop+start+reset A B

    # both ends of a switchover, then a kill of the *new* primary, then reset
    timed "$LAB" switchover "$e"
    timed "$LAB" kill "$e"
    expect_primary "$e" switchover+kill A
    timed "$LAB" reset "$e"
    expect "$e" switchover+kill+reset A=rw B=ro
    replicates "$e" switchover+kill+reset A B
    # a hung replica and a killed replica are also repaired by reset
    "$LAB" stop "$e" B >/dev/null
    "$LAB" start "$e" B >/dev/null
    timed "$LAB" reset "$e"
    replicates "$e" replica-restart A B
}

# json_check DESCRIPTION PYTHON-EXPR CMD...: CMD prints JSON; EXPR (on `j`) must be true.
json_check() {
    local what=$1 expr=$2 out
    shift 2
    if out=$("$@" 2>/dev/null) && /usr/bin/python3 -c "import json, sys; j = json.loads(sys.argv[1]); sys.exit(0 if ($expr) else 1)" "$out"; then
        pass "$what"
    else
        fail "$what (got: ${out:-nothing})"
    fi
}

# patroni_write NODE: the app user's INSERT on that Patroni node succeeds (3 s bound).
patroni_write() {
    local port
    port=$(/usr/bin/python3 -c "import json, sys; print(json.load(sys.stdin)['engines']['patroni']['nodes']['$1']['port'])" < <("$LAB" env --json))
    PGPASSWORD=$LAB_APP_PASSWORD PGCONNECT_TIMEOUT=3 timeout 5 "$LAB_PSQL" -X -qAt -h 127.0.0.1 -p "$port" \
        -U "$LAB_APP_USER" -d "$LAB_APP_DB" -v ON_ERROR_STOP=1 -c "INSERT INTO writes(node) VALUES ('$1')" >/dev/null 2>&1
}
not_() { ! "$@"; }
etcd_roundtrip() {
    "$LAB" etcdctl put lab-selftest "$RUN_ID" >/dev/null 2>&1 &&
        [[ $("$LAB" etcdctl get --print-value-only lab-selftest 2>/dev/null) == "$RUN_ID" ]]
}

# The three sentinels name redis NODE as the master.
sentinels_name() { # NODE
    json_check "sentinel: every sentinel names redis $1 as $LAB_SENTINEL_MASTER" \
        "j['masters'] == [{'node': '$1', 'address': '$(node_addr redis "$1")'}] and len(j['sentinels']) == 3 and set(j['sentinels'].values()) == {'$1'}" \
        "$LAB" sentinel master --json
}
node_addr() { /usr/bin/python3 -c "import json, sys; print(json.load(sys.stdin)['engines']['$1']['nodes']['$2']['address'])" < <("$LAB" env --json); }

for_fleet() {
    local e=$1
    echo "== $e"
    timed "$LAB" up "$e"
    case $e in
        etcd)
            json_check "etcd: endpoint health on all 3 members" "all(j['health'].values()) and len(j['health']) == 3" "$LAB" etcd health --json
            check "etcd: a key written through the cluster reads back" etcd_roundtrip
            json_check "etcd: one leader" "len(j['primaries']) == 1" "$LAB" primary etcd --json
            timed "$LAB" switchover etcd
            json_check "etcd: still one leader after move-leader" "len(j['primaries']) == 1" "$LAB" primary etcd --json
            timed "$LAB" kill etcd
            json_check "etcd kill: the two others elected a leader, one member is down" \
                "len(j['primaries']) == 1" "$LAB" primary etcd --json
            json_check "etcd kill: status shows exactly one member down" \
                "sorted(n['state'] for n in j['etcd'].values()) == ['down', 'up', 'up']" "$LAB" status etcd --json
            timed "$LAB" reset etcd
            json_check "etcd reset: endpoint health on all 3 members" "all(j['health'].values())" "$LAB" etcd health --json
            ;;
        patroni)
            json_check "patroni: patronictl list shows leader A and a running replica B" \
                "sorted((m['Member'], m['Role'], m['State']) for m in j) == [('A', 'Leader', 'running'), ('B', 'Replica', 'running')]" \
                "$LAB" patroni list --json
            check "patroni: A (leader) accepts writes" patroni_write A
            check "patroni: B (replica) refuses writes" not_ patroni_write B
            timed "$LAB" patroni switchover
            json_check "patroni switchover: B leads, A is its replica" \
                "sorted((m['Member'], m['Role'], m['State']) for m in j) == [('A', 'Replica', 'running'), ('B', 'Leader', 'running')]" \
                "$LAB" patroni list --json
            check "patroni switchover: B accepts writes" patroni_write B
            check "patroni switchover: A refuses writes" not_ patroni_write A
            timed "$LAB" patroni kill
            json_check "patroni kill: Patroni promoted A" "j['primaries'] == [{'node': 'A', 'address': '$(node_addr patroni A)'}]" \
                "$LAB" primary patroni --json
            check "patroni kill: A accepts writes" patroni_write A
            timed "$LAB" reset patroni
            json_check "patroni reset: leader A, replica B" \
                "sorted((m['Member'], m['Role'], m['State']) for m in j) == [('A', 'Leader', 'running'), ('B', 'Replica', 'running')]" \
                "$LAB" patroni list --json
            ;;
        sentinel)
            sentinels_name A
            timed "$LAB" sentinel failover
            sentinels_name B
            expect redis sentinel-failover A=ro B=rw
            replicates redis sentinel-failover B A
            timed "$LAB" reset redis
            sentinels_name A
            expect redis sentinel+reset A=rw B=ro
            ;;
    esac
    if [[ ${FLEET_KEEP:-0} != 1 ]]; then
        timed "$LAB" destroy "$e"
        json_check "$e: torn down (no process left)" "all(n['state'] == 'absent' for n in j['$e'].values())" "$LAB" status "$e" --json
    fi
}

for e in "${engines[@]}"; do
    case $e in
        etcd | patroni | sentinel) for_fleet "$e" ;;
        *) for_engine "$e" ;;
    esac
done
"$LAB" status
if (( FAILS )); then echo "selftest: $FAILS check(s) FAILED"; exit 1; fi
echo "selftest: all checks passed"
