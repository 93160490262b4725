#!/usr/bin/env bash
# Installs what Berth needs to build, run and test on Debian (as root), if
# it is missing. Safe to run again: it only installs what is absent.
set -euo pipefail

pkgs=(
    pkg-config libseccomp-dev   # libcontainer
    libhwloc-dev libudev-dev    # hostprobe (hwloc)
    busybox-static umoci jq     # the demo image (ci/make-demo-image.sh)
    curl                        # the demo check
    runc                        # the launch benchmark's peer
    iproute2 procps             # tests: pgrep/pkill, ip
    iptables                    # tests: partitions between servers on loopback
    containernetworking-plugins # bridge networking: CNI bridge, host-local, portmap, loopback
    dnsutils                    # tests: dig against the agents' DNS
    docker-registry apache2-utils skopeo   # tests: a real registry with TLS and htpasswd; the pull benchmark's peer
    e2fsprogs                   # sized volumes: mkfs.ext4 on loop files
    clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32   # Wasm plugins in C (plugins/, berth plugin build)
)
# What only the tests need (ci/test.sh passes --test): a real browser for
# the dashboard, a real Prometheus, Python for schemathesis.
if [[ "${1:-}" == --test ]]; then
    pkgs+=(chromium chromium-driver prometheus python3-venv)
fi
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "ci/setup.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
    echo "ci/setup.sh: cargo is not installed; install Rust (rustup) first" >&2
    exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "ci/setup.sh: Berth runs containers and must run as root" >&2
    exit 1
fi
