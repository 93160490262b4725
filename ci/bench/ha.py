#!/usr/bin/env python3
"""Replicated control plane benchmark (issue 6), real processes on loopback.

1. Throughput and commit latency: three `berth server`s, `berth loadgen`
   with C concurrent writers for S seconds (each write an app with no
   instances, acknowledged once committed by a quorum and applied).
2. Failover: a lighter load runs while the leader is killed with SIGKILL
   K times (and restarted); for each kill, the time until the next
   acknowledged write.

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


def start(berth, i, dirs, ports, join):
    args = [berth, "server", "--listen", f"127.0.0.1:{ports[i]}", "--data-dir", dirs[i]]
    args += ["--join", f"127.0.0.1:{ports[join]}"] if join is not None else ["--bootstrap"]
    log = open(os.path.join(dirs[i], "server.log"), "ab")
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)


def members(berth, addrs):
    try:
        out = subprocess.run(
            [berth, "server", "members", "--json"],
            env={**os.environ, "BERTH_ADDR": addrs},
            capture_output=True,
            text=True,
            timeout=3,
        )
    except subprocess.TimeoutExpired:
        return None
    return json.loads(out.stdout) if out.returncode == 0 else None


def leader_of(berth, ports):
    """The index of the server that says it leads, in the highest term."""
    for _ in range(100):
        views = [(members(berth, f"127.0.0.1:{p}"), i) for i, p in enumerate(ports)]
        leaders = [(m["term"], i) for m, i in views if m and m.get("role") == "leader"]
        if leaders:
            return max(leaders)[1]
        time.sleep(0.1)
    raise SystemExit("no leader")


def wait_members(berth, addrs, n):
    for _ in range(200):
        m = members(berth, addrs)
        if m and len(m["members"]) == n and m["leader"]:
            return m
        time.sleep(0.1)
    raise SystemExit("cluster did not form")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", required=True)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--kills", type=int, default=10)
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="berth-bench-ha-")
    ports = [7851, 7852, 7853]
    dirs = [os.path.join(root, f"s{i}") for i in range(3)]
    for d in dirs:
        os.makedirs(d)
    addrs = ",".join(f"127.0.0.1:{p}" for p in ports)
    procs = [start(a.berth, 0, dirs, ports, None)]
    time.sleep(1)
    for i in (1, 2):
        procs.append(start(a.berth, i, dirs, ports, 0))
        wait_members(a.berth, addrs, i + 1)
    env = {**os.environ, "BERTH_ADDR": addrs}
    try:
        out = subprocess.run(
            [a.berth, "loadgen", "--concurrency", str(a.concurrency),
             "--seconds", str(a.seconds), "--prefix", "tput"],
            env=env, capture_output=True, text=True, check=True,
        )
        sizes = [round(sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(d)
                           for f in fs) / (1 << 20), 1) for d in dirs]
        print(json.dumps({"measure": "throughput", "servers": 3, **json.loads(out.stdout),
                          "data_dir_mib": sizes}))

        acks = os.path.join(root, "acks.txt")
        load = subprocess.Popen(
            [a.berth, "loadgen", "--concurrency", "8", "--seconds",
             str(a.kills * 3 + 3), "--prefix", "fail", "--acks", acks],
            env=env, stdout=subprocess.PIPE, text=True,
        )
        kills = []
        time.sleep(1.5)
        for _ in range(a.kills):
            i = leader_of(a.berth, ports)
            procs[i].send_signal(signal.SIGKILL)
            procs[i].wait()
            # Counted from its death: answers it was already sending do not
            # count as the cluster serving again.
            kills.append(time.time())
            time.sleep(0.5)
            procs[i] = start(a.berth, i, dirs, ports, (i + 1) % 3)
            time.sleep(2.5)
        summary = json.loads(load.communicate()[0])
        times = [float(x) for x in open(acks)]
        gaps = []
        for k in kills:
            nxt = next((t for t in times if t > k), None)
            if nxt is not None:
                gaps.append(nxt - k)
        gaps.sort()
        print(json.dumps({
            "measure": "failover",
            "kills": len(kills),
            "to_next_ack_ms": {
                "min": round(gaps[0] * 1e3), "median": round(gaps[len(gaps) // 2] * 1e3),
                "max": round(gaps[-1] * 1e3),
            },
            "writes": summary["writes"], "failed": summary["failed"],
        }))
    finally:
        for p in procs:
            p.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
