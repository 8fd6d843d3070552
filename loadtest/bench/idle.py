#!/usr/bin/env python3
"""Idle sessions for the memory workload of loadtest/bench.sh (stdlib only).

    idle.py sink PORT                 backend: accept, answer each connection's one ping, then hold
    idle.py clients ADDR:PORT COUNT   client: open COUNT connections, one ping each, then hold

Each session does one small round trip ("ping\\n" -> "pong\\n") and then stays idle, so a proxy
has allocated and (if it frees on idle) released whatever a session needs for traffic, as an idle
database connection after its handshake. `clients` prints one line "ready N" on stdout when N
sessions have had their answer (or "failed N reason" and exits 1), then holds them until stdin
closes or it gets SIGTERM. `sink` prints "listening" and holds everything until SIGTERM.
Both are bounded: `clients` gives up after --deadline seconds.
"""

import argparse
import errno
import os
import resource
import selectors
import signal
import socket
import sys
import time

PING = b"ping\n"
PONG = b"pong\n"


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, need))
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def sink(port):
    raise_nofile(1 << 20)
    sel = selectors.DefaultSelector()
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(4096)
    ls.setblocking(False)
    sel.register(ls, selectors.EVENT_READ, None)
    held = {}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print("listening", flush=True)
    while not stop:
        for key, _ in sel.select(timeout=0.5):
            if key.data is None:
                while True:
                    try:
                        c, _ = ls.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as e:  # EMFILE: report once in a while, keep serving
                        if e.errno in (errno.EMFILE, errno.ENFILE):
                            time.sleep(0.01)
                            break
                        raise
                    c.setblocking(False)
                    held[c.fileno()] = c
                    sel.register(c, selectors.EVENT_READ, "conn")
            else:
                c = key.fileobj
                try:
                    data = c.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(c)
                    held.pop(c.fileno(), None)
                    c.close()
                    continue
                if data.endswith(b"\n"):
                    try:
                        c.send(PONG)
                    except OSError:
                        pass
    for c in held.values():
        c.close()


def clients(addr, count, deadline_s):
    host, port = addr.rsplit(":", 1)
    port = int(port)
    raise_nofile(count + 64)
    sel = selectors.DefaultSelector()
    socks = []
    answered = 0
    deadline = time.monotonic() + deadline_s
    pending_connect = 0
    i = 0
    # Open in waves so a listener's backlog is never the limit being measured.
    while answered < count:
        if time.monotonic() > deadline:
            print(f"failed {answered} deadline", flush=True)
            sys.exit(1)
        while i < count and pending_connect < 256:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex((host, port))
            if err not in (0, errno.EINPROGRESS):
                print(f"failed {answered} connect:{os.strerror(err)}", flush=True)
                sys.exit(1)
            sel.register(s, selectors.EVENT_WRITE, "connecting")
            socks.append(s)
            pending_connect += 1
            i += 1
        for key, ev in sel.select(timeout=0.5):
            s = key.fileobj
            if key.data == "connecting":
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    print(f"failed {answered} connect:{os.strerror(err)}", flush=True)
                    sys.exit(1)
                s.send(PING)
                sel.modify(s, selectors.EVENT_READ, "waiting")
            else:
                try:
                    data = s.recv(64)
                except (BlockingIOError, InterruptedError):
                    continue
                if not data:
                    print(f"failed {answered} closed-by-proxy", flush=True)
                    sys.exit(1)
                sel.unregister(s)
                answered += 1
                pending_connect -= 1
    print(f"ready {answered}", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    # Hold until stdin closes (the driver exits or closes it) or SIGTERM.
    try:
        while not stop:
            r = sys.stdin.buffer.read1(1) if hasattr(sys.stdin.buffer, "read1") else sys.stdin.read(1)
            if not r:
                break
    except (OSError, ValueError):
        pass
    for s in socks:
        s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("sink")
    a.add_argument("port", type=int)
    b = sub.add_parser("clients")
    b.add_argument("addr")
    b.add_argument("count", type=int)
    b.add_argument("--deadline", type=float, default=60.0)
    args = ap.parse_args()
    if args.cmd == "sink":
        sink(args.port)
    else:
        clients(args.addr, args.count, args.deadline)


if __name__ == "__main__":
    main()
