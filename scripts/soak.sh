#!/usr/bin/env bash
# The soak run (issue: never stall, never lose): `soak` for MINUTES (120 by
# default) at a steady rate with a fault every 10 minutes, then a plot of
# its samples. Outside CI. Extra arguments go to `soak` (see
# tests/src/bin/soak.rs: --rate, --fault-every-s). Writes soak-out/soak.csv,
# soak-out/soak.png and soak-out/summary.txt.
#
#   ./scripts/soak.sh            # 2 hours
#   ./scripts/soak.sh 20 --rate 5000
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
minutes="${1:-120}"
shift || true
out="${SOAK_OUT:-$PWD/soak-out}"
mkdir -p "$out"

# matplotlib for the plot, in a venv of its own.
venv=/var/tmp/logferry-plot
if ! "$venv/bin/python" -c "import matplotlib" 2>/dev/null; then
  echo "== installing matplotlib into $venv"
  make_venv "$venv"
  "$venv/bin/pip" install --quiet matplotlib
fi
if [ "${LOGFERRY_CLICKHOUSE:-18.16}" = 26.9 ]; then setup_chdb; fi

# --bins: `--bin soak` would narrow the whole build to that one binary.
cargo build --release --locked --bins -p logferry-e2e -p logferry-agent -p logferry-collector
status=0
"$CARGO_TARGET_DIR/release/soak" --minutes "$minutes" --out "$out" "$@" | tee "$out/summary.txt" || status=$?
"$venv/bin/python" scripts/soak-plot.py "$out/soak.csv" "$out/soak.png"
echo "plot: $out/soak.png"
exit "$status"
