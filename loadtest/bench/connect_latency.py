#!/usr/bin/env python3
"""Connect latency of one client, one connection at a time, as an application sees it.

    connect_latency.py HOST PORT COUNT

For each of COUNT connections (sequential, so nothing queues behind anything else): the time of
`connect(2)` (the kernel's three-way handshake on loopback; a steered socket also runs the
cgroup connect hook here) and the time from `connect` to the first reply of a Redis `PING`
(which, through a proxy, includes the proxy's accept and its own connect to the server). Prints
one JSON object of percentiles in microseconds. Bounded: COUNT connections, 5 s per operation.
"""
import json
import socket
import statistics
import sys
import time


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    connect_us, reply_us = [], []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(5)
        t0 = time.perf_counter_ns()
        s.connect((host, port))
        t1 = time.perf_counter_ns()
        s.sendall(b"PING\r\n")
        got = b""
        while not got.endswith(b"\r\n"):
            chunk = s.recv(64)
            if not chunk:
                sys.exit(f"connection closed before PING's reply (got {got!r})")
            got += chunk
        t2 = time.perf_counter_ns()
        s.close()
        if got != b"+PONG\r\n":
            sys.exit(f"unexpected reply to PING: {got!r}")
        connect_us.append((t1 - t0) / 1000)
        reply_us.append((t2 - t0) / 1000)
    print(json.dumps({
        "connect_p50_us": statistics.median(connect_us),
        "connect_p99_us": pct(connect_us, 99),
        "first_reply_p50_us": statistics.median(reply_us),
        "first_reply_p99_us": pct(reply_us, 99),
    }))


if __name__ == "__main__":
    main()
