#!/bin/sh
# keepalived notify script for the rolegate VIP: logs every state transition.
#
#   notify "/etc/keepalived/rolegate-notify.sh [--host NAME] [--log FILE]"
#
# keepalived appends four arguments: INSTANCE|GROUP, its name, the new state
# (MASTER|BACKUP|FAULT|STOP|DELETED) and the priority. One line goes to syslog (tag
# rolegate-vrrp, facility daemon) and, with --log, is appended to FILE. NAME (keepalived.conf
# passes its config-id, ${_INSTANCE}) defaults to the short host name:
#
#   2024-05-01T12:00:00.123+00:00 proxy-a INSTANCE rolegate_vip MASTER priority=100
#
# keepalived waits for nothing and reads nothing from this script; it must stay quick.
set -u

log_file='' host=''
while [ $# -gt 4 ]; do
    case $1 in
    --log) log_file=${2:?--log needs a file}; shift 2 ;;
    --host) host=${2:?--host needs a name}; shift 2 ;;
    *) break ;;
    esac
done
if [ $# -ne 4 ]; then
    echo "usage: $0 [--host NAME] [--log FILE] INSTANCE|GROUP NAME STATE PRIORITY" >&2
    exit 2
fi
kind=$1 name=$2 state=$3 priority=$4
if [ -z "$host" ]; then
    host=$(uname -n)
    host=${host%%.*}
fi
line="$host $kind $name $state priority=$priority"

if command -v logger >/dev/null 2>&1; then
    logger -t rolegate-vrrp -p daemon.notice -- "$line" 2>/dev/null || true
fi
if [ -n "$log_file" ]; then
    printf '%s %s\n' "$(date +%Y-%m-%dT%H:%M:%S.%3N%:z)" "$line" >>"$log_file"
fi
exit 0
