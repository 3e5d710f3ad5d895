#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit and property tests,
# and the end-to-end tests against private ClickHouse servers. Installs
# what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

# A real country database for the GeoIP test (GeoLite2 data, CC BY-SA 4.0,
# as packaged by ip-location-db on npm), fetched once and cached.
geoip_dir=/var/tmp/logferry-geoip
geoip_version=2.3.2026061719
export LOGFERRY_GEOIP_MMDB="$geoip_dir/$geoip_version/geolite2-country.mmdb"
if [ ! -s "$LOGFERRY_GEOIP_MMDB" ]; then
  echo "== fetching the GeoLite2 country database ($geoip_version)"
  mkdir -p "$geoip_dir/$geoip_version"
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "@ip-location-db/geolite2-country-mmdb@$geoip_version" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$geoip_dir/$geoip_version" --strip-components=1 package/geolite2-country.mmdb
  rm -rf "$tmp"
fi

# ClickHouse 26.9 for the tests beside Debian's 18.16 (see setup.sh).
setup_chdb

# The workplace's real log samples and labelled requests, for the quality
# test (not in the repository: their licences restrict redistribution).
if [ -z "${LOGFERRY_DATA:-}" ]; then
  for d in "$PWD/../shared/data" /work/shared/data; do
    if [ -d "$d/loghub" ]; then export LOGFERRY_DATA="$d"; break; fi
  done
fi
echo "== quality data: ${LOGFERRY_DATA:-not found; the quality test will measure nothing}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --release --workspace --all-targets --locked -- -D warnings
echo "== build (the end-to-end tests run the real binaries)"
cargo build --release --workspace --bins --locked
echo "== tests (ClickHouse 18.16)"
LOGFERRY_CLICKHOUSE=18.16 cargo test --release --workspace --locked --no-fail-fast
echo "== fuzzing: every cargo-fuzz target for 30 s from its corpus"
scripts/fuzz.sh 30
echo "== end-to-end tests again (ClickHouse 26.9)"
LOGFERRY_CLICKHOUSE=26.9 cargo test --release -p logferry-e2e --locked --no-fail-fast
echo "== scripts/run-local.sh, driven as the README tells a newcomer to (both generations)"
tests/run-local-test.sh
