#!/usr/bin/env python3
"""Soak: mixed traffic through rolegate to all three engines of the lab, with a switchover every
20 s and a config reload (SIGHUP) every 5 s; then the bill.

Run through loadtest/soak.sh (which installs the client libraries, finds or builds rolegate,
brings the lab up and takes the lab lock). Traffic, per engine, through rolegate's write listener:

  new-conn   a new connection every 100 ms, one write each
  session    two long-lived sessions writing every 50 ms (reconnect on error)
  bulk       one long-lived session moving 1 MiB each way every 250 ms (PG `repeat()` result and
             a 1 MiB parameter, MariaDB the same, Redis SET/GET of a 1 MiB value), checked byte
             for byte

Every write carries a unique id and the port of the server that acknowledged it (PostgreSQL
`inet_server_port()`, MariaDB `@@port`, Redis `CONFIG GET port`, all on the same connection).
Switchovers (`lab.sh switchover`) rotate pg -> mysql -> redis, the first at 10 s; reloads
alternate between two configs that differ in a probe interval and a listener limit, so each
reload really changes probes and restarts an accept loop.

Asserted at the end (exit status 1 if any fails):
  misrouted  0 writes acknowledged by a node after the lab saw it demoted (and before it was
             primary again), from each acknowledgement's server port and the lab's timeline
  lost       0 acknowledged writes missing from the final primary's own table / keyspace;
             for Redis (asynchronous replication) a write counts as acknowledged only when
             `WAIT 1 100` confirmed a replica has it; plain `SET` replies are reported apart
  bulk       every 1 MiB round trip byte-exact
  leaks      rolegate's fd count back to its baseline (slack: the splice pipe pool) and RSS
             within 1.5 x baseline + 16 MiB, after the load stops
  log        no ERROR line, and no WARN line outside the expected list
  metrics    sessions_total between the clients' successful and attempted connections per
             listener; every SIGHUP counted as a successful reload; 0 active sessions at the end
  hangs      every client thread stops within 30 s of the end
"""

import argparse
import collections
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import psycopg
import pymysql
import redis

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LAB = os.path.join(ROOT, "loadtest", "lab.sh")

# Ports and passwords: the lab's topology (loadtest/topology.json + LAB_* overrides + lab.env).
sys.path.insert(0, os.path.join(ROOT, "loadtest"))
from lab.topology import load as load_topology  # noqa: E402

TOPO = load_topology()
APP_PW = TOPO.password("app")
MON_PW = TOPO.password("monitor")
ENGINES = ["pg", "mysql", "redis"]
PORTS = {e: (TOPO.port(e, "A"), TOPO.port(e, "B")) for e in ENGINES}
PROTOCOL = {"pg": "postgres", "mysql": "mysql", "redis": "redis"}
MIB = 1024 * 1024

# WARN messages a healthy soak may log: checks that fail while a node restarts or is demoted.
EXPECTED_WARNINGS = {
    "Backend health changed.",
    # A PostgreSQL switchover shuts the primary down before it promotes the standby.
    "Primary replaced while it was down: if it returns claiming primary it is stale and never "
    "routed to, until it rejoins as a replica or an operator enables it.",
}


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def lab(*args, timeout=180):
    r = subprocess.run(["bash", LAB, *args], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"lab.sh {' '.join(args)} failed: {r.stdout}{r.stderr}")
    return r.stdout


# --- rolegate ------------------------------------------------------------------------------

def config(port_base, variant):
    """Two variants: `variant` toggles the Redis check interval and the pg listener's limit."""
    check = f'user: rolegate_monitor, password: "{MON_PW}"'
    clusters = []
    for e in ENGINES:
        a, b = PORTS[e]
        if e == "redis":
            c = f'password: "{MON_PW}", interval: {"250ms" if variant == 0 else "300ms"}'
        elif e == "pg":
            c = check + ", database: postgres"
        else:
            c = check
        clusters.append(
            f"  - name: {e}\n    protocol: {PROTOCOL[e]}\n    check: {{ {c} }}\n"
            f"    backends:\n      - {{ name: a, address: \"127.0.0.1:{a}\" }}\n"
            f"      - {{ name: b, address: \"127.0.0.1:{b}\" }}\n")
    listeners = []
    for i, e in enumerate(ENGINES):
        extra = f", max_connections: {1000 + variant}" if e == "pg" else ""
        listeners.append(f"  - {{ name: {e}-rw, bind: \"127.0.0.1:{port_base + i}\", cluster: {e}, role: primary{extra} }}\n")
    return (f"admin: {{ listen: \"127.0.0.1:{port_base + 9}\" }}\nlog: {{ format: json }}\n"
            f"clusters:\n{''.join(clusters)}listeners:\n{''.join(listeners)}")


class Rolegate:
    def __init__(self, binary, workdir, port_base):
        self.port_base = port_base
        self.path = os.path.join(workdir, "rolegate.yaml")
        self.variant = 0
        self.write_config()
        self.log_path = os.path.join(workdir, "rolegate.log")
        self.out = open(self.log_path, "ab")
        self.proc = subprocess.Popen([binary, "--config", self.path], stdin=subprocess.DEVNULL,
                                     stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={k: v for k, v in os.environ.items() if k != "RUST_LOG"})
        self.admin = f"http://127.0.0.1:{port_base + 9}"
        self.reloads = 0

    def write_config(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(config(self.port_base, self.variant))
        os.chmod(tmp, 0o600)
        os.rename(tmp, self.path)

    def get(self, path):
        with urllib.request.urlopen(self.admin + path, timeout=5) as r:
            return r.read().decode()

    def wait_ready(self, limit=60):
        deadline = time.time() + limit
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rolegate exited: {self.proc.returncode}")
            try:
                self.get("/readyz")
                return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError("rolegate not ready")

    def reload(self):
        self.variant ^= 1
        self.write_config()
        os.kill(self.proc.pid, signal.SIGHUP)
        self.reloads += 1

    def metrics(self):
        out = {}
        for line in self.get("/metrics").splitlines():
            if line.startswith("#") or " " not in line:
                continue
            name, value = line.rsplit(" ", 1)
            try:
                out[name] = float(value)
            except ValueError:
                pass
        return out

    def fds(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                return self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode


def series(metrics, name, **labels):
    """Sum of a metric's series whose labels include `labels`."""
    total = 0.0
    for key, value in metrics.items():
        if not key.startswith(name + "{") and key != name:
            continue
        if all(f'{k}="{v}"' in key for k, v in labels.items()):
            total += value
    return total


def log_open_sessions(metrics, rg, port_base):
    """Diagnosis of a session that outlived its client: which (listener, backend) pairs still
    count one, and every TCP socket on rolegate's listener ports with its owner — a client end
    still owned by this script is a leak here, one owned by nobody is rolegate's."""
    for key, value in sorted(metrics.items()):
        if key.startswith("rolegate_sessions_active{") and value:
            log(f"still active: {key} = {value:g}")
    ports = " or ".join(f"sport = :{port_base + i} or dport = :{port_base + i}" for i in range(len(ENGINES)))
    out = subprocess.run(["ss", "-tanpiO", f"( {ports} )"], capture_output=True, text=True, timeout=10)
    log(f"sockets on rolegate's listener ports (rolegate pid {rg.proc.pid}, soak pid {os.getpid()}):\n"
        + (out.stdout or out.stderr))
    mine = subprocess.run(["ss", "-tanpO"], capture_output=True, text=True, timeout=10).stdout
    log("rolegate's sockets:\n" + "\n".join(l for l in mine.splitlines() if f"pid={rg.proc.pid}," in l))


# --- clients ---------------------------------------------------------------------------------

class Client:
    """One connection to `engine` through rolegate (or direct to a port). `port` is the server's
    own port, read once: a proxied connection stays on one backend for life."""

    def __init__(self, engine, port):
        self.engine = engine
        self.c = None
        try:
            self._open(port)
        except BaseException as e:
            # Close every socket of a failed attempt now, not whenever the garbage collector
            # finds it: rolegate forwards the server's close (e.g. PostgreSQL's "FATAL: the
            # database system is shutting down" during a switchover) and then waits, rightly,
            # for the client's own close before it ends the session. Connected, then the port
            # query failed: our connection. psycopg's failed connect keeps its PGconn — socket
            # open — on the exception (`pgconn`), alive until a GC cycle collects the traceback.
            self.close()
            pgconn = getattr(e, "pgconn", None)
            if pgconn is not None:
                pgconn.finish()
            raise

    def _open(self, port):
        engine = self.engine
        if engine == "pg":
            # sslmode=disable: one TCP connection per connect (with `prefer`, libpq retries a
            # failed TLS attempt in the clear on a second one), so rolegate's session count and
            # the clients' agree exactly.
            self.c = psycopg.connect(host="127.0.0.1", port=port, user="app", password=APP_PW, dbname="app",
                                     connect_timeout=10, autocommit=True, sslmode="disable")
            self.port = self.c.execute("SELECT inet_server_port()").fetchone()[0]
        elif engine == "mysql":
            self.c = pymysql.connect(host="127.0.0.1", port=port, user="app", password=APP_PW, database="app",
                                     connect_timeout=10, read_timeout=30, write_timeout=30, autocommit=True)
            with self.c.cursor() as cur:
                cur.execute("SELECT @@port")
                self.port = int(cur.fetchone()[0])
        else:
            self.c = redis.Redis(host="127.0.0.1", port=port, username="app", password=APP_PW,
                                 socket_timeout=30, socket_connect_timeout=10, single_connection_client=True)
            self.port = int(self.c.config_get("port")["port"])

    def write(self, tag):
        """Writes `tag`; returns (server port, durable) — durable is the Redis WAIT result."""
        if self.engine == "pg":
            port = self.c.execute("INSERT INTO writes(node) VALUES (%s) RETURNING inet_server_port()",
                                  (tag,)).fetchone()[0]
            return port, True
        if self.engine == "mysql":
            with self.c.cursor() as cur:
                cur.execute("INSERT INTO writes(node) VALUES (%s)", (tag,))
            return self.port, True
        self.c.set(f"soak:{tag}", 1)
        replicas = self.c.execute_command("WAIT", 1, 100)
        return self.port, replicas >= 1

    def bulk(self, payload):
        """1 MiB up and 1 MiB down; returns the bytes moved (raises on a mismatch)."""
        if self.engine == "pg":
            got = self.c.execute("SELECT length(%s::text), repeat('x', %s)", (payload, len(payload))).fetchone()
            ok = got[0] == len(payload) and got[1] == "x" * len(payload)
        elif self.engine == "mysql":
            with self.c.cursor() as cur:
                cur.execute("SELECT LENGTH(%s), REPEAT('x', %s)", (payload, len(payload)))
                got = cur.fetchone()
            ok = got[0] == len(payload) and got[1] == "x" * len(payload)
        else:
            key = f"soak:bulk:{threading.get_ident()}"
            self.c.set(key, payload)
            ok = self.c.get(key) == payload.encode()
        if not ok:
            raise AssertionError(f"{self.engine}: bulk round trip came back different")
        return 2 * len(payload)

    def close(self):
        if self.c is None:
            return
        try:
            self.c.close()
            if self.engine == "redis":
                # redis-py 4.3's close() only returns the connection to the client's own pool;
                # the socket stays open until the pool is collected, and an error reply such as
                # READONLY leaves a reference cycle, so that can be much later (a soak once saw
                # a session outlive its writer by 40 s). Disconnect explicitly.
                self.c.connection_pool.disconnect()
        except Exception:
            pass


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.writes = {e: [] for e in ENGINES}        # (tag, port, ack time, durable)
        self.failed = collections.Counter()             # (engine, kind) -> failed writes
        self.readonly = collections.Counter()           # engine -> writes a read-only node refused
        self.connects = collections.Counter()           # (engine, "ok"|"failed")
        self.bulk_bytes = collections.Counter()
        self.bulk_errors = []

    def ack(self, engine, tag, port, durable):
        with self.lock:
            self.writes[engine].append((tag, port, time.time(), durable))

    def fail(self, engine, kind, error):
        with self.lock:
            self.failed[(engine, kind)] += 1
            if re.search(r"read.only|READONLY|--read-only", str(error)):
                self.readonly[engine] += 1


def connect(engine, port, stats):
    try:
        c = Client(engine, port)
    except Exception:
        with stats.lock:
            stats.connects[(engine, "failed")] += 1
        raise
    with stats.lock:
        stats.connects[(engine, "ok")] += 1
    return c


def new_conn_writer(engine, port, run, stats, stop):
    seq = 0
    while not stop.is_set():
        t = time.time()
        tag = f"soak-{run}-{engine}-c-{seq}"
        seq += 1
        try:
            c = connect(engine, port, stats)
            try:
                p, durable = c.write(tag)
                stats.ack(engine, tag, p, durable)
            finally:
                c.close()
        except Exception as e:
            stats.fail(engine, "new-conn", e)
        time.sleep(max(0, 0.1 - (time.time() - t)))


def session_writer(engine, port, run, n, stats, stop):
    seq = 0
    c = None
    while not stop.is_set():
        if c is None:
            try:
                c = connect(engine, port, stats)
            except Exception:
                time.sleep(0.1)
                continue
        tag = f"soak-{run}-{engine}-s{n}-{seq}"
        seq += 1
        try:
            p, durable = c.write(tag)
            stats.ack(engine, tag, p, durable)
        except Exception as e:
            stats.fail(engine, "session", e)
            c.close()
            c = None
        time.sleep(0.05)
    if c:
        c.close()


def bulk_streamer(engine, port, stats, stop):
    payload = "y" * MIB
    c = None
    while not stop.is_set():
        if c is None:
            try:
                c = connect(engine, port, stats)
            except Exception:
                time.sleep(0.1)
                continue
        try:
            moved = c.bulk(payload)
            with stats.lock:
                stats.bulk_bytes[engine] += moved
        except AssertionError as e:
            stats.bulk_errors.append(str(e))
        except Exception:
            c.close()
            c = None
        time.sleep(0.25)
    if c:
        c.close()


# --- the timeline of each engine ---------------------------------------------------------------

def primary_port(engine):
    found = json.loads(lab("primary", engine, "--json"))["primaries"]
    if len(found) != 1:
        raise RuntimeError(f"{engine}: expected one primary, the lab reports {found}")
    return PORTS[engine][0 if found[0]["node"] == "A" else 1]


def misrouted(engine, writes, switchovers, first_primary):
    """Writes acknowledged by a node outside its time as primary. Each switchover ends the old
    primary's term at `demoted` and starts the new one's at `promoted` (lab clock = our clock)."""
    terms = []  # (port, start, end)
    port, start = first_primary, 0.0
    for s in sorted((s for s in switchovers if s["engine"] == engine), key=lambda s: s["start"]):
        terms.append((port, start, s["demoted"]))
        port, start = s["to_port"], s["promoted"]
    terms.append((port, start, float("inf")))
    bad = []
    for tag, p, t, _ in writes:
        if not any(p == tp and ts <= t and t <= te + 0.05 for tp, ts, te in terms):
            # The client stamps the time after the reply arrived: allow 50 ms for a reply in flight.
            bad.append((tag, p, t))
    return bad


def tags_on(engine, port, run):
    if engine == "pg":
        with psycopg.connect(host="127.0.0.1", port=port, user="app", password=APP_PW, dbname="app") as c:
            rows = c.execute("SELECT node FROM writes WHERE node LIKE %s", (f"soak-{run}-%",)).fetchall()
        return {r[0] for r in rows}
    if engine == "mysql":
        c = pymysql.connect(host="127.0.0.1", port=port, user="app", password=APP_PW, database="app")
        with c.cursor() as cur:
            cur.execute("SELECT node FROM writes WHERE node LIKE %s", (f"soak-{run}-%",))
            rows = cur.fetchall()
        c.close()
        return {r[0] for r in rows}
    r = redis.Redis(host="127.0.0.1", port=port, username="app", password=APP_PW)
    try:
        return {k.decode()[len("soak:"):] for k in r.scan_iter(match=f"soak:soak-{run}-*", count=1000)}
    finally:
        r.connection_pool.disconnect()


def switchover(engine, stats_list):
    rec = json.loads(lab("switchover", engine, "--json", timeout=300))
    rec["to_port"] = PORTS[engine][0 if rec.get("to") == "A" else 1]
    stats_list.append(rec)
    log(f"switchover {engine} {rec.get('from')}->{rec.get('to')} took {rec['done'] - rec['start']:.2f} s")


# --- main -------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rolegate", required=True)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--switchover-every", type=float, default=20)
    ap.add_argument("--reload-every", type=float, default=5)
    ap.add_argument("--port-base", type=int, default=int(os.environ.get("SOAK_PORT_BASE", "27800")))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    run = f"{int(time.time())}{random.randrange(1000):03d}"
    workdir = tempfile.mkdtemp(prefix="rolegate-soak-")
    out_dir = args.out or workdir
    os.makedirs(out_dir, exist_ok=True)
    log(f"run {run}, {args.duration:.0f} s, work dir {workdir}")
    lab("reset")
    first_primary = {e: primary_port(e) for e in ENGINES}

    rg = Rolegate(args.rolegate, workdir, args.port_base)
    failures = []
    stop = threading.Event()
    stats = Stats()
    switchovers = []
    threads = []
    report = {"run": run, "engines": {}, "fds": [0, 0, 0], "rss_kib": [0, 0, 0], "seconds": 0,
              "switchovers": 0, "reloads": 0}
    try:
        rg.wait_ready()
        # Warm-up (runtime threads, pools), then the baseline.
        for i, e in enumerate(ENGINES):
            c = connect(e, args.port_base + i, stats)
            c.bulk("w" * MIB)
            c.close()
        time.sleep(1)
        base_fds, base_rss = rg.fds(), rg.rss_kib()
        log(f"baseline: {base_fds} fds, {base_rss} KiB RSS")

        for i, e in enumerate(ENGINES):
            port = args.port_base + i
            threads.append(threading.Thread(target=new_conn_writer, args=(e, port, run, stats, stop), daemon=True))
            for n in range(2):
                threads.append(threading.Thread(target=session_writer, args=(e, port, run, n, stats, stop), daemon=True))
            threads.append(threading.Thread(target=bulk_streamer, args=(e, port, stats, stop), daemon=True))
        for t in threads:
            t.start()

        started = time.time()
        next_switch = started + min(10.0, args.switchover_every / 2)
        next_reload = started + args.reload_every
        rotation = 0
        peak_fds, peak_rss = base_fds, base_rss
        reload_failures = 0
        samples = []   # (seconds into the load, fds, RSS KiB) every 30 s: a leak shows as a slope
        next_sample = started + 30
        while time.time() < started + args.duration:
            now = time.time()
            if now >= next_reload:
                before = series(rg.metrics(), "rolegate_config_reloads_total", result="success")
                rg.reload()
                deadline = time.time() + 10
                while series(rg.metrics(), "rolegate_config_reloads_total", result="success") <= before:
                    if time.time() > deadline:
                        reload_failures += 1
                        break
                    time.sleep(0.05)
                next_reload += args.reload_every
            if now >= next_switch:
                engine = ENGINES[rotation % len(ENGINES)]
                rotation += 1
                switchover(engine, switchovers)
                next_switch += args.switchover_every
            fds_now, rss_now = rg.fds(), rg.rss_kib()
            peak_fds, peak_rss = max(peak_fds, fds_now), max(peak_rss, rss_now)
            if now >= next_sample:
                samples.append((round(now - started), fds_now, rss_now))
                next_sample += 30
            time.sleep(0.1)
        elapsed = time.time() - started

        stop.set()
        hung = []
        for t in threads:
            t.join(timeout=30)
            if t.is_alive():
                hung.append(t.name)
        if hung:
            failures.append(f"{len(hung)} client threads still running 30 s after the end")

        # Leaks: back to baseline once the load is gone.
        slack_fds = 2 * 16 * (os.cpu_count() or 2) + 4   # splice pipe pool: 16 pipes per worker
        deadline = time.time() + 15
        while time.time() < deadline and rg.fds() > base_fds + slack_fds:
            time.sleep(0.2)
        end_fds, end_rss = rg.fds(), rg.rss_kib()
        if end_fds > base_fds + slack_fds:
            failures.append(f"fd leak: {base_fds} before, {end_fds} after (slack {slack_fds})")
        if end_rss > base_rss * 1.5 + 16 * 1024:
            failures.append(f"RSS grew: {base_rss} KiB before, {end_rss} KiB after")

        # Every client has closed; rolegate's side of the last ones may still be closing.
        deadline = time.time() + 10
        while series(rg.metrics(), "rolegate_sessions_active") != 0 and time.time() < deadline:
            time.sleep(0.1)
        m = rg.metrics()
        final_primary = {e: primary_port(e) for e in ENGINES}
        report = {"run": run, "seconds": round(elapsed, 1), "switchovers": len(switchovers),
                  "reloads": rg.reloads, "fds": [base_fds, peak_fds, end_fds],
                  "rss_kib": [base_rss, peak_rss, end_rss], "samples": samples, "engines": {}}
        for i, e in enumerate(ENGINES):
            writes = stats.writes[e]
            final = tags_on(e, final_primary[e], run)
            durable = [w for w in writes if w[3]]
            lost = [w[0] for w in durable if w[0] not in final]
            lost_plain = [w[0] for w in writes if not w[3] and w[0] not in final]
            bad = misrouted(e, writes, switchovers, first_primary[e])
            sessions = series(m, "rolegate_sessions_total", listener=f"{e}-rw")
            ok, failed = stats.connects[(e, "ok")], stats.connects[(e, "failed")]
            report["engines"][e] = {
                "writes": len(writes), "durable": len(durable), "failed": stats.failed[(e, "new-conn")] + stats.failed[(e, "session")],
                "refused_read_only": stats.readonly[e], "misrouted": len(bad), "lost": len(lost),
                "not_replicated_plain": len(lost_plain), "bulk_mib": round(stats.bulk_bytes[e] / MIB),
                "connections": ok, "connections_failed": failed, "sessions_total": sessions,
            }
            if bad:
                failures.append(f"{e}: {len(bad)} writes acknowledged by a demoted node, e.g. {bad[:3]}")
            if lost:
                failures.append(f"{e}: {len(lost)} acknowledged writes missing on the final primary, e.g. {lost[:3]}")
            if not writes:
                failures.append(f"{e}: no write was acknowledged at all")
            if not (ok <= sessions <= ok + failed):
                failures.append(f"{e}: rolegate_sessions_total {sessions} not within the clients' {ok} "
                                f"successful and {ok + failed} attempted connections")
        if stats.bulk_errors:
            failures.append(f"bulk transfers corrupted: {stats.bulk_errors[:3]}")
        active = series(m, "rolegate_sessions_active")
        if active != 0:
            failures.append(f"{active} sessions still active after every client closed")
            log_open_sessions(m, rg, args.port_base)
        reloaded = series(m, "rolegate_config_reloads_total", result="success")
        if reload_failures or reloaded != rg.reloads:
            failures.append(f"{rg.reloads} SIGHUPs, {reloaded} successful reloads counted")
        if series(m, "rolegate_config_reloads_total", result="error"):
            failures.append("a reload failed")
    finally:
        stop.set()
        code = rg.stop()
        if code != 0:
            failures.append(f"rolegate exit status {code} after SIGTERM")
        try:
            lab("reset")
        except Exception as e:
            failures.append(f"lab reset: {e}")

    # The log: nothing at ERROR, only expected WARNs.
    levels = collections.Counter()
    unexpected = collections.Counter()
    with open(rg.log_path, errors="replace") as f:
        for line in f:
            try:
                v = json.loads(line)
            except ValueError:
                unexpected[("non-JSON", line.strip()[:120])] += 1
                continue
            levels[v.get("level")] += 1
            if v.get("level") == "ERROR" or (v.get("level") == "WARN" and v.get("message") not in EXPECTED_WARNINGS):
                unexpected[(v.get("level"), v.get("message"))] += 1
    if unexpected:
        failures.append(f"unexpected log lines: {dict(unexpected)}")
    # Primary changes rolegate saw beyond the soak's own switchovers mean someone else changed
    # the lab meanwhile (a script that runs `lab.sh up`/`reset` without the lab tests' lock):
    # the timeline the misrouted check relies on is then wrong, and the run proves nothing.
    changes = collections.Counter()
    with open(rg.log_path, errors="replace") as f:
        for line in f:
            if '"Primary changed."' in line:
                try:
                    changes[json.loads(line).get("cluster")] += 1
                except ValueError:
                    pass
    for e in ENGINES:
        expected = 1 + sum(1 for s_ in switchovers if s_["engine"] == e)
        if changes[e] > expected:
            failures.insert(0, f"{e}: rolegate saw {changes[e]} primary changes, the soak made {expected}: "
                               "the lab was changed by someone else during the run (a `lab.sh up`/`reset` "
                               "outside the lab tests' lock?); its misrouted figure is meaningless")
    report["log_levels"] = dict(levels)
    report["failures"] = failures

    print(render(report))
    with open(os.path.join(out_dir, "soak.json"), "w") as f:
        json.dump(report, f, indent=2)
    log(f"rolegate log: {rg.log_path}")
    if failures:
        for f_ in failures:
            log(f"FAIL: {f_}")
        sys.exit(1)
    log("PASS")


def render(r):
    lines = [f"soak {r['run']}: {r['seconds']} s, {r['switchovers']} switchovers, {r['reloads']} reloads (SIGHUP)",
             "",
             "| engine | writes acked | durable | failed | refused read-only | misrouted | lost | bulk MiB | connections (failed) | sessions_total |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for e, v in r["engines"].items():
        lines.append(f"| {e} | {v['writes']} | {v['durable']} | {v['failed']} | {v['refused_read_only']} | {v['misrouted']} | "
                     f"{v['lost']} | {v['bulk_mib']} | {v['connections']} ({v['connections_failed']}) | {v['sessions_total']:.0f} |")
    b, p, e = r["fds"]
    rb, rp, re_ = r["rss_kib"]
    lines += ["", f"rolegate fds: {b} before, {p} peak, {e} after; RSS: {rb} KiB before, {rp} KiB peak, {re_} KiB after"]
    if r.get("samples"):
        lines.append("under load (s: fds, RSS KiB): " + ", ".join(f"{t}: {f}, {k}" for t, f, k in r["samples"]))
    lines.append(f"log lines by level: {r['log_levels']}")
    lines.append("result: " + ("PASS" if not r["failures"] else "FAIL"))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
