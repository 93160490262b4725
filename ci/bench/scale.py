#!/usr/bin/env python3
"""Control plane at scale (issue 12), real processes on loopback.

Three `berth server`s and one process of hollow nodes (`berth agent
--hollow N`: each node registers the cpu-2s fixture, heartbeats at the
pace the servers set, holds its assignment stream and reports its tasks
running). Apps of 1,000 instances of {cpu: 10m, memory: 16Mi} are submitted
one after another; the clock runs from the first submit until the hollow
nodes have seen every task committed as running.

Prints one JSON object per (nodes, tasks) pair: seconds_to_all_running,
tasks_per_sec, per-server CPU seconds and peak RSS, leader_peak_rss_mib,
heartbeat_p99_ms (round trip, as the nodes saw it) and nodes_marked_down
(how many times the leader marked a node down).
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

from ha import Berth, stop

HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def stats(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def run(berth, nodes, tasks, per_app, timeout, base_port, secure=True):
    root = tempfile.mkdtemp(prefix="berth-bench-scale-")
    cluster = Berth(berth, root, base_port, secure=secure)
    env = cluster.env(BERTH_ADDR=cluster.addrs)
    hollow = None
    try:
        cluster.start()
        procs = cluster.procs
        stats_file = os.path.join(root, "hollow.json")
        hollow = subprocess.Popen(
            [berth, "agent", "--hollow", str(nodes), "--inventory", "cpu-2s",
             "--node-name", "hollow", "--stats", stats_file],
            env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(root, "hollow.log"), "wb"),
        )
        deadline = time.time() + 120
        while stats(stats_file).get("registered", 0) < nodes:
            if time.time() > deadline:
                raise SystemExit(f"only {stats(stats_file).get('registered')} of {nodes} nodes registered")
            time.sleep(0.2)
        time.sleep(2)
        cpu0 = [cpu_seconds(p.pid) for p in procs]
        specs = []
        for a in range(tasks // per_app):
            path = os.path.join(root, f"app{a}.yaml")
            with open(path, "w") as f:
                f.write(f"name: scale-{a}\nimage: busybox:latest\ninstances: {per_app}\n"
                        "resources: {cpu: 10m, memory: 16Mi}\n")
            specs.append(path)
        t0 = time.time()
        for path in specs:
            subprocess.run([berth, "run", "-f", path], env=env, check=True,
                           stdout=subprocess.DEVNULL)
        submitted = time.time() - t0
        while stats(stats_file).get("running", 0) < tasks:
            if time.time() - t0 > timeout:
                break
            time.sleep(0.05)
        elapsed = time.time() - t0
        s = stats(stats_file)
        leader = cluster.leader()
        cpu = [round(cpu_seconds(p.pid) - c, 1) for p, c in zip(procs, cpu0)]
        rss = [round(peak_rss_mib(p.pid)) for p in procs]
        downs = 0
        for d in cluster.dirs:
            with open(os.path.join(d, "server.log"), errors="replace") as f:
                downs += sum(1 for line in f if "node status changed" in line and "down" in line)
        return {
            "nodes": nodes,
            "tasks": tasks,
            "servers": 3,
            "running": s.get("running", 0),
            "seconds_to_all_running": round(elapsed, 2),
            "seconds_to_submit": round(submitted, 2),
            "tasks_per_sec": round(s.get("running", 0) / elapsed),
            "server_cpu_seconds": cpu,
            "server_peak_rss_mib": rss,
            "leader_peak_rss_mib": rss[leader],
            "heartbeat_p99_ms": s.get("heartbeat_p99_ms"),
            "heartbeat_max_ms": s.get("heartbeat_max_ms"),
            "heartbeats": s.get("heartbeats"),
            "stream_reconnects": s.get("reconnects"),
            "nodes_marked_down": downs,
        }
    finally:
        if hollow:
            hollow.kill()
        stop(cluster)
        shutil.rmtree(root, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", required=True)
    ap.add_argument("--pairs", default="1000x50000,5000x100000",
                    help="comma-separated NODESxTASKS")
    ap.add_argument("--per-app", type=int, default=1000)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--json", action="store_true", help="one JSON object per pair")
    ap.add_argument("--security", action="store_true",
                    help="run each pair with TLS and ACLs and without, alternating")
    a = ap.parse_args()
    runs = []
    for i, pair in enumerate(a.pairs.split(",")):
        nodes, tasks = (int(x) for x in pair.split("x"))
        modes = [True, False] if a.security else [True]
        runs += [(nodes, tasks, i, m) for m in (modes if i % 2 == 0 else modes[::-1])]
    for nodes, tasks, i, secure in runs:
        r = run(a.berth, nodes, tasks, a.per_app, a.timeout, 7861 + 10 * i, secure)
        r["system"] = "berth" if secure else "berth-insecure"
        if a.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{r['system']}: {nodes} nodes x {tasks} tasks: {r['running']} running after "
                  f"{r['seconds_to_all_running']} s ({r['tasks_per_sec']}/s); server CPU "
                  f"{r['server_cpu_seconds']} s; peak RSS {r['server_peak_rss_mib']} MiB "
                  f"(leader {r['leader_peak_rss_mib']}); heartbeat p99 {r['heartbeat_p99_ms']} ms; "
                  f"nodes marked down {r['nodes_marked_down']}", flush=True)


if __name__ == "__main__":
    main()
