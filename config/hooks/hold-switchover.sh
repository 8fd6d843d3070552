#!/bin/sh
# hold-switchover.sh CLUSTER COMMAND [ARG...] — a planned switchover without failed new
# connections: hold CLUSTER's new primary connections in rolegate's queue, run COMMAND (the
# switchover: patronictl switchover, a Sentinel FAILOVER, your own script), and let the hold end
# by itself when rolegate confirms the new primary. If COMMAND fails, the hold is released at
# once so connections go back to the old primary.
#
# Redis Sentinel: prefer rolegate's Sentinel authority; around a bare SENTINEL FAILOVER both
# nodes answer ROLE master for a while, and the hold cannot end before Sentinel fixes that (README).
#
# Environment: ROLEGATE (the binary, default rolegate), ROLEGATE_ADMIN_URL (default: admin.listen
# of ROLEGATE_CONFIG, else http://127.0.0.1:9813), HOLD_TIMEOUT (default 10s; keep it below the
# listeners' queue_timeout, which bounds how long a held connection waits).
set -eu
[ "$#" -ge 2 ] || { echo "usage: $0 CLUSTER COMMAND [ARG...]" >&2; exit 2; }
cluster=$1
shift
rolegate=${ROLEGATE:-rolegate}
"$rolegate" hold "$cluster" --timeout "${HOLD_TIMEOUT:-10s}"
status=0
"$@" || status=$?
if [ "$status" -ne 0 ]; then
    echo "$0: switchover command failed ($status); releasing $cluster" >&2
    "$rolegate" release "$cluster" || true
fi
exit "$status"
