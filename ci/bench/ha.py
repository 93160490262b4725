#!/usr/bin/env python3
"""Replicated control plane benchmark (issues 6 and 12), real processes on
loopback, beside etcd from Debian's `etcd-server` in the same sitting.

1. Writes as the state grows: for each system, alternating which goes
   first in each round, a fresh 3-member cluster; `berth loadgen` with C
   concurrent writers for S seconds from empty (`empty`); writes until
   N entries are applied (`grow`); S seconds more (`full`). Each Berth
   write is an app with no instances, each etcd write a put of a key and
   a value of the same size, both acknowledged once committed by a quorum
   and applied; snapshots at each system's default interval. Reported:
   writes/s and latency of both phases, their ratio, each member's data
   directory and the latest snapshot (Berth: its state-machine bytes;
   etcd: its database).
2. Failover: a lighter load runs while the leader is killed with SIGKILL
   K times (and restarted); for each kill, the time until the next
   acknowledged write.

Berth runs as it does by default, with mutual TLS and ACL tokens on every
call; with --security it also runs `berth-insecure` (plaintext, no
authorization) in the same rounds, for the cost of both.

Prints one JSON object per measurement.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

from pki import Pki


def dir_mib(d):
    total = 0
    for dp, _, fs in os.walk(d):
        for f in fs:
            try:
                total += os.path.getsize(os.path.join(dp, f))
            except OSError:
                pass
    return round(total / (1 << 20), 1)


class Berth:
    def __init__(self, berth, root, base_port=7851, secure=True):
        self.berth = berth
        self.secure = secure
        self.name = "berth" if secure else "berth-insecure"
        self.ports = [base_port, base_port + 1, base_port + 2]
        self.dirs = [os.path.join(root, f"{self.name}{i}") for i in range(3)]
        self.addrs = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        self.procs = [None] * 3
        self.pki = Pki(berth, root) if secure else None

    def env(self, **extra):
        if self.pki:
            return self.pki.env(**extra)
        return {**os.environ, "BERTH_INSECURE": "true", **extra}

    def spawn(self, i, join):
        args = [self.berth, "server", "--listen", f"127.0.0.1:{self.ports[i]}",
                "--data-dir", self.dirs[i]]
        args += ["--join", f"127.0.0.1:{self.ports[join]}"] if join is not None else ["--bootstrap"]
        if self.pki:
            self.pki.issue("server", f"s{i}", "127.0.0.1", self.dirs[i])
        log = open(os.path.join(self.dirs[i], "server.log"), "ab")
        self.procs[i] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log,
                                         env=self.env())

    def members(self, addrs):
        try:
            out = subprocess.run([self.berth, "server", "members", "--json"],
                                 env=self.env(BERTH_ADDR=addrs),
                                 capture_output=True, text=True, timeout=3)
        except subprocess.TimeoutExpired:
            return None
        return json.loads(out.stdout) if out.returncode == 0 else None

    def start(self):
        for d in self.dirs:
            os.makedirs(d)
        self.spawn(0, None)
        time.sleep(1)
        if self.pki:
            self.pki.bootstrap(self.addrs.split(",")[0])
        for i in (1, 2):
            self.spawn(i, 0)
            for _ in range(200):
                m = self.members(self.addrs)
                if m and len(m["members"]) == i + 1 and m["leader"]:
                    break
                time.sleep(0.1)
            else:
                raise SystemExit("berth cluster did not form")

    def leader(self):
        """The index of the server that says it leads, in the highest term."""
        for _ in range(100):
            views = [(self.members(f"127.0.0.1:{p}"), i) for i, p in enumerate(self.ports)]
            leaders = [(m["term"], i) for m, i in views if m and m.get("role") == "leader"]
            if leaders:
                return max(leaders)[1]
            time.sleep(0.1)
        raise SystemExit("no berth leader")

    def restart(self, i):
        self.spawn(i, (i + 1) % 3)

    def loadgen(self):
        return []

    def snapshot_mib(self):
        m = self.members(f"127.0.0.1:{self.ports[self.leader()]}")
        return round(m["snapshot_bytes"] / (1 << 20), 1), m["snapshot"]


class Etcd:
    name = "etcd"

    def env(self, **extra):
        return {**os.environ, **extra}

    def __init__(self, etcd, etcdctl, root):
        self.etcd, self.etcdctl = etcd, etcdctl
        self.client = [12379, 12381, 12383]
        self.peer = [12380, 12382, 12384]
        self.dirs = [os.path.join(root, f"etcd{i}") for i in range(3)]
        self.urls = [f"http://127.0.0.1:{p}" for p in self.client]
        self.cluster = ",".join(f"e{i}=http://127.0.0.1:{p}" for i, p in enumerate(self.peer))
        self.procs = [None] * 3

    def spawn(self, i):
        args = [self.etcd, "--name", f"e{i}", "--data-dir", os.path.join(self.dirs[i], "data"),
                "--listen-client-urls", self.urls[i], "--advertise-client-urls", self.urls[i],
                "--listen-peer-urls", f"http://127.0.0.1:{self.peer[i]}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer[i]}",
                "--initial-cluster", self.cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", "berth-bench", "--logger", "zap"]
        log = open(os.path.join(self.dirs[i], "etcd.log"), "ab")
        self.procs[i] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)

    def status(self):
        try:
            out = subprocess.run([self.etcdctl, "--endpoints", ",".join(self.urls),
                                  "--command-timeout=2s", "endpoint", "status", "-w", "json"],
                                 env={**os.environ, "ETCDCTL_API": "3"},
                                 capture_output=True, text=True, timeout=5)
        except subprocess.TimeoutExpired:
            return []
        try:
            return json.loads(out.stdout)
        except json.JSONDecodeError:
            return []

    def start(self):
        for d in self.dirs:
            os.makedirs(d)
        for i in range(3):
            self.spawn(i)
        self.leader()

    def leader(self):
        for _ in range(200):
            for s in self.status():
                st = s.get("Status", {})
                if st.get("leader") and st["header"]["member_id"] == st["leader"]:
                    return self.urls.index(s["Endpoint"])
            time.sleep(0.1)
        raise SystemExit("no etcd leader")

    def restart(self, i):
        self.spawn(i)

    def loadgen(self):
        first = self.leader()
        return ["--etcd", ",".join(self.urls[first:] + self.urls[:first])]

    def snapshot_mib(self):
        st = [s["Status"] for s in self.status()]
        return round(max(s["dbSize"] for s in st) / (1 << 20), 1), None


def loadgen(a, sys, extra):
    out = subprocess.run([a.berth, "loadgen", "--concurrency", str(a.concurrency)] + extra
                         + sys.loadgen(),
                         env=sys.env(BERTH_ADDR=getattr(sys, "addrs", "")),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def stop(sys):
    for p in sys.procs:
        if p:
            p.kill()
            p.wait()


def writes(a, sys, rnd):
    sys.start()
    try:
        empty = loadgen(a, sys, ["--seconds", str(a.seconds), "--prefix", "empty"])
        grown = loadgen(a, sys, ["--seconds", "900", "--prefix", "grow",
                                 "--total", str(max(a.grow - empty["writes"], 0))])
        _, before = sys.snapshot_mib()
        full = loadgen(a, sys, ["--seconds", str(a.seconds), "--prefix", "full"])
        time.sleep(1)
        snap, snap_index = sys.snapshot_mib()
        dirs = [dir_mib(d) for d in sys.dirs]
        keep = ("writes", "failed", "writes_per_sec", "p50_ms", "p99_ms")
        print(json.dumps({
            "measure": "writes", "system": sys.name, "round": rnd, "concurrency": a.concurrency,
            "empty": {k: empty[k] for k in keep},
            "grow_writes_per_sec": grown["writes_per_sec"],
            "full": {k: full[k] for k in keep},
            "entries_before_full": empty["writes"] + grown["writes"],
            "full_over_empty": round(full["writes_per_sec"] / empty["writes_per_sec"], 3),
            "data_dir_mib": dirs, "snapshot_mib": snap, "snapshot_index": snap_index,
            "snapshot_during_full": None if snap_index is None else snap_index != before,
            "data_dir_over_snapshot": round(max(dirs) / snap, 2) if snap else None,
        }), flush=True)
    finally:
        stop(sys)


def failover(a, sys):
    sys.start()
    try:
        acks = os.path.join(os.path.dirname(sys.dirs[0]), f"acks-{sys.name}.txt")
        load = subprocess.Popen(
            [a.berth, "loadgen", "--concurrency", "8", "--seconds", str(a.kills * 3 + 3),
             "--prefix", "fail", "--acks", acks, "--etcd-timeout-ms", "1000"] + sys.loadgen(),
            env=sys.env(BERTH_ADDR=getattr(sys, "addrs", "")),
            stdout=subprocess.PIPE, text=True)
        kills = []
        time.sleep(1.5)
        for _ in range(a.kills):
            i = sys.leader()
            sys.procs[i].send_signal(signal.SIGKILL)
            sys.procs[i].wait()
            # Counted from its death: answers it was already sending do not
            # count as the cluster serving again.
            kills.append(time.time())
            time.sleep(0.5)
            sys.restart(i)
            time.sleep(2.5)
        summary = json.loads(load.communicate()[0])
        times = [float(x) for x in open(acks)]
        gaps = sorted(nxt - k for k in kills
                      if (nxt := next((t for t in times if t > k), None)) is not None)
        print(json.dumps({
            "measure": "failover", "system": sys.name, "kills": len(kills),
            "to_next_ack_ms": {
                "min": round(gaps[0] * 1e3), "median": round(gaps[len(gaps) // 2] * 1e3),
                "max": round(gaps[-1] * 1e3),
            } if gaps else None,
            "writes": summary["writes"], "failed": summary["failed"],
        }), flush=True)
    finally:
        stop(sys)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", required=True)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--grow", type=int, default=100_000,
                    help="entries applied before the `full` phase")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--etcd", default=shutil.which("etcd"))
    ap.add_argument("--etcdctl", default=shutil.which("etcdctl"))
    ap.add_argument("--security", action="store_true",
                    help="also run Berth without TLS and ACLs, in the same rounds")
    ap.add_argument("--no-etcd", action="store_true")
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="berth-bench-ha-")
    try:
        def systems(sub):
            out = [Berth(a.berth, os.path.join(root, sub))]
            if a.security:
                out.append(Berth(a.berth, os.path.join(root, sub), 7861, secure=False))
            if a.etcd and a.etcdctl and not a.no_etcd:
                out.append(Etcd(a.etcd, a.etcdctl, os.path.join(root, sub)))
            return out
        for rnd in range(1, a.rounds + 1):
            order = systems(f"r{rnd}")
            for sys in order if rnd % 2 else order[::-1]:
                writes(a, sys, rnd)
        if a.kills:
            for sys in systems("failover"):
                failover(a, sys)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
