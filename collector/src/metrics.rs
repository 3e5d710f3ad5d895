//! The collector's Prometheus metrics, served at `/metrics` on the HTTP
//! listener in the text exposition format. Names follow
//! `logferry_collector_<subsystem>_<name>_<unit>`; labels are bounded:
//! tenants (created by admins), refusal reasons, and API routes as
//! registered (templates such as `/api/v1/users/{username}`, never raw
//! paths).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub ingest_records: IntCounterVec,
    pub ingest_batches: IntCounterVec,
    pub ingest_duplicate_batches: IntCounter,
    pub ingest_refused_batches: IntCounterVec,
    pub ingest_unanalyzed_records: IntCounter,
    pub clickhouse_insert_seconds: Histogram,
    pub clickhouse_insert_failures: IntCounter,
    pub clickhouse_insert_batches: Histogram,
    pub api_request_seconds: HistogramVec,
    pub alert_evaluations: IntCounterVec,
    pub alert_evaluation_seconds: Histogram,
    pub alerts_firing: IntGauge,
    pub alert_evaluator: IntGauge,
    pub alert_notifications: IntCounterVec,
    pub alert_notification_retries: IntCounterVec,
}

/// Latency buckets from 1 ms to 30 s.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let ingest_records = counter_vec(
            "logferry_collector_ingest_records_total",
            "Records stored in ClickHouse, by tenant.",
            &["tenant"],
        );
        let ingest_batches = counter_vec(
            "logferry_collector_ingest_batches_total",
            "Batches stored in ClickHouse, by tenant.",
            &["tenant"],
        );
        let ingest_duplicate_batches = counter(
            "logferry_collector_ingest_duplicate_batches_total",
            "Batches acknowledged without writing because they were stored before (an agent's retry).",
        );
        let ingest_refused_batches = counter_vec(
            "logferry_collector_ingest_refused_batches_total",
            "Batches refused, by reason: unauthenticated, invalid, too_large (more records than ingest.max_batch_records), \
             busy (being stored elsewhere), deadline (not stored within ingest.batch_deadline_ms), unavailable (ClickHouse), \
             overloaded (beyond ingest.max_concurrent_batches or max_in_flight_bytes, or ClickHouse's too many parts: answered with a retry-after hint).",
            &["reason"],
        );
        let ingest_unanalyzed_records = counter(
            "logferry_collector_ingest_unanalyzed_records_total",
            "Records stored without pattern and security stamps because stamping their batch ran out of its share of the deadline.",
        );
        let clickhouse_insert_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "logferry_collector_clickhouse_insert_duration_seconds",
                "Time of one INSERT of rows into ClickHouse (the rows of every batch in its group).",
            )
            .buckets(BUCKETS.to_vec()),
        )
        .expect("valid metric");
        registry
            .register(Box::new(clickhouse_insert_seconds.clone()))
            .expect("unique metric");
        let clickhouse_insert_failures = counter(
            "logferry_collector_clickhouse_insert_failures_total",
            "Inserts of batch rows that ClickHouse refused or that timed out.",
        );
        let clickhouse_insert_batches = Histogram::with_opts(
            HistogramOpts::new(
                "logferry_collector_clickhouse_insert_batches",
                "Batches whose rows one INSERT wrote (group commit, ingest.max_concurrent_inserts).",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(clickhouse_insert_batches.clone()))
            .expect("unique metric");
        let api_request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "logferry_collector_api_request_duration_seconds",
                "HTTP API requests, by route template, method and status.",
            )
            .buckets(BUCKETS.to_vec()),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(api_request_seconds.clone()))
            .expect("unique metric");
        let alert_evaluations = counter_vec(
            "logferry_collector_alerts_evaluations_total",
            "Rule evaluations by this collector, by outcome (ok, failed).",
            &["outcome"],
        );
        let alert_evaluation_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "logferry_collector_alerts_evaluation_duration_seconds",
                "Time to evaluate every rule once.",
            )
            .buckets(BUCKETS.to_vec()),
        )
        .expect("valid metric");
        registry
            .register(Box::new(alert_evaluation_seconds.clone()))
            .expect("unique metric");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let alerts_firing = gauge(
            "logferry_collector_alerts_firing",
            "Alerts firing after this collector's last evaluation (0 on collectors that do not evaluate).",
        );
        let alert_evaluator = gauge(
            "logferry_collector_alerts_evaluator",
            "1 while this collector holds the evaluator lease.",
        );
        let alert_notifications = counter_vec(
            "logferry_collector_alerts_notifications_total",
            "Notifications by channel kind and outcome (sent, failed, rate_limited, abandoned at shutdown).",
            &["channel", "outcome"],
        );
        let alert_notification_retries = counter_vec(
            "logferry_collector_alerts_notification_retries_total",
            "Notification attempts that failed and were retried, by channel kind.",
            &["channel"],
        );
        // Every known label value starts at 0, so series exist (and rates
        // work) before the first event.
        for reason in [
            "unauthenticated",
            "invalid",
            "too_large",
            "busy",
            "deadline",
            "unavailable",
            "overloaded",
        ] {
            ingest_refused_batches.with_label_values(&[reason]);
        }
        for outcome in ["ok", "failed"] {
            alert_evaluations.with_label_values(&[outcome]);
        }
        for channel in ["webhook", "slack", "pagerduty", "sentry"] {
            alert_notification_retries.with_label_values(&[channel]);
            for outcome in ["sent", "failed", "rate_limited", "abandoned"] {
                alert_notifications.with_label_values(&[channel, outcome]);
            }
        }
        Metrics {
            registry,
            ingest_records,
            ingest_batches,
            ingest_duplicate_batches,
            ingest_refused_batches,
            ingest_unanalyzed_records,
            clickhouse_insert_seconds,
            clickhouse_insert_failures,
            clickhouse_insert_batches,
            api_request_seconds,
            alert_evaluations,
            alert_evaluation_seconds,
            alerts_firing,
            alert_evaluator,
            alert_notifications,
            alert_notification_retries,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("the text encoder writes to memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_their_labels() {
        let m = Metrics::new();
        m.ingest_records.with_label_values(&["acme"]).inc_by(3);
        m.api_request_seconds
            .with_label_values(&["/api/v1/logs/search", "GET", "200"])
            .observe(0.02);
        let text = m.render();
        assert!(text.contains("logferry_collector_ingest_records_total{tenant=\"acme\"} 3"));
        assert!(text.contains("# TYPE logferry_collector_api_request_duration_seconds histogram"));
    }
}
