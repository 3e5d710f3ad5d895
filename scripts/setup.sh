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
# RocksDB's bindings are generated with bindgen, whose clang-sys loads
# `libclang.so` or `libclang-N.so` (unversioned). The stock image has only
# `libclang-cpp.so.14`, which does not count; libclang-dev brings the real one.
have_libclang() {
  local d
  [ -n "${LIBCLANG_PATH:-}" ] && compgen -G "$LIBCLANG_PATH/libclang*.so" >/dev/null && return 0
  for d in /usr/lib/llvm-*/lib /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/lib; do
    [ -e "$d/libclang.so" ] && return 0
    compgen -G "$d/libclang-[0-9]*.so" >/dev/null && return 0
  done
  return 1
}
have_libclang || need+=(libclang-dev)
command -v npm >/dev/null || need+=(npm)
if ((${#need[@]})); then
  echo "setup: installing ${need[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: no Rust toolchain: install Rust stable (1.91 or newer) with rustup, then run this again" >&2
    exit 1
  fi
fi
# Keep build artefacts outside the clone so that a fresh clone reuses them
# (RocksDB's C++ alone takes minutes); override to build elsewhere.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/logferry-target}"

# A new Python virtual environment in $1 (Debian ships venv's pip
# bootstrap separately, as python3-venv).
make_venv() {
  if ! python3 -c "import ensurepip" 2>/dev/null; then
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
  fi
  rm -rf "$1"
  python3 -m venv "$1"
}

# ClickHouse 26.9 beside Debian's 18.16: PyPI's chdb-core (the engine as
# clickhouse-local, which serves real HTTP and native listeners, see
# tests/clickhouse/serve26.py) in a virtual environment outside the clone,
# made once. For the tests, and for run-local.sh with LOGFERRY_CLICKHOUSE=26.9.
setup_chdb() {
  local chdb_venv="${LOGFERRY_CHDB_VENV:-/var/tmp/logferry-chdb}"
  local chdb_version=26.9.0
  if ! "$chdb_venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('chdb-core') != '$chdb_version')" 2>/dev/null; then
    echo "== installing chdb-core $chdb_version (ClickHouse 26.9) into $chdb_venv"
    make_venv "$chdb_venv"
    "$chdb_venv/bin/pip" install -q --no-deps "chdb-core==$chdb_version"
  fi
  export LOGFERRY_CHDB_PYTHON="$chdb_venv/bin/python"
}
