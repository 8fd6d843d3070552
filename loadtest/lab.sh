#!/usr/bin/env bash
# loadtest/lab.sh — thin wrapper kept for existing callers: the lab is loadtest/lab.py (a Python
# package in loadtest/lab/, topology in loadtest/topology.json). `lab.sh help` lists the commands.
here=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
py=/usr/bin/python3
[[ -x $py ]] || py=python3
exec "$py" "$here/lab.py" "$@"
