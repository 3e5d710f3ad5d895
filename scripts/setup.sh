#!/usr/bin/env bash
# Installs what building and running logferry needs on Debian or Ubuntu,
# skipping what is already there. Sourced by run-local.sh and test.sh.
set -euo pipefail

need=()
command -v clickhouse-server >/dev/null || need+=(clickhouse-server)
command -v clickhouse-client >/dev/null || need+=(clickhouse-client)
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v cc >/dev/null || need+=(build-essential)
command -v curl >/dev/null || need+=(curl)
# promtool checks the collector's /metrics in the tests.
command -v promtool >/dev/null || need+=(prometheus)
# RocksDB's bindings are generated with bindgen, which needs libclang.
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
if ((${#need[@]})); then
  echo "setup: installing ${need[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] || {
    echo "setup: installing Rust with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
  }
  export PATH="$HOME/.cargo/bin:$PATH"
fi
# Keep build artefacts outside the clone so that a fresh clone reuses them
# (RocksDB's C++ alone takes minutes); override to build elsewhere.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/logferry-target}"
