#!/usr/bin/env python3
"""Writes the Grafana dashboards in dashboards/ (run from the repository root).

The dashboards are data; this script keeps their shared parts (variables,
filters, data source references) in one place. Edit here, run it, commit
both. tests/tests/dashboards.rs checks the JSON it writes and runs every
panel's SQL against a real ClickHouse.
"""
import json
import os

CH = {"type": "grafana-clickhouse-datasource", "uid": "${ds_clickhouse}"}
PROM = {"type": "prometheus", "uid": "${ds_prometheus}"}
ERROR = 17  # severity_number of ERROR (OpenTelemetry)

# Every ClickHouse panel: the dashboard's time range and the four variables.
# A variable at "All" is '__all', so one expression serves one, several or all values.
def var_filter(var, column):
    return f"('__all' IN (${{{var}:singlequote}}) OR {column} IN (${{{var}:singlequote}}))"

TENANT = var_filter("tenant", "tenant")
FILTER = " AND ".join(
    ["$__timeFilter(timestamp)", TENANT]
    + [var_filter(v, v) for v in ("service", "host", "environment")]
)
# Failed authentication, as the collector's security view counts it.
FAILED_AUTH = (
    "((http_status IN (401, 403) AND match(lower(http_route), 'login|signin|sign-in|auth|token|session|password')) "
    "OR event_type IN ('login_failed', 'auth_failed', 'authentication_failed', 'failed_login', 'login_failure'))"
)
# Time buckets of the panel's interval. Written out rather than with the
# plugin's $__timeInterval, whose toStartOfInterval ClickHouse 18.16 lacks.
BUCKET = "toDateTime(intDiv(toUInt32(timestamp), $__interval_s) * $__interval_s)"
ATTACK = "security_class IN ('sqli', 'xss', 'path_traversal', 'cmd_injection')"


def variables(prometheus=False, logs=True):
    v = [
        {"name": "ds_clickhouse", "label": "ClickHouse", "type": "datasource",
         "query": "grafana-clickhouse-datasource", "current": {}, "hide": 0},
    ]
    if prometheus:
        v.append({"name": "ds_prometheus", "label": "Prometheus", "type": "datasource",
                  "query": "prometheus", "current": {}, "hide": 0})
    if logs:
        for name in ("tenant", "service", "host", "environment"):
            v.append({
                "name": name, "label": name.capitalize(), "type": "query", "datasource": CH,
                "query": f"SELECT DISTINCT {name} FROM logs WHERE $__timeFilter(timestamp) AND {name} != '' ORDER BY {name}",
                "definition": "",
                "refresh": 2, "multi": True, "includeAll": True, "allValue": "__all",
                "current": {"text": "All", "value": "$__all"}, "hide": 0, "sort": 1,
            })
    return v


class Board:
    def __init__(self, uid, title, description, prometheus=False, logs=True):
        self.uid, self.title, self.description = uid, title, description
        self.prometheus, self.logs = prometheus, logs
        self.panels, self.extra_vars = [], []
        self.x = self.y = 0

    def add(self, kind, title, target, w=12, h=8, datasource=CH, unit=None, links=None, description=""):
        if self.x + w > 24:
            self.x, self.y = 0, self.y + h
        panel = {
            "id": len(self.panels) + 1, "type": kind, "title": title, "description": description,
            "datasource": datasource,
            "gridPos": {"x": self.x, "y": self.y, "w": w, "h": h},
            "targets": [dict(target, refId="A", datasource=datasource)],
            "fieldConfig": {"defaults": {}, "overrides": []}, "options": {},
        }
        if unit:
            panel["fieldConfig"]["defaults"]["unit"] = unit
        for field, link_title, url in links or []:
            panel["fieldConfig"]["overrides"].append({
                "matcher": {"id": "byName", "options": field},
                "properties": [{"id": "links", "value": [{"title": link_title, "url": url}]}],
            })
        self.panels.append(panel)
        self.x += w
        return panel

    def sql(self, kind, title, sql, fmt=None, **kw):
        fmt = fmt or {"timeseries": 0, "logs": 2}.get(kind, 1)  # 0 time series, 1 table, 2 logs
        return self.add(kind, title, {"editorType": "sql", "rawSql": " ".join(sql.split()), "format": fmt,
                                      "queryType": {0: "timeseries", 1: "table", 2: "logs"}[fmt]}, **kw)

    def prom(self, kind, title, exprs, **kw):
        panel = self.add(kind, title, {"expr": exprs[0][1], "legendFormat": exprs[0][0]}, datasource=PROM, **kw)
        panel["targets"] = [
            {"refId": chr(ord("A") + i), "expr": e, "legendFormat": legend, "datasource": PROM}
            for i, (legend, e) in enumerate(exprs)
        ]
        return panel

    def json(self):
        return {
            "uid": self.uid, "title": self.title, "description": self.description,
            "tags": ["logferry"], "schemaVersion": 39, "version": 1, "editable": True,
            "time": {"from": "now-6h", "to": "now"}, "refresh": "1m", "timezone": "browser",
            "links": [{"title": "logferry", "type": "dashboards", "tags": ["logferry"], "asDropdown": True}],
            "templating": {"list": variables(self.prometheus, self.logs) + self.extra_vars},
            "annotations": {"list": []},
            "panels": self.panels,
        }


SEARCH = "/d/logferry-search/logferry-search?${__url_time_range}&${tenant:queryparam}"

boards = []

b = Board("logferry-overview", "logferry / Overview", "Records, errors, services and hosts at a glance, and the alerts firing now.")
b.sql("stat", "Records", f"SELECT count() AS records FROM logs WHERE {FILTER}", w=6, h=4)
b.sql("stat", "Error rate", f"SELECT 100 * countIf(severity_number >= {ERROR}) / greatest(count(), 1) AS error_rate FROM logs WHERE {FILTER}", w=6, h=4, unit="percent")
b.sql("stat", "Server error rate", f"SELECT 100 * countIf(http_status >= 500) / greatest(countIf(http_status > 0), 1) AS server_error_rate FROM logs WHERE {FILTER}", w=6, h=4, unit="percent")
b.sql("stat", "Alerts firing", f"SELECT count() AS firing FROM alert_states FINAL WHERE state = 'firing' AND {TENANT}", w=6, h=4)
b.sql("timeseries", "Records and errors", f"SELECT {BUCKET} AS time, count() AS records, countIf(severity_number >= {ERROR}) AS errors FROM logs WHERE {FILTER} GROUP BY time ORDER BY time", w=24)
b.sql("barchart", "Records by service", f"SELECT service, count() AS records FROM logs WHERE {FILTER} GROUP BY service ORDER BY records DESC LIMIT 20")
b.sql("table", "Hosts", f"SELECT host, count() AS records, countIf(severity_number >= {ERROR}) AS errors, max(timestamp) AS last_seen FROM logs WHERE {FILTER} GROUP BY host ORDER BY records DESC LIMIT 100")
b.sql("table", "Alerts firing or pending", f"SELECT tenant, rule, group_key, state, severity, summary, since FROM alert_states FINAL WHERE state IN ('firing', 'pending') AND {TENANT} ORDER BY since DESC", w=24)
boards.append(b)

b = Board("logferry-errors", "logferry / Errors", "Errors over time and by pattern; a pattern links to its records.")
b.sql("timeseries", "Errors by service", f"SELECT {BUCKET} AS time, service, count() AS errors FROM logs WHERE {FILTER} AND severity_number >= {ERROR} GROUP BY time, service ORDER BY time", w=24)
b.sql("table", "Error patterns", f"""SELECT toString(pattern_id) AS pattern_id, any(body) AS sample, count() AS errors,
    min(timestamp) AS first_seen, max(timestamp) AS last_seen, uniqExact(host) AS hosts, arrayStringConcat(groupUniqArray(service), ', ') AS services
    FROM logs WHERE {FILTER} AND severity_number >= {ERROR} GROUP BY pattern_id ORDER BY errors DESC LIMIT 100""", w=24,
      links=[("pattern_id", "Records of this pattern", SEARCH + "&var-pattern=${__data.fields.pattern_id}"),
             ("sample", "Records of this pattern", SEARCH + "&var-pattern=${__data.fields.pattern_id}")],
      description="Errors by message pattern (numbers, ids and other values masked). The API's errors view merges patterns further into groups.")
b.sql("barchart", "Errors by module", f"SELECT module, count() AS errors FROM logs WHERE {FILTER} AND severity_number >= {ERROR} AND module != '' GROUP BY module ORDER BY errors DESC LIMIT 20")
b.sql("barchart", "Errors by function", f"SELECT function, count() AS errors FROM logs WHERE {FILTER} AND severity_number >= {ERROR} AND function != '' GROUP BY function ORDER BY errors DESC LIMIT 20")
boards.append(b)

b = Board("logferry-performance", "logferry / Performance", "Latency percentiles, status codes and the slowest endpoints; an endpoint links to its records.")
b.sql("timeseries", "Latency", f"SELECT {BUCKET} AS time, quantile(0.5)(duration_ms) AS p50, quantile(0.95)(duration_ms) AS p95, quantile(0.99)(duration_ms) AS p99 FROM logs WHERE {FILTER} AND duration_ms > 0 GROUP BY time ORDER BY time", unit="ms")
b.sql("timeseries", "Responses by status class", f"SELECT {BUCKET} AS time, countIf(http_status < 400) AS ok, countIf(http_status >= 400 AND http_status < 500) AS client_errors, countIf(http_status >= 500) AS server_errors FROM logs WHERE {FILTER} AND http_status > 0 GROUP BY time ORDER BY time")
b.sql("table", "Slowest endpoints", f"""SELECT http_method AS method, http_route AS route, count() AS requests,
    quantileExact(0.5)(duration_ms) AS p50_ms, quantileExact(0.95)(duration_ms) AS p95_ms, quantileExact(0.99)(duration_ms) AS p99_ms, max(duration_ms) AS max_ms,
    100 * countIf(http_status >= 500) / count() AS server_error_pct
    FROM logs WHERE {FILTER} AND http_route != '' AND duration_ms > 0 GROUP BY method, route ORDER BY p95_ms DESC LIMIT 50""", w=24,
      links=[("route", "Records of this endpoint", SEARCH + "&var-route=${__data.fields.route}")])
b.sql("barchart", "Requests by status", f"SELECT toString(http_status) AS status, count() AS requests FROM logs WHERE {FILTER} AND http_status > 0 GROUP BY status ORDER BY status")
b.sql("stat", "Requests", f"SELECT countIf(http_status > 0) AS requests FROM logs WHERE {FILTER}")
boards.append(b)

b = Board("logferry-security", "logferry / Security", "Attacks by class, failed logins, and the addresses behind them.")
b.sql("timeseries", "Attack requests by class", f"SELECT {BUCKET} AS time, security_class, count() AS requests FROM logs WHERE {FILTER} AND security_class NOT IN ('', 'benign') GROUP BY time, security_class ORDER BY time", w=24)
b.sql("table", "Addresses", f"""SELECT client_ip, countIf({ATTACK}) AS attacks, countIf(security_class = 'scanner') AS scanner,
    countIf({FAILED_AUTH}) AS failed_auth, countIf(http_status = 404) AS not_found, countIf(http_status = 429) AS rate_limited,
    arrayStringConcat(groupUniqArrayIf(security_class, security_class NOT IN ('', 'benign')), ', ') AS classes
    FROM logs WHERE {FILTER} AND client_ip != '' GROUP BY client_ip
    HAVING attacks + scanner + failed_auth + rate_limited > 0 OR not_found >= 10 ORDER BY attacks + failed_auth + scanner DESC LIMIT 100""", w=24)
b.sql("piechart", "Attack classes", f"SELECT security_class AS class, count() AS requests FROM logs WHERE {FILTER} AND security_class NOT IN ('', 'benign') GROUP BY class ORDER BY requests DESC")
b.sql("table", "Failed logins by user", f"SELECT user_id, count() AS failures, uniqExact(client_ip) AS addresses, max(timestamp) AS last FROM logs WHERE {FILTER} AND user_id != '' AND {FAILED_AUTH} GROUP BY user_id ORDER BY failures DESC LIMIT 50")
boards.append(b)

b = Board("logferry-users", "logferry / Users", "Active and new users and what they do.")
b.sql("timeseries", "Active users", f"SELECT {BUCKET} AS time, uniqExact(user_id) AS users FROM logs WHERE {FILTER} AND user_id != '' GROUP BY time ORDER BY time", w=24)
b.sql("stat", "Active users", f"SELECT uniqExact(user_id) AS users FROM logs WHERE {FILTER} AND user_id != ''", w=8, h=4)
b.sql("stat", "New users", f"""SELECT count() AS new_users FROM (SELECT tenant, user_id, minMerge(first_seen) AS first FROM user_first_seen
    WHERE {TENANT} GROUP BY tenant, user_id) WHERE first >= $__fromTime AND first <= $__toTime""", w=8, h=4,
      description="Users first seen in the time range (any service or host).")
b.sql("stat", "Requests per user", f"SELECT count() / greatest(uniqExact(user_id), 1) AS per_user FROM logs WHERE {FILTER} AND user_id != ''", w=8, h=4)
b.sql("table", "Users", f"SELECT user_id, count() AS records, countIf(http_status > 0) AS requests, countIf(severity_number >= {ERROR}) AS errors, min(timestamp) AS first, max(timestamp) AS last FROM logs WHERE {FILTER} AND user_id != '' GROUP BY user_id ORDER BY records DESC LIMIT 100", w=24)
boards.append(b)

b = Board("logferry-pipeline", "logferry / Pipeline health", "Agents and collectors from their Prometheus metrics, and the loss ledger each agent reports.", prometheus=True, logs=False)
b.extra_vars.append({"name": "tenant", "label": "Tenant", "type": "query", "datasource": CH,
                     "query": "SELECT DISTINCT tenant FROM agent_reports ORDER BY tenant", "definition": "",
                     "refresh": 2, "multi": True, "includeAll": True, "allValue": "__all",
                     "current": {"text": "All", "value": "$__all"}, "hide": 0, "sort": 1})
R = "[$__rate_interval]"
b.prom("timeseries", "Records stored per second, by tenant", [("{{tenant}}", f"sum by (tenant) (rate(logferry_collector_ingest_records_total{R}))")])
b.prom("timeseries", "Lines read per second, by agent and source", [("{{instance}} {{source}}", f"sum by (instance, source) (rate(logferry_agent_tail_lines_total{R}))")])
b.prom("timeseries", "How far behind the files", [("{{instance}} {{source}}", "logferry_agent_tail_unread_bytes")], unit="bytes")
b.prom("timeseries", "Agent queues", [("{{instance}} records", "logferry_agent_queue_records"), ("{{instance}} oldest (s)", "logferry_agent_queue_oldest_unacked_age_seconds")])
b.prom("timeseries", "Batches", [("{{instance}} {{outcome}}", f"sum by (instance, outcome) (rate(logferry_agent_forward_batches_total{R}))"),
                                 ("{{instance}} retries", f"rate(logferry_agent_forward_retries_total{R})"),
                                 ("refused: {{reason}}", f"sum by (reason) (rate(logferry_collector_ingest_refused_batches_total{R}))")])
b.prom("timeseries", "Latency p95", [("agent to collector", f"histogram_quantile(0.95, sum by (le) (rate(logferry_agent_forward_roundtrip_duration_seconds_bucket{R})))"),
                                     ("ClickHouse insert", f"histogram_quantile(0.95, sum by (le) (rate(logferry_collector_clickhouse_insert_duration_seconds_bucket{R})))"),
                                     ("API", f"histogram_quantile(0.95, sum by (le) (rate(logferry_collector_api_request_duration_seconds_bucket{R})))")], unit="s")
b.prom("timeseries", "Lost or damaged (agents)", [("{{instance}} abandoned bytes: {{reason}}", f"sum by (instance, reason) (increase(logferry_agent_tail_abandoned_bytes_total{R}))"),
                                                   ("{{instance}} lines cut", f"sum by (instance) (increase(logferry_agent_tail_truncated_lines_total{R}))"),
                                                   ("{{instance}} parse errors", f"sum by (instance) (increase(logferry_agent_tail_parse_errors_total{R}))"),
                                                   ("{{instance}} files truncated while stopped, loss uncounted", f"sum by (instance) (increase(logferry_agent_tail_uncounted_truncations_total{R}))")])
b.prom("timeseries", "Alerts", [("firing", "max(logferry_collector_alerts_firing)"),
                                ("notifications {{channel}} {{outcome}}", f"sum by (channel, outcome) (increase(logferry_collector_alerts_notifications_total{R}))"),
                                ("evaluations failed", f"sum(increase(logferry_collector_alerts_evaluations_total{{outcome=\"failed\"}}{R}))")])
b.sql("table", "Loss ledger per agent", f"""SELECT host, agent_id, max(time) AS reported,
    argMax(abandoned_bytes, time) AS abandoned_bytes, argMax(truncated_lines, time) AS truncated_lines, argMax(parse_errors, time) AS parse_errors,
    argMax(unread_bytes, time) AS unread_bytes, argMax(queue_records, time) AS queue_records, argMax(oldest_unacked_s, time) AS oldest_unacked_s
    FROM agent_reports WHERE $__timeFilter(time) AND {TENANT} GROUP BY host, agent_id ORDER BY abandoned_bytes + truncated_lines + parse_errors DESC, host""", w=24,
      description="What each agent reported with its latest batch: counters since the agent started.")
boards.append(b)

b = Board("logferry-search", "logferry / Search", "Records of the chosen pattern or endpoint; the other dashboards link here.")
for name, label in (("pattern", "Pattern id"), ("route", "Endpoint route")):
    b.extra_vars.append({"name": name, "label": label, "type": "textbox", "query": "", "current": {"text": "", "value": ""}, "hide": 0})
b.sql("logs", "Records", f"""SELECT timestamp AS time, body, severity_text AS level, service, host, request_id, http_route
    FROM logs WHERE {FILTER} AND (${{pattern:sqlstring}} = '' OR toString(pattern_id) = ${{pattern:sqlstring}})
    AND (${{route:sqlstring}} = '' OR http_route = ${{route:sqlstring}}) ORDER BY timestamp DESC LIMIT 1000""", w=24, h=20)
boards.append(b)

os.makedirs("dashboards", exist_ok=True)
for b in boards:
    name = b.uid.removeprefix("logferry-")
    with open(f"dashboards/{name}.json", "w") as f:
        json.dump(b.json(), f, indent=2)
        f.write("\n")
    print(f"dashboards/{name}.json: {len(b.panels)} panels")
