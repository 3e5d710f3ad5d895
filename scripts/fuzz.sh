#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for SECONDS each (30 by
# default), starting from its corpus in fuzz/corpus/<target>; new inputs go
# to a temporary directory, so the kept corpus changes only by hand. A crash
# stops the run with its input in fuzz/artifacts/<target>/: turn it into a
# regression test where the bug was, then add it to the corpus.
#
# No sanitizer (`-s none`): the code under test forbids `unsafe`, and this
# runs on the stable toolchain. Installs cargo-fuzz when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
if ! command -v cargo-fuzz >/dev/null; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
export CARGO_TARGET_DIR="${LOGFERRY_FUZZ_TARGET_DIR:-/var/tmp/logferry-fuzz-target}"
cd fuzz
for target in $(cargo fuzz list); do
  work="$(mktemp -d)"
  echo "== fuzz $target for ${seconds}s"
  status=0
  cargo fuzz run -s none "$target" "$work" "corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$work.log" 2>&1 || status=$?
  grep -E "^stat::(number_of_executed_units|peak_rss_mb)" "$work.log" || true
  if [ "$status" != 0 ]; then
    tail -n 60 "$work.log" >&2
    echo "fuzz: $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  rm -rf "$work" "$work.log"
done
