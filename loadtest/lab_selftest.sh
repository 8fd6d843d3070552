#!/usr/bin/env bash
# loadtest/lab_selftest.sh — drives loadtest/lab.sh through every scenario against the real
# servers and checks, with real client writes as the app user, which node accepts writes after
# each step (a replica / read-only / dead / hung node must refuse or time out).
#
# Usage: loadtest/lab_selftest.sh [pg|mysql|redis ...]     (default: all three)
# Needs a lab that is up (it runs `lab.sh up` first). Leaves the lab in the canonical topology.
set -euo pipefail

LAB=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lab.sh
"$LAB" up >/dev/null
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
    out=$(grep -v -E '^(pg|mysql|redis) [AB] ' <<<"$out" || true)
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

engines=("$@")
(( ${#engines[@]} )) || engines=(pg mysql redis)
for e in "${engines[@]}"; do for_engine "$e"; done
"$LAB" status
if (( FAILS )); then echo "selftest: $FAILS check(s) FAILED"; exit 1; fi
echo "selftest: all checks passed"
