#!/usr/bin/env bash
# loadtest/test.sh — README's test command: installs and starts what the tests need (the lab's
# PostgreSQL, MariaDB and Redis pairs; promtool), then runs every test.
#
#   bash loadtest/test.sh            all tests (the lab is stopped again if this script started it)
#   KEEP_LAB=1 bash loadtest/test.sh leave the lab running afterwards (faster next time)
#   bash loadtest/test.sh -- ARGS    extra arguments for `cargo test` (e.g. a test name filter)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB="$ROOT/loadtest/lab.sh"
cd "$ROOT"

# Debian packages the tests use besides the lab's servers, installed only when missing and
# without starting their services.
need_pkgs=()
command -v promtool >/dev/null || need_pkgs+=(prometheus)
command -v ip >/dev/null || need_pkgs+=(iproute2)
# Deployment tests (tests/keepalived.rs, tests/deployment.rs): real VRRP between network
# namespaces, `systemd-analyze verify`, the compose file's validators, shellcheck.
command -v keepalived >/dev/null || need_pkgs+=(keepalived)
command -v systemd-analyze >/dev/null || need_pkgs+=(systemd)
command -v setpriv >/dev/null || need_pkgs+=(util-linux)
command -v docker-compose >/dev/null || need_pkgs+=(docker-compose)
/usr/bin/python3 -c 'import yaml, jsonschema' 2>/dev/null || need_pkgs+=(python3-yaml python3-jsonschema)
command -v shellcheck >/dev/null || need_pkgs+=(shellcheck)
# The steering program (bpf/steer.bpf.c) is built by build.rs with clang against the uapi
# headers and libbpf's bpf_helpers.h; without them rolegate builds without steering.
command -v clang >/dev/null || need_pkgs+=(clang)
[[ -e /usr/include/bpf/bpf_helpers.h ]] || need_pkgs+=(libbpf-dev)
[[ -e /usr/include/linux/bpf.h ]] || need_pkgs+=(linux-libc-dev)
# Fault-injection tests (tests/faults_*.rs): packet drop, loss and reset inside namespaces.
command -v nft >/dev/null || need_pkgs+=(nftables)
if ((${#need_pkgs[@]})); then
    echo "installing: ${need_pkgs[*]}"
    policy=/usr/sbin/policy-rc.d backup=""
    if [[ -e $policy ]]; then backup=$(mktemp); cp -p "$policy" "$backup"; fi
    printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"
    restore() { if [[ -n $backup ]]; then mv "$backup" "$policy"; else rm -f "$policy"; fi; }
    trap restore EXIT
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
    restore
    trap - EXIT
fi

lab_was_up=1
bash "$LAB" status 2>/dev/null | grep -q ' up primary' || lab_was_up=0
bash "$LAB" up
if [[ $lab_was_up == 0 && ${KEEP_LAB:-0} != 1 ]]; then
    trap 'bash "$LAB" down' EXIT
fi
eval "$(bash "$LAB" env)"

[[ ${1:-} == -- ]] && shift
cargo test --all-targets "$@"
