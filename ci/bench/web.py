#!/usr/bin/env python3
"""The operator's window (issue 17), real processes on loopback.

Three `berth server`s (mutual TLS, ACLs) and hollow nodes (`berth agent
--hollow N` with the cpu-2s fixture, plus one hollow DGX H100 node holding
tasks on GPUs), with apps of T tasks placed across them. Measured:

1. The dashboard's pages at N nodes: the overview (`/ui/` and the API calls
   its script makes: `/v1/overview`, `/v1/namespaces`) and the DGX node's
   page (`/v1/nodes/NAME`): server time (curl's time to first byte after
   the TLS handshake; the median of R requests) and bytes.
2. `/metrics` on the leader: server time and bytes (same method).
3. `GET /v1/tasks?app=X` against `Control.ListTasks(app=X)`, for an app of
   1,000 instances and one of 20, through one
   client (`berth loadgen --read-tasks X --via http|grpc`: tonic's HTTP/2
   channel with TLS and the token, each answer decoded), alternating
   which goes first, C concurrent readers for S seconds each: reads/s and
   their ratio.

Prints one JSON object per measurement.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

from ha import Berth, stop


def stats(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def hollow(berth, env, root, name, n, inventory):
    stats_file = os.path.join(root, f"{name}.json")
    p = subprocess.Popen(
        [berth, "agent", "--hollow", str(n), "--inventory", inventory,
         "--node-name", name, "--stats", stats_file],
        env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(root, f"{name}.log"), "wb"))
    deadline = time.time() + 300
    while stats(stats_file).get("registered", 0) < n:
        if time.time() > deadline:
            raise SystemExit(f"{name}: only {stats(stats_file).get('registered')} of {n} registered")
        time.sleep(0.2)
    return p, stats_file


def curl(pki, addr, path, token=True):
    """(server seconds, bytes, HTTP status) of one GET."""
    args = ["curl", "-s", "-o", "/dev/null", "--cacert", os.path.join(pki.dir, "ca.pem"),
            "-w", "%{time_pretransfer} %{time_starttransfer} %{time_total} %{size_download} %{http_code}"]
    if token:
        with open(os.path.join(pki.dir, "token")) as f:
            args += ["-H", f"Authorization: Bearer {f.read().strip()}"]
    out = subprocess.run(args + [f"https://{addr}{path}"], capture_output=True, text=True).stdout.split()
    pre, first, total, size, code = float(out[0]), float(out[1]), float(out[2]), int(out[3]), int(out[4])
    return first - pre, total - pre, size, code


def page(pki, addr, paths, reps):
    """Median server time (to first byte and to the last), and bytes, of a
    page made of `paths`."""
    per = []
    for p in paths:
        samples = [curl(pki, addr, p) for _ in range(reps)]
        codes = {s[3] for s in samples}
        if codes != {200}:
            raise SystemExit(f"{p}: HTTP {codes}")
        per.append({
            "path": p,
            "first_byte_ms": round(statistics.median(s[0] for s in samples) * 1000, 1),
            "complete_ms": round(statistics.median(s[1] for s in samples) * 1000, 1),
            "bytes": samples[-1][2],
        })
    return {
        "paths": per,
        "first_byte_ms": round(sum(x["first_byte_ms"] for x in per), 1),
        "complete_ms": round(sum(x["complete_ms"] for x in per), 1),
        "bytes": sum(x["bytes"] for x in per),
    }


def reads(berth, env, app, via, conc, secs):
    out = subprocess.run([berth, "loadgen", "--read-tasks", app, "--via", via,
                          "--concurrency", str(conc), "--seconds", str(secs)],
                         env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"loadgen {via}: {out.stderr}")
    r = json.loads(out.stdout)
    if r["failed"]:
        raise SystemExit(f"loadgen {via}: {r['failed']} reads failed")
    return r


def run(a):
    root = tempfile.mkdtemp(prefix="berth-bench-web-")
    cluster = Berth(a.berth, root, a.base_port)
    env = cluster.env(BERTH_ADDR=cluster.addrs)
    procs = []
    try:
        cluster.start()
        leader = f"127.0.0.1:{cluster.ports[cluster.leader()]}"
        env1 = cluster.env(BERTH_ADDR=leader)
        p, _ = hollow(a.berth, env, root, "hollow", a.nodes, "cpu-2s")
        procs.append(p)
        p, dgx_stats = hollow(a.berth, env, root, "dgx", 1, "dgx-h100")
        procs.append(p)
        # Tasks: the app read in part 3, and GPU tasks on the DGX.
        specs = {
            "bench": f"name: bench\nimage: busybox:latest\ninstances: {a.tasks}\n"
                     "resources: {cpu: 10m, memory: 16Mi}\n",
            "small": f"name: small\nimage: busybox:latest\ninstances: {a.small}\n"
                     "resources: {cpu: 10m, memory: 16Mi}\n",
            "train": "name: train\nimage: busybox:latest\ninstances: 2\n"
                     "resources: {memory: 64Mi, gpus: {count: 4, model: [H100]}}\n",
        }
        for name, spec in specs.items():
            path = os.path.join(root, f"{name}.yaml")
            with open(path, "w") as f:
                f.write(spec)
            subprocess.run([a.berth, "run", "-d", "-f", path], env=env, check=True,
                           stdout=subprocess.DEVNULL)
        deadline = time.time() + 120
        while True:
            tasks = json.loads(subprocess.run([a.berth, "ps", "--json"], env=env,
                                              capture_output=True, text=True).stdout or "[]")
            if sum(1 for t in tasks if t["node"]) >= a.tasks + a.small + 2:
                break
            if time.time() > deadline:
                raise SystemExit("tasks were not placed")
            time.sleep(0.5)
        time.sleep(2)
        ui = ["/ui/", "/ui/app.js", "/ui/hardware.js", "/ui/style.css"]
        assets = sum(curl(cluster.pki, leader, p, token=False)[2] for p in ui)
        overview = page(cluster.pki, leader, ["/v1/overview", "/v1/namespaces"], a.reps)
        node = page(cluster.pki, leader, ["/v1/nodes/dgx-0"], a.reps)
        metrics = page(cluster.pki, leader, ["/metrics"], a.reps)
        for name, r in [("overview", overview), ("node page (DGX)", node), ("/metrics", metrics)]:
            print(json.dumps({"measure": name, "nodes": a.nodes + 1, "tasks": a.tasks + a.small + 2,
                              "static_assets_bytes": assets, **r}))
        # Reads of a large and a small app: alternate which surface goes first.
        for app, size in [("bench", a.tasks), ("small", a.small)]:
            rounds = []
            for i in range(a.rounds):
                order = ["http", "grpc"] if i % 2 == 0 else ["grpc", "http"]
                got = {via: reads(a.berth, env1, app, via, a.concurrency, a.seconds) for via in order}
                rounds.append(got)
                print(json.dumps({"measure": f"GET /v1/tasks?app={app} vs ListTasks", "round": i,
                                  "order": order, "tasks_in_app": size,
                                  "http_reads_per_sec": got["http"]["writes_per_sec"],
                                  "grpc_reads_per_sec": got["grpc"]["writes_per_sec"],
                                  "http_p50_ms": got["http"]["p50_ms"], "grpc_p50_ms": got["grpc"]["p50_ms"],
                                  "ratio": round(got["http"]["writes_per_sec"] / got["grpc"]["writes_per_sec"], 3)}))
            h = sum(r["http"]["writes_per_sec"] for r in rounds)
            g = sum(r["grpc"]["writes_per_sec"] for r in rounds)
            print(json.dumps({"measure": "reads ratio over rounds", "tasks_in_app": size,
                              "http_over_grpc": round(h / g, 3)}))
    finally:
        for p in procs:
            p.kill()
        stop(cluster)
        shutil.rmtree(root, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", required=True)
    ap.add_argument("--nodes", type=int, default=10000)
    ap.add_argument("--tasks", type=int, default=1000, help="instances of the app read in part 3")
    ap.add_argument("--small", type=int, default=20, help="instances of the small app read in part 3")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--base-port", type=int, default=7951)
    run(ap.parse_args())


if __name__ == "__main__":
    main()
