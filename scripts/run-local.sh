#!/usr/bin/env bash
# Runs the whole system on this machine: a private ClickHouse, a collector,
# and an agent shipping sample logs that a writer keeps appending. Installs
# what is missing, prints where to look, and stops everything on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

cargo build --release --workspace --bins --locked
bin="$CARGO_TARGET_DIR/release"
home="${LOGFERRY_HOME:-$PWD/.logferry-local}"
mkdir -p "$home"/{clickhouse,logs,agent}
http_port=18123 tcp_port=19000 ingest_port=14320 push_port=14317

for port in $http_port $tcp_port $ingest_port $push_port; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "run-local: port $port is already in use (another logferry or ClickHouse?); stop it first" >&2
    exit 1
  fi
done

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; echo "stopped"; }
trap cleanup EXIT
trap "exit 130" INT TERM

clickhouse-server --config-file=/etc/clickhouse-server/config.xml -- \
  --path="$home/clickhouse/data/" --tmp_path="$home/clickhouse/tmp/" \
  --user_files_path="$home/clickhouse/user_files/" --format_schema_path="$home/clickhouse/fs/" \
  --http_port=$http_port --tcp_port=$tcp_port --interserver_http_port=19009 \
  --logger.log="$home/clickhouse/log.txt" --logger.errorlog="$home/clickhouse/err.txt" \
  >"$home/clickhouse/stdout.txt" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$http_port/ping" >/dev/null && break; sleep 0.2; done

cat >"$home/collector.toml" <<TOML
[ingest]
listen = "127.0.0.1:$ingest_port"
[clickhouse]
url = "http://127.0.0.1:$http_port"
database = "logferry"
TOML
cat >"$home/agent.toml" <<TOML
data_dir = "$home/agent"
[[sources]]
name = "app"
include = ["$home/logs/*.log"]
service = "fast-users-api"
[push]
listen = "127.0.0.1:$push_port"
[forward]
endpoints = ["http://127.0.0.1:$ingest_port"]
TOML
"$bin/logferry-collector" --config "$home/collector.toml" >"$home/collector.log" 2>&1 &
pids+=($!)
"$bin/logferry-agent" --config "$home/agent.toml" >"$home/agent.log" 2>&1 &
pids+=($!)
"$bin/sample-writer" "$home/logs/app.log" 50 &
pids+=($!)

cat <<EOF_INFO

logferry is running (Ctrl-C stops everything):
  sample logs     $home/logs/app.log   (50 lines/s)
  agent           $home/agent.toml, log $home/agent.log, gRPC push on 127.0.0.1:$push_port
  collector       $home/collector.toml, log $home/collector.log, ingest on 127.0.0.1:$ingest_port
  ClickHouse      http://127.0.0.1:$http_port  (native port $tcp_port)

Look at the logs as they arrive:
  clickhouse-client --port $tcp_port --query "SELECT count() FROM logferry.logs"
  clickhouse-client --port $tcp_port --query "SELECT timestamp, severity_text, http_status, duration_ms, body FROM logferry.logs ORDER BY timestamp DESC LIMIT 10"
  clickhouse-client --port $tcp_port --query "SELECT http_path, count(), quantile(0.95)(duration_ms) FROM logferry.logs GROUP BY http_path"
EOF_INFO
wait
