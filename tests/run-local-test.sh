#!/usr/bin/env bash
# Drives scripts/run-local.sh the way the README tells a newcomer to: starts
# it, waits for what it prints, runs the printed login, search, analytics
# and ClickHouse commands and checks that they show the sample logs, then
# stops it (Ctrl-C to its process group, then SIGTERM to the script alone)
# and checks that no process it started is left. Runs on both ClickHouse
# generations; the second start of each reuses the first one's state.
set -euo pipefail
cd "$(dirname "$0")/.."

run() {
  local generation="$1" signal="$2" home="$3"
  local out="$home/run-local.out" pid
  fail() {
    echo "run-local test ($generation, SIG$signal): $*" >&2
    echo "--- what run-local.sh printed:" >&2
    tail -40 "$out" >&2
    for f in collector.log agent.log; do
      [ -f "$home/$f" ] && { echo "--- $f:" >&2; tail -20 "$home/$f" >&2; }
    done
    pkill -KILL -f -- "$home" 2>/dev/null || true
    exit 1
  }
  # Job control: the script runs in its own process group, with SIGINT
  # not ignored, as from a terminal.
  set -m
  LOGFERRY_CLICKHOUSE="$generation" LOGFERRY_HOME="$home" scripts/run-local.sh >"$out" 2>&1 &
  pid=$!
  set +m
  # The first start may build everything.
  for _ in $(seq 1 3600); do
    grep -q "^logferry is running" "$out" && break
    kill -0 "$pid" 2>/dev/null || fail "exited before it was running"
    sleep 0.5
  done
  grep -q "^logferry is running" "$out" || fail "not running after 30 minutes"

  local token_cmd search_cmd
  token_cmd="$(grep -m1 '^  token=' "$out")" || fail "no login command printed"
  eval "$token_cmd"
  [ -n "${token:-}" ] && [ "${#token}" -gt 20 ] || fail "the printed login gave no token"

  # The printed search (errors, not /health) finds sample lines once the
  # agent has shipped some.
  search_cmd="$(grep -m1 'api/v1/logs/search' "$out")" || fail "no search command printed"
  local found=""
  for _ in $(seq 1 120); do
    found="$(eval "$search_cmd")"
    echo "$found" | grep -q '"service":"fast-users-api"' && break
    sleep 0.5
  done
  echo "$found" | grep -q '"service":"fast-users-api"' || fail "the printed search found no sample line: $found"
  echo "$found" | grep -q '"severity":"ERROR"' || fail "the printed search is for errors: $found"

  # The printed analytics and alert commands answer, and the endpoint
  # report has the sample's routes.
  local cmd code n=0
  while read -r cmd; do
    code="$(eval "$cmd -o '$home/answer.json' -w '%{http_code}'")"
    [ "$code" = 200 ] || fail "HTTP $code from: $cmd: $(cat "$home/answer.json")"
    grep -q '^[{[]' "$home/answer.json" || fail "not JSON from: $cmd"
    case "$cmd" in
      *logs/performance*) grep -q '"/api/' "$home/answer.json" || fail "no sample routes from: $cmd: $(cat "$home/answer.json")" ;;
    esac
    n=$((n + 1))
  done < <(grep -E 'api/v1/logs/(errors|performance|security|health|alerts/active)' "$out")
  [ "$n" -ge 5 ] || fail "ran $n of the printed analytics and alert commands, expected 5"

  local count
  count="$(eval "$(grep -m1 'SELECT count() FROM logferry.logs' "$out")")"
  [ "${count:-0}" -gt 0 ] || fail "the printed ClickHouse count is '$count'"

  if [ "$signal" = INT ]; then
    kill -INT -- "-$pid"   # Ctrl-C: the whole foreground process group
  else
    kill -TERM "$pid"      # kill, systemd: the script alone
  fi
  for _ in $(seq 1 120); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  kill -0 "$pid" 2>/dev/null && fail "still running 30 s after SIG$signal"
  wait "$pid" || true
  grep -q "^stopped" "$out" || fail "did not say it stopped"
  local left
  left="$(pgrep -a -f -- "$home" || true)"
  [ -z "$left" ] || fail "left behind: $left"
  echo "run-local test ($generation, SIG$signal): ok, $count rows; nothing left running"
}

for generation in 18.16 26.9; do
  home="$(mktemp -d /tmp/logferry-run-local-XXXXXX)"
  run "$generation" INT "$home"
  run "$generation" TERM "$home"
  rm -rf "$home"
done
