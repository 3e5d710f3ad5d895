//! The Grafana dashboards in `dashboards/`: valid dashboards (unique uids,
//! a schema version, data sources referenced through variables, links that
//! point at a dashboard and at columns that exist), every SQL panel and
//! variable run against the real schema of a private ClickHouse with data
//! shipped by a real agent (the plugin's macros and Grafana's variable
//! formats substituted as they would be), and every Prometheus panel's
//! expressions checked by promtool and against the metrics both programs
//! expose.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use logferry_e2e::{now_rfc3339, scrape, wait_until, Agent, ClickHouse, Collector, TempDir};
use serde_json::{json, Value};

fn dashboards() -> Vec<(String, Value)> {
    let dir = logferry_e2e::package_dir().join("../dashboards");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("dashboards/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read");
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", p.display()));
            (
                p.file_name().expect("name").to_string_lossy().into_owned(),
                v,
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every datasource reference in a dashboard (panels, targets, variables).
fn datasources(d: &Value) -> Vec<(String, Value)> {
    let mut refs = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        let title = p["title"].as_str().unwrap_or("").to_string();
        refs.push((title.clone(), p["datasource"].clone()));
        for t in p["targets"].as_array().into_iter().flatten() {
            refs.push((title.clone(), t["datasource"].clone()));
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            refs.push((
                format!("${}", v["name"].as_str().unwrap_or("")),
                v["datasource"].clone(),
            ));
        }
    }
    refs
}

#[test]
fn dashboards_are_valid_grafana_dashboards() {
    let all = dashboards();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    for expected in [
        "overview",
        "errors",
        "performance",
        "security",
        "users",
        "pipeline",
        "search",
    ] {
        assert!(
            names.contains(&format!("{expected}.json").as_str()),
            "{expected}.json in {names:?}"
        );
    }
    let uids: BTreeSet<&str> = all
        .iter()
        .map(|(_, d)| d["uid"].as_str().expect("uid"))
        .collect();
    assert_eq!(uids.len(), all.len(), "dashboard uids are unique");
    for (name, d) in &all {
        assert!(
            d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
            "{name}: schemaVersion"
        );
        assert!(
            !d["title"].as_str().unwrap_or("").is_empty(),
            "{name}: title"
        );
        assert!(
            d["time"]["from"].is_string(),
            "{name}: time range from the picker"
        );
        let panels = d["panels"].as_array().expect("panels");
        assert!(!panels.is_empty(), "{name}: panels");
        let ids: BTreeSet<u64> = panels
            .iter()
            .map(|p| p["id"].as_u64().expect("panel id"))
            .collect();
        assert_eq!(ids.len(), panels.len(), "{name}: panel ids are unique");
        let vars: BTreeMap<String, Value> = d["templating"]["list"]
            .as_array()
            .expect("templating")
            .iter()
            .map(|v| (v["name"].as_str().expect("var name").to_string(), v.clone()))
            .collect();
        for (panel, ds) in datasources(d) {
            let uid = ds["uid"].as_str().unwrap_or("");
            let var = uid
                .strip_prefix("${")
                .and_then(|u| u.strip_suffix('}'))
                .unwrap_or_else(|| {
                    panic!("{name} / {panel}: data source `{uid}` is not a variable")
                });
            let v = vars
                .get(var)
                .unwrap_or_else(|| panic!("{name} / {panel}: no variable `{var}`"));
            assert_eq!(v["type"], "datasource", "{name} / {panel}");
            assert_eq!(
                v["query"], ds["type"],
                "{name} / {panel}: the variable's plugin is the panel's"
            );
        }
        if d["uid"] != "logferry-pipeline" {
            for var in ["tenant", "service", "host", "environment"] {
                assert!(vars.contains_key(var), "{name}: variable {var}");
            }
        }
        for p in panels {
            assert!(
                p["gridPos"]["w"].as_u64().is_some_and(|w| w <= 24),
                "{name}: grid"
            );
            for o in p["fieldConfig"]["overrides"]
                .as_array()
                .into_iter()
                .flatten()
            {
                for prop in o["properties"].as_array().into_iter().flatten() {
                    for link in prop["value"].as_array().into_iter().flatten() {
                        let url = link["url"].as_str().unwrap_or("");
                        let target = url
                            .strip_prefix("/d/")
                            .and_then(|u| u.split('/').next())
                            .unwrap_or_else(|| panic!("{name}: link {url}"));
                        assert!(
                            uids.contains(target),
                            "{name}: link to a dashboard that exists: {url}"
                        );
                    }
                }
            }
        }
    }
}

/// Grafana's rendering of a variable in each format we use, for one value
/// (`None`: All, which the dashboards set to `__all`).
fn render(sql: &str, values: &BTreeMap<&str, Option<&str>>) -> String {
    let mut s = sql.to_string();
    for (var, value) in values {
        let v = value.unwrap_or("__all");
        let quoted = format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        s = s.replace(&format!("${{{var}:singlequote}}"), &quoted);
        s = s.replace(&format!("${{{var}:sqlstring}}"), &quoted);
        s = s.replace(&format!("${{{var}}}"), v);
    }
    s
}

/// The grafana-clickhouse-datasource macros the dashboards use, expanded
/// as the plugin does. Any other `$` left makes the test fail.
fn macros(sql: &str, from_s: u64, to_s: u64, interval_s: u64) -> String {
    let mut s = sql.to_string();
    let name = "$__timeFilter(";
    while let Some(start) = s.find(name) {
        let rest = &s[start + name.len()..];
        let end = rest.find(')').expect("closing parenthesis");
        let c = rest[..end].trim().to_string();
        let text = format!("{c} >= toDateTime({from_s}) AND {c} <= toDateTime({to_s})");
        s.replace_range(start..start + name.len() + end + 1, &text);
    }
    s.replace("$__fromTime", &format!("toDateTime({from_s})"))
        .replace("$__toTime", &format!("toDateTime({to_s})"))
        .replace("$__interval_s", &interval_s.to_string())
}

/// Runs `sql` in `db`; the result's columns (name, type) and row count.
fn run(ch: &ClickHouse, db: &str, sql: &str) -> Result<(Vec<(String, String)>, usize), String> {
    let o = Command::new("clickhouse-client")
        .args([
            "--port",
            &ch.tcp_port.to_string(),
            "--database",
            db,
            "--query",
            &format!("{sql} FORMAT JSON"),
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let v: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
    let cols = v["meta"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap_or("").to_string(),
                        c["type"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok((cols, v["rows"].as_u64().unwrap_or(0) as usize))
}

fn numeric(t: &str) -> bool {
    let t = t.trim_start_matches("Nullable(").trim_end_matches(')');
    t.starts_with("UInt")
        || t.starts_with("Int")
        || t.starts_with("Float")
        || t.starts_with("Decimal")
}

/// A string column, as Grafana's ClickHouse plugin reads it: the modern
/// layout's `LowCardinality(String)` is one too.
fn text(t: &str) -> bool {
    matches!(t, "String" | "LowCardinality(String)")
}

/// What a panel type needs from its query's columns.
fn check_columns(kind: &str, cols: &[(String, String)]) -> Result<(), String> {
    let has = |f: &dyn Fn(&(String, String)) -> bool| cols.iter().any(f);
    let ok = match kind {
        "timeseries" => {
            has(&|c| c.0 == "time" && c.1.starts_with("DateTime")) && has(&|c| numeric(&c.1))
        }
        "stat" | "gauge" => has(&|c| numeric(&c.1)),
        "barchart" | "piechart" => has(&|c| text(&c.1)) && has(&|c| numeric(&c.1)),
        "logs" => has(&|c| c.0 == "time" && c.1.starts_with("DateTime")) && has(&|c| c.0 == "body"),
        "table" => !cols.is_empty(),
        other => return Err(format!("panel type {other} is not checked")),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{kind} cannot be drawn from columns {cols:?}"))
    }
}

fn line(fields: Value) -> String {
    let mut l = json!({"timestamp": now_rfc3339(), "level": "INFO", "service": "api", "message": "ok",
        "environment": "production"});
    for (k, v) in fields.as_object().expect("object") {
        l[k] = v.clone();
    }
    format!("{l}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_query_runs_against_the_real_schema() {
    let dir = TempDir::new().expect("tempdir");
    let ch = ClickHouse::start();
    let db = "grafana";
    let collector = Collector::new(
        dir.path(),
        "collector",
        &ch,
        db,
        "[alerts]\ninterval_s = 1\nlease_ttl_s = 3\n",
    );
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs");
    let mut text = String::new();
    for n in 0..40 {
        text += &line(json!({"level": if n % 3 == 0 { "ERROR" } else { "INFO" },
            "message": format!("Order {n} failed: card declined"), "module": "payments", "function": "charge",
            "method": "POST", "path": format!("/orders/{n}"), "status_code": if n % 5 == 0 { 500 } else { 200 },
            "duration_ms": 10 + n * 7, "client_ip": format!("10.0.0.{}", n % 4), "user_id": format!("user-{}", n % 6),
            "request_id": format!("r-{n}")}));
        text += &line(
            json!({"event_type": "login_failed", "client_ip": "10.9.9.9", "user_id": "mallory",
            "method": "POST", "path": "/api/v1/auth/login", "status_code": 401}),
        );
    }
    for _ in 0..3 {
        text += &line(
            json!({"method": "GET", "client_ip": "10.6.6.6", "status_code": 200, "user_agent": "Mozilla/5.0",
            "path": "/search?q=%27%20OR%20%271%27=%271%27%20UNION%20SELECT%20password%20FROM%20users--"}),
        );
    }
    std::fs::write(logs.join("app.log"), text).expect("log");
    let sources = logferry_e2e::json_source(&logs, "");
    let agent = Agent::new(dir.path(), &[collector.endpoint()], &sources, "");
    assert!(
        wait_until(Duration::from_secs(60), || ch
            .count(&format!("SELECT count() FROM {db}.logs"))
            == 83
            && ch.count(&format!(
                "SELECT count() FROM {db}.alert_states FINAL WHERE state = 'firing'"
            )) > 0),
        "data shipped and the default error alert firing"
    );

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let (from_s, to_s) = (now - 3600, now + 60);
    let host = ch
        .query(&format!("SELECT any(host) FROM {db}.logs"))
        .trim()
        .to_string();
    let all: BTreeMap<&str, Option<&str>> = [
        ("tenant", None),
        ("service", None),
        ("host", None),
        ("environment", None),
        ("pattern", Some("")),
        ("route", Some("")),
    ]
    .into_iter()
    .collect();
    let one: BTreeMap<&str, Option<&str>> = [
        ("tenant", Some("default")),
        ("service", Some("api")),
        ("host", Some(host.as_str())),
        ("environment", Some("production")),
        ("pattern", Some("")),
        ("route", Some("/orders/{id}")),
    ]
    .into_iter()
    .collect();

    let mut failures = Vec::new();
    let mut ran = 0;
    let mut prom_exprs: Vec<(String, String)> = Vec::new();
    for (name, d) in dashboards() {
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            if v["type"] == "query" {
                let sql = macros(v["query"].as_str().unwrap_or(""), from_s, to_s, 60);
                match run(&ch, db, &sql) {
                    Ok((cols, rows)) if cols.len() == 1 && rows > 0 => ran += 1,
                    Ok(r) => failures.push(format!(
                        "{name} ${}: one column of values, got {r:?}",
                        v["name"]
                    )),
                    Err(e) => failures.push(format!("{name} ${}: {e}", v["name"])),
                }
            }
        }
        for p in d["panels"].as_array().into_iter().flatten() {
            let kind = p["type"].as_str().unwrap_or("");
            let title = p["title"].as_str().unwrap_or("");
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    prom_exprs.push((format!("{name} / {title}"), expr.to_string()));
                    continue;
                }
                let raw = t["rawSql"].as_str().unwrap_or("");
                for (label, values) in [("all", &all), ("one of each", &one)] {
                    let sql = macros(&render(raw, values), from_s, to_s, 60);
                    if sql.contains('$') {
                        failures.push(format!("{name} / {title}: not substituted: {sql}"));
                        continue;
                    }
                    match run(&ch, db, &sql) {
                        Err(e) => failures.push(format!("{name} / {title} ({label}): {e}\n{sql}")),
                        Ok((cols, rows)) => {
                            ran += 1;
                            if let Err(e) = check_columns(kind, &cols) {
                                failures.push(format!("{name} / {title}: {e}"));
                            }
                            if label == "all" && rows == 0 {
                                failures.push(format!(
                                    "{name} / {title}: no rows from the seeded data"
                                ));
                            }
                            for o in p["fieldConfig"]["overrides"]
                                .as_array()
                                .into_iter()
                                .flatten()
                            {
                                let field = o["matcher"]["options"].as_str().unwrap_or("");
                                let linked = o.to_string();
                                for needed in std::iter::once(field).chain(
                                    linked
                                        .split("${__data.fields.")
                                        .skip(1)
                                        .filter_map(|s| s.split('}').next()),
                                ) {
                                    if !cols.iter().any(|c| c.0 == needed) {
                                        failures.push(format!("{name} / {title}: link field `{needed}` is not a column"));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{ran} dashboard queries ran against the real schema");

    // Prometheus panels: valid PromQL (promtool checks them as recording
    // rules) over metrics that both programs really expose.
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    for (i, (_, expr)) in prom_exprs.iter().enumerate() {
        let expr = expr.replace("$__rate_interval", "5m");
        rules += &format!(
            "      - record: logferry:dashboard_{i}\n        expr: '{}'\n",
            expr.replace('\'', "''")
        );
    }
    let rules_file = dir.path().join("rules.yml");
    std::fs::write(&rules_file, rules).expect("rules");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules_file)
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The collector's second scrape sees the first in its API latencies.
    scrape(&format!("{}/metrics", collector.http_url()));
    let exposed =
        scrape(&agent.metrics_url()) + &scrape(&format!("{}/metrics", collector.http_url()));
    let names: BTreeSet<&str> = exposed
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for (panel, expr) in &prom_exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !word.starts_with("logferry_") {
                continue;
            }
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| word.strip_suffix(s))
                .unwrap_or(word);
            assert!(
                names.contains(word) || names.contains(base),
                "{panel}: `{word}` is not exposed by either program"
            );
        }
    }
}
