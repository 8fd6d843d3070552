#!/usr/bin/env python3
"""Side-by-side load runs: direct vs HAProxy (three splice variants) vs rolegate.

Run through loadtest/bench.sh, which installs the tools, builds rolegate and brings the lab's
PostgreSQL up; this file only drives the runs and writes the report (stdlib only).

Setups (all on 127.0.0.1):
  direct                   clients talk to the target server itself (the physical limit)
  haproxy-splice-auto      HAProxy `mode tcp`, `option splice-auto`
  haproxy-no-splice        HAProxy `mode tcp`, no splice option
  haproxy-forced-splice    HAProxy `mode tcp`, `option splice-request` + `option splice-response`
  rolegate                 release build, default config except addresses

Every workload is run for every setup in turn (A B C D E), and the whole sequence is repeated
for --rounds rounds; the report gives the median of the rounds. Every external command runs
under a timeout, every process this file starts is stopped by its pid.
"""

import argparse
import atexit
import contextlib
import datetime
import fcntl
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# Ports, passwords and the state dir: the lab's topology (loadtest/topology.json + LAB_* + lab.env).
sys.path.insert(0, os.path.join(ROOT, "loadtest"))
from lab.topology import load as load_topology  # noqa: E402

TOPO = load_topology()
CLK_TCK = os.sysconf("SC_CLK_TCK")
GIB = 1 << 30

SETUPS = [
    "direct",
    "haproxy-splice-auto",
    "haproxy-no-splice",
    "haproxy-forced-splice",
    "rolegate",
]
HAPROXY_VARIANTS = {
    "haproxy-splice-auto": ["option splice-auto"],
    "haproxy-no-splice": [],
    "haproxy-forced-splice": ["option splice-request", "option splice-response"],
}
PROXIES = [s for s in SETUPS if s != "direct"]
HAPROXIES = [s for s in SETUPS if s.startswith("haproxy")]
DISPLAY = {
    "direct": "direct",
    "haproxy-splice-auto": "HAProxy splice-auto",
    "haproxy-no-splice": "HAProxy no splice",
    "haproxy-forced-splice": "HAProxy forced splice",
    "rolegate": "rolegate",
    "rolegate-b": "rolegate B (--rolegate-b)",
    "rolegate-steer": "rolegate steer",
}

# The "rolegate steer" setup: rolegate with `steer:` on every listener, its clients run inside
# this cgroup v2 child, so their connects go straight to the target (docs/steering.md). Added
# when the machine can steer (root, cgroup2 here); dropped if rolegate reports it inactive.
STEER_CGROUP = f"/sys/fs/cgroup/unified/rolegate-bench-{os.getpid()}"
STEER = "rolegate-steer"


def can_steer():
    if os.geteuid() != 0:
        return "not root"
    with open("/proc/self/mounts") as f:
        if not any(l.split()[1:3] == ["/sys/fs/cgroup/unified", "cgroup2"] for l in f if len(l.split()) > 2):
            return "no cgroup2 at /sys/fs/cgroup/unified"
    return None


def client(setup, argv):
    """`argv` as a client of `setup`: inside the steered cgroup for the steer setup (sh writes its
    own pid to cgroup.procs, then execs, so every socket of the client belongs to the cgroup)."""
    if setup != STEER:
        return argv
    return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', STEER_CGROUP] + argv

# Service index -> offset of its port within a setup's block of ports.
SERVICES = {"iperf": 1, "redis": 2, "pg": 3, "sink": 4}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# Processes: everything started here is registered and stopped by pid at exit.
# ------------------------------------------------------------------------------------------------

STARTED = []


def start(argv, name, logdir, env=None, stdin=None, stdout=None):
    out = stdout if stdout is not None else open(os.path.join(logdir, f"{name}.log"), "ab")
    p = subprocess.Popen(
        argv,
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT if stdout is None else open(os.path.join(logdir, f"{name}.err"), "ab"),
        env=env,
        start_new_session=True,
    )
    p.bench_name = name
    STARTED.append(p)
    return p


def stop(p, grace=5.0):
    if p.poll() is None:
        try:
            os.kill(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=5)
    if p in STARTED:
        STARTED.remove(p)


def stop_all():
    for p in list(reversed(STARTED)):
        try:
            stop(p, grace=3.0)
        except Exception as e:  # keep stopping the others
            log(f"stopping {getattr(p, 'bench_name', p.pid)}: {e}")


def on_signal(signum, _frame):
    stop_all()
    sys.exit(128 + signum)


def wait_port(port, timeout=15.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.bench_name} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3 of stat); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def run(argv, timeout, env=None):
    """Runs a bounded command; returns (rc, stdout, stderr). A timeout is rc 124."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
        return r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return 124, out, f"timed out after {timeout}s"


def version_of(argv, pattern=None):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        text = (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"
    if pattern:
        m = re.search(pattern, text)
        return m.group(1) if m else text.splitlines()[0] if text else "n/a"
    return text.splitlines()[0] if text else "n/a"


# ------------------------------------------------------------------------------------------------
# Lab lock: the same flock the Rust lab tests take, so a pgbench run never meets a switchover.
# ------------------------------------------------------------------------------------------------


class LabLock:
    def __init__(self):
        self.path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "rolegate-lab-tests.lock")
        self.fd = None

    def __enter__(self):
        if os.environ.get("ROLEGATE_LAB_LOCK_HELD") == "1":
            return self
        self.fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o666)
        deadline = time.monotonic() + 900
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.path} held by someone else for 15 minutes")
                time.sleep(0.2)

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# ------------------------------------------------------------------------------------------------
# Configuration of one invocation
# ------------------------------------------------------------------------------------------------


class Plan:
    def __init__(self, args):
        self.smoke = args.smoke
        self.rolegate_extra = args.rolegate_extra
        self.rolegate_b_env = args.rolegate_b_env
        self.rounds = args.rounds if args.rounds else (1 if args.smoke else 3)
        # rolegate's default `workers`: one per CPU the process may run on (affinity counts)
        self.threads = len(os.sched_getaffinity(0)) or 1
        self.base = args.port_base
        self.pg_port = TOPO.port("pg", "A")
        self.pg_b_port = TOPO.port("pg", "B")
        self.app_password = TOPO.password("app")
        self.monitor_password = TOPO.password("monitor")
        self.pg_db = "rolegate_bench_smoke" if args.smoke else "rolegate_bench"
        if self.smoke:
            self.iperf_args = ["-n", "64M"]  # bytes, not seconds: done in a fraction of a second
            self.redis_n = {1: 3000, 16: 30000}
            self.churn_n = 1000
            self.connect_n = 200
            self.pgbench_args = ["-t", "100"]
            self.pgbench_c_args = ["-t", "5"]
            self.idle_sessions = 300
            self.pg_scale = 1
        else:
            self.iperf_args = ["-t", str(args.iperf_seconds)]
            self.redis_n = {1: 200_000, 16: 2_000_000}
            self.churn_n = 60_000
            self.connect_n = 3000
            self.pgbench_args = ["-T", str(args.pgbench_seconds)]
            self.pgbench_c_args = ["-T", str(args.pgbench_seconds)]
            self.idle_sessions = args.idle_sessions
            self.pg_scale = 10
        self.redis_clients = 50
        self.churn_clients = 50
        self.pgbench_clients = 8

    def port(self, setup, service):
        """The port a client of `setup` connects to for `service`."""
        if setup == "direct":
            return self.target_port(service)
        return self.base + 100 * (SETUPS.index(setup)) + SERVICES[service]

    def target_port(self, service):
        return {
            "iperf": self.base + 1,
            "redis": self.base + 2,
            "pg": self.pg_port,
            "sink": self.base + 4,
        }[service]

    def memory_port(self, setup):
        """Listener of the fresh proxy instance the memory workload starts."""
        return self.base + 100 * SETUPS.index(setup) + 50

    def admin_port(self, setup="rolegate", memory=False, pg=False):
        return self.base + 100 * SETUPS.index(setup) + (97 if pg else 98 if memory else 99)


# ------------------------------------------------------------------------------------------------
# Proxy configurations
# ------------------------------------------------------------------------------------------------


def haproxy_config(plan, setup, listens, maxconn):
    # HAProxy sizes its descriptor limit as 2 x maxconn + 2 x maxpipes (+ a few) and refuses to
    # start above the hard limit; maxpipes defaults to maxconn / 4. Keep the default where it
    # fits, otherwise as many pipes as fit (idle sessions hold none either way).
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    maxpipes = max(16, min(maxconn // 4, (hard - 2 * maxconn - 200) // 2))
    lines = [
        "# generated by loadtest/bench/bench.py",
        "global",
        f"    nbthread {plan.threads}",
        f"    maxconn {maxconn}",
        f"    maxpipes {maxpipes}",
        "defaults",
        "    mode tcp",
        # rolegate's defaults: connect_timeout 2s, no idle timeout. HAProxy insists on client and
        # server timeouts, so they are set far beyond any run.
        "    timeout connect 2s",
        "    timeout client 1h",
        "    timeout server 1h",
    ]
    lines += [f"    {opt}" for opt in HAPROXY_VARIANTS[setup]]
    for name, port, target in listens:
        lines += [f"listen {name}", f"    bind 127.0.0.1:{port}", f"    server {name}-1 127.0.0.1:{target}"]
    return "\n".join(lines) + "\n"


def rolegate_config(plan, listens, admin_port, extra="", steer=None):
    """Default config except addresses. The PostgreSQL cluster is `protocol: postgres` (role-aware,
    with its SCRAM-authenticated check), everything else `protocol: tcp`."""
    out = [
        "# generated by loadtest/bench/bench.py: rolegate defaults, only addresses set",
        "admin:",
        f"  listen: 127.0.0.1:{admin_port}",
        "clusters:",
    ]
    for name, _port, target in listens:
        if name == "pg":
            out += [
                "  - name: pg",
                "    protocol: postgres",
                "    check:",
                "      user: rolegate_monitor",
                "      password_env: PG_MONITOR_PASSWORD",
                "    backends:",
                f"      - {{ name: pg-a, address: 127.0.0.1:{target} }}",
                f"      - {{ name: pg-b, address: 127.0.0.1:{plan.pg_b_port} }}",
            ]
        else:
            out += [
                f"  - name: {name}",
                "    protocol: tcp",
                "    backends:",
                f"      - {{ name: {name}-1, address: 127.0.0.1:{target} }}",
            ]
    out.append("listeners:")
    for name, port, _target in listens:
        role = ", role: primary" if name == "pg" else ""
        steered = f", steer: {{ cgroup: {steer} }}" if steer else ""
        out.append(f"  - {{ name: {name}, bind: 127.0.0.1:{port}, cluster: {name}{role}{steered} }}")
    if extra:
        out.append(extra)
    return "\n".join(out) + "\n"


class Env:
    """Everything started for one invocation: targets and the long-running proxies."""

    def __init__(self, plan, rolegate_bin, workdir, rolegate_b=None):
        self.plan = plan
        self.bin = rolegate_bin
        self.bin_b = rolegate_b
        self.dir = workdir
        self.proxies = {}  # setup -> Popen

    def proxy_env(self):
        env = dict(os.environ)
        env["PG_MONITOR_PASSWORD"] = self.plan.monitor_password
        return env

    def start_targets(self):
        p = self.plan
        self.iperf = start(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(p.target_port("iperf"))], "iperf3-server", self.dir)
        rdir = os.path.join(self.dir, "redis")
        os.makedirs(rdir, exist_ok=True)
        self.redis = start(
            [
                "redis-server", "--bind", "127.0.0.1", "--port", str(p.target_port("redis")),
                "--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no",
                "--dir", rdir, "--maxclients", "10000", "--loglevel", "warning",
            ],
            "redis-server", self.dir,
        )
        self.sink = start([sys.executable, os.path.join(HERE, "idle.py"), "sink", str(p.target_port("sink"))], "sink", self.dir)
        for proc, svc in ((self.iperf, "iperf"), (self.redis, "redis"), (self.sink, "sink")):
            wait_port(p.target_port(svc), proc=proc)

    def listens(self, setup):
        # PostgreSQL is not among them: the lab is shared with the lab tests, whose switchovers,
        # kills and split brains would leave a long-lived rolegate (rightly) refusing a node it
        # saw replaced. Each pgbench run gets a fresh proxy instead (w_pgbench).
        return [(svc, self.plan.port(setup, svc), self.plan.target_port(svc)) for svc in ("iperf", "redis")]

    def start_proxy(self, setup, listens, tag, maxconn=4000, admin_port=None):
        cfg = os.path.join(self.dir, f"{tag}.cfg")
        admin_port = admin_port or self.plan.admin_port(setup) if setup.startswith("rolegate") else None
        if setup.startswith("haproxy"):
            with open(cfg, "w") as f:
                f.write(haproxy_config(self.plan, setup, listens, maxconn))
            proc = start(["haproxy", "-db", "-f", cfg], tag, self.dir)
        else:
            cfg += ".yaml"
            with open(cfg, "w") as f:
                f.write(rolegate_config(self.plan, listens, admin_port, self.plan.rolegate_extra,
                                        steer=STEER_CGROUP if setup == STEER else None))
            binary = self.bin_b if setup == "rolegate-b" else self.bin
            env = self.proxy_env()
            if setup == "rolegate-b":
                env.update(kv.split("=", 1) for kv in self.plan.rolegate_b_env)
            proc = start([binary, "--config", cfg, "run"], tag, self.dir, env=env)
        for _name, port, _t in listens:
            wait_port(port, proc=proc)
        if setup.startswith("rolegate"):
            wait_rolegate_ready(admin_port, proc)
        if setup == STEER:
            inactive = steer_inactive(admin_port)
            if inactive:
                stop(proc)
                raise RuntimeError(f"steering is not active: {inactive}")
        return proc

    def start_proxies(self):
        for setup in list(PROXIES):
            try:
                self.proxies[setup] = self.start_proxy(setup, self.listens(setup), setup)
            except RuntimeError as e:
                if setup != STEER:
                    raise
                log(f"no '{DISPLAY[STEER]}' setup: {e}")
                SETUPS.remove(STEER)
                PROXIES.remove(STEER)

    def pid(self, setup):
        return self.proxies[setup].pid if setup in self.proxies else None

    def check_alive(self):
        for setup, proc in self.proxies.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{setup} exited with {proc.returncode}; see {self.dir}/{setup}.log")


def steer_inactive(admin_port):
    """None when every listener of the rolegate on `admin_port` steers, else the reason."""
    with socket.create_connection(("127.0.0.1", admin_port), timeout=5) as s:
        s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = json.loads(data.split(b"\r\n\r\n", 1)[1])
    for listener in status["listeners"]:
        steer = listener.get("steer") or {}
        if not steer.get("active"):
            return f"{listener['name']}: {steer.get('reason', 'no steer in /status')}"
    return None


def wait_rolegate_ready(admin_port, proc, timeout=20.0):
    """/readyz answers 200 once every listener has a route (the checks have risen)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rolegate exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", admin_port), timeout=1) as s:
                s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            last = data.split(b"\r\n", 1)[0].decode(errors="replace")
            if b" 200 " in data.split(b"\r\n", 1)[0]:
                return
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    raise RuntimeError(f"rolegate not ready after {timeout}s: {last}")


# ------------------------------------------------------------------------------------------------
# Workloads. Each returns a dict of metric -> value (None when the run failed) plus "error".
# ------------------------------------------------------------------------------------------------


class Measure:
    """CPU seconds of the proxy over one run (None for direct)."""

    def __init__(self, pid):
        self.pid = pid

    def __enter__(self):
        self.t0 = cpu_seconds(self.pid) if self.pid else None
        return self

    def __exit__(self, *exc):
        self.cpu = (cpu_seconds(self.pid) - self.t0) if self.pid else None


def w_iperf(env, setup, streams, reverse):
    plan = env.plan
    argv = ["iperf3", "-c", "127.0.0.1", "-p", str(plan.port(setup, "iperf")), "-P", str(streams), "-J",
            "--connect-timeout", "3000"] + plan.iperf_args + (["-R"] if reverse else [])
    for attempt in range(3):
        with Measure(env.pid(setup)) as m:
            rc, out, err = run(client(setup, argv), timeout=90)
        try:
            j = json.loads(out)
        except ValueError:
            j = {"error": (err or out)[-300:]}
        if rc == 0 and "error" not in j:
            break
        # iperf3's server serves one test at a time and can be left "busy" by an aborted one.
        log(f"iperf3 {setup} P{streams}{' -R' if reverse else ''} attempt {attempt + 1}: {j.get('error')}")
        time.sleep(1)
    else:
        return {"error": f"iperf3 failed: {j.get('error')}"}
    s = j["end"]["sum_received"]
    nbytes = s["bytes"]
    res = {"gbps": s["bits_per_second"] / 1e9, "bytes": nbytes}
    if m.cpu is not None:
        res["cpu_s"] = m.cpu
        res["cpu_s_per_gib"] = m.cpu / (nbytes / GIB) if nbytes else None
    return res


def parse_redis_csv(text):
    rows = {}
    header = None
    for line in text.splitlines():
        cells = [c.strip('"') for c in line.strip().split('","')]
        if not cells or len(cells) < 2:
            continue
        if cells[0] == "test":
            header = cells
            continue
        if header is None:
            continue
        rows[cells[0]] = {h: float(v) for h, v in zip(header[1:], cells[1:]) if re.match(r"^[\d.]+$", v)}
    return rows


def w_redis(env, setup, pipeline):
    plan = env.plan
    argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(plan.port(setup, "redis")),
            "-c", str(plan.redis_clients), "-n", str(plan.redis_n[pipeline]), "-P", str(pipeline),
            "-t", "ping_inline,set,get", "--csv"]
    with Measure(env.pid(setup)) as m:
        rc, out, err = run(client(setup, argv), timeout=180)
    rows = parse_redis_csv(out)
    if rc != 0 or not rows:
        return {"error": f"redis-benchmark rc={rc}: {(err or out)[-300:]}"}
    res = {}
    for test, key in (("PING_INLINE", "ping"), ("SET", "set"), ("GET", "get")):
        r = rows.get(test)
        if not r:
            return {"error": f"redis-benchmark printed no {test} row"}
        res[f"{key}_rps"] = r.get("rps")
        res[f"{key}_p50_ms"] = r.get("p50_latency_ms")
        res[f"{key}_p99_ms"] = r.get("p99_latency_ms")
    if m.cpu is not None:
        res["cpu_s"] = m.cpu
    return res


def w_churn(env, setup):
    """A new TCP connection per request: redis-benchmark -k 0 (PING_INLINE)."""
    plan = env.plan
    argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(plan.port(setup, "redis")),
            "-c", str(plan.churn_clients), "-n", str(plan.churn_n), "-k", "0", "-t", "ping_inline", "--csv"]
    with Measure(env.pid(setup)) as m:
        rc, out, err = run(client(setup, argv), timeout=180)
    rows = parse_redis_csv(out)
    r = rows.get("PING_INLINE")
    if rc != 0 or not r:
        return {"error": f"redis-benchmark -k 0 rc={rc}: {(err or out)[-300:]}"}
    res = {"conn_per_s": r.get("rps"), "p99_ms": r.get("p99_latency_ms")}
    if m.cpu is not None:
        res["cpu_s"] = m.cpu
        res["cpu_us_per_conn"] = 1e6 * m.cpu / plan.churn_n
    return res


def w_connect(env, setup):
    """Connect latency, one connection at a time (loadtest/bench/connect_latency.py). For the
    steer setup also the kernel's own account of the hooks: run time per invocation of the
    connect4 and sock_release programs (kernel.bpf_stats_enabled for the run's duration)."""
    plan = env.plan
    argv = [sys.executable, os.path.join(HERE, "connect_latency.py"), "127.0.0.1",
            str(plan.port(setup, "redis")), str(plan.connect_n)]
    stats = BpfStats(["steer_connect4", "steer_sock_release"]) if setup == STEER else None
    with stats or contextlib.nullcontext():
        rc, out, err = run(client(setup, argv), timeout=120)
    if rc != 0:
        return {"error": f"connect_latency.py rc={rc}: {(err or out)[-300:]}"}
    try:
        res = json.loads(out)
    except ValueError:
        return {"error": f"connect_latency.py printed no JSON: {out[-300:]!r}"}
    if stats:
        res.update({f"{name}_ns_per_run": v for name, v in stats.ns_per_run.items()})
    return res


class BpfStats:
    """Run time per invocation of the named BPF programs over a `with` block, from the kernel's
    own counters (`bpftool prog show`, kernel.bpf_stats_enabled switched on for the block).
    Programs of the same name in other processes count too: meant for a quiet machine."""

    SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"

    def __init__(self, names):
        self.names = names
        self.ns_per_run = {}

    def snapshot(self):
        rc, out, _ = run(["bpftool", "-j", "prog", "show"], timeout=15)
        totals = {n: [0, 0] for n in self.names}
        if rc == 0:
            for p in json.loads(out or "[]"):
                if p.get("name") in totals:
                    totals[p["name"]][0] += p.get("run_time_ns", 0)
                    totals[p["name"]][1] += p.get("run_cnt", 0)
        return totals

    def __enter__(self):
        try:
            with open(self.SYSCTL) as f:
                self.old = f.read().strip()
            with open(self.SYSCTL, "w") as f:
                f.write("1")
        except OSError:
            self.old = None
        self.before = self.snapshot()
        return self

    def __exit__(self, *exc):
        after = self.snapshot()
        if self.old is not None:
            with open(self.SYSCTL, "w") as f:
                f.write(self.old)
        for n in self.names:
            ns, cnt = (a - b for a, b in zip(after[n], self.before[n]))
            if cnt > 0:
                self.ns_per_run[n] = ns / cnt
        return False


def pg_env(plan):
    env = dict(os.environ)
    env["PGPASSWORD"] = plan.app_password
    env["PGCONNECT_TIMEOUT"] = "5"
    return env


def w_pgbench(env, setup, connect_each):
    plan = env.plan
    argv = ["pgbench", "-h", "127.0.0.1", "-p", str(plan.port(setup, "pg")), "-U", "app", "-n", "-S",
            "-c", str(plan.pgbench_clients), "-j", str(min(plan.pgbench_clients, plan.threads))]
    argv += (plan.pgbench_c_args + ["-C"]) if connect_each else plan.pgbench_args
    argv.append(plan.pg_db)
    proxy = None
    with LabLock():
        primary_ok = wait_pg_primary(plan, 60)
        if primary_ok:
            try:
                if setup != "direct":
                    listens = [("pg", plan.port(setup, "pg"), plan.target_port("pg"))]
                    proxy = env.start_proxy(setup, listens, f"{setup}-pg", admin_port=plan.admin_port(setup, pg=True))
                with Measure(proxy.pid if proxy else None) as m:
                    rc, out, err = run(client(setup, argv), timeout=120, env=pg_env(plan))
            finally:
                if proxy is not None:
                    stop(proxy)
    if not primary_ok:
        return {"error": "lab PG A is not primary (lab not in its canonical state for 60s)"}
    tps = re.search(r"^tps = ([\d.]+)", out, re.M)
    lat = re.search(r"^latency average = ([\d.]+) ms", out, re.M)
    if rc != 0 or not tps:
        return {"error": f"pgbench rc={rc}: {(err or out)[-300:]}"}
    res = {"tps": float(tps.group(1)), "latency_ms": float(lat.group(1)) if lat else None}
    if m.cpu is not None:
        res["cpu_s"] = m.cpu
    return res


def wait_pg_primary(plan, seconds):
    """PG A answers as primary (someone else's lab scenario may have it down or demoted)."""
    deadline = time.monotonic() + seconds
    while not pg_is_primary(plan):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def pg_is_primary(plan):
    rc, out, _ = run(["psql", "-h", "127.0.0.1", "-p", str(plan.pg_port), "-U", "app", "-d", plan.pg_db,
                      "-Atc", "select pg_is_in_recovery()"], timeout=15, env=pg_env(plan))
    return rc == 0 and out.strip() == "f"


def w_memory(env, setup):
    """RSS growth of a fresh proxy instance holding N idle sessions, KiB per session."""
    plan = env.plan
    if setup in ("direct", STEER):  # a steered session holds nothing in the proxy
        return {}
    n = plan.idle_sessions
    port = plan.memory_port(setup)
    listens = [("sink", port, plan.target_port("sink"))]
    tag = f"{setup}-memory"
    # maxconn: the sessions plus slack; HAProxy sizes its fd limit from it (2 per session).
    proxy = env.start_proxy(setup, listens, tag, maxconn=n + 200,
                            admin_port=plan.admin_port(setup, memory=True) if setup.startswith("rolegate") else None)
    holder = None
    try:
        # Warm-up: a few sessions opened and closed, so per-thread buffers and pools exist before
        # the baseline is taken (they do not grow with the session count).
        warm = subprocess.Popen([sys.executable, os.path.join(HERE, "idle.py"), "clients", f"127.0.0.1:{port}", "50",
                                 "--deadline", "20"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = warm.stdout.readline().strip()
        warm.stdin.close()
        warm.wait(timeout=20)
        if not line.startswith("ready"):
            return {"error": f"warm-up: {line}"}
        time.sleep(0.5)
        base_rss = proc_status(proxy.pid, "VmRSS")
        base_anon = proc_status(proxy.pid, "RssAnon")
        t0 = time.monotonic()
        holder = subprocess.Popen([sys.executable, os.path.join(HERE, "idle.py"), "clients", f"127.0.0.1:{port}", str(n),
                                   "--deadline", "120"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  start_new_session=True)
        STARTED.append(holder)
        holder.bench_name = f"{tag}-clients"
        line = holder.stdout.readline().strip()
        if not line.startswith("ready"):
            return {"error": f"idle clients: {line or 'no answer'} (see {env.dir}/{tag}.log)"}
        open_s = time.monotonic() - t0
        time.sleep(1.0)
        rss = proc_status(proxy.pid, "VmRSS")
        anon = proc_status(proxy.pid, "RssAnon")
        fds = len(os.listdir(f"/proc/{proxy.pid}/fd"))
        return {
            "sessions": n,
            "kib_per_session": (rss - base_rss) / n,
            "anon_kib_per_session": (anon - base_anon) / n if anon is not None and base_anon is not None else None,
            "baseline_rss_kib": base_rss,
            "rss_kib": rss,
            "proxy_fds": fds,
            "open_s": open_s,
        }
    finally:
        if holder is not None:
            try:
                holder.stdin.close()
            except OSError:
                pass
            stop(holder)
        stop(proxy)


WORKLOADS = [
    ("iperf_1_fwd", "iperf3, 1 stream", lambda e, s: w_iperf(e, s, 1, False)),
    ("iperf_1_rev", "iperf3, 1 stream, -R", lambda e, s: w_iperf(e, s, 1, True)),
    ("iperf_4_fwd", "iperf3, 4 streams", lambda e, s: w_iperf(e, s, 4, False)),
    ("iperf_4_rev", "iperf3, 4 streams, -R", lambda e, s: w_iperf(e, s, 4, True)),
    ("redis_p1", "redis-benchmark -P 1", lambda e, s: w_redis(e, s, 1)),
    ("redis_p16", "redis-benchmark -P 16", lambda e, s: w_redis(e, s, 16)),
    ("churn", "redis-benchmark -k 0", w_churn),
    ("connect", "connect latency", w_connect),
    ("pgbench_S", "pgbench -S", lambda e, s: w_pgbench(e, s, False)),
    ("pgbench_SC", "pgbench -S -C", lambda e, s: w_pgbench(e, s, True)),
    ("memory", "idle sessions", w_memory),
]


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------

# (row label, workload, metric, higher_is_better, target) — target: a function of
# (rolegate, best_haproxy, per-variant medians) -> (met: bool, text), or None.
def ge_best(r, best, _v):
    return r >= best, "≥ 1.0× best HAProxy"


def le_best(r, best, _v):
    return r <= best, "≤ 1.0× best HAProxy"


def cpu_target(r, _best, v):
    forced, auto = v.get("haproxy-forced-splice"), v.get("haproxy-splice-auto")
    if forced is None or auto is None:
        return False, "≤ 1.0× forced, ≤ 0.5× auto"
    return (r <= forced and r <= 0.5 * auto), "≤ 1.0× forced splice and ≤ 0.5× splice-auto"


ROWS = [
    ("iperf3 1 stream, Gbit/s", "iperf_1_fwd", "gbps", True, ge_best),
    ("iperf3 1 stream -R, Gbit/s", "iperf_1_rev", "gbps", True, ge_best),
    ("iperf3 4 streams, Gbit/s", "iperf_4_fwd", "gbps", True, ge_best),
    ("iperf3 4 streams -R, Gbit/s", "iperf_4_rev", "gbps", True, ge_best),
    ("redis PING_INLINE -P1, rps", "redis_p1", "ping_rps", True, ge_best),
    ("redis SET -P1, rps", "redis_p1", "set_rps", True, ge_best),
    ("redis GET -P1, rps", "redis_p1", "get_rps", True, ge_best),
    ("redis GET -P1, p50 ms", "redis_p1", "get_p50_ms", False, None),
    ("redis GET -P1, p99 ms", "redis_p1", "get_p99_ms", False, le_best),
    ("redis SET -P1, p99 ms", "redis_p1", "set_p99_ms", False, le_best),
    ("redis PING_INLINE -P16, rps", "redis_p16", "ping_rps", True, ge_best),
    ("redis SET -P16, rps", "redis_p16", "set_rps", True, ge_best),
    ("redis GET -P16, rps", "redis_p16", "get_rps", True, ge_best),
    ("redis GET -P16, p50 ms", "redis_p16", "get_p50_ms", False, None),
    ("redis GET -P16, p99 ms", "redis_p16", "get_p99_ms", False, le_best),
    ("redis SET -P16, p99 ms", "redis_p16", "set_p99_ms", False, le_best),
    ("churn (new conn per request), conn/s", "churn", "conn_per_s", True, ge_best),
    ("churn p99 ms", "churn", "p99_ms", False, None),
    ("connect() p50 µs", "connect", "connect_p50_us", False, None),
    ("connect() p99 µs", "connect", "connect_p99_us", False, None),
    ("connect + first reply p50 µs", "connect", "first_reply_p50_us", False, None),
    ("connect + first reply p99 µs", "connect", "first_reply_p99_us", False, None),
    ("connect4 hook, ns per connect", "connect", "steer_connect4_ns_per_run", False, None),
    ("sock_release hook, ns per close", "connect", "steer_sock_release_ns_per_run", False, None),
    ("pgbench -S (8 clients), tps", "pgbench_S", "tps", True, ge_best),
    ("pgbench -S -C (8 clients), tps", "pgbench_SC", "tps", True, ge_best),
    ("idle memory, KiB per session", "memory", "kib_per_session", False, le_best),
    ("proxy CPU s per GiB (iperf3, all 4 runs)", "cpu", "cpu_s_per_gib", False, cpu_target),
    ("proxy CPU s per GiB, 1 stream", "iperf_1_fwd", "cpu_s_per_gib", False, None),
    ("proxy CPU s per GiB, 4 streams -R", "iperf_4_rev", "cpu_s_per_gib", False, None),
]


def median(values):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def aggregate_cpu(results, setup, rnd):
    """Proxy CPU seconds over GiB moved, summed over the four iperf3 runs of one round."""
    cpu = nbytes = 0.0
    for w in ("iperf_1_fwd", "iperf_1_rev", "iperf_4_fwd", "iperf_4_rev"):
        r = results.get(w, {}).get(setup, [])
        if rnd >= len(r) or r[rnd].get("cpu_s") is None:
            return None
        cpu += r[rnd]["cpu_s"]
        nbytes += r[rnd]["bytes"]
    return cpu / (nbytes / GIB) if nbytes else None


def medians(results, rounds):
    med = {}
    for label, w, metric, _hib, _t in ROWS:
        med[label] = {}
        for setup in SETUPS:
            if w == "cpu":
                vals = [aggregate_cpu(results, setup, i) for i in range(rounds)]
            else:
                vals = [r.get(metric) for r in results.get(w, {}).get(setup, [])]
            med[label][setup] = median(vals)
    return med


def fmt(v):
    if v is None:
        return "–"
    a = abs(v)
    if a >= 10000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}×"


# Issue 14's goal for the steer setup: a steered connection is a direct one, so ≥ 0.97× direct on
# throughput rows and ≤ 1/0.97 of direct on latency rows (p50 rows and CPU excluded).
STEER_GOAL = 0.97


def steer_goal(label, higher_is_better, steer, direct, verdicts):
    if steer is None or direct is None or not direct or "p50" in label or "CPU" in label or "memory" in label:
        return ""
    ok = steer >= STEER_GOAL * direct if higher_is_better else steer <= direct / STEER_GOAL
    verdicts.append((label, ok))
    return "yes" if ok else "**no**"


def table(med):
    extra_b = "rolegate-b" in SETUPS
    steer = STEER in SETUPS
    head = ["workload"] + [DISPLAY[s] for s in SETUPS] + ["rolegate / direct", "rolegate / best HAProxy", "target", "met"]
    if extra_b:
        head.append("B / rolegate")
    if steer:
        head += ["steer / direct", "steer goal"]
    lines = ["| " + " | ".join(head) + " |",
             "|---|" + "---:|" * (len(SETUPS) + 2) + "---|---|" + ("---:|" if extra_b else "") + ("---:|---|" if steer else "")]
    verdicts, steer_verdicts = [], []
    for label, _w, _m, hib, target in ROWS:
        v = med[label]
        hv = [v[s] for s in HAPROXIES if v[s] is not None]
        best = (max(hv) if hib else min(hv)) if hv else None
        r = v.get("rolegate")
        met_txt, target_txt = "", ""
        if target is not None:
            if r is None or best is None:
                met_txt, target_txt = "n/a", target(0, 0, {})[1] if target is not cpu_target else "see text"
            else:
                ok, target_txt = target(r, best, v)
                met_txt = "yes" if ok else "**no**"
                verdicts.append((label, ok))
        cells = [label] + [fmt(v[s]) for s in SETUPS] + [ratio(r, v["direct"]), ratio(r, best), target_txt, met_txt]
        if extra_b:
            cells.append(ratio(v["rolegate-b"], r))
        if steer:
            cells += [ratio(v[STEER], v["direct"]), steer_goal(label, hib, v[STEER], v["direct"], steer_verdicts)]
        lines.append("| " + " | ".join(cells) + " |")
    if steer and steer_verdicts:
        met = sum(1 for _, ok in steer_verdicts if ok)
        lines += ["", f"Steer goal (≥ 0.97× direct; latency ≤ 1.03× direct) met on {met} of {len(steer_verdicts)} rows."]
    return "\n".join(lines), verdicts


def summary_table(med):
    """The issue's layout: one row per setup, headline columns."""
    cols = [
        ("iperf3 1 stream Gbit/s", "iperf3 1 stream, Gbit/s"),
        ("1 stream -R", "iperf3 1 stream -R, Gbit/s"),
        ("4 streams", "iperf3 4 streams, Gbit/s"),
        ("4 streams -R", "iperf3 4 streams -R, Gbit/s"),
        ("redis GET rps (-P1)", "redis GET -P1, rps"),
        ("GET p99 ms (-P1)", "redis GET -P1, p99 ms"),
        ("GET rps (-P16)", "redis GET -P16, rps"),
        ("churn conn/s", "churn (new conn per request), conn/s"),
        ("pgbench -S tps", "pgbench -S (8 clients), tps"),
        ("-S -C tps", "pgbench -S -C (8 clients), tps"),
        ("KiB per idle session", "idle memory, KiB per session"),
        ("proxy CPU s/GiB", "proxy CPU s per GiB (iperf3, all 4 runs)"),
    ]
    lines = ["| setup | " + " | ".join(c for c, _ in cols) + " |", "|---|" + "---:|" * len(cols)]
    for setup in SETUPS:
        lines.append(f"| {setup} | " + " | ".join(fmt(med[row][setup]) for _, row in cols) + " |")
    return "\n".join(lines)


def spread_table(results, rounds):
    """Every round's value for the headline rows, to show the noise behind each median."""
    lines = ["| workload | setup | " + " | ".join(f"round {i + 1}" for i in range(rounds)) + " |",
             "|---|---|" + "---:|" * rounds]
    for label, w, metric, _hib, _t in ROWS:
        if w == "cpu" or metric.endswith("p50_ms"):
            continue
        for setup in SETUPS:
            rs = results.get(w, {}).get(setup, [])
            if not rs or all(r.get(metric) is None for r in rs):
                continue
            vals = [fmt(r.get(metric)) if i < len(rs) else "–" for i, r in enumerate(rs)]
            lines.append(f"| {label} | {setup} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def machine_info(rolegate_bin):
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cores": os.cpu_count(),
        "cpu": "n/a",
        "kernel": platform.release(),
        "os": "n/a",
        "haproxy": version_of(["haproxy", "-v"], r"version (\S+)"),
        "iperf3": version_of(["iperf3", "--version"], r"iperf (\S+)"),
        "redis": version_of(["redis-server", "--version"], r"v=(\S+)"),
        "redis_benchmark": version_of(["redis-benchmark", "--version"], r"redis-benchmark (\S+)"),
        "pgbench": version_of(["pgbench", "--version"], r"\(PostgreSQL\) (\S+)"),
        "rolegate": version_of([rolegate_bin, "--version"]),
        "rev": os.environ.get("BENCH_REV", "n/a"),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
    }
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            info["cpu"] = m.group(1) if m else "n/a"
        with open("/etc/os-release") as f:
            m = re.search(r'PRETTY_NAME="([^"]*)"', f.read())
            info["os"] = m.group(1) if m else "n/a"
    except OSError:
        pass
    return info


def report(plan, info, results, errors, loads, elapsed, complete=True):
    med = medians(results, plan.rounds)
    main, verdicts = table(med)
    met = sum(1 for _, ok in verdicts if ok)
    lines = [
        f"# rolegate load run {info['date']} ({'smoke' if plan.smoke else 'full'})"
        + ("" if complete else " — INCOMPLETE (interrupted or failed; see Errors)"),
        "",
        f"- machine: {info['cores']} cores ({info['cpu']}), kernel {info['kernel']}, {info['os']}, "
        f"fd limit {info['nofile'][0]}/{info['nofile'][1]}",
        f"- rolegate {info['rolegate']} (git {info['rev']}), release build, {plan.threads} workers, "
        f"default config except addresses (PostgreSQL: `protocol: postgres`, others `protocol: tcp`)",
        f"- HAProxy {info['haproxy']} (`nbthread {plan.threads}`), iperf3 {info['iperf3']}, "
        f"redis-server/benchmark {info['redis']}/{info['redis_benchmark']}, pgbench {info['pgbench']}",
        f"- {plan.rounds} interleaved round(s), medians; {elapsed / 60:.1f} min; load average before each "
        f"round: {', '.join(loads)} (the machine is shared: other builds ran at the same time)",
        f"- idle sessions: {plan.idle_sessions} per proxy (fd limit: 2 descriptors per proxied session)",
    ]
    if info.get("rolegate_b"):
        lines.append(f"- rolegate B (`--rolegate-b`): {info['rolegate_b']} — same config, for an A/B of a change"
                     + (f"; environment {' '.join(plan.rolegate_b_env)}" if plan.rolegate_b_env else ""))
    if plan.rolegate_extra:
        lines.append(f"- **not the default rolegate config**: appended `{plan.rolegate_extra}`")
    lines += [
        "",
        "## Medians",
        "",
        main,
        "",
        f"Targets met: {met} of {len(verdicts)}.",
        "",
        "## Per setup (the issue's layout)",
        "",
        summary_table(med),
        "",
        "## Every round",
        "",
        spread_table(results, plan.rounds),
        "",
    ]
    if errors:
        lines += ["## Errors", ""] + [f"- {e}" for e in errors] + [""]
    return "\n".join(lines), med, verdicts


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def prepare_pg(plan):
    """A scratch database owned by `app` with a pgbench schema (scale 10; 1 in smoke mode)."""
    with LabLock():
        if not wait_pg_primary_admin(plan, 120):
            raise RuntimeError("the lab's PostgreSQL A is not up as primary (loadtest/lab.sh status)")
        prepare_pg_locked(plan)


def wait_pg_primary_admin(plan, seconds):
    lab_dir = TOPO.lab_dir
    argv = ["psql", "-h", os.path.join(lab_dir, "run"), "-p", str(plan.pg_port), "-U", "postgres", "-d", "postgres",
            "-Atqc", "select pg_is_in_recovery()"]
    deadline = time.monotonic() + seconds
    while True:
        rc, out, _ = run(argv, timeout=15)
        if rc == 0 and out.strip() == "f":
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def prepare_pg_locked(plan):
    lab_dir = TOPO.lab_dir
    sock = os.path.join(lab_dir, "run")
    psql_admin = ["psql", "-h", sock, "-p", str(plan.pg_port), "-U", "postgres", "-d", "postgres", "-Atqc"]
    rc, out, err = run(psql_admin + [f"select 1 from pg_database where datname = '{plan.pg_db}'"], timeout=30)
    if rc != 0:
        raise RuntimeError(f"cannot reach the lab's PostgreSQL A as postgres over {sock}: {err.strip()}")
    env = pg_env(plan)
    if out.strip() != "1":
        rc, _o, err = run(psql_admin + [f"create database {plan.pg_db} owner app"], timeout=60)
        if rc != 0:
            raise RuntimeError(f"create database: {err.strip()}")
    rc, out, _ = run(["psql", "-h", "127.0.0.1", "-p", str(plan.pg_port), "-U", "app", "-d", plan.pg_db, "-Atqc",
                      "select count(*) from pgbench_branches"], timeout=30, env=env)
    if rc != 0 or out.strip() != str(plan.pg_scale):
        log(f"pgbench -i -s {plan.pg_scale} {plan.pg_db}")
        rc, _o, err = run(["pgbench", "-h", "127.0.0.1", "-p", str(plan.pg_port), "-U", "app", "-i", "-q",
                           "-s", str(plan.pg_scale), plan.pg_db], timeout=600, env=env)
        if rc != 0:
            raise RuntimeError(f"pgbench -i: {err.strip()[-500:]}")


def remove_steer_cgroup():
    """rmdir fails while a member is still exiting: retry, bounded."""
    for _ in range(100):
        try:
            os.rmdir(STEER_CGROUP)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rolegate", required=True, help="release binary")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--rounds", type=int, default=0)
    ap.add_argument("--out", help="directory for <date>-<rev>.md/.json (default loadtest/results)")
    ap.add_argument("--port-base", type=int, default=int(os.environ.get("BENCH_PORT_BASE", "27000")))
    ap.add_argument("--iperf-seconds", type=int, default=5)
    ap.add_argument("--pgbench-seconds", type=int, default=8)
    ap.add_argument("--idle-sessions", type=int, default=9000)
    ap.add_argument("--only", help="comma-separated workload ids (for diagnosis; the report needs all)")
    ap.add_argument("--setups", help="comma-separated setups to run (direct is always run; e.g. "
                    "'rolegate-steer' for a focused steer-vs-direct run with more rounds); default all")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--serve", type=int, default=0, metavar="SECONDS",
                    help="diagnosis: start targets and proxies, print their ports and pids, wait, stop")
    ap.add_argument("--rolegate-b", metavar="BIN",
                    help="diagnosis: a second rolegate build run as a sixth setup (A/B of a change)")
    ap.add_argument("--rolegate-b-env", action="append", default=[], metavar="KEY=VALUE",
                    help="diagnosis: environment for rolegate B only (e.g. RUST_LOG=warn)")
    ap.add_argument("--rolegate-extra", default="",
                    help="diagnosis: YAML appended to rolegate's config (e.g. 'log: {session_level: debug}'); "
                         "a run with it is not the default configuration")
    args = ap.parse_args()

    if args.setups:
        wanted = set(args.setups.split(",")) | {"direct"}
        unknown = wanted - set(SETUPS) - {STEER}
        if unknown:
            sys.exit(f"--setups: unknown setup(s) {', '.join(sorted(unknown))}; known: "
                     f"{', '.join(SETUPS + [STEER])}")
        for lst in (SETUPS, PROXIES, HAPROXIES):
            lst[:] = [x for x in lst if x in wanted]
    no_steer = can_steer() if not args.setups or STEER in args.setups.split(",") else "not asked for (--setups)"
    if no_steer:
        log(f"no '{DISPLAY[STEER]}' setup: {no_steer}")
    else:
        os.makedirs(STEER_CGROUP, exist_ok=True)
        atexit.register(remove_steer_cgroup)
        SETUPS.append(STEER)
        PROXIES.append(STEER)
    if args.rolegate_b:
        SETUPS.append("rolegate-b")
        PROXIES.append("rolegate-b")
    plan = Plan(args)
    if plan.rounds < 1:
        sys.exit("--rounds must be at least 1")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if not plan.smoke and 2 * plan.idle_sessions + 500 > hard:
        sys.exit(f"--idle-sessions {plan.idle_sessions} needs {2 * plan.idle_sessions + 500} descriptors; limit {hard}")

    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    workdir = tempfile.mkdtemp(prefix="rolegate-bench.")
    log(f"work directory {workdir}")
    info = machine_info(args.rolegate)
    if args.rolegate_b:
        info["rolegate_b"] = args.rolegate_b
    workloads = WORKLOADS
    if args.only:
        keep = set(args.only.split(","))
        workloads = [w for w in WORKLOADS if w[0] in keep]

    t_start = time.monotonic()
    results = {w: {s: [] for s in SETUPS} for w, _, _ in WORKLOADS}
    errors = []
    loads = []
    env = Env(plan, args.rolegate, workdir, args.rolegate_b)
    ok = False
    try:
        prepare_pg(plan)
        env.start_targets()
        env.start_proxies()
        if args.serve:
            for setup in SETUPS:
                ports = {svc: plan.port(setup, svc) for svc in ("iperf", "redis", "pg")}
                print(f"{setup}: pid={env.pid(setup)} ports={ports}", flush=True)
            time.sleep(args.serve)
            return
        for rnd in range(plan.rounds):
            loads.append(f"{os.getloadavg()[0]:.1f}")
            # Every other round runs the setups in reverse order, so a machine that drifts during
            # a round (thermal, a neighbour) does not favour the setup that always runs first.
            order = SETUPS if rnd % 2 == 0 else SETUPS[::-1]
            for wid, wname, fn in workloads:
                for setup in order:
                    env.check_alive()
                    t0 = time.monotonic()
                    try:
                        res = fn(env, setup)
                    except Exception as e:  # one failed run is reported, not fatal
                        res = {"error": f"{type(e).__name__}: {e}"}
                    if res.get("error"):
                        errors.append(f"round {rnd + 1} {wid} {setup}: {res['error']}")
                        log(f"round {rnd + 1} {wid} {setup}: ERROR {res['error']}")
                    else:
                        brief = ", ".join(f"{k}={fmt(v)}" for k, v in res.items() if isinstance(v, (int, float)) and not k.endswith("bytes"))
                        log(f"round {rnd + 1} {wid} {setup}: {brief} ({time.monotonic() - t0:.1f}s)")
                    results[wid][setup].append(res)
                    time.sleep(0.3 if plan.smoke else 1.0)
        ok = True
    except Exception as e:
        errors.append(f"fatal: {type(e).__name__}: {e}")
        log(f"fatal: {type(e).__name__}: {e}")
    finally:
        stop_all()
        elapsed = time.monotonic() - t_start
        ran = any(results[w][s] for w in results for s in results[w])
        if not ran:
            log(f"nothing ran; no results written (logs in {workdir})")
            sys.exit(1)
        text, med, verdicts = report(plan, info, results, errors, loads, elapsed, complete=ok)
        print(text)
        out = args.out or os.path.join(ROOT, "loadtest", "results")
        os.makedirs(out, exist_ok=True)
        stem = f"{info['date'][:10]}-{info['rev']}" + ("-smoke" if plan.smoke else "")
        with open(os.path.join(out, stem + ".md"), "w") as f:
            f.write(text)
        with open(os.path.join(out, stem + ".json"), "w") as f:
            json.dump({"info": info, "plan": {k: v for k, v in vars(plan).items()}, "results": results,
                       "medians": med, "verdicts": verdicts, "errors": errors, "load_average": loads,
                       "complete": ok}, f, indent=1, default=str)
        log(f"wrote {os.path.join(out, stem)}.md and .json")
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"logs kept in {workdir}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
