#!/bin/sh
# docker/build.sh OUT_DIR — the build stage of docker/Dockerfile, runnable anywhere cargo is:
# builds the release binary exactly as the image does, writes a copy without debug info to
# OUT_DIR/rolegate and smoke-tests it (version, the image's default config, the probe). CI runs
# it through `cargo test` (tests/it/deployment.rs) because no Docker engine runs there.
set -eu

out=${1:?usage: docker/build.sh OUT_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

cargo build --release --locked --bin rolegate
target=${CARGO_TARGET_DIR:-$root/target}
mkdir -p "$out"
# The release profile keeps line tables (debug = 1) for profiling; the image does not need them.
strip --strip-debug -o "$out/rolegate" "$target/release/rolegate"
bin=$out/rolegate

"$bin" --version
PG_MONITOR_PASSWORD=x MYSQL_MONITOR_PASSWORD=x REDIS_MONITOR_PASSWORD=x ROLEGATE_ADMIN_TOKEN=x \
    "$bin" check-config docker/rolegate.yaml
# Nothing listens on port 1: the probe must fail, quickly, with exit status 1.
status=0
"$bin" probe --url http://127.0.0.1:1/readyz --timeout 1s 2>/dev/null || status=$?
if [ "$status" -ne 1 ]; then
    echo "build.sh: 'rolegate probe' against a closed port exited $status, expected 1" >&2
    exit 1
fi
echo "build.sh: $bin ok ($(wc -c <"$bin") bytes)"
