#!/usr/bin/env python3
"""Failover figures: real clients writing through a proxy during a lab switchover.

Run through loadtest/failover.sh (which installs the client libraries, builds rolegate and brings
the lab up). For every engine (pg, mysql, redis) and every proxy setup:

  rolegate default       rolegate, default config except addresses and the check credentials
                         (check interval 250ms, rise 2, fall 2, on_demote: close)
  rolegate interval 1s   the same with `check: { interval: 1s }`
  HAProxy                configured the common way: Redis `tcp-check` AUTH + `info replication` +
                         `expect string role:master`, `inter 1s fall 2 rise 1`; PostgreSQL and
                         MariaDB `option httpchk OPTIONS /primary` against a Patroni-style role
                         responder per node (responder.py), `inter 3s fall 3 rise 2`;
                         `on-marked-down shutdown-sessions` everywhere

two clients write through the proxy's write endpoint while `lab.sh switchover <engine>` runs:
  new-conn   a new connection every 20 ms (attempts overlap when one is slow), one write each
  session    one long-lived session writing every 20 ms; on an error it reconnects
Each write carries a unique token and reports the server port it landed on (PostgreSQL
`inet_server_port()`, MariaDB `@@port`, Redis `CONFIG GET port` on the same connection).

Reported per scenario: switchover start -> first successful write on the new primary, the same
counted from the moment the lab saw the new primary writable, the write gap (last write on the old
primary -> first on the new), failed attempts per client, writes the demoted node acknowledged
after the lab saw it demoted, and acknowledged writes missing on the new primary afterwards.
Every scenario ends with `lab.sh reset <engine>`.
"""

import argparse
import datetime
import fcntl
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

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
SETUPS = ["rolegate default", "rolegate interval 1s", "HAProxy"]
PROTOCOL = {"pg": "postgres", "mysql": "mysql", "redis": "redis"}

STARTED = []


def log(msg):
    print(f"[failover {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def start(argv, name, workdir, env=None):
    out = open(os.path.join(workdir, f"{name}.log"), "ab")
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                         start_new_session=True)
    p.name = name
    STARTED.append(p)
    return p


def stop(p):
    if p.poll() is None:
        try:
            os.kill(p.pid, signal.SIGTERM)
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
        except ProcessLookupError:
            pass
    if p in STARTED:
        STARTED.remove(p)


def stop_all():
    for p in list(reversed(STARTED)):
        try:
            stop(p)
        except Exception as e:
            log(f"stopping {p.name}: {e}")


def lab(*args, timeout=300):
    r = subprocess.run(["bash", LAB, *args], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"lab.sh {' '.join(args)} failed: {r.stderr.strip()[-800:]}")
    return r.stdout


def wait_port(port, proc, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{proc.name}: nothing listens on {port}")


class LabLock:
    """The flock the Rust lab tests take: no test and no bench pgbench run overlaps a switchover."""

    def __enter__(self):
        if os.environ.get("ROLEGATE_LAB_LOCK_HELD") == "1":
            self.fd = None
            return self
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "rolegate-lab-tests.lock")
        self.fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o666)
        log(f"waiting for {path}")
        deadline = time.monotonic() + 1800
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{path} busy for 30 minutes")
                time.sleep(0.2)

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)


# ------------------------------------------------------------------------------------------------
# Clients
# ------------------------------------------------------------------------------------------------


def short_error(e):
    text = f"{type(e).__name__}: {e}".replace("\n", " ")
    text = re.sub(r"\d+(\.\d+)?", "N", text)  # group errors that differ only in numbers
    return text[:120]


class Driver:
    """connect / write / close for one engine, talking to 127.0.0.1:port."""

    def __init__(self, engine, port):
        self.engine, self.port = engine, port

    def connect(self, timeout):
        if self.engine == "pg":
            import psycopg
            return psycopg.connect(host="127.0.0.1", port=self.port, user="app", password=APP_PW, dbname="app",
                                   connect_timeout=max(2, int(timeout)), autocommit=True,
                                   options="-c statement_timeout=5000")
        if self.engine == "mysql":
            import pymysql
            return pymysql.connect(host="127.0.0.1", port=self.port, user="app", password=APP_PW, database="app",
                                   connect_timeout=timeout, read_timeout=5, write_timeout=5, autocommit=True)
        import redis
        r = redis.Redis(host="127.0.0.1", port=self.port, username="app", password=APP_PW,
                        socket_connect_timeout=timeout, socket_timeout=5, single_connection_client=True)
        r.ping()  # single_connection_client connects lazily; connect (and AUTH) now
        return r

    def write(self, conn, token):
        """One write; returns the port of the server that accepted it."""
        if self.engine == "pg":
            with conn.cursor() as cur:
                cur.execute("INSERT INTO writes(node) VALUES (%s) RETURNING inet_server_port()", (token,))
                return int(cur.fetchone()[0])
        if self.engine == "mysql":
            with conn.cursor() as cur:
                cur.execute("INSERT INTO writes(node) VALUES (%s)", (token,))
                cur.execute("SELECT @@port")
                return int(cur.fetchone()[0])
        conn.set(token, "1")
        return int(conn.config_get("port")["port"])

    def close(self, conn):
        try:
            conn.close()
        except Exception:
            pass

    def present(self, node_port, tokens):
        """How many of `tokens` exist on the node at `node_port` (asked directly, not via a proxy)."""
        if not tokens:
            return 0
        d = Driver(self.engine, node_port)
        conn = d.connect(5)
        try:
            if self.engine == "pg":
                with conn.cursor() as cur:
                    cur.execute("SELECT count(*) FROM writes WHERE node = ANY(%s)", (list(tokens),))
                    return int(cur.fetchone()[0])
            if self.engine == "mysql":
                n = 0
                tokens = list(tokens)
                with conn.cursor() as cur:
                    for i in range(0, len(tokens), 500):
                        chunk = tokens[i:i + 500]
                        cur.execute("SELECT count(*) FROM writes WHERE node IN (" + ",".join(["%s"] * len(chunk)) + ")", chunk)
                        n += int(cur.fetchone()[0])
                return n
            n = 0
            tokens = list(tokens)
            for i in range(0, len(tokens), 500):
                n += conn.exists(*tokens[i:i + 500])
            return n
        finally:
            d.close(conn)


class Clients:
    """The two writers; every attempt is one record (wall-clock times, comparable with lab.sh)."""

    def __init__(self, driver, run_id, period=0.02, max_inflight=200):
        self.d = driver
        self.run_id = run_id
        self.period = period
        self.sem = threading.BoundedSemaphore(max_inflight)
        self.records = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.seq = 0
        self.threads = []

    def token(self):
        with self.lock:
            self.seq += 1
            return f"fo-{self.run_id}-{self.seq}"

    def record(self, kind, t0, ok, port=None, error=None, token=None, tw=None):
        """t0: attempt started (connect), tw: the write was sent, t1: answer or error."""
        with self.lock:
            self.records.append({"kind": kind, "t0": t0, "tw": tw, "t1": time.time(), "ok": ok, "port": port,
                                 "error": error, "token": token})

    def new_conn_attempt(self):
        t0 = time.time()
        tok = self.token()
        conn = None
        try:
            conn = self.d.connect(10)
            tw = time.time()
            port = self.d.write(conn, tok)
            self.record("new-conn", t0, True, port=port, token=tok, tw=tw)
        except Exception as e:
            self.record("new-conn", t0, False, error=short_error(e), token=tok)
        finally:
            if conn is not None:
                self.d.close(conn)
            self.sem.release()

    def new_conn_loop(self):
        nxt = time.monotonic()
        while not self.stopping.is_set():
            if self.sem.acquire(timeout=0.5):
                threading.Thread(target=self.new_conn_attempt, daemon=True).start()
            nxt += self.period
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                nxt = time.monotonic()

    def session_loop(self):
        conn = None
        nxt = time.monotonic()
        while not self.stopping.is_set():
            t0 = time.time()
            tok = self.token()
            try:
                if conn is None:
                    conn = self.d.connect(10)
                tw = time.time()
                port = self.d.write(conn, tok)
                self.record("session", t0, True, port=port, token=tok, tw=tw)
            except Exception as e:
                self.record("session", t0, False, error=short_error(e), token=tok)
                if conn is not None:
                    self.d.close(conn)
                conn = None
            nxt += self.period
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                nxt = time.monotonic()
        if conn is not None:
            self.d.close(conn)

    def start(self):
        for fn in (self.new_conn_loop, self.session_loop):
            t = threading.Thread(target=fn, daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=15)
        # Let attempts in flight finish (each is bounded by its connect/statement timeouts).
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with self.lock:
                if self.sem._value == self.sem._initial_value:  # noqa: SLF001 - no public gauge
                    break
            time.sleep(0.05)

    def snapshot(self):
        with self.lock:
            return list(self.records)


# ------------------------------------------------------------------------------------------------
# Proxies
# ------------------------------------------------------------------------------------------------


def rolegate_yaml(engine, listen, admin, interval):
    a, b = PORTS[engine]
    check = [f"      password_env: MONITOR_PASSWORD"]
    check.insert(0, "      user: rolegate_monitor")
    if engine == "pg":
        check.append("      database: postgres")
    if interval:
        check.append(f"      interval: {interval}")
    return "\n".join([
        "# generated by loadtest/failover/failover.py",
        f"admin:\n  listen: 127.0.0.1:{admin}",
        "clusters:",
        f"  - name: {engine}",
        f"    protocol: {PROTOCOL[engine]}",
        "    check:",
        *check,
        "    backends:",
        f"      - {{ name: a, address: 127.0.0.1:{a} }}",
        f"      - {{ name: b, address: 127.0.0.1:{b} }}",
        "listeners:",
        f"  - {{ name: rw, bind: 127.0.0.1:{listen}, cluster: {engine}, role: primary }}",
        "",
    ])


def haproxy_cfg(engine, listen, stats_sock, responder_ports):
    a, b = PORTS[engine]
    lines = [
        "# generated by loadtest/failover/failover.py: the common HAProxy setup for this engine",
        "global",
        "    nbthread 2",
        "    maxconn 2000",
        f"    stats socket {stats_sock} mode 600 level admin",
        "defaults",
        "    mode tcp",
        "    timeout connect 2s",
        "    timeout client 1h",
        "    timeout server 1h",
        f"listen {engine}-rw",
        f"    bind 127.0.0.1:{listen}",
    ]
    if engine == "redis":
        lines += [
            "    option tcp-check",
            "    tcp-check connect",
            f"    tcp-check send AUTH\\ rolegate_monitor\\ {MON_PW}\\r\\n",
            "    tcp-check expect string +OK",
            "    tcp-check send info\\ replication\\r\\n",
            "    tcp-check expect string role:master",
            "    tcp-check send QUIT\\r\\n",
            "    tcp-check expect string +OK",
            "    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions",
            f"    server a 127.0.0.1:{a} check",
            f"    server b 127.0.0.1:{b} check",
        ]
    else:  # Patroni's documented HAProxy section
        lines += [
            "    option httpchk OPTIONS /primary",
            "    http-check expect status 200",
            "    default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions",
            f"    server a 127.0.0.1:{a} maxconn 500 check port {responder_ports[0]}",
            f"    server b 127.0.0.1:{b} maxconn 500 check port {responder_ports[1]}",
        ]
    return "\n".join(lines) + "\n"


def haproxy_states(sock):
    """{'a': 'UP', 'b': 'DOWN'} from the stats socket."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(sock)
            s.sendall(b"show stat\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return {}
    states = {}
    lines = data.decode(errors="replace").splitlines()
    if not lines:
        return {}
    header = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        cells = line.split(",")
        if len(cells) < len(header):
            continue
        row = dict(zip(header, cells))
        if row.get("svname") in ("a", "b"):
            states[row["svname"]] = row.get("status", "")
    return states


def http_status(port, path):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            first = s.recv(4096).split(b"\r\n", 1)[0]
            return int(first.split()[1])
    except (OSError, ValueError, IndexError):
        return None


class Proxy:
    def __init__(self, setup, engine, args, workdir):
        self.setup, self.engine, self.dir = setup, engine, workdir
        self.listen = args.port_base + 10 + ENGINES.index(engine)
        self.admin = args.port_base + 20
        self.procs = []
        self.bin = args.rolegate
        self.sock = os.path.join(workdir, "haproxy.sock")

    def start(self):
        tag = f"{self.engine}-{self.setup.replace(' ', '-')}"
        if self.setup.startswith("rolegate"):
            cfg = os.path.join(self.dir, tag + ".yaml")
            with open(cfg, "w") as f:
                f.write(rolegate_yaml(self.engine, self.listen, self.admin, "1s" if "1s" in self.setup else None))
            env = dict(os.environ, MONITOR_PASSWORD=MON_PW)
            p = start([self.bin, "--config", cfg, "run"], tag, self.dir, env=env)
            self.procs.append(p)
            wait_port(self.listen, p)
            deadline = time.monotonic() + 20
            while http_status(self.admin, "/readyz") != 200:
                if time.monotonic() > deadline or p.poll() is not None:
                    raise RuntimeError(f"rolegate not ready (see {self.dir}/{tag}.log)")
                time.sleep(0.1)
        else:
            rports = []
            if self.engine != "redis":
                for i, node_port in enumerate(PORTS[self.engine]):
                    rp = self.admin + 1 + i
                    r = start([sys.executable, os.path.join(HERE, "responder.py"), self.engine, str(node_port), str(rp)],
                              f"{tag}-responder-{'ab'[i]}", self.dir)
                    self.procs.append(r)
                    wait_port(rp, r)
                    rports.append(rp)
            cfg = os.path.join(self.dir, tag + ".cfg")
            with open(cfg, "w") as f:
                f.write(haproxy_cfg(self.engine, self.listen, self.sock, rports))
            p = start(["haproxy", "-db", "-f", cfg], tag, self.dir)
            self.procs.append(p)
            wait_port(self.listen, p)
            # Settled: A up, B down (HAProxy starts servers up and needs `fall` checks to drop B).
            deadline = time.monotonic() + 30
            while True:
                st = haproxy_states(self.sock)
                if st.get("a", "").startswith("UP") and st.get("b", "").startswith("DOWN"):
                    break
                if time.monotonic() > deadline or p.poll() is not None:
                    raise RuntimeError(f"HAProxy did not settle on A=UP B=DOWN: {st}")
                time.sleep(0.1)
        self.tag = tag

    def stop(self):
        for p in reversed(self.procs):
            stop(p)
        self.procs = []


# ------------------------------------------------------------------------------------------------
# One scenario
# ------------------------------------------------------------------------------------------------


def scenario(engine, setup, args, workdir):
    a_port, b_port = PORTS[engine]
    lab("reset", engine)
    proxy = Proxy(setup, engine, args, workdir)
    clients = None
    try:
        proxy.start()
        driver = Driver(engine, proxy.listen)
        # One write through the proxy before anything is measured.
        conn = driver.connect(10)
        try:
            if driver.write(conn, f"fo-warmup-{uuid.uuid4().hex[:8]}") != a_port:
                raise RuntimeError("the warm-up write did not land on A")
        finally:
            driver.close(conn)
        run_id = uuid.uuid4().hex[:10]
        clients = Clients(driver, run_id)
        clients.start()
        time.sleep(args.pre)
        out = lab("switchover", engine, "--json", timeout=180)
        ts = json.loads(out)
        if not {"start", "demoted", "promoted", "done"} <= ts.keys():
            raise RuntimeError(f"unexpected switchover output: {out!r}")
        line = (f"switchover {engine} from={ts['from']} to={ts['to']} start={ts['start']:.6f} "
                f"demoted={ts['demoted']:.6f} promoted={ts['promoted']:.6f} done={ts['done']:.6f}")
        # Keep writing until the proxy has settled: a write has landed on B and no attempt has
        # failed for `settle` seconds (HAProxy may route to both nodes until the old one falls).
        deadline = ts["start"] + args.max_after
        while time.time() < deadline:
            recs = clients.snapshot()
            oks_b = [r["t1"] for r in recs if r["ok"] and r["port"] == b_port]
            last_fail = max([r["t1"] for r in recs if not r["ok"]], default=ts["start"])
            now = time.time()
            if oks_b and now > ts["done"] and now > last_fail + args.settle:
                break
            time.sleep(0.1)
        settled = time.time() < deadline
        clients.stop()
        recs = clients.snapshot()
        acked = [r["token"] for r in recs if r["ok"]]
        driver_present = Driver(engine, b_port).present(b_port, acked)
        r = analyse(engine, setup, recs, ts, a_port, b_port, len(acked), driver_present, line)
        r["settled"] = settled
        return r
    finally:
        if clients is not None:
            clients.stop()
        proxy.stop()
        lab("reset", engine)


def analyse(engine, setup, recs, ts, a_port, b_port, acked_n, present_n, line):
    oks_b = sorted(r["t1"] for r in recs if r["ok"] and r["port"] == b_port)
    oks_a = sorted(r["t1"] for r in recs if r["ok"] and r["port"] == a_port)
    first_b = oks_b[0] if oks_b else None
    last_a = oks_a[-1] if oks_a else None

    def per_kind(kind):
        rs = [r for r in recs if r["kind"] == kind]
        after = [r for r in rs if r["t1"] >= ts["start"]]
        fails = [r for r in rs if not r["ok"]]
        fb = [r["t1"] for r in rs if r["ok"] and r["port"] == b_port]
        return {
            "attempts": len(rs),
            "attempts_after_start": len(after),
            "failed": len(fails),
            "first_b_s": (min(fb) - ts["start"]) if fb else None,
        }

    errors = {}
    for r in recs:
        if not r["ok"]:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    return {
        "engine": engine,
        "setup": setup,
        "lab_line": line,
        "switchover_s": ts["done"] - ts["start"],
        "promoted_after_s": ts["promoted"] - ts["start"],
        "first_write_b_s": (first_b - ts["start"]) if first_b else None,
        "first_write_b_after_promoted_s": (first_b - ts["promoted"]) if first_b else None,
        "write_gap_s": (first_b - last_a) if first_b and last_a else None,
        "new_conn": per_kind("new-conn"),
        "session": per_kind("session"),
        # Sent after the lab saw the old primary demoted, and acknowledged by it anyway.
        "acked_by_a_after_demoted": sum(1 for r in recs if r["ok"] and r["port"] == a_port
                                        and r["tw"] is not None and r["tw"] > ts["demoted"]),
        "last_failure_s": max([r["t1"] for r in recs if not r["ok"]], default=ts["start"]) - ts["start"],
        "acked_by_a_after_start": sum(1 for t in oks_a if t > ts["start"]),
        "acked": acked_n,
        "lost": acked_n - present_n,
        "errors": sorted(errors.items(), key=lambda kv: -kv[1])[:6],
    }


def fmt_s(v):
    return "–" if v is None else f"{v:.2f}"


def table(rows):
    out = [
        "| engine | proxy | lab switchover: promoted / done (s) | first write on new primary, from start (s) "
        "| … from promotion (s) | write gap (s) | last failed write (s) | failed: new-conn / session "
        "| acked by demoted node | lost acked writes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['engine']} | {r['setup']} | error: {r['error'][:80]} | | | | | | | |")
            continue
        nc, se = r["new_conn"], r["session"]
        out.append(
            f"| {r['engine']} | {r['setup']} | {fmt_s(r['promoted_after_s'])} / {fmt_s(r['switchover_s'])} "
            f"| {fmt_s(r['first_write_b_s'])} | {fmt_s(r['first_write_b_after_promoted_s'])} | {fmt_s(r['write_gap_s'])} "
            f"| {fmt_s(r['last_failure_s']) if r['new_conn']['failed'] + r['session']['failed'] else '–'}"
            f"{'' if r.get('settled', True) else ' (unsettled)'} "
            f"| {nc['failed']} of {nc['attempts']} / {se['failed']} of {se['attempts']} "
            f"| {r['acked_by_a_after_demoted']} | {r['lost']} of {r['acked']} |"
        )
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rolegate", required=True)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--engines", default="pg,mysql,redis")
    ap.add_argument("--setups", default=None, help="comma-separated subset of: " + ", ".join(SETUPS))
    ap.add_argument("--out")
    ap.add_argument("--port-base", type=int, default=int(os.environ.get("FAILOVER_PORT_BASE", "27600")))
    args = ap.parse_args()
    args.pre = 0.5 if args.smoke else 2.0
    args.settle = 1.0 if args.smoke else 3.0
    args.max_after = 40.0
    engines = [e for e in args.engines.split(",") if e]
    if args.setups:
        setups = [s.strip() for s in args.setups.split(",")]
    else:
        setups = ["rolegate default", "HAProxy"] if args.smoke else SETUPS
    for s in setups:
        if s not in SETUPS:
            sys.exit(f"unknown setup {s!r}")

    signal.signal(signal.SIGTERM, lambda *_: (stop_all(), sys.exit(143)))
    workdir = tempfile.mkdtemp(prefix="rolegate-failover.")
    log(f"work directory {workdir}")
    rows = []
    started = time.time()
    try:
        with LabLock():
            started = time.time()  # the duration reported excludes waiting for the lock
            for engine in engines:
                for setup in setups:
                    log(f"{engine} / {setup}")
                    try:
                        r = scenario(engine, setup, args, workdir)
                    except Exception as e:
                        r = {"engine": engine, "setup": setup, "error": f"{type(e).__name__}: {e}"}
                    log(json.dumps({k: v for k, v in r.items() if k not in ("errors",)}, default=str))
                    rows.append(r)
    finally:
        stop_all()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    rev = os.environ.get("BENCH_REV", "n/a")
    text = "\n".join([
        f"# rolegate failover run {date} ({'smoke' if args.smoke else 'full'})",
        "",
        f"- rolegate git {rev}; HAProxy {subprocess.run(['haproxy', '-v'], capture_output=True, text=True).stdout.split()[2]}; "
        f"{os.cpu_count()} cores; {(time.time() - started) / 60:.1f} min",
        "- clients: a new connection every 20 ms (one write each) + one long-lived session writing every 20 ms",
        "- times are from the `start=` timestamp of `lab.sh switchover` (clean switchover) unless said otherwise",
        "",
        table(rows),
        "",
        "Errors seen by the clients (most frequent first):",
        "",
    ] + [f"- {r['engine']} / {r['setup']}: " + "; ".join(f"{n}× {e}" for e, n in r.get("errors", [])) for r in rows if r.get("errors")] + [""])
    print(text)
    out = args.out or os.path.join(ROOT, "loadtest", "results")
    os.makedirs(out, exist_ok=True)
    stem = f"{date[:10]}-{rev}-failover" + ("-smoke" if args.smoke else "")
    with open(os.path.join(out, stem + ".md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, stem + ".json"), "w") as f:
        json.dump({"date": date, "rev": rev, "rows": rows}, f, indent=1, default=str)
    log(f"wrote {os.path.join(out, stem)}.md and .json")
    status = lab("status")
    log("lab after the run:\n" + status)
    ok = all("error" not in r for r in rows)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
