#!/usr/bin/env bash
# Installs what is missing and runs every test: unit, integration and
# end-to-end (real containers through libcontainer; needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
ci/setup.sh --test
# schemathesis (PyPI) for the OpenAPI test, in a venv of its own.
if [[ ! -x target/venv/bin/schemathesis ]]; then
    python3 -m venv target/venv
    target/venv/bin/pip install -q schemathesis==4.32.5
fi
export CARGO_TERM_COLOR=never
cargo fmt --all --check
cargo build --workspace --all-targets --locked
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked -- --test-threads=2
