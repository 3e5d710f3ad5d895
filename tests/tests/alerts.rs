//! Alerting end to end: real agents ship constructed logs through a
//! collector into a private ClickHouse; rules of every kind, with windows
//! of a few seconds, go pending, firing and resolved; a local HTTP receiver
//! plays the webhook, Slack, PagerDuty and Sentry.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use logferry_e2e::api::{Http, ADMIN_PASSWORD};
use logferry_e2e::receiver::{Received, Receiver};
use logferry_e2e::{wait_until, Agent, ClickHouse, Collector, TempDir};
use logferry_proto::query_service_client::QueryServiceClient;
use logferry_proto::AnalyticsRequest;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

const SECRET: &str = "0123456789abcdef-webhook-secret";

fn channels(rx: &Receiver) -> String {
    format!(
        "[[alerts.channels]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n\
         [[alerts.channels]]\nname = \"slack\"\nkind = \"slack\"\nurl = \"{}\"\n\
         [[alerts.channels]]\nname = \"pd\"\nkind = \"pagerduty\"\nurl = \"{}\"\nrouting_key = \"R0UTINGKEY\"\n\
         [[alerts.channels]]\nname = \"sentry\"\nkind = \"sentry\"\ndsn = \"http://pubkey@127.0.0.1:{}/42\"\n",
        rx.url("/hook"),
        rx.url("/slack"),
        rx.url("/pd"),
        rx.port
    )
}

/// The rules the first burst of lines makes fire.
const BURST_RULES: [&str; 9] = [
    "errors",
    "logins",
    "5xx",
    "slow",
    "new group",
    "sqli",
    "suspicious",
    "billing silent",
    "loss",
];

const ALERTS: &str = "[alerts]\ninterval_s = 1\nlease_ttl_s = 3\ndefault_rules = false\nbackoff_ms = 200\nmax_attempts = 4\n";

fn append(path: &std::path::Path, lines: &[Value]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log");
    for l in lines {
        let mut l = l.clone();
        l["timestamp"] = json!(logferry_e2e::now_rfc3339());
        writeln!(f, "{l}").expect("write");
    }
}

fn line(fields: Value) -> Value {
    let mut l = json!({"level": "INFO", "service": "api", "message": "ok"});
    for (k, v) in fields.as_object().expect("object") {
        l[k] = v.clone();
    }
    l
}

/// (rule, event) pairs of the alert history, oldest first.
fn history(ch: &ClickHouse, db: &str) -> Vec<(String, String, String)> {
    ch.query(&format!(
        "SELECT rule, event, group_key FROM {db}.alert_history ORDER BY time_ns FORMAT TSV"
    ))
    .lines()
    .filter_map(|l| {
        let mut p = l.split('\t');
        Some((
            p.next()?.into(),
            p.next()?.into(),
            p.next().unwrap_or("").into(),
        ))
    })
    .collect()
}

fn events_of(h: &[(String, String, String)], rule: &str) -> Vec<String> {
    h.iter()
        .filter(|(r, e, _)| r == rule && ["pending", "firing", "resolved"].contains(&e.as_str()))
        .map(|(_, e, _)| e.clone())
        .collect()
}

fn verify_signature(r: &Received) {
    let ts = r.header("x-logferry-timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(
        r.header("x-logferry-signature"),
        expected,
        "HMAC over timestamp.body"
    );
}

/// Webhook notifications per (rule, status).
fn hooks(rx: &Receiver) -> BTreeMap<(String, String), usize> {
    let mut by = BTreeMap::new();
    for r in rx.at("/hook") {
        verify_signature(&r);
        let b = r.json();
        let key = (
            b["rule"]["name"].as_str().unwrap_or("").to_string(),
            b["status"].as_str().unwrap_or("").to_string(),
        );
        *by.entry(key).or_default() += 1;
    }
    by
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_kind_fires_notifies_once_and_resolves() {
    let dir = TempDir::new().expect("tempdir");
    let ch = ClickHouse::start();
    let rx = Receiver::start().await;
    // The first webhook delivery fails: it is retried.
    rx.fail_first("/hook", 1);
    // A receiver that always fails: each delivery gives up after
    // max_attempts, recorded as failed.
    rx.fail_first("/dead", usize::MAX);
    // A count rule fires only if its lines are stored while still inside
    // its window, `for_s` and one interval before they leave it: the
    // windows leave a loaded machine a few seconds between a line's
    // timestamp and its storage.
    let rules = "\
[[alerts.rules]]\nname = \"errors\"\ntenant = \"default\"\nkind = \"count\"\nquery = \"level:error\"\nthreshold = 2\nwindow_s = 8\nfor_s = 2\nchannels = [\"hook\", \"slack\", \"pd\", \"sentry\"]\n\
[[alerts.rules]]\nname = \"logins\"\ntenant = \"default\"\nkind = \"failed_logins\"\ngroup_by = \"client_ip\"\nthreshold = 2\nwindow_s = 10\nfor_s = 1\nchannels = [\"hook\", \"dead\"]\n\
[[alerts.rules]]\nname = \"5xx\"\ntenant = \"default\"\nservices = [\"checkout\"]\nkind = \"error_rate\"\nthreshold = 50\nmin_requests = 4\nwindow_s = 10\nfor_s = 1\nchannels = [\"hook\"]\n\
[[alerts.rules]]\nname = \"slow\"\ntenant = \"default\"\nkind = \"latency\"\nroute = \"/slow\"\nthreshold = 1000\nmin_requests = 3\nwindow_s = 10\nfor_s = 1\nchannels = [\"hook\"]\n\
[[alerts.rules]]\nname = \"new group\"\ntenant = \"default\"\nkind = \"new_error_group\"\nwindow_s = 10\nfor_s = 1\nchannels = [\"hook\"]\n\
[[alerts.rules]]\nname = \"back\"\ntenant = \"default\"\nkind = \"returning_error_group\"\nwindow_s = 4\nfor_s = 1\nquiet_s = 3\nchannels = [\"hook\"]\n\
[[alerts.rules]]\nname = \"sqli\"\ntenant = \"default\"\nkind = \"security\"\nclasses = [\"sqli\"]\nwindow_s = 10\nfor_s = 1\nchannels = [\"hook\"]\n\
[[alerts.rules]]\nname = \"suspicious\"\ntenant = \"default\"\nkind = \"suspicious_ip\"\nthreshold = 50\nwindow_s = 10\nfor_s = 1\nchannels = [\"hook\"]\n\
[[alerts.rules]]\nname = \"billing silent\"\ntenant = \"default\"\nkind = \"silence\"\ngroup_by = \"service\"\nservices = [\"billing\"]\nwindow_s = 3\nfor_s = 1\nchannels = [\"hook\"]\n\
[[alerts.rules]]\nname = \"loss\"\ntenant = \"default\"\nkind = \"loss\"\nwindow_s = 6\nfor_s = 1\nchannels = [\"hook\"]\n";
    let dead = format!(
        "[[alerts.channels]]\nname = \"dead\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
        rx.url("/dead")
    );
    let collector = Collector::new(
        dir.path(),
        "collector",
        &ch,
        "alerts",
        &format!("{ALERTS}{}{dead}{rules}", channels(&rx)),
    );
    let http = Http::new(&collector.http_url());
    logferry_e2e::api::wait_ready(&http).await;
    let out = collector.bootstrap("root", ADMIN_PASSWORD, Some("default"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let admin = http.login("root", ADMIN_PASSWORD).await;

    // A rule made through the API, then silenced: evaluated, never sent.
    let r = http
        .post(
            "/api/v1/alerts/rules",
            Some(&admin),
            &json!({"name": "errors (silenced)", "tenant": "default", "kind": "count",
                    "query": "level:error", "threshold": 2, "window_s": 8, "channels": ["hook"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let silenced_id = r.body["id"].as_str().expect("id").to_string();
    let r = http
        .post(
            &format!("/api/v1/alerts/rules/{silenced_id}/silence"),
            Some(&admin),
            &json!({"for": "1h", "reason": "maintenance"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["silenced"][0]["reason"], "maintenance");
    // Read, replace, list, delete; names are unique per tenant.
    let path = format!("/api/v1/alerts/rules/{silenced_id}");
    let mut spec = json!({"name": "errors (silenced)", "tenant": "default", "kind": "count",
        "query": "level:error", "threshold": 2, "window_s": 8, "for_s": 1, "channels": ["hook"]});
    let r = http
        .call(reqwest::Method::PUT, &path, Some(&admin), Some(&spec))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["for_s"], 1);
    assert_eq!(http.get(&path, Some(&admin)).await.body["source"], "api");
    let r = http.post("/api/v1/alerts/rules", Some(&admin), &spec).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    spec["name"] = json!("short-lived");
    let r = http.post("/api/v1/alerts/rules", Some(&admin), &spec).await;
    let doomed = format!(
        "/api/v1/alerts/rules/{}",
        r.body["id"].as_str().expect("id")
    );
    let r = http
        .call(reqwest::Method::DELETE, &doomed, Some(&admin), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        http.get(&doomed, Some(&admin)).await.status,
        StatusCode::NOT_FOUND
    );
    let listed = http.get("/api/v1/alerts/rules", Some(&admin)).await.body;
    let names: Vec<&str> = listed
        .as_array()
        .expect("rules")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        names.len(),
        11,
        "ten from the file and one from the API: {names:?}"
    );
    assert!(!names.contains(&"short-lived"));
    // Bad rules are refused with every problem named.
    let r = http
        .post(
            "/api/v1/alerts/rules",
            Some(&admin),
            &json!({"name": "x", "tenant": "default", "kind": "latency", "quantile": 2, "channels": ["nowhere"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let msg = r.body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(msg.contains("quantile") && msg.contains("nowhere"), "{msg}");
    // Rules of the config file cannot be changed through the API.
    let r = http
        .call(
            reqwest::Method::DELETE,
            "/api/v1/alerts/rules/config-default-errors",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);

    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let app = logs.join("app.log");
    let sources = logferry_e2e::json_source(&logs, "max_line_bytes = 1000\n");
    let agent = Agent::new(dir.path(), &[collector.endpoint()], &sources, "");

    let mut burst = Vec::new();
    for n in 0..3 {
        burst.push(line(
            json!({"level": "ERROR", "message": format!("Payment failed for order {n}")}),
        ));
        burst.push(line(
            json!({"event_type": "login_failed", "client_ip": "10.1.1.1", "status_code": 401,
            "method": "POST", "path": "/api/v1/auth/login", "user_id": "mallory"}),
        ));
        burst.push(line(json!({"service": "checkout", "method": "POST", "path": "/pay", "status_code": 500, "duration_ms": 20})));
        burst.push(line(
            json!({"method": "GET", "path": "/slow", "status_code": 200, "duration_ms": 2500}),
        ));
        burst.push(line(json!({"method": "GET", "client_ip": "10.6.6.6", "status_code": 200, "user_agent": "Mozilla/5.0",
            "path": "/search?q=%27%20OR%20%271%27=%271%27%20UNION%20SELECT%20password%20FROM%20users--"})));
    }
    burst.push(line(json!({"service": "checkout", "method": "POST", "path": "/pay", "status_code": 200, "duration_ms": 20})));
    burst.push(line(
        json!({"service": "billing", "message": "invoice sent"}),
    ));
    // Longer than max_line_bytes: cut, and reported as loss.
    burst.push(line(json!({"message": "x".repeat(1500)})));
    append(&app, &burst);
    let burst_at = Instant::now();

    let ch_db = "alerts";
    let firing: Vec<&str> = BURST_RULES
        .into_iter()
        .chain(["errors (silenced)"])
        .collect();
    assert!(
        wait_until(Duration::from_secs(40), || {
            let h = history(&ch, ch_db);
            firing
                .iter()
                .all(|r| events_of(&h, r).contains(&"firing".to_string()))
        }),
        "not every rule fired: {:?}",
        history(&ch, ch_db)
    );
    // While firing, the active-alerts view shows them.
    let active = http.get("/api/v1/logs/alerts/active", Some(&admin)).await;
    assert_eq!(active.status, StatusCode::OK);
    let names: Vec<&str> = active.body["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter_map(|a| a["rule"].as_str())
        .collect();
    assert!(names.contains(&"billing silent"), "{names:?}");
    // The loss ledger: the health view shows what the agent reported.
    let health = http.get("/api/v1/logs/health", Some(&admin)).await;
    let loss = &health.body["agents"][0]["loss"];
    assert_eq!(loss["truncated_lines"], 1, "{}", health.body);
    assert_eq!(loss["abandoned_bytes"], 0);
    assert_eq!(loss["parse_errors"], 0);
    assert_eq!(loss["dead_letter_batches"], 0);

    // The returning error group: the same error after more than
    // window + quiet seconds (7) without it, and a margin for whole seconds.
    let wait = Duration::from_secs(10).saturating_sub(burst_at.elapsed());
    tokio::time::sleep(wait).await;
    append(
        &app,
        &[
            line(json!({"level": "ERROR", "message": "Payment failed for order 999"})),
            line(json!({"service": "billing", "message": "invoice sent"})),
        ],
    );
    let all: Vec<&str> = BURST_RULES.into_iter().chain(["back"]).collect();
    // Billing falls silent again after its second line, so its rule may
    // fire a second time; every rule must have resolved once.
    assert!(
        wait_until(Duration::from_secs(40), || {
            let h = history(&ch, ch_db);
            all.iter()
                .all(|r| events_of(&h, r).contains(&"resolved".to_string()))
        }),
        "not every rule resolved: {:?}",
        history(&ch, ch_db)
    );
    // Let deliveries and any stray duplicates land.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let h = history(&ch, ch_db);
    for &rule in &all {
        let e = events_of(&h, rule);
        // Every kind goes pending (for_s), firing, resolved.
        let expect: &[&str] = match rule {
            "billing silent" => {
                &["pending", "firing", "resolved", "pending", "firing"][..e.len().clamp(3, 5)]
            }
            _ => &["pending", "firing", "resolved"],
        };
        assert_eq!(e, expect, "{rule}: {h:?}");
    }

    // Exactly one notification per firing and per resolution.
    let by = hooks(&rx);
    for &rule in &all {
        let e = events_of(&h, rule);
        for status in ["firing", "resolved"] {
            let n = e.iter().filter(|x| *x == status).count();
            assert_eq!(
                by.get(&(rule.to_string(), status.to_string()))
                    .copied()
                    .unwrap_or(0),
                n,
                "{rule} {status}: {by:?}"
            );
        }
    }
    assert!(
        !by.keys().any(|(r, _)| r == "errors (silenced)"),
        "a silenced rule sends nothing: {by:?}"
    );
    assert!(
        h.iter()
            .any(|(r, e, _)| r == "errors (silenced)" && e == "silenced"),
        "the silenced notification is in the history"
    );
    let logins = rx
        .at("/hook")
        .into_iter()
        .map(|r| r.json())
        .find(|b| b["rule"]["name"] == "logins")
        .expect("logins notification");
    assert_eq!(logins["group"], "10.1.1.1");
    assert_eq!(logins["tenant"], "default");
    assert_eq!(logins["value"], 3.0);
    assert_eq!(logins["rule"]["kind"], "failed_logins");

    let slack = rx.at("/slack");
    assert_eq!(slack.len(), 2, "firing and resolved");
    let text = slack[0].json()["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(text.starts_with("*FIRING* errors"), "{text}");
    assert!(slack[1].json()["text"]
        .as_str()
        .unwrap_or_default()
        .starts_with("*RESOLVED* errors"));

    let pd = rx.at("/pd");
    assert_eq!(pd.len(), 2, "trigger and resolve");
    let (trigger, resolve) = (pd[0].json(), pd[1].json());
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["routing_key"], "R0UTINGKEY");
    assert_eq!(trigger["payload"]["severity"], "warning");
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(trigger["dedup_key"], resolve["dedup_key"]);

    let sentry = rx.at("/api/42/envelope/");
    assert_eq!(
        sentry.len(),
        1,
        "Sentry gets the firing, not the resolution"
    );
    assert!(sentry[0]
        .header("x-sentry-auth")
        .contains("sentry_key=pubkey"));
    // Sentry's own parser accepts the envelope.
    let envelope = sentry::Envelope::from_slice(&sentry[0].body).expect("a Sentry envelope");
    let event = serde_json::to_value(envelope.event().expect("an event")).expect("JSON");
    assert!(
        event["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("errors: 3 records matching"),
        "{event}"
    );

    // The failed first delivery was retried: visible in the history and metrics.
    let attempts = ch.query(&format!(
        "SELECT max(attempts) FROM {ch_db}.alert_history WHERE event = 'sent' AND channel = 'hook'"
    ));
    assert_eq!(attempts.trim(), "2");
    // The dead receiver: firing and resolution each failed after 4 attempts.
    let failed = ch.query(&format!(
        "SELECT count(), min(attempts), max(attempts), any(error) FROM {ch_db}.alert_history \
         WHERE event = 'failed' AND channel = 'dead' FORMAT TSV"
    ));
    let failed: Vec<&str> = failed.trim().split('\t').collect();
    assert_eq!(failed[..3], ["2", "4", "4"], "{failed:?}");
    assert!(failed[3].contains("500"), "the error says why: {failed:?}");
    let metrics = reqwest::get(format!("{}/metrics", collector.http_url()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(
            "logferry_collector_alerts_notification_retries_total{channel=\"webhook\"} 7"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("logferry_collector_alerts_evaluator 1"));
    assert!(
        metrics.contains(
            "logferry_collector_alerts_notifications_total{channel=\"webhook\",outcome=\"failed\"} 2"
        ),
        "{metrics}"
    );

    // The history endpoint, over HTTP.
    let r = http
        .get("/api/v1/logs/alerts/history?last=1h", Some(&admin))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let events = r.body["events"].as_array().expect("events");
    assert!(events
        .iter()
        .any(|e| e["rule"] == "loss" && e["event"] == "firing"));
    assert!(events
        .iter()
        .any(|e| e["event"] == "sent" && e["channel"] == "pd"));

    // The same history over gRPC.
    let mut grpc = QueryServiceClient::connect(collector.grpc_url())
        .await
        .expect("grpc");
    let mut request = tonic::Request::new(AnalyticsRequest {
        view: "alerts/history".into(),
        last: "1h".into(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {admin}").parse().expect("ascii"),
    );
    let reply = grpc.analytics(request).await.expect("grpc").into_inner();
    let over_grpc: Value = serde_json::from_str(&reply.json).expect("json");
    let grpc_events = over_grpc["events"].as_array().expect("events");
    assert!(
        grpc_events.len() >= events.len(),
        "the same history (and perhaps newer)"
    );
    assert!(grpc_events
        .iter()
        .any(|e| e["rule"] == "loss" && e["event"] == "firing"));
    drop(agent);
}

fn evaluator_gauge(collector: &Collector) -> Option<f64> {
    let out = std::process::Command::new("curl")
        .args(["-sf", &format!("{}/metrics", collector.http_url())])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("logferry_collector_alerts_evaluator "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_notify_once_and_a_dead_evaluator_is_replaced() {
    let dir = TempDir::new().expect("tempdir");
    let ch = ClickHouse::start();
    let rx = Receiver::start().await;
    let rules = "[[alerts.rules]]\nname = \"errors\"\ntenant = \"default\"\nkind = \"count\"\nquery = \"level:error\"\n\
                 group_by = \"service\"\nthreshold = 0\nwindow_s = 3\nchannels = [\"hook\"]\n";
    let extra = format!("{ALERTS}{}{rules}", channels(&rx));
    let mut a = Collector::new(dir.path(), "collector-a", &ch, "ha", &extra);
    let mut b = Collector::new(dir.path(), "collector-b", &ch, "ha", &extra);
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let app = logs.join("app.log");
    let sources = logferry_e2e::json_source(&logs, "");
    let _agent = Agent::new(dir.path(), &[a.endpoint(), b.endpoint()], &sources, "");
    assert!(
        wait_until(Duration::from_secs(30), || {
            let (x, y) = (evaluator_gauge(&a), evaluator_gauge(&b));
            matches!((x, y), (Some(1.0), Some(0.0)) | (Some(0.0), Some(1.0)))
        }),
        "exactly one collector holds the evaluator lease"
    );

    append(
        &app,
        &[line(
            json!({"level": "ERROR", "service": "one", "message": "boom"}),
        )],
    );
    assert!(
        wait_until(Duration::from_secs(30), || hooks(&rx)
            .contains_key(&("errors".to_string(), "resolved".to_string()))),
        "the alert fired and resolved"
    );
    // Both collectors keep running for several evaluation rounds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let by = hooks(&rx);
    assert_eq!(
        by.get(&("errors".into(), "firing".into())),
        Some(&1),
        "{by:?}"
    );
    assert_eq!(
        by.get(&("errors".into(), "resolved".into())),
        Some(&1),
        "{by:?}"
    );

    // Kill the evaluator; the other takes over within a minute.
    let (dead, survivor) = if evaluator_gauge(&a) == Some(1.0) {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    dead.proc.kill9();
    let killed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(60), || evaluator_gauge(survivor)
            == Some(1.0)),
        "no collector took over"
    );
    let handover = killed.elapsed();
    println!("handover after kill -9: {:.1} s", handover.as_secs_f64());
    assert!(handover < Duration::from_secs(60));

    append(
        &app,
        &[line(
            json!({"level": "ERROR", "service": "two", "message": "boom"}),
        )],
    );
    assert!(
        wait_until(Duration::from_secs(30), || rx
            .at("/hook")
            .iter()
            .filter(|r| r.json()["group"] == "two" && r.json()["status"] == "resolved")
            .count()
            == 1),
        "the survivor notifies"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let groups: Vec<(String, String)> = rx
        .at("/hook")
        .iter()
        .map(|r| {
            let b = r.json();
            (
                b["group"].as_str().unwrap_or("").to_string(),
                b["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        vec![
            ("one".to_string(), "firing".to_string()),
            ("one".to_string(), "resolved".to_string()),
            ("two".to_string(), "firing".to_string()),
            ("two".to_string(), "resolved".to_string()),
        ],
        "each notification once, across both collectors and the handover"
    );
}

/// A notification still being retried when its collector is told to stop
/// is not dropped silently: it gives up before the shutdown deadline and
/// the history says so (`abandoned`), and the collector still exits within
/// `shutdown_timeout_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_retrying_at_shutdown_is_recorded_as_abandoned() {
    let dir = TempDir::new().expect("tempdir");
    let ch = ClickHouse::start();
    let rx = Receiver::start().await;
    rx.fail_first("/dead", usize::MAX);
    let config = format!(
        "[alerts]\ninterval_s = 1\nlease_ttl_s = 3\ndefault_rules = false\nbackoff_ms = 3000\nmax_attempts = 20\n\
         [[alerts.channels]]\nname = \"dead\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n\
         [[alerts.rules]]\nname = \"errors\"\ntenant = \"default\"\nkind = \"count\"\nquery = \"level:error\"\nthreshold = 1\nwindow_s = 30\nfor_s = 1\nchannels = [\"dead\"]\n",
        rx.url("/dead")
    );
    let collector = Collector::new(dir.path(), "collector", &ch, "abandon", &config);
    collector.wait_connected();
    let out = collector.bootstrap("root", ADMIN_PASSWORD, Some("default"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("logs dir");
    let sources = logferry_e2e::json_source(&logs, "");
    let agent = Agent::new(dir.path(), &[collector.endpoint()], &sources, "");
    append(
        &logs.join("app.log"),
        &[
            line(json!({"level": "ERROR", "message": "boom"})),
            line(json!({"level": "ERROR", "message": "boom"})),
        ],
    );
    // The first attempt failed (the receiver records only what it
    // accepts; the retry counter says it was tried): the delivery waits
    // 1.5 to 3 s to retry. Waited for without blocking: the receiver runs
    // on this runtime.
    let retries = || {
        logferry_e2e::scrape(&collector.http_url())
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    "logferry_collector_alerts_notification_retries_total{channel=\"webhook\"} ",
                )
            })
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let until = Instant::now() + Duration::from_secs(60);
    while retries() < 1.0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        retries() >= 1.0,
        "never tried; history: {}; {}",
        ch.query("SELECT rule, event, channel FROM abandon.alert_history FORMAT TSV"),
        collector.proc.log_text()
    );
    let (took, collector) = tokio::task::spawn_blocking(move || {
        let mut collector = collector;
        (collector.proc.terminate(), collector)
    })
    .await
    .expect("terminate");
    assert!(
        took < Duration::from_millis(5000 + 1500),
        "shutdown took {took:?}, beyond shutdown_timeout_ms"
    );
    let notifications = ch.query(
        "SELECT event, attempts FROM abandon.alert_history WHERE channel = 'dead' ORDER BY time_ns FORMAT TSV",
    );
    let events: Vec<&str> = notifications.lines().collect();
    assert_eq!(
        events.len(),
        1,
        "one outcome for the one delivery: {notifications}"
    );
    let (event, attempts) = events[0].split_once('\t').expect("two columns");
    assert_eq!(event, "abandoned", "{}", collector.proc.log_text());
    assert!(attempts.parse::<u32>().expect("a number") >= 1);
    assert!(collector.proc.log_text().contains("notification abandoned"));
    drop(agent);
}
