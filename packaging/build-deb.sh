#!/usr/bin/env bash
# packaging/build-deb.sh — builds the Debian package of rolegate (cargo-deb; metadata in
# Cargo.toml, [package.metadata.deb]).
#
#   bash packaging/build-deb.sh                  release build (fat LTO: several minutes), then the .deb
#   bash packaging/build-deb.sh --binary PATH    package an already-built binary instead (the test
#                                                tests/deb_package.rs packages the debug build)
#   bash packaging/build-deb.sh --output DIR     where the .deb goes (default target/debian)
#
# The .deb installs /usr/bin/rolegate, the systemd unit (config/systemd/rolegate.service with
# /usr/bin paths; not enabled or started: edit the config first), the example config as the
# conffile /etc/rolegate/rolegate.yaml, man pages, bash/zsh/fish completions, the Prometheus
# alert rules and the README; its postinst creates the `rolegate` system user.
#
# Man pages and completions are generated here, from the binary being packaged (`rolegate man`,
# `rolegate completions`), so they describe exactly its command line. cargo-deb is installed from
# crates.io (`cargo install --locked`) when missing; CARGO_DEB=/path/to/cargo-deb uses another.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARGO_DEB_VERSION=3.8.0
cd "$ROOT"

binary="" output="$ROOT/target/debian"
while (($#)); do
    case $1 in
        --binary) binary=$(realpath "$2"); shift 2 ;;
        --output) output=$2; shift 2 ;;
        --tool-only) tool_only=1; shift ;;
        *) echo "usage: $0 [--binary PATH] [--output DIR] | --tool-only" >&2; exit 2 ;;
    esac
done

cargo_deb=${CARGO_DEB:-}
if [[ -z $cargo_deb ]]; then
    if ! cargo deb --version >/dev/null 2>&1; then
        echo "installing cargo-deb $CARGO_DEB_VERSION from crates.io (once; a few minutes)" >&2
        cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
    fi
    cargo_deb="cargo deb"
fi
# --tool-only: just make sure cargo-deb is there (loadtest/test.sh, before the tests' deadlines).
[[ ${tool_only:-0} == 1 ]] && exit 0

# cargo-deb reads the binary from <target dir>/release/rolegate. A prebuilt binary is placed in
# a target dir of its own, so a real release build in target/release is never overwritten.
target_dir="$ROOT/target"
if [[ -n $binary ]]; then
    target_dir="$ROOT/target/deb-prebuilt"
    install -D -m 0755 "$binary" "$target_dir/release/rolegate"
else
    cargo build --release --locked
fi
bin="$target_dir/release/rolegate"

# Generated assets (paths named in Cargo.toml).
gen="$ROOT/target/packaging"
rm -rf "$gen"
mkdir -p "$gen/man" "$gen/completions" "$gen/systemd"
"$bin" man --dir "$gen/man" >/dev/null
gzip -9n "$gen"/man/*.1
"$bin" completions bash >"$gen/completions/rolegate.bash"
"$bin" completions zsh >"$gen/completions/_rolegate"
"$bin" completions fish >"$gen/completions/rolegate.fish"
# The unit of config/systemd/ names /usr/local/bin (a manual install); a package owns /usr/bin.
sed 's|/usr/local/bin/rolegate|/usr/bin/rolegate|g' config/systemd/rolegate.service >"$gen/systemd/rolegate.service"
if grep -q /usr/local/ "$gen/systemd/rolegate.service"; then
    echo "build-deb.sh: the packaged unit still names /usr/local/" >&2
    exit 1
fi

mkdir -p "$output"
# A prebuilt (test) binary: stripped (a debug build carries ~150 MB of debug info) and gzip
# instead of xz, as that .deb is never shipped. A release build keeps [profile.release] debug.
extra=()
[[ -n $binary ]] && extra=(--strip --fast)
CARGO_TARGET_DIR="$target_dir" $cargo_deb --no-build --locked "${extra[@]}" --output "$output"
