#!/usr/bin/env bash
# Benchmarks. Results go to stdout; copy them into BENCHMARKS.md.
#
#   ci/bench.sh launch [N]    N (default 200) busybox `true` containers through
#                             runc, the berth shim, and the whole system
#   ci/bench.sh probe [N]     a full real hardware probe, N (default 30) times
set -euo pipefail
cd "$(dirname "$0")/.."
case ${1:-} in
    launch)
        ci/setup.sh
        cargo build --release --locked -p berth-cli
        python3 ci/bench/launch.py --berth target/release/berth -n "${2:-200}"
        ;;
    probe)
        ci/setup.sh
        cargo build --release --locked -p berth-cli
        python3 ci/bench/probe.py --berth target/release/berth -n "${2:-30}"
        ;;
    *)
        echo "usage: ci/bench.sh launch|probe [N]" >&2
        exit 2
        ;;
esac
