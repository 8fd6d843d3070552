"""The lab's settings, resolved once: loadtest/topology.json (defaults), the environment
(overrides), and $LAB_DIR/lab.env (what the state dir was created with, which wins).

Importable by the Python tools without root and without side effects:

    sys.path.insert(0, os.path.join(ROOT, "loadtest"))
    from lab.topology import load
    topo = load()
    topo.port("pg", "A"); topo.password("app"); topo.address("redis", "B")
"""

import json
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
LOADTEST = os.path.dirname(HERE)
TOPOLOGY_FILE = os.path.join(LOADTEST, "topology.json")

PASSWORD_RE = re.compile(r"^[A-Za-z0-9._~+@%=-]+$")


class ConfigError(Exception):
    """A setting that cannot be used (conflicting override, bad port, bad password)."""


def read_topology(path=TOPOLOGY_FILE):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def resolve_lab_dir(default):
    d = os.environ.get("LAB_DIR") or default
    if not d.startswith("/"):
        d = os.path.join(os.getcwd(), d)
    d = d.rstrip("/")
    if not d:
        raise ConfigError("LAB_DIR must not be /")
    return d


def read_recorded(lab_env):
    """KEY=VALUE lines of $LAB_DIR/lab.env (missing file: empty)."""
    rec = {}
    try:
        with open(lab_env, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                if "=" in line:
                    k, v = line.split("=", 1)
                    rec[k] = v
    except FileNotFoundError:
        pass
    return rec


class Topology:
    """Resolved settings plus the structure of topology.json."""

    def __init__(self, raw, lab_dir, values, recorded):
        self.raw = raw
        self.lab_dir = lab_dir
        self.values = values          # setting name -> str
        self.recorded = recorded      # what lab.env holds
        self.engines = raw["engines"]
        self.users = raw["users"]
        self.app_db = raw["app_db"]

    # --- settings ---------------------------------------------------------------------------
    def setting(self, name):
        return self.values[name]

    def setting_names(self):
        return list(self.raw["settings"].keys())

    def password(self, who):
        return self.values[self.raw["passwords"][who]]

    def user(self, who):
        return self.users[who]

    # --- structure --------------------------------------------------------------------------
    def nodes(self, engine):
        return list(self.engines[engine]["nodes"].keys())

    def engine(self, engine):
        return self.engines[engine]

    def port(self, engine, node, kind="port"):
        return int(self.values[self.engines[engine]["nodes"][node][kind]])

    def address(self, engine, node, kind="port"):
        return f"127.0.0.1:{self.port(engine, node, kind)}"

    def default_engines(self):
        return [e for e, spec in self.engines.items() if spec.get("default")]

    def optional_engines(self):
        return [e for e, spec in self.engines.items() if not spec.get("default")]

    @property
    def tls_ca(self):
        return os.path.join(self.lab_dir, "tls", "ca.pem")

    @property
    def pg_bin(self):
        return f"/usr/lib/postgresql/{self.values['LAB_PG_VERSION']}/bin"


def load(path=TOPOLOGY_FILE):
    """Resolves every setting; raises ConfigError on a conflicting override or a bad value."""
    env = os.environ
    raw = read_topology(path)
    lab_dir = resolve_lab_dir(raw["lab_dir"])
    lab_env = os.path.join(lab_dir, "lab.env")
    recorded = read_recorded(lab_env)
    values = {}
    for name, default in raw["settings"].items():
        if name in recorded:
            v = recorded[name]
            if name in env and env[name] != v:
                raise ConfigError(
                    f"{name} is set to a different value than the one {lab_dir} was created with "
                    f"(see {lab_env}); run 'lab.sh destroy' first or use another LAB_DIR")
        else:
            v = env.get(name, str(default))
        values[name] = v
    # Passwords and ports end up in config files and connection strings unquoted: keep them tame.
    for name in raw["passwords"].values():
        if not PASSWORD_RE.match(values[name]):
            raise ConfigError(f"{name} may only contain letters, digits and ._~+@%=-")
    for name, v in values.items():
        if name.endswith("_PORT") and not v.isdigit():
            raise ConfigError(f"{name} must be a port number")
    return Topology(raw, lab_dir, values, recorded)
