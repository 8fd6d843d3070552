#!/usr/bin/env python3
"""Failover figures: real clients writing through a proxy while the lab moves the primary.

Run through loadtest/failover.sh (which installs the client libraries, builds rolegate and brings
the lab up). Rows (`--rows`), each for the engines where it makes sense:

  switchover          `lab.sh switchover <engine>`, a clean planned switchover (pg, mysql, redis)
  hang                the primary frozen (`lab.sh hang`, SIGSTOP), the standby promoted
                      `--detect` seconds later (`lab.sh promote`), the frozen node resumed once
                      the proxy has settled (`lab.sh resume`) and watched `--after-resume` seconds
                      more: rolegate must report it stale and send it nothing
  split               the standby promoted while the primary stays up (`lab.sh promote`: both
                      claim primary), the old primary demoted `--split-for` seconds later
                      (`lab.sh demote <engine> A`)
  patroni-switchover  `lab.sh switchover patroni` (Patroni's REST /switchover) on the Patroni-
                      managed PostgreSQL pair (15442/15443)
  patroni-kill        `lab.sh kill patroni`: the leader's Patroni and PostgreSQL SIGKILLed,
                      Patroni promotes the replica after its TTL
  sentinel-failover   `SENTINEL FAILOVER labmaster` (`lab.sh failover sentinel`) on the redis pair
  (`patroni` = both Patroni rows, `sentinel` = sentinel-failover)

Setups (`--setups`; each row runs the ones that apply to it):

  rolegate default       rolegate, default config except addresses and the check credentials
                         (check interval 250ms, rise 2, fall 2, on_demote: close)
  rolegate interval 1s   the same with `check: { interval: 1s }` (switchover only)
  rolegate hold          rolegate default, and `rolegate hold CLUSTER --timeout 10s --admin URL`
                         run just before the switchover, as a hook would; the hold ends by itself
                         when rolegate confirms the new primary (planned rows only)
  rolegate authority     rolegate default plus the cluster's `authority:` (Patroni's etcd leader
                         key, or the Sentinels); reported as n/a when the binary does not know
                         the key (Patroni and Sentinel rows only). On the Patroni pair it is
                         also sized the way the README tells an operator to (patroni_listener()):
                         `queue_timeout` = Patroni's ttl + loop_wait + 5 s, `max_connections` =
                         PostgreSQL's max_connections - superuser_reserved_connections - 10,
                         both from Patroni's REST GET /config, printed in the results header
  HAProxy                configured the common way: Redis `tcp-check` AUTH + `info replication` +
                         `expect string role:master`, `inter 1s fall 2 rise 1`; PostgreSQL and
                         MariaDB `option httpchk OPTIONS /primary`, `inter 3s fall 3 rise 2`,
                         against Patroni's own REST API for the Patroni rows and against a
                         Patroni-style role responder per node (responder.py) for the plain
                         pairs; `on-marked-down shutdown-sessions` everywhere

two clients write through the proxy's write endpoint meanwhile:
  new-conn   a new connection every 20 ms (attempts overlap when one is slow), one write each
  session    one long-lived session writing every 20 ms; on an error it reconnects
Each write carries a unique token and reports the server port it landed on (PostgreSQL
`inet_server_port()`, MariaDB `@@port`, Redis `CONFIG GET port` on the same connection).

The clients' connect timeout is `--connect-timeout` (default 10 s; libpq connect_timeout for
pg): an attempt that gives up on its own while the proxy still holds it is counted as failed,
and as a client-side timeout in the notes.

Reported per scenario: the first acknowledged write on the new primary, from the row's start and
as route - ref (ref: the promotion, or for `split` the demotion of the old primary, the moment a
single primary is left), the write gap, failed attempts per client, misrouted writes (sent after
the old primary was demoted, promoted over or frozen-and-replaced, and acknowledged by it), and
acknowledged writes missing on the new primary afterwards. Goal (issue 13): route - ref <= 0.5 s
and no failed new connection. Every scenario starts and ends with `lab.sh reset`.
"""

import argparse
import datetime
import fcntl
import json
import os
import re
import signal
import socket
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
PROTOCOL = {"pg": "postgres", "mysql": "mysql", "redis": "redis"}
# The lab engine a scenario moves -> the client engine that writes to it and the pair's ports.
LABS = ["pg", "mysql", "redis", "patroni", "sentinel"]
DRIVER = {"pg": "pg", "mysql": "mysql", "redis": "redis", "patroni": "pg", "sentinel": "redis"}
PAIR = {"pg": "pg", "mysql": "mysql", "redis": "redis", "patroni": "patroni", "sentinel": "redis"}
PORTS = {lab: (TOPO.port(PAIR[lab], "A"), TOPO.port(PAIR[lab], "B")) for lab in LABS}
LABEL = {"pg": "pg", "mysql": "mysql", "redis": "redis", "patroni": "pg (Patroni)", "sentinel": "redis (Sentinel)"}

DEFAULT, ONE_S, HOLD, AUTHORITY, HAPROXY = (
    "rolegate default", "rolegate interval 1s", "rolegate hold", "rolegate authority", "HAProxy")
SETUPS = [DEFAULT, ONE_S, HOLD, AUTHORITY, HAPROXY]


class Row:
    """One kind of event: which lab engines it runs on, which setups apply, what `ref` is."""

    def __init__(self, name, labs, setups, ref, title):
        self.name, self.labs, self.setups, self.ref, self.title = name, labs, setups, ref, title


ROWS = [
    Row("switchover", ["pg", "mysql", "redis"], [DEFAULT, ONE_S, HOLD, HAPROXY], "promoted",
        "planned switchover (`lab.sh switchover`), without and with the hold"),
    Row("hang", ["pg", "mysql", "redis"], [DEFAULT, HAPROXY], "promoted",
        "primary frozen (SIGSTOP), standby promoted, old primary resumed"),
    Row("split", ["pg", "mysql", "redis"], [DEFAULT, HAPROXY], "demoted",
        "split brain: standby promoted with the primary up, old primary demoted"),
    Row("patroni-switchover", ["patroni"], [DEFAULT, HOLD, AUTHORITY, HAPROXY], "promoted",
        "Patroni switchover (REST /switchover)"),
    Row("patroni-kill", ["patroni"], [DEFAULT, AUTHORITY, HAPROXY], "promoted",
        "Patroni leader killed (SIGKILL of Patroni and PostgreSQL), Patroni promotes after its TTL"),
    Row("sentinel-failover", ["sentinel"], [DEFAULT, HOLD, AUTHORITY, HAPROXY], "promoted",
        "`SENTINEL FAILOVER`"),
]
ROW_ALIASES = {"patroni": ["patroni-switchover", "patroni-kill"], "sentinel": ["sentinel-failover"],
               "nohold": ["switchover"], "hold": ["switchover"]}

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
            if self.engine == "redis":
                # redis-py 4.3's close() only returns the connection to the client's pool: the
                # socket would stay open (and its proxied session alive) until garbage collection.
                conn.connection_pool.disconnect()
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


# The clients' connect timeout (s), `--connect-timeout`: what an application would set; a held
# connection that waits longer gives up on its own (a client-side timeout, reported as such).
CONNECT_TIMEOUT = 10
CLIENT_TIMEOUT = re.compile(r"timeout expired|timed out|ConnectionTimeout", re.I)


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
            conn = self.d.connect(CONNECT_TIMEOUT)
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
                    conn = self.d.connect(CONNECT_TIMEOUT)
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


class NotApplicable(Exception):
    """The setup cannot run here (e.g. a rolegate without `authority:`): reported as n/a."""


def backend_names(lab):
    # Patroni's member names are the lab's node names; the authority maps members to backends
    # by name, so the Patroni cluster's backends are named like its members.
    return ("A", "B") if lab == "patroni" else ("a", "b")


def authority_yaml(lab):
    if lab == "patroni":
        spec = TOPO.engine("patroni")
        endpoints = ", ".join(f"http://127.0.0.1:{TOPO.port('etcd', n)}" for n in TOPO.nodes("etcd"))
        return ["    authority:", "      patroni:", f"        etcd: {{ endpoints: [{endpoints}] }}",
                f"        namespace: {spec['namespace']}", f"        scope: {spec['scope']}"]
    if lab == "sentinel":
        addrs = ", ".join(f"127.0.0.1:{TOPO.port('sentinel', n)}" for n in TOPO.nodes("sentinel"))
        return ["    authority:", "      sentinel:", f"        addresses: [{addrs}]",
                f"        master_name: {TOPO.engine('sentinel')['master_name']}"]
    raise NotApplicable(f"no authority for {lab}")


def patroni_listener():
    """The primary listener's `queue_timeout` and `max_connections` for the Patroni pair, sized
    as the README tells an operator to, from what Patroni applies (REST GET /config):
    - queue_timeout above Patroni's unplanned failover time, ttl + loop_wait (+ 5 s for the
      promotion itself and rolegate's rise), so connections queued while a dead leader's lock
      expires are still waiting when the replica is promoted;
    - max_connections below what PostgreSQL gives ordinary users (max_connections -
      superuser_reserved_connections) with 10 to spare for Patroni's own, rolegate's check and
      other sessions: sessions queued in rolegate hold a listener slot, so when the promotion
      releases them at most this many open a backend connection at once and the rest follow as
      those end (the kernel backlog holds new clients meanwhile) instead of overflowing
      PostgreSQL with "too many clients".
    Returns (settings for the YAML, a sentence for the results header)."""
    rest = TOPO.port("patroni", "A", "rest_port")
    code, body = http_get(rest, "/config")
    if code != 200:
        rest = TOPO.port("patroni", "B", "rest_port")
        code, body = http_get(rest, "/config")
    if code != 200:
        raise RuntimeError(f"Patroni GET /config answered {code}")
    conf = json.loads(body)
    ttl, loop_wait = int(conf.get("ttl", 30)), int(conf.get("loop_wait", 10))
    params = (conf.get("postgresql") or {}).get("parameters") or {}
    pg_max = int(params.get("max_connections", 100))
    reserved = int(params.get("superuser_reserved_connections", 3))
    queue = ttl + loop_wait + 5
    maxconn = pg_max - reserved - 10
    why = (f"`queue_timeout: {queue}s` (Patroni ttl {ttl} s + loop_wait {loop_wait} s + 5 s), "
           f"`max_connections: {maxconn}` (PostgreSQL max_connections {pg_max} − {reserved} reserved − 10), "
           "from Patroni's GET /config")
    return {"queue_timeout": f"{queue}s", "max_connections": maxconn}, why


def rolegate_yaml(lab, listen, admin, interval=None, authority=False, listener_extra=None):
    engine = DRIVER[lab]
    a, b = PORTS[lab]
    na, nb = backend_names(lab)
    check = ["      user: rolegate_monitor", "      password_env: MONITOR_PASSWORD"]
    if engine == "pg":
        check.append("      database: postgres")
    if interval:
        check.append(f"      interval: {interval}")
    return "\n".join([
        "# generated by loadtest/failover/failover.py",
        f"admin:\n  listen: 127.0.0.1:{admin}",
        "clusters:",
        f"  - name: {lab}",
        f"    protocol: {PROTOCOL[engine]}",
        "    check:",
        *check,
        *(authority_yaml(lab) if authority else []),
        "    backends:",
        f"      - {{ name: {na}, address: 127.0.0.1:{a} }}",
        f"      - {{ name: {nb}, address: 127.0.0.1:{b} }}",
        "listeners:",
        f"  - {{ name: rw, bind: 127.0.0.1:{listen}, cluster: {lab}, role: primary"
        + "".join(f", {k}: {v}" for k, v in (listener_extra or {}).items()) + " }",
        "",
    ])


def haproxy_cfg(lab, listen, stats_sock, check_ports):
    engine = DRIVER[lab]
    a, b = PORTS[lab]
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
        f"listen {lab}-rw",
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
    else:  # Patroni's documented HAProxy section (its REST API, or a responder that answers like it)
        lines += [
            "    option httpchk OPTIONS /primary",
            "    http-check expect status 200",
            "    default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions",
            f"    server a 127.0.0.1:{a} maxconn 500 check port {check_ports[0]}",
            f"    server b 127.0.0.1:{b} maxconn 500 check port {check_ports[1]}",
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


def http_get(port, path):
    """(status, body) of GET http://127.0.0.1:PORT/PATH, or (None, '') when nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.settimeout(3)
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
            data = b""
            while len(data) < 4 << 20:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b"\r\n", 1)[0].split()[1]), body.decode(errors="replace")
    except (OSError, ValueError, IndexError):
        return None, ""


def http_status(port, path):
    return http_get(port, path)[0]


def metric(text, name, labels):
    """The value of NAME{LABELS} in a Prometheus text scrape, or None."""
    want = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in text.splitlines():
        if line.startswith(want + " "):
            try:
                return float(line.rsplit(" ", 1)[1])
            except ValueError:
                return None
    return None


class Proxy:
    def __init__(self, setup, lab, args, workdir):
        self.setup, self.lab, self.dir = setup, lab, workdir
        self.listen = args.port_base + 10 + LABS.index(lab)
        self.admin = args.port_base + 20
        self.procs = []
        self.bin = args.rolegate
        self.sock = os.path.join(workdir, "haproxy.sock")
        self.tag = f"{lab}-{setup.replace(' ', '-')}"
        self.rolegate = setup.startswith("rolegate")
        self.sizing = None  # the listener settings beyond the defaults, said in the header

    def start(self):
        if self.rolegate:
            self.start_rolegate()
        else:
            self.start_haproxy()

    def config(self):
        """Writes the rolegate config; for the authority setup, raises NotApplicable when this
        binary rejects the `authority:` key (before the lab is touched)."""
        cfg = os.path.join(self.dir, self.tag + ".yaml")
        extra = None
        if self.setup == AUTHORITY and self.lab == "patroni":
            extra, self.sizing = patroni_listener()
        with open(cfg, "w") as f:
            f.write(rolegate_yaml(self.lab, self.listen, self.admin, "1s" if self.setup == ONE_S else None,
                                  authority=self.setup == AUTHORITY, listener_extra=extra))
        if self.setup == AUTHORITY:
            r = subprocess.run([self.bin, "check-config", cfg], capture_output=True, text=True, timeout=30,
                               env=dict(os.environ, MONITOR_PASSWORD=MON_PW))
            if r.returncode != 0:
                text = (r.stdout + r.stderr).strip().replace("\n", " ")
                if "authority" in text:
                    raise NotApplicable(f"this rolegate does not take `authority:` ({text[:100]})")
                raise RuntimeError(f"check-config: {text[:300]}")
        return cfg

    def start_rolegate(self):
        cfg = self.config()
        env = dict(os.environ, MONITOR_PASSWORD=MON_PW)
        p = start([self.bin, "--config", cfg, "run"], self.tag, self.dir, env=env)
        self.procs.append(p)
        wait_port(self.listen, p)
        deadline = time.monotonic() + 20
        while http_status(self.admin, "/readyz") != 200:
            if time.monotonic() > deadline or p.poll() is not None:
                raise RuntimeError(f"rolegate not ready (see {self.dir}/{self.tag}.log)")
            time.sleep(0.1)

    def start_haproxy(self):
        ports = []
        if self.lab == "patroni":
            ports = [TOPO.port("patroni", n, "rest_port") for n in ("A", "B")]
        elif DRIVER[self.lab] != "redis":
            for i, node_port in enumerate(PORTS[self.lab]):
                rp = self.admin + 1 + i
                r = start([sys.executable, os.path.join(HERE, "responder.py"), DRIVER[self.lab], str(node_port), str(rp)],
                          f"{self.tag}-responder-{'ab'[i]}", self.dir)
                self.procs.append(r)
                wait_port(rp, r)
                ports.append(rp)
        cfg = os.path.join(self.dir, self.tag + ".cfg")
        with open(cfg, "w") as f:
            f.write(haproxy_cfg(self.lab, self.listen, self.sock, ports))
        p = start(["haproxy", "-db", "-f", cfg], self.tag, self.dir)
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

    def status(self):
        code, body = http_get(self.admin, "/status")
        return json.loads(body) if code == 200 else None

    def metrics(self):
        code, body = http_get(self.admin, "/metrics")
        return body if code == 200 else ""

    def hold(self, timeout="10s"):
        """`rolegate hold` with the real CLI, as a switchover hook runs it."""
        r = subprocess.run([self.bin, "hold", self.lab, "--timeout", timeout, "--admin", f"http://127.0.0.1:{self.admin}"],
                           capture_output=True, text=True, timeout=20, env={k: v for k, v in os.environ.items()
                                                                            if k != "ROLEGATE_CONFIG"})
        if r.returncode != 0:
            raise RuntimeError(f"rolegate hold {self.lab} failed ({r.returncode}): {(r.stdout + r.stderr).strip()[:300]}")

    def release(self):
        subprocess.run([self.bin, "release", self.lab, "--admin", f"http://127.0.0.1:{self.admin}"],
                       capture_output=True, text=True, timeout=20)

    def stop(self):
        for p in reversed(self.procs):
            stop(p)
        self.procs = []


# ------------------------------------------------------------------------------------------------
# Events: what the lab does in each row. Each returns the timeline (wall-clock epoch seconds).
# ------------------------------------------------------------------------------------------------


def lab_json(*args, timeout=180):
    out = lab(*args, "--json", timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


def sleep_until(t):
    """Waits for wall-clock time T (a scenario's scripted delay, e.g. the failure detector's)."""
    while True:
        d = t - time.time()
        if d <= 0:
            return
        time.sleep(min(d, 0.05))


def wait_settled(clients, new_port, not_before, args):
    """Until a write has landed on NEW_PORT, NOT_BEFORE has passed and no attempt has failed
    for `settle` seconds (HAProxy may route to both nodes until the old one falls), at most
    `max_after` seconds from NOT_BEFORE. True when settled."""
    deadline = not_before + args.max_after
    while time.time() < deadline:
        recs = clients.snapshot()
        ok_new = any(r["ok"] and r["port"] == new_port for r in recs)
        last_fail = max([r["t1"] for r in recs if not r["ok"]], default=0)
        now = time.time()
        if ok_new and now > not_before and now > last_fail + args.settle:
            return True
        time.sleep(0.1)
    return False


def move_event(cmd, lab_name):
    """switchover / kill / failover: the lab's four timestamps."""
    def run(ctx):
        ts = lab_json(cmd, lab_name)
        if not {"start", "demoted", "promoted", "done"} <= ts.keys():
            raise RuntimeError(f"unexpected {cmd} output: {ts!r}")
        ctx.timeline = {"start": ts["start"], "demoted": ts["demoted"], "promoted": ts["promoted"], "done": ts["done"]}
        ctx.start, ctx.ref, ctx.cutoff = ts["start"], ts["promoted"], min(ts["demoted"], ts["promoted"])
        ctx.settled = wait_settled(ctx.clients, ctx.new_port, ts["done"], ctx.args)
    return run


def hang_event(ctx):
    h = lab_json("hang", PAIR[ctx.lab])
    ctx.start = h["at"]
    sleep_until(h["at"] + ctx.args.detect)
    p = lab_json("promote", PAIR[ctx.lab])
    ctx.ref = ctx.cutoff = p["at"]
    ctx.settled = wait_settled(ctx.clients, ctx.new_port, p["at"], ctx.args)
    r = lab_json("resume", PAIR[ctx.lab])
    resumed = r["nodes"][0]["at"] if r.get("nodes") else time.time()
    ctx.timeline = {"start": h["at"], "promoted": p["at"], "resumed": resumed}
    # The woken node still claims primary: rolegate must report it stale and route it nothing.
    deadline = resumed + ctx.args.after_resume
    stale_at = None
    while time.time() < deadline:
        if ctx.proxy.rolegate and stale_at is None:
            st = ctx.proxy.status()
            old = backend_names(ctx.lab)[0]
            for c in (st or {}).get("clusters", []):
                for b in c.get("backends", []):
                    if b.get("name") == old and b.get("stale") and b.get("health") == "up":
                        stale_at = time.time()
        time.sleep(0.1)
    if ctx.proxy.rolegate:
        ctx.notes.append(f"A stale {stale_at - resumed:.1f} s after resume" if stale_at else "A NOT reported stale")
        ctx.goal_extra_ok = stale_at is not None
    else:
        st = haproxy_states(ctx.proxy.sock)
        ctx.notes.append(f"after resume: a {st.get('a', '?')}, b {st.get('b', '?')}")


def split_event(ctx):
    p = lab_json("promote", PAIR[ctx.lab])
    ctx.start = ctx.cutoff = p["at"]
    sleep_until(p["at"] + ctx.args.split_for)
    d = lab_json("demote", PAIR[ctx.lab], "A")
    ctx.ref = d["at"]
    ctx.timeline = {"start": p["at"], "demoted": d["at"], "done": d["done"]}
    ctx.settled = wait_settled(ctx.clients, ctx.new_port, d["done"], ctx.args)


EVENTS = {
    "switchover": lambda ctx: move_event("switchover", PAIR[ctx.lab])(ctx),
    "hang": hang_event,
    "split": split_event,
    "patroni-switchover": move_event("switchover", "patroni"),
    "patroni-kill": move_event("kill", "patroni"),
    "sentinel-failover": move_event("failover", "sentinel"),
}


class Ctx:
    def __init__(self, lab, proxy, clients, args, new_port):
        self.lab, self.proxy, self.clients, self.args, self.new_port = lab, proxy, clients, args, new_port
        self.start = self.ref = self.cutoff = None
        self.timeline = {}
        self.settled = False
        self.notes = []
        self.goal_extra_ok = True
        self.hold_at = None


# ------------------------------------------------------------------------------------------------
# One scenario
# ------------------------------------------------------------------------------------------------


def reset(lab_name):
    lab("reset", PAIR[lab_name])
    if lab_name == "sentinel":
        lab("reset", "sentinel")


def scenario(row, lab_name, setup, args, workdir):
    engine = DRIVER[lab_name]
    a_port, b_port = PORTS[lab_name]
    proxy = Proxy(setup, lab_name, args, workdir)
    if proxy.rolegate:
        proxy.config()
    reset(lab_name)
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
        time.sleep(args.pre)  # steady writes before the event: the script's fixed lead-in
        ctx = Ctx(lab_name, proxy, clients, args, b_port)
        if setup == HOLD:
            ctx.hold_at = time.time()
            proxy.hold("10s")
        try:
            EVENTS[row.name](ctx)
        finally:
            if setup == HOLD:
                m = proxy.metrics()
                ends = {r: metric(m, "rolegate_holds_ended_total", {"cluster": lab_name, "reason": r})
                        for r in ("new_primary", "released", "timeout")}
                ended = [r for r, v in ends.items() if v]
                ctx.notes.append(f"hold ended by {'+'.join(ended) or 'nothing yet'}")
                ctx.goal_extra_ok = ctx.goal_extra_ok and ended == ["new_primary"]
                proxy.release()
        if proxy.rolegate:
            rescued = metric(proxy.metrics(), "rolegate_sessions_rescued_total", {"listener": "rw"})
            if rescued:
                ctx.notes.append(f"{rescued:.0f} rescued")
        clients.stop()
        recs = clients.snapshot()
        acked = [r["token"] for r in recs if r["ok"]]
        present = Driver(engine, b_port).present(b_port, acked)
        r = analyse(row, lab_name, setup, recs, ctx, a_port, b_port, len(acked), present)
        return r
    finally:
        if clients is not None:
            clients.stop()
        proxy.stop()
        reset(lab_name)


def analyse(row, lab_name, setup, recs, ctx, a_port, b_port, acked_n, present_n):
    oks_b = sorted(r["t1"] for r in recs if r["ok"] and r["port"] == b_port)
    first_b = oks_b[0] if oks_b else None
    oks_a = sorted(r["t1"] for r in recs if r["ok"] and r["port"] == a_port and (first_b is None or r["t1"] < first_b))
    last_a = oks_a[-1] if oks_a else None
    start = ctx.start

    def per_kind(kind):
        rs = [r for r in recs if r["kind"] == kind]
        fails = [r for r in rs if not r["ok"]]
        return {"attempts": len(rs), "failed": len(fails)}

    errors = {}
    for r in recs:
        if not r["ok"]:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    nc = per_kind("new-conn")
    timeouts = sum(1 for r in recs if r["kind"] == "new-conn" and not r["ok"] and CLIENT_TIMEOUT.search(r["error"] or ""))
    if timeouts:
        ctx.notes.append(f"{timeouts} new-conn failures are client-side connect timeouts ({CONNECT_TIMEOUT} s)")
    # Attempts that started before the lab saw the old primary demoted or dead, and failed: in
    # the kill row, connections in their handshake with PostgreSQL while the lab SIGKILLs its
    # processes one by one (they get the dying server's own FATAL). No proxy can move a session
    # that has received the old server's bytes. Still counted as failed; said apart.
    gone = ctx.timeline.get("demoted", start)
    in_flight = sum(1 for r in recs if r["kind"] == "new-conn" and not r["ok"] and r["t0"] < gone)
    if in_flight and row.name == "patroni-kill":
        ctx.notes.append(f"{in_flight} failed new-conn started before A was seen dead (in flight on it as it died)")
    route = (first_b - ctx.ref) if first_b is not None and ctx.ref is not None else None
    goal = route is not None and route <= 0.5 and nc["failed"] == 0 and ctx.goal_extra_ok
    fails = [r["t1"] for r in recs if not r["ok"]]
    return {
        "row": row.name,
        "engine": lab_name,
        "setup": setup,
        "ref": row.ref,
        "timeline": {k: v - start for k, v in ctx.timeline.items()},
        "hold_at_s": (ctx.hold_at - start) if ctx.hold_at else None,
        "first_write_b_s": (first_b - start) if first_b else None,
        "route_minus_ref_s": route,
        "write_gap_s": (first_b - last_a) if first_b and last_a else None,
        "new_conn": nc,
        "session": per_kind("session"),
        "misrouted": sum(1 for r in recs if r["ok"] and r["port"] == a_port and r["tw"] is not None
                         and r["tw"] > ctx.cutoff),
        "last_failure_s": (max(fails) - start) if fails else None,
        "acked": acked_n,
        "lost": acked_n - present_n,
        "settled": ctx.settled,
        "goal": goal,
        "notes": ctx.notes,
        "client_timeouts": timeouts,
        "sizing": ctx.proxy.sizing,
        "errors": sorted(errors.items(), key=lambda kv: -kv[1])[:6],
    }


def fmt_s(v):
    return "–" if v is None else f"{v:.2f}"


def fmt_timeline(t):
    return " / ".join(f"{k} {v:.2f}" for k, v in t.items() if k != "start") or "–"


def table(row, rows):
    ref = {"promoted": "the lab saw the new primary writable", "demoted": "the old primary demoted (one primary left)"}[row.ref]
    out = [
        f"### {row.name}: {row.title}",
        "",
        f"Times in seconds from the row's start; ref = {ref}.",
        "",
        "| engine | proxy | lab timeline (s) | first write on new primary, from start (s) | route − ref (ms) "
        "| write gap (s) | last failed write (s) | failed: new-conn / session | misrouted writes "
        "| lost acked writes | goal | notes |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        if "error" in r or "na" in r:
            what = f"error: {r['error'][:100]}" if "error" in r else f"n/a: {r['na'][:100]}"
            out.append(f"| {LABEL[r['engine']]} | {r['setup']} | {what} | | | | | | | | | |")
            continue
        nc, se = r["new_conn"], r["session"]
        route = "–" if r["route_minus_ref_s"] is None else f"{r['route_minus_ref_s'] * 1000:.0f}"
        notes = list(r["notes"])
        if r["hold_at_s"] is not None:
            notes.insert(0, f"hold at {r['hold_at_s']:.2f}")
        if not r["settled"]:
            notes.append("unsettled")
        out.append(
            f"| {LABEL[r['engine']]} | {r['setup']} | {fmt_timeline(r['timeline'])} "
            f"| {fmt_s(r['first_write_b_s'])} | {route} | {fmt_s(r['write_gap_s'])} "
            f"| {fmt_s(r['last_failure_s'])} "
            f"| {nc['failed']} of {nc['attempts']} / {se['failed']} of {se['attempts']} "
            f"| {r['misrouted']} | {r['lost']} of {r['acked']} | {'met' if r['goal'] else 'missed'} | {'; '.join(notes)} |"
        )
    return "\n".join(out)


def lab_up(lab_name, started_here):
    """Patroni / Sentinel rows need those engines: started when down (never restarted when up)."""
    if lab_name not in ("patroni", "sentinel") or lab_name in started_here:
        return
    st = lab_json("status", lab_name, timeout=60).get(lab_name, {})
    if not st or not all(n.get("up") for n in st.values()):
        log(f"{lab_name} is not up: lab.sh up {lab_name}")
        lab("up", lab_name, timeout=600)
    started_here.add(lab_name)


def select_rows(spec):
    names = []
    for n in (x.strip() for x in spec.split(",")):
        if not n:
            continue
        expand = ROW_ALIASES.get(n, [n])
        for e in expand:
            if e not in [r.name for r in ROWS]:
                sys.exit(f"unknown row {n!r} (rows: {', '.join(r.name for r in ROWS)}; aliases: {', '.join(ROW_ALIASES)})")
            if e not in names:
                names.append(e)
    return [r for r in ROWS if r.name in names]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rolegate", required=True)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--rows", default=None, help="comma-separated: " + ", ".join(r.name for r in ROWS)
                    + " (aliases: patroni, sentinel); default all (smoke: switchover, plus hang and split"
                    " on redis with rolegate default)")
    ap.add_argument("--engines", default="pg,mysql,redis,patroni,sentinel",
                    help="comma-separated lab engines; pg also selects the Patroni rows, redis the Sentinel row")
    ap.add_argument("--setups", default=None, help="comma-separated subset of: " + ", ".join(SETUPS))
    ap.add_argument("--detect", type=float, default=1.0, help="hang: seconds from the freeze to the promotion")
    ap.add_argument("--split-for", type=float, default=None, help="split: seconds from the promotion to the demotion")
    ap.add_argument("--after-resume", type=float, default=None, help="hang: seconds watched after the resume")
    ap.add_argument("--connect-timeout", type=int, default=10,
                    help="the clients' connect timeout, whole seconds (default %(default)s)")
    ap.add_argument("--out")
    ap.add_argument("--port-base", type=int, default=int(os.environ.get("FAILOVER_PORT_BASE", "27600")))
    args = ap.parse_args()
    globals()["CONNECT_TIMEOUT"] = max(2, args.connect_timeout)
    args.pre = 0.5 if args.smoke else 2.0
    args.settle = 1.0 if args.smoke else 3.0
    args.max_after = 40.0
    if args.split_for is None:
        args.split_for = 1.0 if args.smoke else 2.0
    if args.after_resume is None:
        args.after_resume = 3.0 if args.smoke else 8.0
    rows = select_rows(args.rows or ("switchover" if args.smoke else ",".join(r.name for r in ROWS)))
    aliases = {"postgres": "pg", "postgresql": "pg", "mariadb": "mysql"}
    wanted = {aliases.get(e.strip(), e.strip()) for e in args.engines.split(",") if e.strip()}
    for e in wanted:
        if e not in LABS:
            sys.exit(f"unknown engine {e!r} (engines: {', '.join(LABS)})")
    if args.setups:
        setups = [s.strip() for s in args.setups.split(",") if s.strip()]
        for s in setups:
            if s not in SETUPS:
                sys.exit(f"unknown setup {s!r} (setups: {', '.join(SETUPS)})")
    else:
        setups = [DEFAULT, HAPROXY] if args.smoke else SETUPS
    plan = [(row, lab_name, setup) for row in rows for lab_name in row.labs
            if lab_name in wanted or DRIVER[lab_name] in wanted
            for setup in row.setups if setup in setups]
    if args.smoke and args.rows is None:
        # CI also runs the unplanned rows once, on the quickest engine, so they cannot rot.
        extra = select_rows("hang,split")
        plan += [(row, "redis", DEFAULT) for row in extra if "redis" in wanted and DEFAULT in setups]
        rows += extra
    if not plan:
        sys.exit("nothing to run: no row applies to these engines and setups")

    signal.signal(signal.SIGTERM, lambda *_: (stop_all(), sys.exit(143)))
    workdir = tempfile.mkdtemp(prefix="rolegate-failover.")
    log(f"work directory {workdir}; {len(plan)} scenarios")
    results = []
    started = time.time()
    load = os.getloadavg()
    try:
        with LabLock():
            started = time.time()  # the duration reported excludes waiting for the lock
            load = os.getloadavg()
            up_here = set()
            for row, lab_name, setup in plan:
                log(f"{row.name} / {lab_name} / {setup}")
                try:
                    lab_up(lab_name, up_here)
                    r = scenario(row, lab_name, setup, args, workdir)
                except NotApplicable as e:
                    r = {"row": row.name, "engine": lab_name, "setup": setup, "na": str(e)}
                except Exception as e:
                    r = {"row": row.name, "engine": lab_name, "setup": setup, "error": f"{type(e).__name__}: {e}"}
                log(json.dumps({k: v for k, v in r.items() if k not in ("errors",)}, default=str))
                results.append(r)
            # Still under the lock: what every scenario's reset left, not what other tests do next.
            log("lab after the run:\n" + lab("status"))
    finally:
        stop_all()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    rev = os.environ.get("BENCH_REV", "n/a")
    end_load = os.getloadavg()
    text = [
        f"# rolegate failover run {date} ({'smoke' if args.smoke else 'full'})",
        "",
        f"- rolegate git {rev}; HAProxy {subprocess.run(['haproxy', '-v'], capture_output=True, text=True).stdout.split()[2]}; "
        f"{os.cpu_count()} cores; {(time.time() - started) / 60:.1f} min; load average at start "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, at end {end_load[0]:.2f} {end_load[1]:.2f} {end_load[2]:.2f}",
        "- clients: a new connection every 20 ms (one write each; at most 200 in flight) + one long-lived session "
        f"writing every 20 ms; connect timeout {CONNECT_TIMEOUT} s",
        *sorted({f"- rolegate authority on the Patroni pair: {r['sizing']}; otherwise rolegate's defaults"
                 for r in results if r.get("sizing")}),
        f"- hang: promotion {args.detect:.1f} s after the freeze, watched {args.after_resume:.1f} s after the resume; "
        f"split: demotion {args.split_for:.1f} s after the promotion",
        "- goal (issue 13): route − ref ≤ 500 ms and 0 failed new connections (hold rows: the hold ended by the new "
        "primary; hang rows: the resumed node reported stale)",
        "",
    ]
    for row in rows:
        rs = [r for r in results if r["row"] == row.name]
        if rs:
            text += [table(row, rs), ""]
    text += ["Errors seen by the clients (most frequent first):", ""]
    text += [f"- {r['row']} / {r['engine']} / {r['setup']}: " + "; ".join(f"{n}× {e}" for e, n in r.get("errors", []))
             for r in results if r.get("errors")]
    text = "\n".join(text + [""])
    print(text)
    out = args.out or os.path.join(ROOT, "loadtest", "results")
    os.makedirs(out, exist_ok=True)
    stem = f"{date[:10]}-{rev}-failover" + ("-smoke" if args.smoke else "")
    with open(os.path.join(out, stem + ".md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, stem + ".json"), "w") as f:
        json.dump({"date": date, "rev": rev, "load": load, "rows": results}, f, indent=1, default=str)
    log(f"wrote {os.path.join(out, stem)}.md and .json")
    ok = all("error" not in r for r in results)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
