# loadtest/bench/lib.sh — shell helpers shared by loadtest/bench.sh and loadtest/failover.sh.
# Sourced, not executed.

# ensure_pkgs CMD=PACKAGE...: apt-get installs the packages whose command (or, for a name
# starting with "py:", Python module of /usr/bin/python3) is missing. A temporary
# /usr/sbin/policy-rc.d that exits 101 keeps Debian from starting the packages' services
# (haproxy, redis-server, iperf3 would otherwise start as daemons); it is restored on any exit.
ensure_pkgs() {
    local want=() pair what pkg
    for pair in "$@"; do
        what=${pair%%=*} pkg=${pair#*=}
        if [[ $what == py:* ]]; then
            /usr/bin/python3 -c "import ${what#py:}" 2>/dev/null && continue
        elif [[ $what == /* ]]; then
            [[ -x $what ]] && continue
        else
            command -v "$what" >/dev/null 2>&1 && continue
        fi
        want+=("$pkg")
    done
    ((${#want[@]})) || return 0
    [[ $EUID -eq 0 ]] || { echo "need root to apt-get install: ${want[*]}" >&2; return 1; }
    echo "installing: ${want[*]}" >&2
    (   # subshell: the EXIT trap restores policy-rc.d however apt-get ends
        policy=/usr/sbin/policy-rc.d backup=""
        if [[ -e $policy ]]; then backup=$(mktemp); cp -p "$policy" "$backup"; fi
        trap 'if [[ -n $backup ]]; then mv "$backup" "$policy"; else rm -f "$policy"; fi' EXIT
        printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"
        timeout 300 apt-get update -qq || true
        DEBIAN_FRONTEND=noninteractive timeout 600 \
            apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
    )
    # A service that got started anyway (no policy-rc.d support, systemd preset) is stopped.
    local svc
    for svc in haproxy iperf3 redis-server; do
        if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
            systemctl stop "$svc" || true
        fi
    done
}

# build_rolegate: release build; prints the binary's path (honours CARGO_TARGET_DIR).
build_rolegate() {
    local root=$1
    (cd "$root" && cargo build --release --bin rolegate --message-format=json-render-diagnostics 2>/dev/null) |
        /usr/bin/python3 -c '
import json, sys
exe = None
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "rolegate":
        exe = m["executable"]
if not exe:
    sys.exit("cargo build --release produced no rolegate binary")
print(exe)'
}
