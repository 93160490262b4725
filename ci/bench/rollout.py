#!/usr/bin/env python3
"""Rollout benchmark: the time from `berth run` of a new version to the
end of its rolling deployment, with real containers on one node.

For each N: `berth dev` on a fresh data dir; N busybox httpd instances on
dynamic ports with HTTP readiness (interval 1 s), `max_surge: 25%`,
`max_unavailable: 0`, `min_ready_time: 0`; version 1 is run and waited
for, then version 2 (a changed environment) is run and waited for: that
second `berth run` is what is timed (it returns when the deployment has
succeeded). Rounds alternate the sizes. Prints a Markdown table.
"""

import argparse
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SPEC = """name: web
image: busybox:latest
instances: {n}
restart: always
resources: {{cpu: 0.01, memory: 16Mi}}
stop_grace: 1s
ports: [{{name: http, host: 0}}]
env: {{LABEL: {label}}}
command: [/bin/sh, -c, 'mkdir -p /w; echo $LABEL > /w/index.html; exec httpd -f -p $BERTH_PORT_HTTP -h /w']
ready: {{http: {{port: http}}, interval: 1s, timeout: 500ms}}
update: {{max_surge: 25%, max_unavailable: 0, min_ready_time: 0s, deadline: 10m}}
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def one(berth, n, image):
    data = tempfile.mkdtemp(prefix="berth-rollout-")
    env = dict(os.environ, BERTH_DATA_DIR=data, BERTH_ADDR=f"127.0.0.1:{free_port()}")
    log = open(os.path.join(data, "dev.log"), "w")
    dev = subprocess.Popen([berth, "dev"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        for _ in range(300):
            if b"ready" in subprocess.run([berth, "nodes"], env=env, capture_output=True).stdout:
                break
            time.sleep(0.1)
        # Into the node's store, through its agent.
        subprocess.run([berth, "image", "import", image], env=env, check=True, stdout=subprocess.DEVNULL)

        def run(label):
            path = os.path.join(data, f"{label}.yaml")
            with open(path, "w") as f:
                f.write(SPEC.format(n=n, label=label))
            t = time.monotonic()
            r = subprocess.run([berth, "run", "-f", path], env=env, capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"berth run {label} (N={n}) failed: {r.stderr}")
            return time.monotonic() - t

        first = run("one")
        second = run("two")
        subprocess.run([berth, "rm", "web"], env=env, capture_output=True)
        for _ in range(600):
            out = subprocess.run([berth, "ps", "--json"], env=env, capture_output=True, text=True).stdout
            if out.strip().startswith("[]"):
                break
            time.sleep(0.1)
        return first, second
    finally:
        dev.terminate()
        try:
            dev.wait(timeout=20)
        except subprocess.TimeoutExpired:
            dev.kill()
        subprocess.run(["pkill", "-9", "-f", data])
        shutil.rmtree(data, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", required=True)
    ap.add_argument("--sizes", default="10,100")
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    image = os.path.join(tempfile.mkdtemp(prefix="berth-image-"), "demo")
    subprocess.run([os.path.join(REPO, "ci/make-demo-image.sh"), image, os.path.join(REPO, "examples/hello/www")],
                   check=True, stdout=subprocess.DEVNULL)
    sizes = [int(s) for s in a.sizes.split(",")]
    print(f"machine: {platform.node()}, {os.cpu_count()} cpus; {time.strftime('%Y-%m-%d')}")
    print("| round | instances | first deploy (s) | rolling update (s) |")
    print("|---|---|---|---|")
    for r in range(a.rounds):
        order = sizes if r % 2 == 0 else list(reversed(sizes))
        for n in order:
            first, second = one(a.berth, n, image)
            print(f"| {r + 1} | {n} | {first:.1f} | {second:.1f} |", flush=True)


if __name__ == "__main__":
    main()
