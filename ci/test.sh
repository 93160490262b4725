#!/usr/bin/env bash
# Installs what is missing and runs every test: unit, integration and
# end-to-end (real containers through libcontainer; needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
ci/setup.sh --test
export CARGO_TERM_COLOR=never
cargo fmt --all --check
cargo build --workspace --all-targets --locked
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked -- --test-threads=2
