#!/usr/bin/env python3
"""A Patroni-style role responder for one database node, for HAProxy's `option httpchk`.

    responder.py pg|mysql NODE_PORT LISTEN_PORT

Answers every HTTP request (`OPTIONS /primary`, `GET /primary`, `/master`, `/replica`, anything)
by asking the node its role right now with the stock command-line client, as the monitor user:
  pg     psql    "select pg_is_in_recovery()"    -> f = primary
  mysql  mariadb "select @@global.read_only"     -> 0 = primary
`/primary` and `/master` (and `/`) answer 200 on the primary and 503 otherwise; `/replica`
answers 200 on a replica. An unreachable node is 503 everywhere. That is what Patroni's REST port
(8008) does for HAProxy, except that Patroni answers from its own state, refreshed by its HA
loop, while this asks the server on every check (so it is, if anything, quicker than Patroni).

Password: the lab's monitor password (loadtest/topology.json, LAB_MONITOR_PASSWORD). Stdlib only; one thread per request.
"""

import http.server
import os
import socketserver
import subprocess
import sys

ENGINE, NODE_PORT, LISTEN_PORT = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lab.topology import load as load_topology  # noqa: E402

PASSWORD = load_topology().password("monitor")


def role():
    """'primary', 'replica' or None (could not tell)."""
    if ENGINE == "pg":
        env = dict(os.environ, PGPASSWORD=PASSWORD, PGCONNECT_TIMEOUT="2")
        argv = ["psql", "-h", "127.0.0.1", "-p", str(NODE_PORT), "-U", "rolegate_monitor", "-d", "postgres",
                "-Atc", "select pg_is_in_recovery()"]
        want = {"f": "primary", "t": "replica"}
    else:
        env = dict(os.environ, MYSQL_PWD=PASSWORD)
        argv = ["mariadb", "-h", "127.0.0.1", "-P", str(NODE_PORT), "-u", "rolegate_monitor",
                "--connect-timeout=2", "-N", "-B", "-e", "select @@global.read_only"]
        want = {"0": "primary", "1": "replica"}
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=3, env=env)
    except subprocess.TimeoutExpired:
        return None
    if r.returncode != 0:
        return None
    return want.get(r.stdout.strip())


class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self, body=True):
        r = role()
        path = self.path.split("?")[0].rstrip("/") or "/"
        if path in ("/replica", "/read-only"):
            ok = r == "replica"
        else:
            ok = r == "primary"
        payload = f'{{"role": "{r or "unknown"}"}}\n'.encode()
        self.send_response(200 if ok else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def do_GET(self):
        self.answer()

    def do_OPTIONS(self):
        self.answer()

    def do_HEAD(self):
        self.answer(body=False)

    def log_message(self, *_args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    srv = Server(("127.0.0.1", LISTEN_PORT), Handler)
    print(f"responder {ENGINE} node :{NODE_PORT} on :{LISTEN_PORT}", flush=True)
    srv.serve_forever()
