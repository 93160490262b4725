#!/usr/bin/env python3
"""Pull benchmark: a 100 MiB, 5-layer image from Debian's docker-registry
on loopback, pulled by Berth's registry client (what an agent runs) and
copied by `skopeo copy` in the same sitting, rounds alternating.

- cold: an empty store (Berth: fetch, verify and unpack every layer;
  skopeo: fetch and write every blob into an OCI layout, no unpacking);
- warm: the same store again by tag (manifest fetched, layers cached);
- first start: `berth dev` with the image not on the node: time from
  `berth run` to the task running, against a second app using the image
  once it is there.

Each layer is 20 MiB of random bytes (gzip does not shrink it). Prints
Markdown tables.
"""

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def sh(cmd, **kw):
    subprocess.run(cmd, shell=True, check=True, **kw)


def build_image(work):
    """A 5-layer OCI layout of 100 MiB (20 MiB of random bytes per layer)."""
    layout = os.path.join(work, "big")
    sh(f"umoci init --layout {layout} && umoci new --image {layout}:1", stdout=subprocess.DEVNULL)
    for i in range(5):
        d = os.path.join(work, f"l{i}")
        os.makedirs(d)
        with open(os.path.join(d, f"blob{i}"), "wb") as f:
            f.write(os.urandom(20 << 20))
        tar = os.path.join(work, f"l{i}.tar")
        sh(f"tar -C {d} -cf {tar} .")
        sh(f"umoci raw add-layer --image {layout}:1 {tar}", stdout=subprocess.DEVNULL)
    return layout


def start_registry(work):
    port = free_port()
    storage = os.path.join(work, "registry")
    os.makedirs(storage)
    cfg = os.path.join(work, "registry.yml")
    with open(cfg, "w") as f:
        f.write(f"version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {storage}}}}}\n"
                f"http: {{addr: '127.0.0.1:{port}'}}\n")
    proc = subprocess.Popen(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(work, "registry.log"), "w"))
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, f"127.0.0.1:{port}"


def timed(cmd, env=None):
    t = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    return time.monotonic() - t


def drop_caches():
    subprocess.run(["sync"])
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass


def first_start(berth, host, image, work):
    data = os.path.join(work, "dev")
    env = dict(os.environ, BERTH_DATA_DIR=data, BERTH_ADDR=f"127.0.0.1:{free_port()}",
               BERTH_DNS_LISTEN="off", BERTH_NODE_SUBNETS="10.251.0.0/16",
               BERTH_INSECURE_REGISTRIES=host)
    dev = subprocess.Popen([berth, "dev"], env=env, stdout=subprocess.DEVNULL,
                           stderr=open(os.path.join(work, "dev.log"), "w"))
    try:
        for _ in range(300):
            if b"ready" in subprocess.run([berth, "nodes"], env=env, capture_output=True).stdout:
                break
            time.sleep(0.1)
        # `app:1` is busybox plus the five random layers: 101 MiB to pull.
        out = {}
        for name in ["cold", "warm"]:
            spec = os.path.join(work, f"{name}.yaml")
            with open(spec, "w") as f:
                f.write(f"name: {name}\nimage: {host}/{image}\nrestart: never\n"
                        "command: [/bin/sleep, '3600']\n")
            t = time.monotonic()
            subprocess.run([berth, "run", "--detach", "-f", spec], env=env, check=True, capture_output=True)
            while True:
                ps = json.loads(subprocess.run([berth, "ps", "--json"], env=env, capture_output=True,
                                               text=True).stdout or "[]")
                t2 = [x for x in ps if x["app"] == name]
                if t2 and t2[0]["state"] in ("running", "exited", "failed"):
                    out[name] = (time.monotonic() - t, t2[0]["state"], t2[0]["message"])
                    break
                if time.monotonic() - t > 120:
                    raise SystemExit(f"{name}: no start in 120 s: {t2}")
                time.sleep(0.02)
        return out
    finally:
        dev.terminate()
        try:
            dev.wait(timeout=20)
        except subprocess.TimeoutExpired:
            dev.kill()
        subprocess.run(["pkill", "-9", "-f", data])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="berth-pull-")
    reg = None
    try:
        layout = build_image(work)
        reg, host = start_registry(work)
        ins = ["--insecure-registry", host]
        subprocess.run([a.berth, "image", "push", layout, f"{host}/big:1", *ins], check=True,
                       stdout=subprocess.DEVNULL)
        # The same 100 MiB with busybox under it, for the first-start test.
        demo = os.path.join(work, "demo")
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        sh(f"{repo}/ci/make-demo-image.sh {demo} >/dev/null")
        for i in range(5):
            sh(f"umoci raw add-layer --image {demo}:busybox:latest {work}/l{i}.tar", stdout=subprocess.DEVNULL)
        subprocess.run([a.berth, "image", "push", demo, f"{host}/app:1", "--name", "busybox:latest", *ins],
                       check=True, stdout=subprocess.DEVNULL)
        print(f"machine: {platform.node()}, {os.cpu_count()} cpus; {time.strftime('%Y-%m-%d')}")
        print("| round | skopeo copy, cold (s) | berth pull, cold (s) | ratio | berth pull, warm (ms) |")
        print("|---|---|---|---|---|")
        cold_b, cold_s, warm_b = [], [], []
        for r in range(a.rounds):
            dst = os.path.join(work, f"sk{r}")
            drop_caches()
            s = timed(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                       f"docker://{host}/big:1", f"oci:{dst}:1"])
            store = os.path.join(work, f"st{r}")
            drop_caches()
            b = timed([a.berth, "image", "pull-local", f"{host}/big:1", "--store", store, *ins])
            w = timed([a.berth, "image", "pull-local", f"{host}/big:1", "--store", store, *ins])
            cold_s.append(s)
            cold_b.append(b)
            warm_b.append(w)
            print(f"| {r + 1} | {s:.2f} | {b:.2f} | {b / s:.2f} | {w * 1000:.0f} |")
            shutil.rmtree(dst, ignore_errors=True)
            shutil.rmtree(store, ignore_errors=True)
        print(f"\nmedian: skopeo {statistics.median(cold_s):.2f} s, berth cold "
              f"{statistics.median(cold_b):.2f} s ({statistics.median(cold_b) / statistics.median(cold_s):.2f}x), "
              f"berth warm {statistics.median(warm_b) * 1000:.0f} ms "
              "(the warm time includes the CLI process start)")
        fs = first_start(a.berth, host, "app:1", work)
        print("\n| first start | seconds | state |")
        print("|---|---|---|")
        for k, (t, state, _msg) in fs.items():
            print(f"| {k} (image {'not ' if k == 'cold' else ''}on the node) | {t:.2f} | {state} |")
    finally:
        if reg:
            reg.terminate()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
