#!/usr/bin/env bash
# Runs the whole system on this machine: a private ClickHouse, a collector,
# and an agent shipping sample logs that a writer keeps appending. Installs
# what is missing, prints where to look, and stops everything on Ctrl-C or
# SIGTERM. ClickHouse is Debian's 18.16, or 26.9 with LOGFERRY_CLICKHOUSE=26.9.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
generation="${LOGFERRY_CLICKHOUSE:-18.16}"
case "$generation" in
  18.16) ;;
  26.9) setup_chdb ;;
  *) echo "run-local: LOGFERRY_CLICKHOUSE is '$generation'; use 18.16 or 26.9" >&2; exit 2 ;;
esac

cargo build --release --workspace --bins --locked
bin="$CARGO_TARGET_DIR/release"
home="${LOGFERRY_HOME:-$PWD/.logferry-local}"
mkdir -p "$home"/{clickhouse,logs,agent}
http_port=18123 tcp_port=19000 ingest_port=14320 push_port=14317 api_port=18080 query_port=14321 metrics_port=19464

for port in $http_port $tcp_port $ingest_port $push_port $api_port $query_port $metrics_port; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "run-local: port $port is already in use (another logferry or ClickHouse?); stop it first" >&2
    exit 1
  fi
done

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; echo "stopped"; }
trap cleanup EXIT
trap "exit 130" INT TERM

if [ "$generation" = 26.9 ]; then
  "$LOGFERRY_CHDB_PYTHON" tests/clickhouse/serve26.py "$home/clickhouse" $http_port $tcp_port \
    >"$home/clickhouse/stdout.txt" 2>&1 &
else
  clickhouse-server --config-file=/etc/clickhouse-server/config.xml -- \
    --path="$home/clickhouse/data/" --tmp_path="$home/clickhouse/tmp/" \
    --user_files_path="$home/clickhouse/user_files/" --format_schema_path="$home/clickhouse/fs/" \
    --http_port=$http_port --tcp_port=$tcp_port --interserver_http_port=19009 \
    --logger.log="$home/clickhouse/log.txt" --logger.errorlog="$home/clickhouse/err.txt" \
    >"$home/clickhouse/stdout.txt" 2>&1 &
fi
pids+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$http_port/ping" >/dev/null && break; sleep 0.2; done

# Local only, on loopback: plain text, said explicitly as the collector
# requires. Production configs name a certificate (deploy/collector.toml).
cat >"$home/collector.toml" <<TOML
[ingest]
listen = "127.0.0.1:$ingest_port"
[api]
http_listen = "127.0.0.1:$api_port"
grpc_listen = "127.0.0.1:$query_port"
[tls]
plaintext = true
[clickhouse]
url = "http://127.0.0.1:$http_port"
database = "logferry"
TOML
api="http://127.0.0.1:$api_port"
"$bin/logferry-collector" --config "$home/collector.toml" >"$home/collector.log" 2>&1 &
pids+=($!)

# The first admin: bootstrap once, with a random password kept in a
# private file (there is no default password).
if [ ! -s "$home/admin-password" ]; then
  (umask 077; head -c 18 /dev/urandom | base64 >"$home/admin-password")
  "$bin/logferry-collector" --config "$home/collector.toml" bootstrap --username admin --tenant local \
    <"$home/admin-password"
fi
password="$(cat "$home/admin-password")"
for _ in $(seq 1 100); do
  token="$(curl -sf "$api/api/v1/auth/login" --data-urlencode username=admin --data-urlencode "password=$password" \
    | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')" && [ -n "$token" ] && break
  sleep 0.2
done
# The agent ships with its own credential, into tenant "local".
if [ ! -s "$home/agent.token" ]; then
  (umask 077; curl -sf "$api/api/v1/agents" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' -d '{"name": "local-agent", "tenant": "local"}' \
    | sed -n 's/.*"secret":"\([^"]*\)".*/\1/p' >"$home/agent.token")
fi
cat >"$home/agent.toml" <<TOML
data_dir = "$home/agent"
[[sources]]
name = "app"
include = ["$home/logs/*.log"]
service = "fast-users-api"
[push]
listen = "127.0.0.1:$push_port"
[metrics]
listen = "127.0.0.1:$metrics_port"
[forward]
endpoints = ["http://127.0.0.1:$ingest_port"]
token_file = "$home/agent.token"
TOML
"$bin/logferry-agent" --config "$home/agent.toml" >"$home/agent.log" 2>&1 &
pids+=($!)
"$bin/sample-writer" "$home/logs/app.log" 50 &
pids+=($!)

cat <<EOF_INFO

logferry is running (Ctrl-C stops everything):
  sample logs     $home/logs/app.log   (50 lines/s)
  agent           $home/agent.toml, log $home/agent.log, gRPC push on 127.0.0.1:$push_port
  collector       $home/collector.toml, log $home/collector.log, ingest on 127.0.0.1:$ingest_port
  query API       $api/docs (interactive), $api/api/v1/openapi.json, gRPC on 127.0.0.1:$query_port
  admin login     user admin, password in $home/admin-password
  ClickHouse      $generation, http://127.0.0.1:$http_port  (native port $tcp_port)

Search and tail through the API:
  token=\$(curl -s $api/api/v1/auth/login --data-urlencode username=admin --data-urlencode "password=\$(cat $home/admin-password)" | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
  curl -s -G -H "Authorization: Bearer \$token" $api/api/v1/logs/search --data-urlencode 'q=level:error -path:/health' -d limit=5
  curl -sN -G -H "Authorization: Bearer \$token" $api/api/v1/logs/tail --data-urlencode 'q=status:>=500'

Analytics (error groups, endpoint latency, attacks, users, health):
  curl -s -G -H "Authorization: Bearer \$token" $api/api/v1/logs/errors -d last=1h
  curl -s -G -H "Authorization: Bearer \$token" $api/api/v1/logs/performance -d last=1h
  curl -s -G -H "Authorization: Bearer \$token" $api/api/v1/logs/security -d last=1h
  curl -s -G -H "Authorization: Bearer \$token" $api/api/v1/logs/health

Alerts (the default rules run every 30 s) and metrics:
  curl -s -H "Authorization: Bearer \$token" $api/api/v1/logs/alerts/active
  curl -s -H "Authorization: Bearer \$token" $api/api/v1/logs/alerts/history
  curl -s $api/metrics                        (collector)
  curl -s http://127.0.0.1:$metrics_port/metrics   (agent)
  Grafana dashboards: dashboards/*.json (see the README's Dashboards section)

Or in ClickHouse directly:
  clickhouse-client --port $tcp_port --query "SELECT count() FROM logferry.logs"
  clickhouse-client --port $tcp_port --query "SELECT timestamp, severity_text, http_status, duration_ms, body FROM logferry.logs ORDER BY timestamp DESC LIMIT 10"
  clickhouse-client --port $tcp_port --query "SELECT http_path, count(), quantile(0.95)(duration_ms) FROM logferry.logs GROUP BY http_path"
EOF_INFO
wait
