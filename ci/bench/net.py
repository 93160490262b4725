#!/usr/bin/env python3
"""Networking benchmark, one `berth dev` in one sitting:

1. Container start latency, host networking against bridge networking
   (CNI bridge + host-local + portmap), alternating: K single-instance
   apps of each; per task, the time from its creation to `running` as
   `berth events` delivers them (the same clock for both modes).
2. DNS queries per second answered by the node's DNS (`dnsperf`, 10 s,
   A queries for an app of two ready instances).
3. The time from readiness lost (the instance's /ready removed, checks
   every 1 s) to its address gone from the answers (`dig` every 20 ms),
   R times.

Prints a Markdown report.
"""

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import json

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pct(xs, p):
    xs = sorted(xs)
    return xs[max(0, min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1)))))]


class Dev:
    def __init__(self, berth, image):
        self.berth = berth
        self.data = tempfile.mkdtemp(prefix="berth-net-")
        self.env = dict(os.environ, BERTH_DATA_DIR=self.data, BERTH_ADDR=f"127.0.0.1:{free_port()}",
                        BERTH_DNS_LISTEN="off", BERTH_NODE_SUBNETS="10.250.0.0/16")
        self.proc = subprocess.Popen([berth, "dev"], env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.data, "dev.log"), "w"))
        for _ in range(300):
            if "ready" in (self.cli("nodes").stdout or ""):
                break
            time.sleep(0.1)
        subprocess.run([berth, "image", "import", image], env=self.env, check=True, stdout=subprocess.DEVNULL)
        self.seen = {}
        self.events = subprocess.Popen([berth, "events", "--tasks"], env=self.env, stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.events.stdout:
            now = time.monotonic()
            try:
                t = json.loads(line)
            except ValueError:
                continue
            s = self.seen.setdefault(t["id"], {"first": now})
            if t["state"] == "running" and "running" not in s:
                s["running"] = now

    def cli(self, *args):
        return subprocess.run([self.berth, *args], env=self.env, capture_output=True, text=True)

    def run(self, name, yaml):
        path = os.path.join(self.data, f"{name}.yaml")
        with open(path, "w") as f:
            f.write(yaml)
        r = self.cli("run", "--detach", "-f", path)
        if r.returncode != 0:
            raise SystemExit(r.stderr)

    def ps(self):
        return json.loads(self.cli("ps", "--json").stdout or "[]")

    def wait(self, what, pred, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            v = pred()
            if v:
                return v
            time.sleep(0.05)
        raise SystemExit(f"timed out: {what}")

    def close(self):
        for a in {t["app"] for t in self.ps()}:
            self.cli("rm", a)
        try:
            self.wait("tasks gone", lambda: not self.ps(), 60)
        finally:
            self.events.kill()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                print("berth dev did not stop within 20 s of SIGTERM", flush=True)
                self.proc.kill()
            subprocess.run(["pkill", "-9", "-f", self.data])
            shutil.rmtree(self.data, ignore_errors=True)
            # Its bridge (it outlives an agent on purpose).
            out = subprocess.run(["ip", "-br", "addr"], capture_output=True, text=True).stdout
            for line in out.splitlines():
                if line.startswith("berth") and " 10.250.0.1/" in line:
                    subprocess.run(["ip", "link", "del", line.split()[0]])


def starts(dev, k):
    lat = {"host": [], "bridge": []}
    for i in range(k):
        order = ["host", "bridge"] if i % 2 == 0 else ["bridge", "host"]
        for mode in order:
            name = f"{mode}-{i}"
            net = "network: bridge\n" if mode == "bridge" else ""
            dev.run(name, f"name: {name}\nimage: busybox:latest\n{net}stop_grace: 100ms\n"
                          "resources: {cpu: 0.01, memory: 16Mi}\ncommand: [/bin/sleep, '3600']\n")
            tid = dev.wait(f"{name} running", lambda: next(
                (t for t, s in dev.seen.items() if t.startswith(name + "-") and "running" in s), None))
            s = dev.seen[tid]
            lat[mode].append((s["running"] - s["first"]) * 1000)
            dev.cli("rm", name)
            dev.wait(f"{name} gone", lambda: not [t for t in dev.ps() if t["app"] == name])
    return lat


WEB = """name: web
image: busybox:latest
instances: 2
restart: always
stop_grace: 1s
resources: {cpu: 0.01, memory: 16Mi}
ports: [{name: http, container: 8080, host: 0}]
command: [/bin/sh, -c, 'mkdir -p /w; hostname > /w/index.html; echo ok > /w/ready; exec httpd -f -p 8080 -h /w']
ready: {http: {port: http, path: /ready}, interval: 1s, timeout: 500ms, grace: 0s, failures: 1}
"""


def dig(gw, name):
    out = subprocess.run(["dig", "+short", "+time=1", "+tries=1", f"@{gw}", name], capture_output=True, text=True)
    return sorted(out.stdout.split())


def dns(dev, seconds, rounds):
    dev.run("web", WEB)
    web = dev.wait("web ready", lambda: (lambda r: r if len(r) == 2 else None)(
        [t for t in dev.ps() if t["app"] == "web" and t["ready"] and t.get("ip")]))
    ips = sorted(t["ip"] for t in web)
    gw = ips[0].rsplit(".", 1)[0] + ".1"
    dev.wait("names", lambda: dig(gw, "web.default.berth") == ips)
    qps = None
    if shutil.which("dnsperf"):
        qf = os.path.join(dev.data, "queries")
        with open(qf, "w") as f:
            f.write("web.default.berth A\n_http._tcp.web.default.berth SRV\nweb-1-0.default.berth A\n" * 100)
        out = subprocess.run(["dnsperf", "-s", gw, "-d", qf, "-l", str(seconds), "-c", "4", "-T", "2"],
                             capture_output=True, text=True).stdout
        for line in out.splitlines():
            if "Queries per second" in line:
                qps = float(line.split()[-1])
    pid = int(open(os.path.join(
        subprocess.run(["sh", "-c", f"ls -d /run/berth/*/tasks/{web[0]['id']}"], capture_output=True,
                       text=True).stdout.strip(), "init.pid")).read())
    gone = []
    for _ in range(rounds):
        subprocess.run(["nsenter", "-t", str(pid), "-m", "-p", "/bin/sh", "-c", "rm /w/ready"], check=True)
        t0 = time.monotonic()
        dev.wait("name gone", lambda: len(dig(gw, "web.default.berth")) == 1, 30)
        gone.append(time.monotonic() - t0)
        subprocess.run(["nsenter", "-t", str(pid), "-m", "-p", "/bin/sh", "-c", "echo ok > /w/ready"], check=True)
        dev.wait("name back", lambda: dig(gw, "web.default.berth") == ips, 30)
        time.sleep(0.5)
    return qps, gone


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", required=True)
    ap.add_argument("-k", type=int, default=30)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=10)
    a = ap.parse_args()
    image = os.path.join(tempfile.mkdtemp(prefix="berth-image-"), "demo")
    subprocess.run([os.path.join(REPO, "ci/make-demo-image.sh"), image, os.path.join(REPO, "examples/hello/www")],
                   check=True, stdout=subprocess.DEVNULL)
    dev = Dev(a.berth, image)
    try:
        lat = starts(dev, a.k)
        qps, gone = dns(dev, a.seconds, a.rounds)
        report(a, lat, qps, gone)
    finally:
        dev.close()


def report(a, lat, qps, gone):
    print(f"machine: {platform.node()}, {os.cpu_count()} cpus; {time.strftime('%Y-%m-%d')}")
    print("| network | starts | median ms | p99 ms |")
    print("|---|---|---|---|")
    for m in ("host", "bridge"):
        xs = lat[m]
        print(f"| {m} | {len(xs)} | {statistics.median(xs):.1f} | {pct(xs, 99):.1f} |")
    print(f"\nbridge adds {statistics.median(lat['bridge']) - statistics.median(lat['host']):.1f} ms to the median")
    print(f"\nDNS: {qps if qps is not None else 'dnsperf not installed'} queries/s (dnsperf, {a.seconds} s, 4 clients)")
    print(f"readiness lost -> name gone (s, interval 1 s): median {statistics.median(gone):.2f}, "
          f"max {max(gone):.2f}, all {[round(g, 2) for g in gone]}")


if __name__ == "__main__":
    main()
