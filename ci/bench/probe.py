#!/usr/bin/env python3
"""Probe benchmark: time a full real hardware probe (hwloc with I/O devices,
NVML, sysfs) on this machine. Runs `berth probe --timings` N times; reports
the in-process time per backend and in total, and the wall time of the
whole command (process start included)."""

import argparse
import os
import platform
import statistics
import subprocess
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", required=True)
    ap.add_argument("-n", type=int, default=30)
    args = ap.parse_args()
    per, totals, walls = {}, [], []
    for _ in range(args.n):
        t0 = time.monotonic()
        out = subprocess.run([args.berth, "probe", "--timings", "--json"], capture_output=True, text=True, check=True)
        walls.append((time.monotonic() - t0) * 1000)
        total = 0.0
        for line in out.stderr.splitlines():
            name, _, ms = line.partition(": ")
            if ms.endswith(" ms"):
                v = float(ms[:-3])
                per.setdefault(name, []).append(v)
                total += v
        totals.append(total)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"Machine: {os.cpu_count()} cores, {cpu}, kernel {platform.release()}; {time.strftime('%Y-%m-%d')}; n={args.n}\n")
    print("| what | median ms | p95 ms |")
    print("|---|---|---|")
    q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]
    for name, xs in per.items():
        print(f"| {name} | {statistics.median(xs):.1f} | {q(xs, 0.95):.1f} |")
    print(f"| full probe (in process) | {statistics.median(totals):.1f} | {q(totals, 0.95):.1f} |")
    print(f"| `berth probe --json` (wall, process included) | {statistics.median(walls):.1f} | {q(walls, 0.95):.1f} |")
    print(f"\ntarget: full probe <= 200 ms")


if __name__ == "__main__":
    main()
