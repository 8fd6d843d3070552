#!/usr/bin/env bash
# loadtest/fleet.sh — fleet mode under a Redis switchover: OBSERVERS observers and FOLLOWERS
# followers (rolegate processes, one worker each) on the lab's 3-member etcd and Redis pair.
# Reports, for one switchover: time from the leader's decision write to each follower's new
# table (p50/p99/max), each follower's route time relative to the promotion, etcd writes per
# decision (the leader's publications and etcd's own revision count), memory per instance, and
# the database check load of the fleet side by side with STANDALONE standalone instances
# (no coordination) of the same config: monitoring sessions per Redis node (CLIENT LIST
# entries whose client port is a socket of these processes) and check queries/s (the node's
# own `INFO commandstats` counter of `ROLE`, one per check, over WINDOW seconds).
#
#   bash loadtest/fleet.sh                      # 2 observers, 50 followers, 50 standalone
#   FOLLOWERS=10 STANDALONE=10 bash loadtest/fleet.sh   # smaller
#   STANDALONE=0 bash loadtest/fleet.sh         # the fleet only
#   ROLEGATE_BIN=target/release/rolegate bash loadtest/fleet.sh
#
# Loopback only; every process it starts is stopped by its pid; bounded waits throughout.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB="$ROOT/loadtest/lab.sh"
OBSERVERS=${OBSERVERS:-2}
FOLLOWERS=${FOLLOWERS:-50}
STANDALONE=${STANDALONE:-$FOLLOWERS}
WINDOW=${WINDOW:-10}
BIN=${ROLEGATE_BIN:-}
if [[ -z $BIN ]]; then
    # A benchmark of a debug build measures the debug build: release, as shipped.
    (cd "$ROOT" && cargo build --release --quiet --bin rolegate)
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/rolegate"
fi
# Only what is down is started: `lab.sh up` on a running lab would reset its roles under
# other users' feet.
bash "$LAB" status redis 2>/dev/null | grep -q ' up primary' || bash "$LAB" up redis >/dev/null
bash "$LAB" status etcd 2>/dev/null | grep -q ' up ' || bash "$LAB" up etcd >/dev/null
# Holds the lab tests' lock (tests/support/lab.rs) so no test sees the switchover.
exec flock "${TMPDIR:-/tmp}/rolegate-lab-tests.lock" python3 - "$BIN" "$LAB" "$OBSERVERS" "$FOLLOWERS" "$STANDALONE" "$WINDOW" <<'PY'
import json, os, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request
from datetime import datetime

bin_, lab, n_obs, n_fol = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
n_alone, window = int(sys.argv[5]), float(sys.argv[6])
env = json.loads(subprocess.check_output(["bash", lab, "env", "--json"]))
etcd = ["http://" + n["address"] for n in env["engines"]["etcd"]["nodes"].values()]
redis = [n["address"] for n in env["engines"]["redis"]["nodes"].values()]
password = env["passwords"]["monitor"]
prefix = f"/rolegate-bench/{os.getpid()}-{time.time_ns()}"
work = tempfile.mkdtemp(prefix="rolegate-fleet-")
procs = []

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def start(name, mode, fleet=True):
    admin = free_port()
    coordination = f"""coordination:
  etcd: {{ endpoints: [{", ".join(etcd)}] }}
  prefix: {prefix}
  instance: {name}
  mode: {mode}
  observers: {n_obs}
  lease_ttl: 3s
""" if fleet else ""
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
{coordination}"""
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

def redis_cli(node, *args):
    host, port = node.rsplit(":", 1)
    return subprocess.run(["redis-cli", "-h", host, "-p", port, "-a", password, "--no-auth-warning", *args],
                          capture_output=True, text=True, timeout=10).stdout

def sessions(node, group):
    """Monitoring sessions of `group` on `node`, counted by the server: CLIENT LIST entries
    named rolegate whose client address is a socket of one of these processes."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", "dst", node],
                         capture_output=True, text=True).stdout
    pids = {f"pid={p['pid']}," for p in group}
    ports = {l.split()[2] for l in out.splitlines() if any(x in l for x in pids)}
    return sum(1 for l in redis_cli(node, "CLIENT", "LIST").splitlines()
               if " name=rolegate " in l and any(f"addr={a} " in l for a in ports))

def role_calls(node):
    for l in redis_cli(node, "INFO", "commandstats").splitlines():
        if l.startswith("cmdstat_role:"):
            return int(l.split("calls=")[1].split(",")[0])
    return 0

def check_load(group):
    """Per node: (monitoring sessions, ROLE checks/s over `window`) while `group` runs."""
    before = {n: role_calls(n) for n in redis}
    t = time.time()
    time.sleep(window)
    rate = {n: (role_calls(n) - before[n]) / (time.time() - t) for n in redis}
    return {n: (sessions(n, group), rate[n]) for n in redis}

def etcd_revision():
    out = subprocess.run(["etcdctl", f"--endpoints={etcd[0]}", "endpoint", "status", "-w", "json"],
                         capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}).stdout
    try:
        return json.loads(out)[0]["Status"]["header"]["revision"]
    except (ValueError, KeyError, IndexError):
        return None

def rss_mib(p):
    for line in open(f"/proc/{p['pid']}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0

def stop(group):
    for p in group:
        try:
            os.kill(p["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in group:
        try:
            p["proc"].wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(p["pid"], signal.SIGKILL)
            p["proc"].wait()
        procs.remove(p)

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
    fleet_load = check_load(list(procs))
    rev0 = etcd_revision()
    t0 = time.time()
    out = json.loads(subprocess.check_output(["bash", lab, "switchover", "redis", "--json"]))
    after = "B" if before == "A" else "A"
    wait("every instance on the new primary", lambda: all(primary_of(p) == after for p in procs), 60)
    leader = next(p for p in procs if p["mode"] == "observer"
                  and (status(p) or {}).get("coordination", {}).get("leader"))
    wait("the leader's log line", lambda: any(
        after in str(e.get("primary")) for t, e in events(leader, "Published a decision.") if t >= t0), 20)
    writes = [(t, e) for t, e in events(leader, "Published a decision.") if t >= t0]
    rev1 = etcd_revision()
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
    rss = [rss_mib(p) for p in fols]
    rss_obs = [rss_mib(p) for p in procs if p["mode"] == "observer"]
    fleet_procs = list(procs)
    print(f"fleet: {n_obs} observers + {n_fol} followers, 3 etcd members, Redis switchover {before} -> {after}")
    for n, (sess, qps) in fleet_load.items():
        print(f"check load on {n} (fleet of {n_obs + n_fol}): monitoring sessions={sess} ROLE checks/s={qps:.1f}")
    print(f"etcd decision writes during the switchover: {len(writes)} (leader's publications); "
          f"etcd revisions: {rev1 - rev0 if rev0 is not None and rev1 is not None else '?'} "
          f"(every write in the cluster, this benchmark's and anyone else's)")
    print(f"leader write -> follower applied (ms): p50={pct(lag, .5):.1f} p99={pct(lag, .99):.1f} max={max(lag):.1f}")
    if route:
        print(f"promotion -> follower applied (ms): p50={pct(route, .5):.1f} p99={pct(route, .99):.1f} max={max(route):.1f}")
    print(f"follower RSS (MiB): median={statistics.median(rss):.1f} max={max(rss):.1f}; "
          f"observer RSS (MiB): " + ", ".join(f"{r:.1f}" for r in rss_obs))
    stop(fleet_procs)
    if n_alone > 0:
        for i in range(n_alone):
            start(f"s{i}", "standalone", fleet=False)
        alone = list(procs)
        wait("every standalone instance on the primary", lambda: all(primary_of(p) == after for p in alone), 120)
        alone_load = check_load(alone)
        for n, (sess, qps) in alone_load.items():
            fs, fq = fleet_load[n]
            print(f"check load on {n} ({n_alone} standalone): monitoring sessions={sess} ROLE checks/s={qps:.1f}"
                  f"  (fleet: {fs} sessions, {fq:.1f}/s)")
        ra = [rss_mib(p) for p in alone]
        print(f"standalone RSS (MiB): median={statistics.median(ra):.1f} max={max(ra):.1f}")
finally:
    stop(list(procs))
    subprocess.run(["etcdctl", f"--endpoints={','.join(etcd)}", "del", "--prefix", prefix],
                   capture_output=True, env={**os.environ, "ETCDCTL_API": "3"})
PY
