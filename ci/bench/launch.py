#!/usr/bin/env python3
"""Launch benchmark: N busybox `true` containers three ways, in one run.

1. Debian's `runc run` on a bundle, sequentially (the peer).
2. `berth shim` on the same bundle, sequentially (libcontainer, one process
   per container, as the agent runs it).
3. The whole system: one app of N instances submitted to `berth dev`; each
   task's latency is from its creation (first event) to its exit (event),
   read from `berth events`; throughput is N over submit-to-last-exit.

Prints a Markdown report and writes JSON next to it (--json FILE).
"""

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEVNULL = subprocess.DEVNULL


def settle():
    """Drop clean caches before each path. Every container leaves its memory
    cgroup dying until the page cache it charged is reclaimed; hundreds of
    dying cgroups slow cgroup creation for whoever runs next, so without this
    the order of the paths would decide the numbers."""
    subprocess.run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    time.sleep(0.5)


def pct(xs, p):
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1)))))
    return xs[k]


def summary(name, lat_ms, wall_s):
    return {
        "name": name,
        "n": len(lat_ms),
        "median_ms": round(statistics.median(lat_ms), 2),
        "p99_ms": round(pct(lat_ms, 99), 2),
        "per_sec": round(len(lat_ms) / wall_s, 1),
    }


def make_bundle(work, image_dir):
    """A bundle from the demo image: umoci's rootfs + `runc spec` config."""
    bundle = os.path.join(work, "task", "bundle")
    os.makedirs(os.path.dirname(bundle))
    subprocess.run(["umoci", "unpack", "--image", image_dir + ":busybox:latest", bundle],
                   check=True, stdout=DEVNULL)
    os.remove(os.path.join(bundle, "config.json"))
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    cfg_path = os.path.join(bundle, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["process"]["args"] = ["/bin/true"]
    cfg["process"]["terminal"] = False
    cfg["root"] = {"path": os.path.join(bundle, "rootfs"), "readonly": True}
    cfg["linux"]["cgroupsPath"] = "/berth-bench/c"
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    return bundle


def bench_runc(bundle, n, work):
    settle()
    state = os.path.join(work, "runc-state")
    lat = []
    t0 = time.monotonic()
    for i in range(n):
        s = time.monotonic()
        subprocess.run(["runc", "--root", state, "run", "--bundle", bundle, f"r{i}"],
                       check=True, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)
        lat.append((time.monotonic() - s) * 1000)
    return summary("runc run (sequential)", lat, time.monotonic() - t0)


def bench_shim(berth, bundle, n, work):
    settle()
    task_dir = os.path.dirname(bundle)
    state = os.path.join(work, "shim-state")
    run = os.path.join(work, "shim-run")
    lat = []
    t0 = time.monotonic()
    for i in range(n):
        s = time.monotonic()
        subprocess.run([berth, "shim", "--dir", task_dir, "--run", run, "--id", f"s{i}", "--state-root", state],
                       check=True, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)
        lat.append((time.monotonic() - s) * 1000)
        with open(os.path.join(run, "exit.json")) as f:
            code = json.load(f)["code"]
        assert code == 0, f"container exited {code}"
    return summary("berth shim (sequential)", lat, time.monotonic() - t0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_system(berth, image_dir, n, work):
    data = os.path.join(work, "dev")
    env = dict(os.environ, BERTH_DATA_DIR=data, BERTH_ADDR=f"127.0.0.1:{free_port()}", BERTH_LOG="warn")
    dev = subprocess.Popen([berth, "dev"], env=env, stdout=DEVNULL, stderr=open(os.path.join(work, "dev.log"), "w"))
    try:
        for _ in range(200):
            out = subprocess.run([berth, "nodes", "--json"], env=env, capture_output=True)
            if out.returncode == 0 and b'"ready"' in out.stdout:
                break
            time.sleep(0.1)
        subprocess.run([berth, "image", "import", image_dir], env=env, check=True, stdout=DEVNULL)
        first, running, done = {}, {}, {}
        all_done = threading.Event()
        ev = subprocess.Popen([berth, "events", "--tasks", "--app", "bench"], env=env, stdout=subprocess.PIPE, text=True)

        def read():
            for line in ev.stdout:
                now = time.monotonic()
                t = json.loads(line)
                first.setdefault(t["id"], now)
                if t["state"] == "running":
                    running.setdefault(t["id"], now)
                if t["state"] in ("exited", "failed") and t["id"] not in done:
                    done[t["id"]] = (now, t["state"], t["exit_code"])
                    if len(done) == n:
                        all_done.set()

        threading.Thread(target=read, daemon=True).start()
        settle()
        spec = os.path.join(work, "bench.yaml")
        with open(spec, "w") as f:
            f.write(f"name: bench\nimage: busybox:latest\ncommand: [/bin/true]\ninstances: {n}\n"
                    "resources: {cpu: 10m, memory: 32Mi}\nrestart: never\n")
        t0 = time.monotonic()
        subprocess.run([berth, "run", "-f", spec], env=env, check=True, stdout=DEVNULL)
        if not all_done.wait(600):
            raise SystemExit(f"only {len(done)}/{n} tasks exited within 600 s; see {work}/dev.log")
        wall = max(d[0] for d in done.values()) - t0
        bad = [(k, v) for k, v in done.items() if v[1] != "exited" or v[2] != 0]
        assert not bad, f"tasks did not exit 0: {bad[:3]}"
        lat = [(done[k][0] - first[k]) * 1000 for k in done]
        if os.environ.get("BENCH_PHASES"):
            ms = lambda xs: round(statistics.median(xs) * 1000, 1) if xs else None
            print(json.dumps({
                "created_to_running_ms": ms([running[k] - first[k] for k in running]),
                "running_to_exit_ms": ms([done[k][0] - running[k] for k in running]),
                "first_running_after_submit_ms": round((min(running.values()) - t0) * 1000, 1) if running else None,
                "last_running_after_submit_ms": round((max(running.values()) - t0) * 1000, 1) if running else None,
                "seen_running": len(running),
            }), file=sys.stderr)
        ev.kill()
        subprocess.run([berth, "rm", "bench"], env=env, stdout=DEVNULL)
        for _ in range(300):
            out = subprocess.run([berth, "ps", "--json"], env=env, capture_output=True)
            if out.stdout.strip() == b"[]":
                break
            time.sleep(0.1)
        return summary("berth dev, whole system (1 app x N instances)", lat, wall)
    finally:
        dev.kill()
        dev.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", required=True)
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--json")
    ap.add_argument("--only", choices=["runc", "shim", "system"], help="run one path only")
    args = ap.parse_args()
    berth = os.path.abspath(args.berth)
    work = tempfile.mkdtemp(prefix="berth-bench-")
    try:
        image = os.path.join(work, "image")
        subprocess.run([os.path.join(REPO, "ci/make-demo-image.sh"), image], check=True, stdout=DEVNULL)
        if args.only == "system":
            row = bench_system(berth, image, args.n, work)
            print(json.dumps(row))
            return 0
        bundle = make_bundle(work, image)
        if args.only:
            run = bench_runc if args.only == "runc" else lambda b, n, w: bench_shim(berth, b, n, w)
            print(json.dumps(run(bundle, args.n, work)))
            return 0
        rows = [bench_runc(bundle, args.n, work), bench_shim(berth, bundle, args.n, work),
                bench_system(berth, image, args.n, work)]
    finally:
        subprocess.run(["pkill", "-9", "-f", work], stdout=DEVNULL, stderr=DEVNULL)
        with open("/proc/mounts") as f:
            for m in [l.split()[1] for l in f if work in l]:
                subprocess.run(["umount", "-l", m])
        shutil.rmtree(work, ignore_errors=True)
    runc, shim, system = rows
    ratio = shim["median_ms"] / runc["median_ms"]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"Machine: {os.cpu_count()} cores, {cpu}, kernel {platform.release()}; "
          f"{time.strftime('%Y-%m-%d')}; n={args.n}\n")
    print("| path | n | median ms | p99 ms | containers/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['n']} | {r['median_ms']} | {r['p99_ms']} | {r['per_sec']} |")
    print(f"\nshim / runc (median): {ratio:.2f}x (target <= 0.55x)")
    print(f"system throughput: {system['per_sec']} containers/s (target >= 150)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "shim_over_runc": round(ratio, 3)}, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
