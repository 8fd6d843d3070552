"""Three Redis Sentinels (S1 S2 S3) monitoring the lab's redis pair (redis.py) under one master
name: the outside authority rolegate's Sentinel source asks. Debian's redis-sentinel 7.0.

State: $LAB_DIR/sentinel/<node>.conf (written by the lab, then rewritten by Sentinel itself as
it learns replicas and peers), pid files in $LAB_DIR/run. The lab stays the owner of the redis
pair's roles: every lab command that moves the redis master re-points the Sentinels at it
(SENTINEL REMOVE + MONITOR), and `sentinel failover` (SENTINEL FAILOVER, timed from outside)
records the new roles in the redis nodes' role files afterwards."""

import os
import signal

from . import common
from .base import Engine
from .common import die, log, now, try_for, wait_for

REDIS_SENTINEL = "/usr/bin/redis-sentinel"
REDIS_CLI = "/usr/bin/redis-cli"


class Sentinel(Engine):
    name = "sentinel"
    pair = False
    stop_secs = 20

    def conf(self, n):
        return f"{self.state_dir()}/{n}.conf"

    def spec(self):
        return self.ctx.topo.engine("sentinel")

    def master_name(self):
        return self.spec()["master_name"]

    def missing_packages(self):
        return [] if common.executable(REDIS_SENTINEL, REDIS_CLI) else ["redis-sentinel", "redis-tools"]

    def needle(self, n):
        return f"127.0.0.1:{self.ctx.port('sentinel', n)}"

    def any_running(self):
        return any(self.pid(n) for n in self.nodes)

    def cli(self, n, *args, check=True):
        return common.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(self.ctx.port("sentinel", n)), *args],
                          timeout=10, check=check, what=f"sentinel {n}: {' '.join(args[:2])}")

    def master_addr(self, n):
        """The master's address as sentinel N sees it ("127.0.0.1:16379") or None."""
        out = self.cli(n, "SENTINEL", "get-master-addr-by-name", self.master_name(), check=False) or ""
        f = out.split()
        return f"{f[0]}:{f[1]}" if len(f) == 2 else None

    def master_node(self, n):
        addr = self.master_addr(n)
        for m in self.ctx.topo.nodes("redis"):
            if addr == f"127.0.0.1:{self.ctx.port('redis', m)}":
                return m
        return None

    def master_info(self, n):
        out = self.cli(n, "SENTINEL", "master", self.master_name(), check=False) or ""
        f = out.split("\n")
        return dict(zip(f[0::2], f[1::2]))

    def role(self, n):
        return "sentinel" if (self.cli(n, "PING", check=False) or "").strip() == "PONG" else None

    def extra(self, n, role):
        if role != "sentinel":
            return {}
        mi = self.master_info(n)
        return {"master": self.master_node(n) or "?", "replicas": mi.get("num-slaves", "?"),
                "sentinels": mi.get("num-other-sentinels", "?")}

    def primaries(self):
        seen = {self.master_node(n) for n in self.nodes if self.pid(n)}
        return sorted(m for m in seen if m)

    def write_conf(self, n, master):
        c, spec = self.ctx, self.spec()
        name = self.master_name()
        c.owner.mkdir(f"{self.state_dir()}/{n}", 0o750)
        c.owner.write(self.conf(n), f"""\
# Written by loadtest/lab; Sentinel rewrites it as it learns replicas and peers.
port {c.port('sentinel', n)}
bind 127.0.0.1
daemonize yes
pidfile {c.run_dir}/sentinel-{n}.pid
logfile {c.log_dir}/sentinel-{n}.log
dir {self.state_dir()}/{n}
sentinel resolve-hostnames no
sentinel monitor {name} 127.0.0.1 {c.port('redis', master)} {spec['quorum']}
sentinel auth-pass {name} {c.password('monitor')}
sentinel down-after-milliseconds {name} {spec['down_after_ms']}
sentinel failover-timeout {name} {spec['failover_timeout_ms']}
sentinel parallel-syncs {name} 1
""", 0o640)

    def start(self, n):
        if self.pid(n):
            return True
        if not os.path.isfile(self.conf(n)):
            log(f"sentinel {n} has no config")
            return False
        self.require_free(n)
        common.unlink(self.pidfile(n))
        log(f"sentinel {n}: starting")
        if not common.run_detached(self.ctx.owner.argv(REDIS_SENTINEL, self.conf(n)),
                                   f"{self.ctx.log_dir}/sentinel-{n}.out", timeout=30):
            common.tail(f"{self.ctx.log_dir}/sentinel-{n}.log", 10)
            return False
        if not try_for(30, lambda: self.role(n) == "sentinel" and self.pid(n) is not None):
            common.tail(f"{self.ctx.log_dir}/sentinel-{n}.log", 10)
            return False
        return True

    def monitor(self, master):
        """Points every running sentinel at redis node MASTER (the lab moved it), and waits until
        they agree. All forget the master first, then all monitor it afresh: a sentinel that
        still announced the old master (with a higher config epoch) would talk the others back."""
        running = [n for n in self.nodes if self.pid(n)]
        if not all(self.master_node(n) == master for n in running):
            self.repoint(running, master)
        if len(running) == len(self.nodes):
            wait_for(60, f"every sentinel to name redis {master} and see its peers", self.settled, master)

    def repoint(self, running, master):
        spec, name, port = self.spec(), self.master_name(), self.ctx.port("redis", master)
        log(f"sentinel: re-pointing {' '.join(running)} at redis {master} ({name})")
        for n in running:
            self.cli(n, "SENTINEL", "REMOVE", name, check=False)
        for n in running:
            self.expect_ok(n, "SENTINEL", "MONITOR", name, "127.0.0.1", str(port), str(spec["quorum"]))
            self.expect_ok(n, "SENTINEL", "SET", name, "auth-pass", self.ctx.password("monitor"),
                           "down-after-milliseconds", str(spec["down_after_ms"]),
                           "failover-timeout", str(spec["failover_timeout_ms"]), "parallel-syncs", "1")

    def expect_ok(self, n, *args):
        out = (self.cli(n, *args, check=False) or "").strip()
        if out != "OK":
            die(f"sentinel {n}: '{' '.join(args[:3])}' answered: {out}")

    def settled(self, master):
        """Every sentinel names MASTER and knows the two other sentinels, and the replica when
        the other redis node replicates from MASTER (after `kill redis` it is down)."""
        from .redis import Redis
        other = common.other(master)
        red = Redis(self.ctx)
        # A frozen node (`hang redis`) would keep redis-cli waiting for its timeout: not asked.
        ri = {} if red.node_state(other)[0] == "stopped" else red.rinfo(other)
        replicas = "1" if ri.get("master_port") == str(self.ctx.port("redis", master)) else None
        for n in self.nodes:
            if self.master_node(n) != master:
                return False
            mi = self.master_info(n)
            if (replicas and mi.get("num-slaves") != replicas) or mi.get("num-other-sentinels") != str(len(self.nodes) - 1):
                return False
            if "s_down" in mi.get("flags", "") or "o_down" in mi.get("flags", ""):
                return False
        return True

    def upstream_moved(self, master):
        """Re-points the Sentinels (when they run) at the lab's new redis MASTER, so they never
        fight the lab over who is master."""
        if self.initialised() and self.any_running():
            self.monitor(master)

    def redis_master(self):
        from .redis import Redis
        r = Redis(self.ctx)
        prim = r.primaries()
        if len(prim) != 1:
            die(f"sentinel: the redis pair has {len(prim)} primaries; run 'lab.sh reset redis'")
        return prim[0]

    def reset(self):
        master = self.redis_master()
        for n in self.nodes:
            self.signal(n, signal.SIGCONT)
            if not os.path.isfile(self.conf(n)):
                self.write_conf(n, master)
            if not self.start(n):
                die(f"sentinel {n} did not start (see {self.ctx.log_dir}/sentinel-{n}.log)")
        self.monitor(master)
        # Sentinels find replicas (INFO every 10 s) and each other (hello every 2 s) by themselves.
        wait_for(60, f"every sentinel to name redis {master} and see its peers", self.settled, master)

    def init(self):
        self.wipe_state()
        master = self.redis_master()
        for n in self.nodes:
            self.write_conf(n, master)
        self.reset()
        self.mark_initialised()

    def failover_cmd(self):
        """SENTINEL FAILOVER: Sentinel promotes the replica and turns the old master into its
        replica; timed from outside (promoted: the replica answers role master; demoted: the
        old master replicates from it; done: every sentinel names the new master)."""
        from .redis import Redis
        red = Redis(self.ctx)
        p = self.redis_master()
        r = common.other(p)
        wait_for(60, f"every sentinel to see redis {p} with its replica and both peers", self.settled, p)
        log(f"sentinel: SENTINEL FAILOVER {self.master_name()} (redis {p} -> {r})")
        t0 = now()
        self.expect_ok(self.nodes[0], "SENTINEL", "FAILOVER", self.master_name())
        wait_for(30, f"redis {r} to be promoted by the sentinels", red.is_, r, "primary")
        t2 = now()
        wait_for(60, f"redis {p} to replicate from {r}",
                 lambda: red.rinfo(p).get("master_port") == str(self.ctx.port("redis", r))
                 and red.rinfo(p).get("master_link_status") == "up")
        t1 = now()
        wait_for(60, f"every sentinel to name redis {r}", lambda: all(self.master_node(n) == r for n in self.nodes))
        t3 = now()
        # The lab's record of the roles (kept for restarts), and the configs Sentinel's CONFIG
        # REWRITE touched, brought back in step.
        red.write_role(r, "primary")
        red.write_role(p, "replica", r)
        for n in (p, r):
            red.write_conf(n)
        return p, r, (t0, t1, t2, t3)

    def master_cmd(self, cli):
        seen = {n: self.master_node(n) for n in self.nodes if self.pid(n)}
        masters = sorted({m for m in seen.values() if m})
        cli.emit("\n".join(f"{m} 127.0.0.1:{self.ctx.port('redis', m)}" for m in masters),
                 {"engine": "sentinel", "master_name": self.master_name(), "sentinels": seen,
                  "masters": [{"node": m, "address": f"127.0.0.1:{self.ctx.port('redis', m)}"} for m in masters]})
        return 0 if len(masters) == 1 else (1 if not masters else 2)

    def switchover_cmd(self):
        return self.failover_cmd()

    def kill_cmd(self):
        die("'kill sentinel' is not a scenario; use 'kill redis' (the sentinels follow) or 'sentinel failover'")

    def hang_target(self):
        die("'hang sentinel' is not a scenario; use 'hang redis'")
