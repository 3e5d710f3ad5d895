#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit and property tests,
# and the end-to-end tests against private ClickHouse servers. Installs
# what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --release --workspace --all-targets --locked -- -D warnings
echo "== build (the end-to-end tests run the real binaries)"
cargo build --release --workspace --bins --locked
echo "== tests"
cargo test --release --workspace --locked
