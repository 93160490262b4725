#!/usr/bin/env bash
# Benchmarks. Results go to stdout; copy them into BENCHMARKS.md.
#
#   ci/bench.sh launch [N]    N (default 200) busybox `true` containers through
#                             runc, the berth shim, and the whole system
#   ci/bench.sh probe [N]     a full real hardware probe, N (default 30) times
#   ci/bench.sh wasm          Wasm plugins: boundary cost per node, load and
#                             instantiate times, memory per plugin; the scale
#                             benchmark (three alternating rounds) with native
#                             FGD, Wasm FGD, and Wasm FGD plus two more Wasm
#                             plugins; openb with native and
#                             Wasm FGD on the four traces
#   ci/bench.sh ha [S] [K] [N] three servers on loopback, beside a 3-member etcd
#                             in the same sitting: write throughput and
#                             commit latency for S seconds (default 10) from
#                             empty and again after N (default 100000) entries,
#                             two rounds alternating the systems, then
#                             K (default 10) leader kills and the time to the
#                             next acknowledged write after each
#   ci/bench.sh health [N] [S] N (default 1000) HTTP health checks at a 1 s
#                             interval against busybox httpd for S (default
#                             20) seconds: the checker's CPU per 1,000
#                             checks/s
#   ci/bench.sh rollout [SIZES] [ROUNDS]  time from `berth run` of a new
#                             version to the rollout's end, busybox httpd on
#                             dynamic ports, one node, surge 25%, readiness
#                             every 1 s; SIZES default 10,100, ROUNDS 2
#   ci/bench.sh net [K]      container start latency with bridge against host
#                             networking (K each, alternating), DNS queries/s
#                             of one agent (dnsperf), and the time from
#                             readiness lost to the name gone
#   ci/bench.sh pull [ROUNDS]  a 100 MiB, 5-layer image from docker-registry on
#                             loopback: Berth's pull cold and warm against
#                             `skopeo copy` (rounds alternating, default 3),
#                             and a task's first start with the image not
#                             yet on the node
#   ci/bench.sh security [ROUNDS] [GROW] [PAIRS]  writes/s (3 servers,
#                             loopback) and the hollow-node scale run with
#                             mutual TLS and ACLs and without, alternating
#   ci/bench.sh web [NODES] [METRICS_NODES]  the dashboard's overview and node
#                             page at NODES (default 10000) hollow nodes,
#                             /metrics at NODES and at METRICS_NODES (default
#                             1000), and GET /v1/tasks?app= against gRPC
#                             ListTasks (reads/s, alternating)
#   ci/bench.sh classes [ARGS]  node classes: berth sim scale with every
#                             feasible node scored, once per class against
#                             node by node and --sample 50 (native, three
#                             class-pure Wasm plugins, every node distinct),
#                             same decisions digest; openb, every trace and
#                             policy, same columns (ci/bench/classes.py)
#   ci/bench.sh scale [--json] [--pairs 1000x50000,5000x100000]
#                             three servers and hollow nodes on loopback:
#                             apps of 1,000 instances, time to all running,
#                             server CPU and peak RSS, heartbeat p99, nodes
#                             marked down
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
    wasm)
        ci/setup.sh
        cargo build --release --locked -p berth-cli -p berth-plugins -p berth-wasm --example boundary
        w=$(ls -td target/release/build/berth-plugins-*/out | head -1)
        b=target/release/berth
        echo "boundary: $(target/release/examples/boundary 10000)"
        filter="filter:$w/label-filter.wasm:{\"key\":\"numa.count\",\"allow\":[\"1\",\"2\",\"4\",\"8\"]}"
        # Three rounds, the pipelines alternating: this VM's speed drifts
        # by ±20% between runs, so compare within a round.
        for round in 1 2 3; do
            for extra in "" "--wasm-plugin $w/fgd.wasm" "--wasm-plugin $w/fgd.wasm --extra-plugin $filter --extra-plugin score:$w/binpack.wasm" "--wasm-plugin $w/fgd.wasm --extra-plugin $filter --extra-plugin score:$w/fgd.wasm:workload"; do
                # shellcheck disable=SC2086
                echo "scale round $round ${extra:-native}: $($b sim scale --nodes 10000 --tasks 100000 --sample 50 --policy fgd $extra --json | tr -d '\n ')"
            done
        done
        data=../shared/benchmarks/openb/data
        for t in default gpushare40 multigpu30 gpuspec20; do
            for extra in "" "--wasm-plugin $w/fgd.wasm"; do
                start=$(date +%s.%N)
                # shellcheck disable=SC2086
                cols=$($b sim openb --trace "$data/openb_pod_list_$t.csv" --policy fgd --seeds 42-51 $extra --json | tr -d '\n ')
                echo "openb $t ${extra:+wasm}: $cols $(echo "$(date +%s.%N) - $start" | bc) s"
            done
        done
        ;;
    web)
        ci/setup.sh
        cargo build --release --locked -p berth-cli
        python3 ci/bench/web.py --berth target/release/berth --nodes "${2:-10000}"
        python3 ci/bench/web.py --berth target/release/berth --nodes "${3:-1000}" \
            --rounds 2 --base-port 7971
        ;;
    security)
        # The cost of mutual TLS and ACL checks: writes/s on three servers
        # (loopback) and the hollow-node scale run, each with and without
        # them in the same sitting, alternating.
        ci/setup.sh
        cargo build --release --locked -p berth-cli
        python3 ci/bench/ha.py --berth target/release/berth --security --no-etcd \
            --grow "${3:-20000}" --kills 0 --rounds "${2:-3}"
        python3 ci/bench/scale.py --berth target/release/berth --security \
            --pairs "${4:-1000x20000,1000x20000}"
        ;;
    ha)
        ci/setup.sh
        # The peer: Debian's etcd, started by the harness on its own ports
        # (the packaged service, where systemd starts it, is stopped).
        if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server etcd-client >/dev/null
            systemctl disable --now etcd >/dev/null 2>&1 || true
        fi
        cargo build --release --locked -p berth-cli
        python3 ci/bench/ha.py --berth target/release/berth --seconds "${2:-10}" --kills "${3:-10}" --grow "${4:-100000}"
        ;;
    health)
        ci/setup.sh
        cargo build --release --locked -p berth-agent --example checks
        www=$(mktemp -d)
        echo ok > "$www/index.html"
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        busybox httpd -f -p "127.0.0.1:$port" -h "$www" &
        httpd=$!
        trap 'kill $httpd; rm -rf "$www"' EXIT
        sleep 0.5
        target/release/examples/checks "$port" "${2:-1000}" "${3:-20}"
        ;;
    rollout)
        ci/setup.sh
        cargo build --release --locked -p berth-cli
        python3 ci/bench/rollout.py --berth target/release/berth --sizes "${2:-10,100}" --rounds "${3:-2}"
        ;;
    net)
        ci/setup.sh
        command -v dnsperf >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dnsperf >/dev/null
        cargo build --release --locked -p berth-cli
        python3 ci/bench/net.py --berth target/release/berth -k "${2:-30}"
        ;;
    pull)
        ci/setup.sh
        cargo build --release --locked -p berth-cli
        python3 ci/bench/pull.py --berth target/release/berth --rounds "${2:-3}"
        ;;
    classes)
        ci/setup.sh
        cargo build --release --locked -p berth-cli -p berth-plugins
        shift
        python3 ci/bench/classes.py --berth target/release/berth \
            --plugins "$(ls -td target/release/build/berth-plugins-*/out | head -1)" "$@"
        ;;
    scale)
        ci/setup.sh
        cargo build --release --locked -p berth-cli
        shift
        python3 ci/bench/scale.py --berth target/release/berth "$@"
        ;;
    *)
        echo "usage: ci/bench.sh launch|probe|wasm|ha|health|rollout|net|pull|classes|scale [ARGS]" >&2
        exit 2
        ;;
esac
