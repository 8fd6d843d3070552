"""loadtest/lab.py — the rolegate "real-server lab".

Runs replicated pairs of real database servers on loopback so that tests, the demo and the load
tests have something true to route to (ports are loadtest/topology.json's defaults):

  pg       PostgreSQL 15  A 127.0.0.1:15432 (primary)  B 127.0.0.1:15433 (streaming standby)
  mysql    MariaDB        A 127.0.0.1:13306 (primary)  B 127.0.0.1:13307 (GTID replica, read_only)
  redis    Redis          A 127.0.0.1:16379 (master)   B 127.0.0.1:16380 (replicaof A)
and, on request only (`up etcd`, `up patroni`, `up sentinel`, `up all-fleet`):
  etcd     etcd 3.4, 3 members e1 e2 e3 (clients 12379 12381 12383, peers 12380 12382 12384)
  patroni  Patroni 3.0 over that etcd: PostgreSQL A 15442 / B 15443, REST 18008 / 18009
  sentinel Redis Sentinel, 3 sentinels S1 S2 S3 (16479-16481) over the redis pair, master labmaster

Every server also speaks TLS with a throwaway CA made at `up` ($LAB_DIR/tls/ca.pem, exported as
LAB_TLS_CA): PostgreSQL and MariaDB on their usual ports (TLS optional there, plain keeps
working), Redis on an extra port per node (A 127.0.0.1:16389, B 127.0.0.1:16390).

Usage: lab.py <command> [engine...] [args] [--json]
  engine: pg | mysql | redis | etcd | patroni | sentinel | all | all-fleet
  ("all", the default, is pg mysql redis for `up`, and those plus every optional engine that
  has state for the other commands; "all-fleet" is every engine)
  up [engine...]            install what is missing, initialise, start, enforce A=primary/B=replica
  down [engine...]          stop every server the lab started (data is kept)
  destroy [engine...]       down + delete the state
  reset [engine...]         back to the canonical topology from any state (rebuilds B if needed)
  status [engine...]        one grep-able line per node: "pg A 127.0.0.1:15432 up primary pid=123"
  primary <engine>          print "A 127.0.0.1:15432" for the node that is primary (leader) now
  switchover <engine>       clean role swap; prints "switchover pg from=A to=B start=.. demoted=.. promoted=.. done=.."
  kill <engine>             kill -9 the primary, promote the replica (patroni, etcd: wait for the
                            cluster to elect one); prints the same timestamps
  hang <engine>             SIGSTOP the primary             resume <engine>   SIGCONT any stopped node
  promote <engine>          promote the replica, leave the primary alone (split brain)
  demote <engine> <node>    NODE stops being primary (the end of a split brain): PG fast shutdown
                            and rejoin as a standby of the other node, MariaDB read_only=ON,
                            Redis REPLICAOF the other node; prints "demote pg node=A at=.. done=.."
  stop|start <engine> <node>  stop / start one node (start keeps the node's current role)
  patroni switchover|kill|list   the same as `switchover patroni` etc.; list = patronictl list
  sentinel failover|master       SENTINEL FAILOVER (timestamps like switchover) / the master now
  etcd health                    etcdctl endpoint health of every member
  env                       "export LAB_...=..." lines: eval "$(loadtest/lab.sh env)"
  psql|mariadb|redis-cli <A|B> [args...]   client as the app user on that node
  etcdctl [args...]         etcdctl against the lab's three members
  patronictl [args...]      patronictl with the lab's Patroni config
  --json                    machine-readable output (documented in loadtest/README.md)

Everything lives in ${LAB_DIR:-/tmp/rolegate-lab} (data, configs, sockets, pid files, logs).
Only processes whose pid files live there are ever signalled. The passwords are test-only secrets.
See loadtest/README.md.
"""

import json
import os
import shlex
import shutil
import signal
import sys
import time

from . import common, packages, tls
from .base import Ctx
from .common import LabError, die, log, now, stamp
from .etcd import Etcd
from .mysql import MARIADB, Mysql
from .patroni import Patroni
from .pg import Pg
from .redis import REDIS_CLI, Redis
from .sentinel import Sentinel
from .topology import ConfigError, load

ORDER = ["pg", "mysql", "redis", "etcd", "patroni", "sentinel"]
CLASSES = {"pg": Pg, "mysql": Mysql, "redis": Redis, "etcd": Etcd, "patroni": Patroni, "sentinel": Sentinel}
ALIASES = {"postgres": "pg", "postgresql": "pg", "mariadb": "mysql"}
MUTATING = {"up", "down", "destroy", "reset", "switchover", "kill", "hang", "resume", "promote", "demote", "stop",
            "start"}
LAB_SH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lab.sh")
LAB_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lab.py")


class Cli:
    def __init__(self, ctx, as_json):
        self.ctx = ctx
        self.json = as_json
        self.engines = {e: CLASSES[e](ctx) for e in ORDER}

    def emit(self, text, obj):
        if self.json:
            print(json.dumps(obj, sort_keys=False))
        elif text:
            print(text)
        sys.stdout.flush()

    # --- engine arguments ------------------------------------------------------------------
    def parse_engines(self, args, cmd):
        """ENGINE... -> names in dependency order."""
        if not args:
            args = ["all"]
        out = set()
        for a in args:
            a = ALIASES.get(a, a)
            if a == "all":
                out.update(self.ctx.topo.default_engines() if cmd == "up" else
                           self.ctx.topo.default_engines() +
                           [e for e in self.ctx.topo.optional_engines() if os.path.isdir(self.engines[e].state_dir())])
            elif a == "all-fleet":
                out.update(ORDER)
            elif a in CLASSES:
                out.add(a)
            else:
                die(f"unknown engine '{a}' ({' | '.join(ORDER)} | all | all-fleet)")
        if cmd == "up":
            for e in list(out):
                out.update(self.ctx.topo.engine(e).get("needs", []))
        if cmd in ("down", "destroy"):
            # what runs on top of an engine goes first (patroni without etcd, sentinels without
            # redis would only log errors)
            for e in ORDER:
                needs = self.ctx.topo.engine(e).get("needs", [])
                if any(d in out for d in needs) and os.path.isdir(self.engines[e].state_dir()):
                    out.add(e)
        return [e for e in ORDER if e in out]

    def one_engine(self, args, cmd):
        if not args or args[0] in ("all", "all-fleet"):
            die(f"'{cmd}' needs an engine: {' | '.join(ORDER)}")
        e = self.parse_engines(args[:1], cmd)[0]
        return self.engines[e]

    def one_node(self, eng, node, cmd):
        if node not in eng.nodes:
            die(f"'{cmd}' needs a node: {' or '.join(eng.nodes)}")
        return node

    def require_state(self, eng):
        if not eng.initialised():
            die(f"{eng.name} is not set up in {self.ctx.lab_dir}; run 'lab.sh up {eng.name}'")

    # --- status ----------------------------------------------------------------------------
    def node_status(self, eng, n):
        d = {"address": eng.address(n)}
        d.update(eng.addresses(n) if hasattr(eng, "addresses") else {})
        if eng.initialised():
            st, pid, role = eng.node_state(n)
            extra = eng.extra(n, role) if st == "up" else {}
        else:
            st, pid, role, extra = "absent", None, None, {}
        d.update({"state": st, "up": st == "up", "role": role, "pid": pid})
        d.update(extra)
        return d, extra

    def status(self, names):
        lines, obj = [], {}
        for e in names:
            eng = self.engines[e]
            obj[e] = {}
            for n in eng.nodes:
                d, extra = self.node_status(eng, n)
                obj[e][n] = d
                ex = "".join(f" {k}={v}" for k, v in extra.items())
                lines.append(f"{e} {n} {d['address']} {d['state']} {d['role'] or '-'} pid={d['pid'] or '-'}{ex}")
        return lines, obj

    # --- commands --------------------------------------------------------------------------
    def cmd_up(self, args):
        t0 = time.monotonic()
        common.need_root("up", self.ctx.owner.name)
        names = self.parse_engines(args, "up")
        engs = [self.engines[e] for e in names]

        def missing():
            pkgs = [] if shutil.which("openssl") else ["openssl"]    # the lab's TLS certificates
            for eng in engs:
                pkgs += eng.missing_packages()
            return pkgs
        packages.ensure_packages(missing)
        self.ctx.owner.ensure()
        self.ctx.ensure_dirs()
        # before any config is written: every config names the certificate
        self.ctx.tls_new = tls.ensure_tls(self.ctx.lab_dir, self.ctx.tls_dir, f"{self.ctx.log_dir}/tls.log", self.ctx.owner)
        # Engines are independent (own dirs, ports, logs) apart from `needs` (patroni runs on
        # etcd, sentinel watches redis): level by level, initialise the missing ones in parallel
        # (mariadb-install-db alone takes a few seconds), then bring each to its canonical state.
        done = set()
        while len(done) < len(engs):
            level = [eng for eng in engs if eng.name not in done
                     and all(d in done or d not in names for d in self.ctx.topo.engine(eng.name).get("needs", []))]
            pending = [eng for eng in level if not eng.initialised()]
            self.init_parallel(pending)
            # State made by an older lab, or a certificate just remade: TLS on (once), then reset.
            for eng in level:
                if eng not in pending:
                    eng.tls()
            for eng in level:
                eng.reset()
                if eng.pair:
                    self.primary_moved(eng, "A")
            done.update(eng.name for eng in level)
        lines, obj = self.status(names)
        ends = []
        for eng in engs:
            if eng.pair:
                ends.append(f"endpoint {eng.name} primary={eng.address('A')} replica={eng.address('B')}")
        self.emit("\n".join(lines + ends), obj)
        if "redis" in names:
            log(f"tls: CA {self.ctx.tls_dir}/ca.pem (LAB_TLS_CA); redis TLS ports "
                f"A={self.ctx.port('redis', 'A', 'tls_port')} B={self.ctx.port('redis', 'B', 'tls_port')}")
        log(f"up in {int((time.monotonic() - t0) * 1000)} ms; state in {self.ctx.lab_dir}")

    def init_parallel(self, engs):
        """Initialises ENGS concurrently (one forked child each)."""
        pids = {}
        for eng in engs:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    eng.init()
                except LabError as ex:
                    print(f"lab: error: {ex}", file=sys.stderr)
                    code = 1
                except BaseException as ex:   # the child must never return into the parent's code
                    print(f"lab: error: {eng.name}: {ex!r}", file=sys.stderr)
                    code = 1
                finally:
                    sys.stderr.flush()
                    os._exit(code)
            pids[pid] = eng
        failed = []
        for pid, eng in pids.items():
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                failed.append(eng.name)
        if failed:
            die(f"initialising {' '.join(failed)} failed (see the messages above and {self.ctx.log_dir})")

    def cmd_down(self, args):
        names = self.parse_engines(args, "down")
        if not os.path.isdir(self.ctx.lab_dir):
            return
        for e in reversed(names):
            eng = self.engines[e]
            for n in reversed(eng.nodes):
                eng.stop(n)

    def cmd_destroy(self, args):
        if not os.path.isdir(self.ctx.lab_dir):
            return
        names = self.parse_engines(args, "destroy")
        self.cmd_down(args)
        if not args or args == ["all"] or "all-fleet" in args:
            log(f"removing {self.ctx.lab_dir}")
            shutil.rmtree(self.ctx.lab_dir, ignore_errors=True)
        else:
            for e in names:
                self.engines[e].destroy()

    def cmd_reset(self, args):
        common.need_root("reset", self.ctx.owner.name)
        names = self.parse_engines(args, "reset")
        for e in names:
            self.require_state(self.engines[e])
            self.engines[e].reset()
            if self.engines[e].pair:
                self.primary_moved(self.engines[e], "A")
        lines, obj = self.status(names)
        self.emit("\n".join(lines), obj)

    def cmd_status(self, args):
        names = self.parse_engines(args, "status")
        if os.geteuid() != 0 and "mysql" in names:
            log("warning: not root; MariaDB roles need root (unix_socket admin login)")
        lines, obj = self.status(names)
        self.emit("\n".join(lines), obj)

    def cmd_primary(self, args):
        eng = self.one_engine(args, "primary")
        found = eng.primaries()
        self.emit("\n".join(f"{n} {eng.address(n)}" for n in found),
                  {"engine": eng.name, "primaries": [{"node": n, "address": eng.address(n)} for n in found]})
        if len(found) == 1:
            return 0
        if not found:
            log(f"{eng.name}: no node is primary")
            return 1
        log(f"{eng.name}: split brain: both nodes claim primary")
        return 2

    def timeline(self, cmd, eng, frm, to, ts):
        t0, t1, t2, t3 = ts
        self.emit(f"{cmd} {eng.name} from={frm} to={to} start={stamp(t0)} demoted={stamp(t1)} "
                  f"promoted={stamp(t2)} done={stamp(t3)}",
                  {"command": cmd, "engine": eng.name, "from": frm, "to": to,
                   "start": t0, "demoted": t1, "promoted": t2, "done": t3})

    def move_primary(self, args, cmd):
        """switchover / kill: the engine's CMD_cmd moves the primary, the timeline is printed."""
        eng = self.one_engine(args, cmd)
        self.require_state(eng)
        frm, to, ts = getattr(eng, f"{cmd}_cmd")()
        self.primary_moved(eng, to)
        self.timeline(cmd, eng, frm, to, ts)

    def primary_moved(self, eng, primary):
        """Engines that watch ENG (topology `needs`: sentinel on redis) follow its new PRIMARY."""
        for name, dep in self.engines.items():
            if eng.name in self.ctx.topo.engine(name).get("needs", []):
                dep.upstream_moved(primary)

    def cmd_switchover(self, args):
        self.move_primary(args, "switchover")

    def cmd_kill(self, args):
        self.move_primary(args, "kill")

    def cmd_failover(self, args):
        eng = self.one_engine(args, "failover")
        self.require_state(eng)
        if not hasattr(eng, "failover_cmd"):
            die(f"'failover' is for sentinel; for {eng.name} use switchover or kill")
        frm, to, ts = eng.failover_cmd()
        self.timeline("failover", eng, frm, to, ts)

    def cmd_hang(self, args):
        eng = self.one_engine(args, "hang")
        self.require_state(eng)
        p = eng.hang_target()
        pid = eng.pid(p)
        eng.signal(p, signal.SIGSTOP)
        at = now()
        self.emit(f"hang {eng.name} node={p} pid={pid} at={stamp(at)}",
                  {"command": "hang", "engine": eng.name, "node": p, "pid": pid, "at": at})

    def cmd_resume(self, args):
        eng = self.one_engine(args, "resume")
        self.require_state(eng)
        done = []
        for n in eng.nodes:
            st, pid, _role = eng.node_state(n)
            if st == "stopped":
                eng.signal(n, signal.SIGCONT)
                done.append({"node": n, "pid": pid, "at": now()})
        self.emit("\n".join(f"resume {eng.name} node={d['node']} pid={d['pid']} at={stamp(d['at'])}" for d in done),
                  {"command": "resume", "engine": eng.name, "nodes": done})

    def cmd_promote(self, args):
        eng = self.one_engine(args, "promote")
        self.require_state(eng)
        if not eng.pair or eng.name == "patroni":
            die(f"'promote' (split brain) is for pg | mysql | redis, not {eng.name}")
        r = None
        for n in eng.nodes:
            st, _pid, role = eng.node_state(n)
            if st == "up" and role == "replica":
                r = n
        if not r:
            die(f"{eng.name}: no running replica to promote")
        eng.promote(r)
        at = now()
        # The lab's new primary: watching engines (sentinel) follow it rather than turn it back
        # into a replica of the old one. After `at`: the promotion is timed without them.
        self.primary_moved(eng, r)
        self.emit(f"promote {eng.name} node={r} at={stamp(at)}",
                  {"command": "promote", "engine": eng.name, "node": r, "at": at})

    def cmd_demote(self, args):
        """Ends a split brain the way an orchestrator fences the old primary: NODE no longer
        accepts writes (at=), then follows the other node where the engine can (done=)."""
        eng = self.one_engine(args, "demote")
        n = self.one_node(eng, args[1] if len(args) > 1 else None, "demote")
        self.require_state(eng)
        if not eng.pair or eng.name == "patroni":
            die(f"'demote' is for pg | mysql | redis, not {eng.name}")
        st, _pid, role = eng.node_state(n)
        if st != "up" or role != "primary":
            die(f"{eng.name} {n} is not a running primary ({st}/{role or '-'})")
        o = common.other(n)
        ost, _opid, orole = eng.node_state(o)
        if ost != "up" or orole != "primary":
            die(f"{eng.name}: {o} is not a running primary ({ost}/{orole or '-'}); demoting {n} would leave none")
        at = eng.demote(n, o)
        done = now()
        self.primary_moved(eng, o)
        self.emit(f"demote {eng.name} node={n} at={stamp(at)} done={stamp(done)}",
                  {"command": "demote", "engine": eng.name, "node": n, "primary": o, "at": at, "done": done})

    def cmd_stop(self, args):
        eng = self.one_engine(args, "stop")
        n = self.one_node(eng, args[1] if len(args) > 1 else None, "stop")
        self.require_state(eng)
        eng.stop(n)
        at = now()
        self.emit(f"stop {eng.name} node={n} at={stamp(at)}", {"command": "stop", "engine": eng.name, "node": n, "at": at})

    def cmd_start(self, args):
        eng = self.one_engine(args, "start")
        n = self.one_node(eng, args[1] if len(args) > 1 else None, "start")
        common.need_root("start", self.ctx.owner.name)
        self.require_state(eng)
        if not eng.start(n):
            die(f"{eng.name} {n} did not start (see {self.ctx.log_dir})")
        at = now()
        self.emit(f"start {eng.name} node={n} at={stamp(at)}", {"command": "start", "engine": eng.name, "node": n, "at": at})

    def cmd_env(self):
        c, t = self.ctx, self.ctx.topo
        psql = f"{c.pg_bin}/psql"
        if not os.access(psql, os.X_OK):
            psql = shutil.which("psql") or "psql"
        engines = {}
        for e in ORDER:
            eng = self.engines[e]
            spec = {k: v for k, v in t.engine(e).items() if k not in ("nodes", "default", "needs")}
            nodes = {}
            for n in eng.nodes:
                d = {"address": eng.address(n)}
                for kind in t.engine(e)["nodes"][n]:
                    d[kind] = c.port(e, n, kind)
                d.update(eng.addresses(n) if hasattr(eng, "addresses") else {})
                nodes[n] = d
            engines[e] = {"nodes": nodes, "optional": not t.engine(e).get("default"), **spec}
        obj = {
            "lab_dir": c.lab_dir,
            "settings": dict(t.values),
            "users": dict(t.users),
            "passwords": {who: t.password(who) for who in t.raw["passwords"]},
            "app_db": t.app_db,
            "tls_ca": f"{c.tls_dir}/ca.pem",
            "lock_file": c.lock_file,
            "bin": {"pg_bin": c.pg_bin, "psql": psql, "mariadb": MARIADB, "redis_cli": REDIS_CLI,
                    "lab_sh": LAB_SH, "lab_py": LAB_PY},
            "engines": engines,
        }
        if self.json:
            self.emit("", obj)
            return
        q = shlex.quote
        out = [f"export LAB_DIR={q(c.lab_dir)}"]
        out += [f"export {k}={q(t.setting(k))}" for k in t.setting_names()]
        out.append(f"export LAB_MONITOR_USER={q(t.user('monitor'))} LAB_APP_USER={q(t.user('app'))} LAB_APP_DB={q(t.app_db)}")
        out.append(f"export LAB_MD5_USER={q(t.user('md5'))} LAB_REPL_USER={q(t.user('repl'))} "
                   f"LAB_NATIVE_USER={q(t.user('native'))} LAB_ED25519_USER={q(t.user('ed25519'))}")
        for e, pre in (("pg", "PG"), ("mysql", "MY"), ("redis", "REDIS"), ("patroni", "PATRONI")):
            out.append(f"export LAB_{pre}_A_ADDR={engines[e]['nodes']['A']['address']} "
                       f"LAB_{pre}_B_ADDR={engines[e]['nodes']['B']['address']}")
        out.append(f"export LAB_REDIS_A_TLS_ADDR=127.0.0.1:{c.port('redis', 'A', 'tls_port')} "
                   f"LAB_REDIS_B_TLS_ADDR=127.0.0.1:{c.port('redis', 'B', 'tls_port')}")
        out.append(f"export LAB_PATRONI_A_REST_ADDR=127.0.0.1:{c.port('patroni', 'A', 'rest_port')} "
                   f"LAB_PATRONI_B_REST_ADDR=127.0.0.1:{c.port('patroni', 'B', 'rest_port')}")
        out.append(f"export LAB_PATRONI_SCOPE={q(t.engine('patroni')['scope'])} "
                   f"LAB_PATRONI_NAMESPACE={q(t.engine('patroni')['namespace'])}")
        out.append("export LAB_ETCD_ENDPOINTS=" + ",".join(f"http://{engines['etcd']['nodes'][n]['address']}"
                                                           for n in self.engines["etcd"].nodes))
        out.append("export LAB_SENTINEL_ADDRS=" + ",".join(engines["sentinel"]["nodes"][n]["address"]
                                                           for n in self.engines["sentinel"].nodes)
                   + f" LAB_SENTINEL_MASTER={q(t.engine('sentinel')['master_name'])}")
        out.append(f"export LAB_TLS_CA={q(c.tls_dir + '/ca.pem')}")
        out.append(f"export LAB_PG_BIN={q(c.pg_bin)}")
        out.append(f"export LAB_PSQL={q(psql)}")
        out.append(f"export LAB_MARIADB={q(MARIADB)}")
        out.append(f"export LAB_REDIS_CLI={q(REDIS_CLI)}")
        out.append(f"export LAB_SH={q(LAB_SH)}")
        out.append(f"export LAB_PY={q(LAB_PY)}")
        print("\n".join(out))

    def cmd_client(self, tool, args):
        """The app user on node A or B, over TCP like a real client."""
        c = self.ctx
        n = args[0] if args else None
        if n not in ("A", "B"):
            die(f"'{tool}' needs a node: A or B")
        rest = args[1:]
        env = dict(os.environ)
        if tool == "psql":
            env.update(PGPASSWORD=c.password("app"), PGCONNECT_TIMEOUT="5")
            argv = [f"{c.pg_bin}/psql", "-X", "-h", "127.0.0.1", "-p", str(c.port("pg", n)), "-U", c.user("app"),
                    "-d", c.topo.app_db, *rest]
        elif tool == "mariadb":
            env.update(MYSQL_PWD=c.password("app"))
            argv = [MARIADB, "--no-defaults", "--protocol=tcp", "-h", "127.0.0.1", "-P", str(c.port("mysql", n)),
                    "-u", c.user("app"), f"--database={c.topo.app_db}", "--connect-timeout=5", *rest]
        else:
            argv = [REDIS_CLI, "--no-auth-warning", "-h", "127.0.0.1", "-p", str(c.port("redis", n)),
                    "--user", c.user("app"), "--pass", c.password("app"), *rest]
        os.execve(argv[0], argv, env)


def usage():
    return __doc__.lstrip()


def main(argv):
    as_json = "--json" in argv
    argv = [a for a in argv if a != "--json"]
    cmd = argv[0] if argv else "help"
    args = argv[1:]
    if cmd in ("help", "-h", "--help"):
        sys.stdout.write(usage())
        return 0
    try:
        try:
            topo = load()
        except ConfigError as e:
            die(str(e))
        ctx = Ctx(topo)
        os.chdir("/")   # nothing we run may depend on the caller's cwd
        cli = Cli(ctx, as_json)
        # `patroni switchover` = `switchover patroni`, `sentinel failover` = `failover sentinel`
        if cmd in ("patroni", "sentinel", "etcd") and args and args[0] in (
                "switchover", "kill", "failover", "list", "master", "health", "hang", "resume", "stop", "start"):
            eng = cmd
            cmd, args = args[0], [eng, *args[1:]]
        if cmd in MUTATING or cmd == "failover":
            common.need_root(cmd, ctx.owner.name)
            common.Lock(ctx.lock_file).take()
        simple = {"up": cli.cmd_up, "down": cli.cmd_down, "destroy": cli.cmd_destroy, "reset": cli.cmd_reset,
                  "status": cli.cmd_status, "switchover": cli.cmd_switchover, "kill": cli.cmd_kill,
                  "failover": cli.cmd_failover, "hang": cli.cmd_hang, "resume": cli.cmd_resume,
                  "promote": cli.cmd_promote, "demote": cli.cmd_demote, "stop": cli.cmd_stop,
                  "start": cli.cmd_start}
        if cmd in simple:
            return simple[cmd](args) or 0
        if cmd == "primary":
            return cli.cmd_primary(args)
        if cmd == "env":
            cli.cmd_env()
            return 0
        if cmd in ("psql", "mariadb", "mysql", "redis-cli"):
            cli.cmd_client("mariadb" if cmd == "mysql" else cmd, args)
            return 0
        if cmd == "list":
            return cli.engines["patroni"].list_cmd(cli)
        if cmd == "master":
            return cli.engines["sentinel"].master_cmd(cli)
        if cmd == "health":
            return cli.engines["etcd"].health_cmd(cli)
        if cmd == "etcdctl":
            cli.engines["etcd"].exec_ctl(args)
        if cmd == "patronictl":
            cli.engines["patroni"].exec_ctl(args)
        sys.stderr.write(usage())
        die(f"unknown command '{cmd}'")
    except LabError as e:
        print(f"lab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
