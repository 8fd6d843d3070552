"""Patroni pair over the lab's etcd (etcd.py): two PostgreSQL instances of its own (A, B; their
own data dirs and ports, apart from the lab's pg pair), each run by a Patroni process with a
REST API (the authority rolegate's Patroni source asks). Debian's patroni 3.0, DCS etcd3.

State: $LAB_DIR/patroni/<node>.yml (generated), <node>/data (PostgreSQL, made by Patroni),
pid file $LAB_DIR/run/patroni-<node>.pid (the Patroni process; PostgreSQL is its child).
Canonical topology: A leader, B replica. `switchover patroni` asks Patroni (REST POST
/switchover); `kill patroni` kills -9 the leader's Patroni and PostgreSQL and waits for Patroni
to promote the other (one TTL, 10 s)."""

import json
import os
import signal
import threading
import urllib.error
import urllib.request

from . import common
from .base import Engine
from .common import die, log, now, try_for, wait_for

PATRONI = "/usr/bin/patroni"
PATRONICTL = "/usr/bin/patronictl"
TTL = 10


class Patroni(Engine):
    name = "patroni"

    def conf(self, n):
        return f"{self.state_dir()}/{n}.yml"

    def data(self, n):
        return f"{self.state_dir()}/{n}/data"

    def sockdir(self, n):
        return f"{self.ctx.run_dir}/patroni-{n}"

    def missing_packages(self):
        b = self.ctx.pg_bin
        if common.executable(PATRONI, PATRONICTL, f"{b}/postgres", f"{b}/pg_rewind"):
            return []
        v = self.ctx.topo.setting("LAB_PG_VERSION")
        return ["patroni", "python3-etcd", f"postgresql-{v}", f"postgresql-client-{v}"]

    def addresses(self, n):
        return {"rest_address": f"127.0.0.1:{self.ctx.port('patroni', n, 'rest_port')}"}

    def needle(self, n):
        return self.conf(n)

    def rest(self, n, path="/patroni", method="GET", body=None, timeout=3):
        """(status, parsed JSON or text) of the node's REST API, None when it does not answer."""
        url = f"http://127.0.0.1:{self.ctx.port('patroni', n, 'rest_port')}{path}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw, code = r.read().decode(errors="replace"), r.status
        except urllib.error.HTTPError as e:
            raw, code = e.read().decode(errors="replace"), e.code
        except (OSError, ValueError):
            return None
        try:
            return code, json.loads(raw)
        except json.JSONDecodeError:
            return code, raw

    def role(self, n):
        r = self.rest(n)
        if not r or not isinstance(r[1], dict) or r[1].get("state") != "running":
            return None
        return {"master": "primary", "primary": "primary", "replica": "replica", "standby_leader": "replica"}.get(r[1].get("role"))

    def info(self, n):
        r = self.rest(n)
        d = r[1] if r and isinstance(r[1], dict) else {}
        return {"state": d.get("state", "?"), "rest": self.addresses(n)["rest_address"]}

    def extra(self, n, role):
        return {"rest": self.addresses(n)["rest_address"]}

    def is_(self, n, want):
        return self.role(n) == want

    def write_conf(self, n):
        c = self.ctx
        etcd = ",".join(f"127.0.0.1:{c.port('etcd', m)}" for m in c.topo.nodes("etcd"))
        spec = c.topo.engine("patroni")
        rest = c.port("patroni", n, "rest_port")
        port = c.port("patroni", n)
        repl, rpw = c.user("repl"), c.password("repl")
        conf = {
            "scope": spec["scope"],
            "namespace": spec["namespace"],
            "name": n,
            "log": {"level": "INFO"},
            "restapi": {"listen": f"127.0.0.1:{rest}", "connect_address": f"127.0.0.1:{rest}"},
            "etcd3": {"hosts": etcd},
            "bootstrap": {
                "dcs": {"ttl": TTL, "loop_wait": 1, "retry_timeout": 5, "maximum_lag_on_failover": 1048576,
                        "postgresql": {"use_pg_rewind": True, "use_slots": True,
                                       "parameters": {"wal_level": "replica", "hot_standby": "on",
                                                      "wal_log_hints": "on", "max_wal_senders": 10,
                                                      "max_replication_slots": 10, "wal_keep_size": "128MB",
                                                      "max_connections": 100}}},
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{port}",
                "connect_address": f"127.0.0.1:{port}",
                "data_dir": self.data(n),
                "bin_dir": c.pg_bin,
                "pgpass": f"{self.state_dir()}/{n}.pgpass",
                "use_unix_socket": True,
                # pg_basebackup's default spread checkpoint makes a new replica wait minutes
                "basebackup": [{"checkpoint": "fast"}, {"wal-method": "stream"}],
                "authentication": {
                    "superuser": {"username": "postgres", "password": rpw},
                    "replication": {"username": repl, "password": rpw},
                    "rewind": {"username": "postgres", "password": rpw},
                },
                "parameters": {"unix_socket_directories": self.sockdir(n), "fsync": "off",
                               "shared_buffers": "32MB", "password_encryption": "scram-sha-256",
                               "lc_messages": "C", "timezone": "UTC"},
                "pg_hba": ["local all all trust", "local replication all trust",
                           f"host replication {repl} 127.0.0.1/32 scram-sha-256",
                           "host all all 127.0.0.1/32 scram-sha-256"],
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
        }
        # JSON is YAML: no YAML writer needed.
        c.owner.write(self.conf(n), json.dumps(conf, indent=2) + "\n", 0o600)

    def start(self, n):
        if self.pid(n):
            return True
        c = self.ctx
        self.stop_orphan(n)
        self.require_free(n, "port", "rest_port")
        c.owner.mkdir(f"{self.state_dir()}/{n}", 0o700)
        c.owner.mkdir(self.sockdir(n), 0o755)
        log(f"patroni {n}: starting")
        p = common.spawn_detached([PATRONI, self.conf(n)], c.owner.logfile(f"{c.log_dir}/patroni-{n}.log"),
                                  owner=c.owner)
        common.write_pid(self.pidfile(n), p.pid)
        if not try_for(20, lambda: self.rest(n) is not None or p.poll() is not None) or p.poll() is not None:
            common.tail(f"{c.log_dir}/patroni-{n}.log", 15)
            return False
        return True

    def postmaster(self, n):
        """The node's postmaster: Patroni starts it detached (its parent is PID 1, not Patroni)."""
        pid = common.read_pid(f"{self.data(n)}/postmaster.pid")
        return pid if common.proc_matches(pid, f"-D {self.data(n)} ") else None

    def processes(self, n):
        """Patroni, its postmaster and the postmaster's children: parents first."""
        procs = [p for p in (self.pid(n),) if p]
        pm = self.postmaster(n)
        if pm:
            procs += [pm] + list(reversed(common.descendants(pm)))
        return procs

    def stop_orphan(self, n):
        """A postmaster left behind by a killed Patroni: Patroni would not adopt it."""
        pm = self.postmaster(n)
        if pm and not self.pid(n):
            log(f"patroni {n}: stopping the PostgreSQL its killed Patroni left (pid {pm})")
            if not common.ok(self.ctx.owner.argv(f"{self.ctx.pg_bin}/pg_ctl", "stop", "-D", self.data(n),
                                                 "-m", "immediate", "-w", "-t", "20", "-s"), timeout=40):
                for p in reversed(self.processes(n)):
                    common.signal_pid(p, signal.SIGKILL)
            wait_for(20, f"patroni {n}'s PostgreSQL (pid {pm}) to exit", common.pid_gone, pm, f"-D {self.data(n)} ")

    def stop(self, n):
        pid = self.pid(n)
        if pid:
            # Patroni stops its PostgreSQL (fast shutdown) on SIGTERM.
            common.stop_pid(pid, self.conf(n), f"patroni {n}", term_secs=40)
        self.stop_orphan(n)
        common.unlink(self.pidfile(n))

    def signal(self, n, sig):
        procs = self.processes(n)
        if sig != signal.SIGCONT:
            procs.reverse()        # children before parents, while they are still ours
        for p in procs:
            common.signal_pid(p, sig)

    def kill(self, n):
        """SIGKILL to Patroni and its whole PostgreSQL (a crashed host)."""
        pid = self.pid(n)
        if not pid:
            return
        procs = self.processes(n)
        for p in reversed(procs):
            common.signal_pid(p, signal.SIGKILL)
        wait_for(10, f"patroni {n} (pid {pid}) to die", common.pid_gone, pid, self.conf(n))
        try_for(10, common.pids_gone, procs)

    def leader_running(self, n):
        return self.role(n) == "primary" and self.writable(n)

    def writable(self, n):
        out = common.run([f"{self.ctx.pg_bin}/psql", "-X", "-qAtw", "-h", self.sockdir(n), "-p",
                          str(self.ctx.port("patroni", n)), "-U", "postgres", "-d", "postgres", "-c",
                          "SELECT pg_is_in_recovery()"], timeout=10, check=False, env={"PGCONNECT_TIMEOUT": "3"})
        return (out or "").strip() == "f"

    def replica_running(self, n):
        r = self.rest(n)
        return bool(r and isinstance(r[1], dict) and r[1].get("state") == "running"
                    and r[1].get("role") == "replica" and r[1].get("replication_state", "streaming") == "streaming")

    def switchover(self, p, r):
        """Patroni's own switchover (REST POST /switchover on the leader), timed from outside."""
        t0 = now()
        result = {}

        def post():
            result["r"] = self.rest(p, "/switchover", "POST", {"leader": p, "candidate": r}, timeout=60)
        th = threading.Thread(target=post, daemon=True)
        th.start()
        wait_for(60, f"patroni {p} to step down", lambda: not self.is_(p, "primary"))
        t1 = now()
        wait_for(60, f"patroni {r} to lead and accept writes", self.leader_running, r)
        t2 = now()
        th.join(60)
        res = result.get("r")
        if not res or res[0] != 200:
            die(f"patroni: switchover {p} -> {r} answered {res}")
        wait_for(90, f"patroni {p} to rejoin as a replica of {r}", self.replica_running, p)
        return t0, t1, t2, now()

    def kill_cmd(self):
        p, r = self.find_pair(need_replica=True)
        log(f"patroni: kill -9 {p} (Patroni and PostgreSQL), wait for Patroni to promote {r}")
        t0 = now()
        self.kill(p)
        t1 = now()
        wait_for(TTL * 4, f"patroni {r} to take the leader lock and accept writes", self.leader_running, r)
        t2 = now()
        return p, r, (t0, t1, t2, now())

    def promote(self, n):
        die("patroni promotes by itself; use 'switchover patroni' or 'kill patroni'")

    def reset(self):
        for n in self.nodes:
            self.signal(n, signal.SIGCONT)
        for n in self.nodes:
            if not self.start(n):
                die(f"patroni {n} did not start (see {self.ctx.log_dir}/patroni-{n}.log)")
        wait_for(60, "patroni to elect a leader", lambda: any(self.leader_running(n) for n in self.nodes))
        if not self.leader_running("A"):
            wait_for(90, "patroni A to run as a replica", self.replica_running, "A")
            log("patroni: B leads: switching back to A")
            self.switchover("B", "A")
        wait_for(120, "patroni B to run as a replica", self.replica_running, "B")

    def init(self):
        c = self.ctx
        self.wipe_state()
        # A stale cluster of the same scope in etcd (a destroyed earlier state) would make A a
        # replica of nothing: remove it.
        from .etcd import Etcd
        Etcd(c).ctl("del", "--prefix", f"{c.topo.engine('patroni')['namespace'].rstrip('/')}/{c.topo.engine('patroni')['scope']}/",
                    timeout=15)
        for n in self.nodes:
            self.write_conf(n)
        if not self.start("A"):
            die(f"patroni A did not start (see {c.log_dir}/patroni-A.log)")
        wait_for(120, "patroni A to bootstrap and lead", self.leader_running, "A")
        log(f"patroni: creating roles, database {c.topo.app_db}")
        u, pw, db = c.user, c.password, c.topo.app_db
        script = f"""\
SET password_encryption = 'scram-sha-256';
CREATE ROLE {u('monitor')} LOGIN PASSWORD '{pw('monitor')}';
GRANT pg_monitor TO {u('monitor')};
CREATE ROLE {u('app')} LOGIN PASSWORD '{pw('app')}';
CREATE DATABASE {db} OWNER {u('app')};
\\connect {db}
SET ROLE {u('app')};
CREATE TABLE writes (id bigserial PRIMARY KEY, node text, at timestamptz DEFAULT now());
"""
        common.run([f"{c.pg_bin}/psql", "-X", "-qw", "-v", "ON_ERROR_STOP=1", "-h", self.sockdir("A"),
                    "-p", str(c.port("patroni", "A")), "-U", "postgres", "-d", "postgres", "-f", "-"],
                   input=script, timeout=60, env={"PGCONNECT_TIMEOUT": "3"}, what="patroni A: creating roles")
        if not self.start("B"):
            die(f"patroni B did not start (see {c.log_dir}/patroni-B.log)")
        wait_for(120, "patroni B to clone and stream from A", self.replica_running, "B")
        self.mark_initialised()

    def list_cmd(self, cli):
        """patronictl list, as text or as the JSON patronictl prints."""
        out = common.run([PATRONICTL, "-c", self.conf("A"), "list", "-f", "json" if cli.json else "pretty"],
                         timeout=30, what="patronictl list")
        print(out.rstrip("\n"))
        return 0

    def exec_ctl(self, args):
        os.execv(PATRONICTL, [PATRONICTL, "-c", self.conf("A"), *args])
