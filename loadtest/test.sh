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
# Deployment tests (tests/it/keepalived.rs, tests/it/deployment.rs): real VRRP between network
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
# Operator kit (tests/it/admin_client.rs, tests/it/deb_package.rs): the completion scripts load in zsh
# and fish, the man pages render with groff and are found by man. cargo-deb comes from crates.io,
# installed by packaging/build-deb.sh itself when missing.
command -v zsh >/dev/null || need_pkgs+=(zsh)
command -v fish >/dev/null || need_pkgs+=(fish)
command -v groff >/dev/null || need_pkgs+=(groff-base)
command -v man >/dev/null || need_pkgs+=(man-db)
# Fault-injection tests (tests/it/faults_*.rs): packet drop, loss and reset inside namespaces.
command -v nft >/dev/null || need_pkgs+=(nftables)
# PROXY protocol tests (tests/it/proxy_protocol.rs): a real HAProxy with send-proxy-v2 in front;
# their own mariadbd comes from the lab's mariadb-server.
command -v haproxy >/dev/null || need_pkgs+=(haproxy)
# Fleet mode (tests/fleet.rs): etcd-client's build runs protoc with Google's well-known types;
# the lab's 3-member etcd (`lab.sh up etcd`) is Debian's etcd-server.
command -v protoc >/dev/null || need_pkgs+=(protobuf-compiler)
[[ -e /usr/include/google/protobuf/timestamp.proto ]] || need_pkgs+=(libprotobuf-dev)
command -v etcd >/dev/null || need_pkgs+=(etcd-server)
command -v etcdctl >/dev/null || need_pkgs+=(etcd-client)
if ((${#need_pkgs[@]})); then
    echo "installing: ${need_pkgs[*]}"
    policy=/usr/sbin/policy-rc.d backup=""
    if [[ -e $policy ]]; then backup=$(mktemp); cp -p "$policy" "$backup"; fi
    printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"
    restore() { if [[ -n $backup ]]; then mv "$backup" "$policy"; else rm -f "$policy"; fi; }
    trap restore EXIT
    apt-get update -qq -o DPkg::Lock::Timeout=600
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${need_pkgs[@]}" >/dev/null
    restore
    trap - EXIT
fi

# Whether the lab was already up (then it stays up). Not `status | grep -q`: under pipefail,
# grep's early exit can SIGPIPE `status`, which read as "down", and the trap below then
# stopped a lab other test runs were using.
lab_status=$(bash "$LAB" status 2>/dev/null || true)
lab_was_up=0
[[ $lab_status == *' up primary'* ]] && lab_was_up=1
bash "$LAB" up
# Fleet mode tests need the optional 3-member etcd too.
bash "$LAB" up etcd
# The Patroni authority tests (tests/it/authority_patroni.rs): Patroni's pair on that etcd.
bash "$LAB" up patroni
# The Sentinel authority tests (tests/it/authority_sentinel.rs): three sentinels over the redis pair.
bash "$LAB" up sentinel
if [[ $lab_was_up == 0 && ${KEEP_LAB:-0} != 1 ]]; then
    trap 'bash "$LAB" down' EXIT
fi
eval "$(bash "$LAB" env)"

# Everything a test can ask for is here now: a test that would skip (no root, tool or lab
# server; tests/it/support/require.rs) fails instead, so this run cannot pass with a test that
# did not run.
export ROLEGATE_TESTS_REQUIRE_ALL=1

# The .deb test packages with cargo-deb (crates.io): installed once here, where a slow first
# build (minutes on 2 cores) is not held to the test's deadline.
bash packaging/build-deb.sh --tool-only

[[ ${1:-} == -- ]] && shift
cargo test --all-targets "$@"
