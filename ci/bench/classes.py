#!/usr/bin/env python3
"""Node classes (issue 18): every feasible node scored, once per class
against node by node, in the same sitting.

1. `berth sim scale` (N nodes, T tasks, default policy): by class, node by
   node (`--per-node`, the scan before classes) and `--sample 50`; the
   same with the three Wasm plugins of `ci/bench.sh wasm` (FGD as the
   policy, a label filter and a binpack scorer, each `class-pure`); and a
   cluster where every node differs (`--distinct-nodes`). Each pair must
   give the same decisions digest. Rounds alternate the order.
2. `berth sim openb`: every trace x every policy, by class and node by
   node: the same columns, and the time of each.

Prints one JSON object per run, then a summary.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import time


def run(berth, args):
    start = time.time()
    out = subprocess.run([berth, "sim", *args, "--json"], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out), time.time() - start


def scale(berth, label, args):
    r, wall = run(berth, ["scale", *args])
    keep = {k: r.get(k) for k in ("placements_per_sec", "p50_us", "p99_us", "placed", "failed",
                                  "gpu_alloc_pct", "classes", "decisions_digest", "wall_s")}
    keep["run"] = label
    print(json.dumps(keep), flush=True)
    return keep


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", default="target/release/berth")
    ap.add_argument("--nodes", type=int, default=10000)
    ap.add_argument("--tasks", type=int, default=100000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--plugins", help="directory of the built plugins (fgd.wasm, ...)")
    ap.add_argument("--openb", default="../shared/benchmarks/openb/data")
    ap.add_argument("--skip-openb", action="store_true")
    a = ap.parse_args()
    size = ["--nodes", str(a.nodes), "--tasks", str(a.tasks)]
    w = a.plugins
    wasm = [
        "--policy", "fgd", "--wasm-plugin", f"{w}/fgd.wasm", "--wasm-class-pure",
        "--extra-plugin",
        f'filter:{w}/label-filter.wasm:{{"key":"numa.count","allow":["1","2","4","8"]}}:class-pure',
        "--extra-plugin", f"score:{w}/binpack.wasm:class-pure",
    ]
    pairs = [
        ("default", size, size + ["--per-node"]),
        ("wasm", size + wasm, size + wasm + ["--per-node"]),
        ("distinct", size + ["--distinct-nodes"], size + ["--distinct-nodes", "--per-node"]),
    ]
    ok = True
    for rnd in range(a.rounds):
        for name, classed, plain in pairs:
            order = [("by-class", classed), ("per-node", plain)]
            if rnd % 2:
                order.reverse()
            got = {label: scale(a.berth, f"{name} {label}", args) for label, args in order}
            same = got["by-class"]["decisions_digest"] == got["per-node"]["decisions_digest"]
            ok &= same
            print(json.dumps({
                "pair": name, "round": rnd + 1, "same_decisions": same,
                "speedup": round(got["by-class"]["placements_per_sec"]
                                 / max(got["per-node"]["placements_per_sec"], 1), 2),
            }), flush=True)
        scale(a.berth, "default sample 50", size + ["--sample", "50"])
    if not a.skip_openb:
        traces = sorted(glob.glob(os.path.join(a.openb, "openb_pod_list_*.csv")))
        policies = ["random", "bestfit", "dotprod", "gpupacking", "fgd", "default"]
        for t in traces:
            for p in policies:
                base = ["openb", "--trace", t, "--policy", p, "--seeds", "42-51"]
                c, tc = run(a.berth, base)
                n, tn = run(a.berth, base + ["--per-node"])
                same = c["columns"] == n["columns"]
                ok &= same
                print(json.dumps({
                    "openb": os.path.basename(t), "policy": p, "same_columns": same,
                    "by_class_s": round(tc, 2), "per_node_s": round(tn, 2),
                    "col130": c["columns"].get("130"),
                }), flush=True)
    print(json.dumps({"all_same": ok}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
