"""etcd cluster of three members (e1 e2 e3) on loopback, Debian's etcd-server 3.4: the store
the fleet coordination work and Patroni (patroni.py) use. Data in $LAB_DIR/etcd/<member>, one
process per member started by the lab (pid file in $LAB_DIR/run), no TLS, no auth.

Roles: the member that is raft leader reports "leader", the others "follower". `switchover
etcd` moves the leadership (etcdctl move-leader), `kill etcd` kills -9 the leader and waits for
the other two to elect one; `reset etcd` starts every member and waits for a healthy cluster."""

import json
import os
import signal

from . import common
from .base import Engine
from .common import die, log, now, wait_for

ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"


class Etcd(Engine):
    name = "etcd"
    pair = False
    stop_secs = 20

    def dd(self, n):
        return f"{self.state_dir()}/{n}"

    def needle(self, n):
        return f"--data-dir={self.dd(n)} "

    def missing_packages(self):
        return [] if common.executable(ETCD, ETCDCTL) else ["etcd-server", "etcd-client"]

    def addresses(self, n):
        return {"peer_address": f"127.0.0.1:{self.ctx.port('etcd', n, 'peer_port')}"}

    def endpoints(self, nodes=None):
        return ",".join(f"http://{self.address(n)}" for n in (nodes or self.nodes))

    def ctl(self, *args, nodes=None, timeout=10, check=True):
        return common.run([ETCDCTL, f"--endpoints={self.endpoints(nodes)}", "--dial-timeout=2s",
                           "--command-timeout=5s", *args], timeout=timeout, check=check,
                          env={"ETCDCTL_API": "3"}, what=f"etcdctl {' '.join(args[:2])}")

    def member_status(self, n):
        """etcdctl endpoint status of one member: (member id, leader id) or None."""
        out = self.ctl("endpoint", "status", "-w", "json", nodes=[n], check=False)
        if not out:
            return None
        st = json.loads(out)[0]["Status"]
        return st["header"]["member_id"], st["leader"]

    def role(self, n):
        st = self.member_status(n)
        if not st or not st[1]:
            return None
        return "leader" if st[0] == st[1] else "follower"

    def leader(self, among=None):
        """The member every answering member of AMONG names as leader, or None."""
        ids = {}
        leaders = set()
        for n in among or self.nodes:
            if not self.pid(n):
                continue
            st = self.member_status(n)
            if not st or not st[1]:
                return None
            ids[st[0]] = n
            leaders.add(st[1])
        if len(leaders) != 1:
            return None
        return ids.get(leaders.pop())

    def primaries(self):
        lead = self.leader()
        return [lead] if lead else []

    def healthy(self, nodes=None):
        return common.ok([ETCDCTL, f"--endpoints={self.endpoints(nodes)}", "--dial-timeout=2s",
                          "--command-timeout=5s", "endpoint", "health"], timeout=15, env={"ETCDCTL_API": "3"})

    def extra(self, n, role):
        return {}

    def argv(self, n):
        port, peer = self.ctx.port("etcd", n), self.ctx.port("etcd", n, "peer_port")
        cluster = ",".join(f"{m}=http://127.0.0.1:{self.ctx.port('etcd', m, 'peer_port')}" for m in self.nodes)
        return [ETCD, "--name", n, f"--data-dir={self.dd(n)}",
                f"--listen-client-urls=http://127.0.0.1:{port}", f"--advertise-client-urls=http://127.0.0.1:{port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}", f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster={cluster}", "--initial-cluster-state=new",
                f"--initial-cluster-token={self.ctx.topo.engine('etcd')['cluster_token']}",
                "--heartbeat-interval=100", "--election-timeout=1000", "--snapshot-count=10000",
                "--logger=zap", "--log-outputs=stderr"]

    def start(self, n):
        if self.pid(n):
            return True
        self.require_free(n, "port", "peer_port")
        self.ctx.owner.mkdir(self.dd(n), 0o700)
        log(f"etcd {n}: starting")
        p = common.spawn_detached(self.argv(n), self.ctx.owner.logfile(f"{self.ctx.log_dir}/etcd-{n}.log"),
                                  owner=self.ctx.owner)
        common.write_pid(self.pidfile(n), p.pid)
        # A member answers on its client port once it has joined (alone it waits for a quorum).
        if not common.try_for(10, lambda: common.port_in_use(self.ctx.port("etcd", n)) or p.poll() is not None):
            pass
        if p.poll() is not None:
            common.tail(f"{self.ctx.log_dir}/etcd-{n}.log", 10)
            return False
        return True

    def member_id(self, n):
        st = self.member_status(n)
        if not st:
            die(f"etcd {n}: no status")
        return st[0]

    def switchover_cmd(self):
        lead = self.leader()
        if not lead:
            die("etcd: no leader all members agree on; run 'lab.sh reset etcd'")
        to = next(m for m in self.nodes[self.nodes.index(lead) + 1:] + self.nodes if m != lead)
        log(f"etcd: move-leader {lead} -> {to}")
        target = format(self.member_id(to), "x")
        t0 = now()
        self.ctl("move-leader", target, nodes=[lead], timeout=20)
        t1 = now()
        wait_for(10, f"etcd {to} to lead", lambda: self.role(to) == "leader")
        t2 = now()
        wait_for(10, f"every etcd member to follow {to}", lambda: self.leader() == to)
        return lead, to, (t0, t1, t2, now())

    def kill_cmd(self):
        lead = self.leader()
        if not lead:
            die("etcd: no leader all members agree on; run 'lab.sh reset etcd'")
        rest = [m for m in self.nodes if m != lead]
        log(f"etcd: kill -9 the leader {lead}, wait for {' and '.join(rest)} to elect one")
        t0 = now()
        self.kill(lead)
        t1 = now()
        new = {}

        def elected():
            new["n"] = self.leader(rest)
            return new["n"] is not None
        wait_for(30, "the remaining etcd members to elect a leader", elected)
        t2 = now()
        return lead, new["n"], (t0, t1, t2, now())

    def hang_target(self):
        lead = self.leader()
        if not lead:
            die("etcd: no leader")
        return lead

    def reset(self):
        for n in self.nodes:
            self.signal(n, signal.SIGCONT)
        for n in self.nodes:
            if not self.start(n):
                die(f"etcd {n} did not start (see {self.ctx.log_dir}/etcd-{n}.log)")
        wait_for(60, "all etcd members to be healthy", self.healthy)
        wait_for(30, "the etcd members to agree on a leader", lambda: self.leader() is not None)

    def init(self):
        self.wipe_state()
        self.reset()
        self.mark_initialised()

    def health_cmd(self, cli):
        """etcdctl endpoint health of every member; exit 1 unless all are healthy."""
        out = common.run([ETCDCTL, f"--endpoints={self.endpoints()}", "--dial-timeout=2s", "--command-timeout=5s",
                          "endpoint", "health", "-w", "json"], timeout=20, check=False, env={"ETCDCTL_API": "3"})
        try:
            rows = json.loads(out or "[]")
        except json.JSONDecodeError:
            rows = []
        by_ep = {r["endpoint"]: bool(r.get("health")) for r in rows}
        res = {n: by_ep.get(f"http://{self.address(n)}", False) for n in self.nodes}
        cli.emit("\n".join(f"etcd {n} {self.address(n)} {'healthy' if h else 'unhealthy'}" for n, h in res.items()),
                 {"engine": "etcd", "health": res})
        return 0 if all(res.values()) else 1

    def exec_ctl(self, args):
        os.execve(ETCDCTL, [ETCDCTL, f"--endpoints={self.endpoints()}", *args], dict(os.environ, ETCDCTL_API="3"))
