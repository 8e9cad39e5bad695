#!/usr/bin/env python3
"""Failover between clusters, with real processes (not in CI; see bench/README.md).

A client sidecar in cluster `east` calls `api`, which has endpoints in `east` and `west`: each
endpoint is a `weft demo-app` behind its own `weft-proxy` sidecar, all on 127.0.0.1. CONNS client
connections (HTTP/1.1 keep-alive, one thread each) call `api` back to back. Each round:

  1. steady state: every answer comes from east;
  2. `kill -9` of every east endpoint (its app and its sidecar), at t0;
  3. measured per connection: failed requests from t0 on, the time from t0 to its first answer
     from west, and the time from t0 to the end of its last answer that was not from west
     (after that, everything it sent was served by west);
  4. the east endpoints are started again on the same ports; measured: the time until every
     connection is answered by east again (bounded below by the ejection time, 30 s by default).

    bench/failover.py [--bin target/release] [--conns 8] [--rounds 3]

Prints a Markdown table per round and a summary.
"""

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, deadline=20.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on 127.0.0.1:{port} after {deadline}s")


class Endpoint:
    def __init__(self, name, cluster, work, tls, bin_dir):
        self.name, self.cluster, self.work, self.tls, self.bin = name, cluster, work, tls, bin_dir
        self.app_port, self.inbound_port = free_port(), free_port()
        self.procs = []

    def start(self):
        cfg = os.path.join(self.work, f"{self.name}.yaml")
        with open(cfg, "w") as f:
            f.write(
                f'identity: {{ cert: "{self.tls}/api.pem", key: "{self.tls}/api-key.pem", bundle: "{self.tls}/bundle.pem" }}\n'
                f'admin: {{ listen: "127.0.0.1:0" }}\ncluster: {self.cluster}\n'
                f'inbound: {{ listen: "127.0.0.1:{self.inbound_port}", ports: [{{ port: {self.app_port} }}] }}\n'
            )
        log = open(os.path.join(self.work, f"{self.name}.log"), "a")
        self.procs = [
            subprocess.Popen(
                [f"{self.bin}/weft", "demo-app", "--name", self.name, "--listen", f"127.0.0.1:{self.app_port}"],
                stdout=log, stderr=log,
            ),
            subprocess.Popen([f"{self.bin}/weft-proxy", "run", "--config", cfg], stdout=log, stderr=log),
        ]
        wait_port(self.app_port)
        wait_port(self.inbound_port)

    def kill9(self):
        for p in self.procs:
            os.kill(p.pid, signal.SIGKILL)
        for p in self.procs:
            p.wait()


class Conn(threading.Thread):
    """One keep-alive client connection sending requests back to back."""

    def __init__(self, port, stop):
        super().__init__(daemon=True)
        self.port, self.stop = port, stop
        self.log = []  # (start, end, app or None, error or None)
        self.lock = threading.Lock()

    def run(self):
        c = None
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                if c is None:
                    c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                c.request("GET", "/", headers={"Host": "api"})
                r = c.getresponse()
                body = r.read()
                if r.status == 200:
                    rec = (start, time.monotonic(), json.loads(body)["app"], None)
                else:
                    rec = (start, time.monotonic(), None, f"{r.status} {r.getheader('x-weft-error')}")
            except Exception as e:  # a closed connection counts as a failed request
                rec = (start, time.monotonic(), None, type(e).__name__)
                c = None
            with self.lock:
                self.log.append(rec)

    def since(self, t0):
        with self.lock:
            return [r for r in self.log if r[1] >= t0]


def wait_until(what, deadline, check):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.01)
    sys.exit(f"timed out after {deadline}s waiting for: {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release")
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per-cluster", type=int, default=2)
    ap.add_argument("--outlier", default="", help="extra outlier_detection fields, e.g. 'base_ejection_time: 5s'")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="weft-failover.")
    tls = os.path.join(work, "tls")
    run = lambda *cmd: subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    run(f"{a.bin}/weft", "tls", "ca-create", "--dir", f"{tls}/ca")
    for sa in ("web", "api"):
        run(f"{a.bin}/weft", "tls", "cert-create", "--ca-dir", f"{tls}/ca", "--namespace", "default",
            "--service-account", sa, "--out", tls)
    eps = [Endpoint(f"{c}-{i}", c, work, tls, a.bin) for c in ("east", "west") for i in range(a.per_cluster)]
    for e in eps:
        e.start()
    h1 = free_port()
    lines = "".join(
        f'      - {{ address: "127.0.0.1:{e.app_port}", proxy: "127.0.0.1:{e.inbound_port}", '
        f'identity: "spiffe://cluster.local/ns/default/sa/api", cluster: {e.cluster} }}\n'
        for e in eps
    )
    cfg = os.path.join(work, "client.yaml")
    with open(cfg, "w") as f:
        f.write(
            f'identity: {{ cert: "{tls}/web.pem", key: "{tls}/web-key.pem", bundle: "{tls}/bundle.pem" }}\n'
            f'admin: {{ listen: "127.0.0.1:0" }}\ncluster: east\n'
            f'outbound: {{ upstreams: [{{ listen: "127.0.0.1:{h1}", service: api }}] }}\n'
            f"outlier_detection: {{ {a.outlier} }}\n"
            f"services:\n  - name: api\n    endpoints:\n{lines}"
        )
    client = subprocess.Popen([f"{a.bin}/weft-proxy", "run", "--config", cfg],
                              stdout=open(os.path.join(work, "client.log"), "w"), stderr=subprocess.STDOUT)
    wait_port(h1)
    stop = threading.Event()
    conns = [Conn(h1, stop) for _ in range(a.conns)]
    for c in conns:
        c.start()
    east = [e for e in eps if e.cluster == "east"]
    summary = []
    try:
        for rnd in range(1, a.rounds + 1):
            t = time.monotonic()
            wait_until("every connection served by east", 60,
                       lambda: all(sum(1 for r in c.since(t) if r[2] and r[2].startswith("east")) >= 20 for c in conns))
            t0 = time.monotonic()
            for e in east:
                e.kill9()
            wait_until("every connection served by west", 60,
                       lambda: all(sum(1 for r in c.since(t0) if r[2] and r[2].startswith("west")) >= 50 for c in conns))
            rows = []
            for i, c in enumerate(conns):
                recs = c.since(t0)
                failed = [r for r in recs if r[3]]
                first_west = next(r[1] for r in recs if r[2] and r[2].startswith("west")) - t0
                not_west = [r for r in recs if not (r[2] and r[2].startswith("west"))]
                last_not_west = (max(r[1] for r in not_west) - t0) if not_west else 0.0
                rows.append((i, len(failed), first_west * 1000, last_not_west * 1000, [r[3] for r in failed]))
            print(f"\n### round {rnd}: kill -9 of every east endpoint\n")
            print("| connection | failed requests | first answer from west (ms after kill) | last answer not from west (ms) | failures |")
            print("|---|---|---|---|---|")
            for i, f, fw, lnw, errs in rows:
                print(f"| {i} | {f} | {fw:.1f} | {lnw:.1f} | {', '.join(errs)} |")
            t1 = time.monotonic()
            for e in east:
                e.start()
            started = time.monotonic()
            wait_until("every connection served by east again", 600,
                       lambda: all(any(r[2] and r[2].startswith("east") and r[0] >= started for r in c.since(t1)) for c in conns))
            back = time.monotonic() - started
            print(f"\nEast restarted (ports listening) {started - t1:.2f} s after the restart began; every connection answered by east again {back:.1f} s later.")
            summary.append((max(r[1] for r in rows), max(r[2] for r in rows), statistics.median(r[2] for r in rows),
                            max(r[3] for r in rows), back))
    finally:
        stop.set()
        for c in conns:
            c.join(timeout=35)
        for e in eps:
            for p in e.procs:
                if p.poll() is None:
                    p.kill()
        client.kill()
    print("\n### summary\n")
    print("| round | max failed requests per connection | first west answer, max over connections (ms) | median (ms) | all traffic on west after (ms, max) | back on east after restart (s) |")
    print("|---|---|---|---|---|---|")
    for i, (f, fw_max, fw_med, lnw, back) in enumerate(summary, 1):
        print(f"| {i} | {f} | {fw_max:.1f} | {fw_med:.1f} | {lnw:.1f} | {back:.1f} |")


if __name__ == "__main__":
    main()
