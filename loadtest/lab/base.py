"""The lab's context (settings, paths, the lab user) and what an engine module provides."""

import os

from . import common, tls
from .common import die, proc_state


class Ctx:
    """One invocation's view of the lab: resolved topology, state paths, the lab user."""

    def __init__(self, topo):
        self.topo = topo
        self.lab_dir = topo.lab_dir
        self.run_dir = f"{self.lab_dir}/run"          # pid files and unix sockets
        self.log_dir = f"{self.lab_dir}/log"
        self.tls_dir = f"{self.lab_dir}/tls"          # throwaway CA (ca.pem), server cert and key
        self.lock_file = f"{self.lab_dir}.lock"       # beside the state dir: `destroy` holds it
        self.owner = common.Owner(topo.setting("LAB_OS_USER"))
        self.tls_new = False                          # set when `up` made new certificates
        self.pg_bin = topo.pg_bin

    def port(self, engine, node, kind="port"):
        return self.topo.port(engine, node, kind)

    def user(self, who):
        return self.topo.user(who)

    def password(self, who):
        return self.topo.password(who)

    def tls_ready(self):
        return tls.tls_ready(self.tls_dir)

    def ensure_dirs(self):
        os.makedirs(self.lab_dir, exist_ok=True)
        os.chmod(self.lab_dir, 0o755)
        if not common.ok(self.owner.argv("test", "-x", self.lab_dir)):
            die(f"{self.owner.name} cannot reach {self.lab_dir} (a parent directory is not "
                "world-searchable); pick another LAB_DIR")
        self.owner.mkdir(self.run_dir)
        self.owner.mkdir(self.log_dir)
        self.record_config()

    def record_config(self):
        """Records the settings in lab.env: all of them for a new state, and for a state made by
        an older lab the ones it did not know yet (so they are pinned from now on too)."""
        path = f"{self.lab_dir}/lab.env"
        missing = [k for k in self.topo.setting_names() if k not in self.topo.recorded]
        if missing:
            with open(path, "a") as f:
                for k in missing:
                    f.write(f"{k}={self.topo.setting(k)}\n")


class Engine:
    """A replicated pair A/B (pg, mysql, redis) or a cluster of its own (etcd, patroni,
    sentinel). Subclasses implement the per-server operations; the commands are written once
    in cli.py on top of them."""

    name = ""
    pair = True       # A/B with primary/replica roles and the scenario commands

    def __init__(self, ctx):
        self.ctx = ctx
        self.nodes = ctx.topo.nodes(self.name)

    def state_dir(self):
        return f"{self.ctx.lab_dir}/{self.name}"

    def initialised(self):
        return os.path.isfile(f"{self.state_dir()}/.initialised")

    def address(self, node):
        return f"127.0.0.1:{self.ctx.port(self.name, node)}"

    def missing_packages(self):
        return []

    def tls(self):
        pass

    def info(self, node):
        """Extra facts about a replica: dict, e.g. {"upstream": "A", "link": "streaming"}."""
        return {}

    def extra(self, node, role):
        """Fields after pid= in the status line / extra keys of status --json."""
        return self.info(node) if role == "replica" else {}

    def node_state(self, node):
        """(state, pid, role): state up|down|stopped, role primary|replica|unknown|None."""
        pid = self.pid(node)
        if pid is None:
            return "down", None, None
        if proc_state(pid) == "T":
            return "stopped", pid, "unknown"
        try:
            role = self.role(node)
        except Exception:       # a server in the middle of starting: unknown, not an error
            role = None
        return "up", pid, role or "unknown"

    def find_pair(self, need_replica=False):
        """(primary, other): the single running primary and the other node."""
        states = {n: self.node_state(n) for n in self.nodes}
        prim = [n for n, (st, _pid, role) in states.items() if st == "up" and role == "primary"]
        if len(prim) != 1:
            die(f"{self.name}: expected exactly one running primary, found {len(prim)} "
                f"({' '.join(prim) or 'none'}); see 'lab.sh status {self.name}' or run 'lab.sh reset {self.name}'")
        p = prim[0]
        r = common.other(p)
        if need_replica:
            st, _pid, role = states[r]
            if st != "up" or role != "replica":
                die(f"{self.name}: node {r} is not a running replica ({st}/{role or '-'}); "
                    f"run 'lab.sh reset {self.name}'")
        return p, r

    def primaries(self):
        states = {n: self.node_state(n) for n in self.nodes}
        return [n for n, (st, _pid, role) in states.items() if st == "up" and role == "primary"]

    def switchover_cmd(self):
        """(from, to, (start, demoted, promoted, done)) of a clean role swap."""
        p, r = self.find_pair(need_replica=True)
        common.log(f"{self.name}: switchover {p} -> {r}")
        return p, r, self.switchover(p, r)

    def kill_cmd(self):
        """kill -9 the primary, promote the replica."""
        p, r = self.find_pair(need_replica=True)
        common.log(f"{self.name}: kill -9 {p}, promote {r}")
        t0 = common.now()
        self.kill(p)
        t1 = common.now()
        self.promote(r)
        t2 = common.now()
        return p, r, (t0, t1, t2, common.now())

    def hang_target(self):
        return self.find_pair()[0]

    def roles_changed(self, primary):
        """Called after a command made PRIMARY the primary (switchover, kill)."""

    def destroy(self):
        import shutil
        shutil.rmtree(self.state_dir(), ignore_errors=True)
