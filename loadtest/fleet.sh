#!/usr/bin/env bash
# loadtest/fleet.sh — fleet mode under a Redis switchover: OBSERVERS observers and FOLLOWERS
# followers (rolegate processes, one worker each) on the lab's 3-member etcd and Redis pair.
# Reports, for one switchover: time from the leader's decision write to each follower's new
# table (p50/p99/max), each follower's route time relative to the promotion, the fleet's
# monitoring sessions per Redis node, etcd writes per decision, and memory per follower.
#
#   bash loadtest/fleet.sh                      # 2 observers, 50 followers
#   FOLLOWERS=10 bash loadtest/fleet.sh         # smaller
#   ROLEGATE_BIN=target/debug/rolegate bash loadtest/fleet.sh
#
# Loopback only; every process it starts is stopped by its pid; bounded waits throughout.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB="$ROOT/loadtest/lab.sh"
OBSERVERS=${OBSERVERS:-2}
FOLLOWERS=${FOLLOWERS:-50}
BIN=${ROLEGATE_BIN:-}
if [[ -z $BIN ]]; then
    (cd "$ROOT" && cargo build --quiet --bin rolegate)
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/rolegate"
fi
# Only what is down is started: `lab.sh up` on a running lab would reset its roles under
# other users' feet.
bash "$LAB" status redis 2>/dev/null | grep -q ' up primary' || bash "$LAB" up redis >/dev/null
bash "$LAB" status etcd 2>/dev/null | grep -q ' up ' || bash "$LAB" up etcd >/dev/null
# Holds the lab tests' lock (tests/support/lab.rs) so no test sees the switchover.
exec flock "${TMPDIR:-/tmp}/rolegate-lab-tests.lock" python3 - "$BIN" "$LAB" "$OBSERVERS" "$FOLLOWERS" <<'PY'
import json, os, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request
from datetime import datetime

bin_, lab, n_obs, n_fol = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
env = json.loads(subprocess.check_output(["bash", lab, "env", "--json"]))
etcd = ["http://" + n["address"] for n in env["engines"]["etcd"]["nodes"].values()]
redis = [n["address"] for n in env["engines"]["redis"]["nodes"].values()]
password = env["passwords"]["monitor"]
prefix = f"/rolegate-bench/{os.getpid()}-{time.time_ns()}"
work = tempfile.mkdtemp(prefix="rolegate-fleet-")
procs = []

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def start(name, mode):
    admin = free_port()
    cfg = f"""admin: {{ listen: "127.0.0.1:{admin}" }}
log: {{ format: json }}
workers: 1
clusters:
  - name: r
    protocol: redis
    check: {{ password: "{password}", interval: 250ms }}
    backends: [ {{ name: A, address: "{redis[0]}" }}, {{ name: B, address: "{redis[1]}" }} ]
listeners:
  - {{ name: rw, bind: "127.0.0.1:0", cluster: r, role: primary }}
coordination:
  etcd: {{ endpoints: [{", ".join(etcd)}] }}
  prefix: {prefix}
  instance: {name}
  mode: {mode}
  observers: {n_obs}
  lease_ttl: 3s
"""
    path = os.path.join(work, name + ".yaml")
    open(path, "w").write(cfg)
    log = open(os.path.join(work, name + ".log"), "w")
    p = subprocess.Popen([bin_, "--config", path, "run"], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    procs.append({"name": name, "mode": mode, "pid": p.pid, "proc": p, "admin": admin,
                  "log": os.path.join(work, name + ".log")})

def status(p):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{p['admin']}/status", timeout=2) as r:
            return json.load(r)
    except Exception:
        return None

def primary_of(p):
    s = status(p)
    return s and s["clusters"][0]["primary"]

def wait(what, cond, limit=60):
    deadline = time.time() + limit
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise SystemExit(f"fleet.sh: timed out waiting for {what}")

def lab_primary():
    v = json.loads(subprocess.check_output(["bash", lab, "status", "redis", "--json"]))
    return next(n for n in ("A", "B") if v["redis"][n]["role"] == "primary")

def sessions(node):
    out = subprocess.run(["ss", "-tnpH", "state", "established", "dst", node],
                         capture_output=True, text=True).stdout
    pids = {f"pid={p['pid']}," for p in procs}
    return sum(1 for l in out.splitlines() if any(x in l for x in pids))

def events(p, message):
    out = []
    for line in open(p["log"]):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("message") == message:
            ts = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
            out.append((ts, e))
    return out

def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]

try:
    for i in range(n_obs):
        start(f"obs{i}", "observer")
    for i in range(n_fol):
        start(f"f{i}", "follower")
    before = lab_primary()
    wait("every instance on the primary", lambda: all(primary_of(p) == before for p in procs), 120)
    mon = {node: sessions(node) for node in redis}
    t0 = time.time()
    out = json.loads(subprocess.check_output(["bash", lab, "switchover", "redis", "--json"]))
    after = "B" if before == "A" else "A"
    wait("every instance on the new primary", lambda: all(primary_of(p) == after for p in procs), 60)
    leader = next(p for p in procs if p["mode"] == "observer"
                  and (status(p) or {}).get("coordination", {}).get("leader"))
    wait("the leader's log line", lambda: any(
        after in str(e.get("primary")) for t, e in events(leader, "Published a decision.") if t >= t0), 20)
    writes = [(t, e) for t, e in events(leader, "Published a decision.") if t >= t0]
    # The record's own decision time (taken just before the write): the leader's log line comes
    # after etcd answered, by when followers may have applied it already.
    new_write = next(e["decided_at_ms"] / 1e3 for t, e in writes
                     if e.get("primary") and after in str(e["primary"]))
    def applied_at(p):
        ts = [t for t, e in events(p, "Primary changed.") if t >= t0 and e.get("to") == after]
        return ts[0] if ts else None
    fols = [p for p in procs if p["mode"] == "follower"]
    # Log lines are written by a thread of their own: /status can be ahead of the file.
    wait("every follower's log line", lambda: all(applied_at(p) is not None for p in fols), 20)
    applied = [applied_at(p) for p in fols]
    lag = [(t - new_write) * 1e3 for t in applied]
    promoted = out.get("promoted") or out.get("done")
    route = [(t - promoted) * 1e3 for t in applied] if promoted else []
    rss = []
    for p in procs:
        if p["mode"] == "follower":
            for line in open(f"/proc/{p['pid']}/status"):
                if line.startswith("VmRSS:"):
                    rss.append(int(line.split()[1]) / 1024)
    print(f"fleet: {n_obs} observers + {n_fol} followers, 3 etcd members, Redis switchover {before} -> {after}")
    print(f"monitoring sessions per Redis node (fleet): " + ", ".join(f"{k}={v}" for k, v in mon.items()))
    print(f"etcd decision writes during the switchover: {len(writes)}")
    print(f"leader write -> follower applied (ms): p50={pct(lag, .5):.1f} p99={pct(lag, .99):.1f} max={max(lag):.1f}")
    if route:
        print(f"promotion -> follower applied (ms): p50={pct(route, .5):.1f} p99={pct(route, .99):.1f} max={max(route):.1f}")
    print(f"follower RSS (MiB): median={statistics.median(rss):.1f} max={max(rss):.1f}")
finally:
    for p in procs:
        try:
            os.kill(p["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p["proc"].wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(p["pid"], signal.SIGKILL)
            p["proc"].wait()
    subprocess.run(["etcdctl", f"--endpoints={','.join(etcd)}", "del", "--prefix", prefix],
                   capture_output=True, env={**os.environ, "ETCDCTL_API": "3"})
PY
