//! The agent's Prometheus metrics, served at `http://<metrics.listen>/metrics`.
//! Names follow `logferry_agent_<subsystem>_<name>_<unit>`; the only labels
//! are source names (from the config), fixed reasons and outcomes.
//!
//! The counters that say what could not be shipped (abandoned bytes,
//! truncated lines, parse errors) also travel with every batch as the
//! agent's loss report (`Metrics::report`), so the collector can show them
//! per agent.

use std::sync::Arc;

use logferry_proto::AgentReport;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::queue::Queue;

pub struct Metrics {
    registry: Registry,
    pub lines: IntCounterVec,
    pub bytes: IntCounterVec,
    pub unread_bytes: IntGaugeVec,
    pub unread_age: GaugeVec,
    pub files: IntGaugeVec,
    pub rotations: IntCounterVec,
    pub truncations: IntCounterVec,
    pub parse_errors: IntCounterVec,
    pub truncated_lines: IntCounterVec,
    pub abandoned_bytes: IntCounterVec,
    pub uncounted_truncations: IntCounterVec,
    pub redactions: IntCounterVec,
    queue_records: IntGauge,
    queue_bytes: IntGauge,
    queue_oldest: Gauge,
    dead_letter_batches: IntGauge,
    dead_letter_records: IntGauge,
    pub queue_lost_records: IntCounter,
    disk_free: IntGauge,
    pub batches: IntCounterVec,
    pub retries: IntCounter,
    pub roundtrip: Histogram,
    pub pushes: IntCounterVec,
    started_s: u64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Collector round trips, from 1 ms to 60 s.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
            r.register(Box::new(m.clone())).expect("unique metric");
            m
        }
        let counters = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauges = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge = |name: &str, help: &str| {
            reg(&registry, IntGauge::new(name, help).expect("valid metric"))
        };
        Metrics {
            lines: counters(
                "logferry_agent_tail_lines_total",
                "Lines read from files and queued, by source.",
                &["source"],
            ),
            bytes: counters(
                "logferry_agent_tail_bytes_total",
                "Bytes read from files and queued, by source.",
                &["source"],
            ),
            unread_bytes: gauges(
                "logferry_agent_tail_unread_bytes",
                "Bytes written to followed files and not read yet, by source: how far behind the files the agent is.",
                &["source"],
            ),
            unread_age: reg(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "logferry_agent_tail_unread_age_seconds",
                        "How long the source's longest-waiting file has had bytes not read yet, by source (0 when none): its oldest unread line is at least this old.",
                    ),
                    &["source"],
                )
                .expect("valid metric"),
            ),
            files: gauges(
                "logferry_agent_tail_files",
                "Files followed, by source.",
                &["source"],
            ),
            rotations: counters(
                "logferry_agent_tail_rotations_total",
                "Files that stopped matching their source's globs (renamed or deleted), read to their end afterwards, by source.",
                &["source"],
            ),
            truncations: counters(
                "logferry_agent_tail_truncations_total",
                "Files found shorter than what was read (copytruncate, truncation), by source.",
                &["source"],
            ),
            parse_errors: counters(
                "logferry_agent_tail_parse_errors_total",
                "Lines of JSON sources that are not JSON objects (shipped as text), by source.",
                &["source"],
            ),
            truncated_lines: counters(
                "logferry_agent_tail_truncated_lines_total",
                "Lines longer than max_line_bytes, cut and marked logferry.truncated, by source.",
                &["source"],
            ),
            abandoned_bytes: counters(
                "logferry_agent_tail_abandoned_bytes_total",
                "Bytes that will never be read, by source and reason: truncated (a file truncated with unread bytes and no copy found), unreadable (a file that could no longer be read).",
                &["source", "reason"],
            ),
            uncounted_truncations: counters(
                "logferry_agent_tail_uncounted_truncations_total",
                "Files found truncated at the agent's start with no copy of their old content, by source: what they held past the checkpoint, if anything, was lost and cannot be counted in abandoned bytes.",
                &["source"],
            ),
            redactions: counters(
                "logferry_agent_redactions_total",
                "Values replaced before queueing, by source and detector (a built-in name, or custom.<index> for a source's redact_patterns).",
                &["source", "detector"],
            ),
            queue_records: gauge(
                "logferry_agent_queue_records",
                "Records in the queue, not yet acknowledged by a collector.",
            ),
            queue_bytes: gauge("logferry_agent_queue_bytes", "Bytes in the queue."),
            queue_oldest: reg(
                &registry,
                Gauge::new(
                    "logferry_agent_queue_oldest_unacked_age_seconds",
                    "How long the oldest record not yet acknowledged has waited (0 when the queue is empty).",
                )
                .expect("valid metric"),
            ),
            dead_letter_batches: gauge(
                "logferry_agent_queue_dead_letter_batches",
                "Batches every collector refused for good, kept in the dead-letter area until `logferry-agent dead-letters replay`.",
            ),
            dead_letter_records: gauge(
                "logferry_agent_queue_dead_letter_records",
                "Records of the batches in the dead-letter area.",
            ),
            disk_free: gauge(
                "logferry_agent_queue_disk_free_bytes",
                "Bytes available on the queue's filesystem; below queue.min_free_bytes the queue takes no records (tailing pauses, pushes are refused).",
            ),
            queue_lost_records: reg(
                &registry,
                IntCounter::new(
                    "logferry_agent_queue_lost_records_total",
                    "Records lost to a damaged queue, counted when it was recovered at start (the damaged queue is kept under data_dir/quarantine).",
                )
                .expect("valid metric"),
            ),
            batches: counters(
                "logferry_agent_forward_batches_total",
                "Batch sends, by outcome: acknowledged, duplicate (stored before), failed (to be retried), overloaded (the collector asked to wait: retried after its hint), refused (for good by that collector), dead_lettered (refused by every collector, set aside).",
                &["outcome"],
            ),
            retries: reg(
                &registry,
                IntCounter::new(
                    "logferry_agent_forward_retries_total",
                    "Batch sends that were attempts after a failure.",
                )
                .expect("valid metric"),
            ),
            roundtrip: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "logferry_agent_forward_roundtrip_duration_seconds",
                        "Time from sending a batch to a collector's answer (successful or not).",
                    )
                    .buckets(BUCKETS.to_vec()),
                )
                .expect("valid metric"),
            ),
            pushes: counters(
                "logferry_agent_push_requests_total",
                "Push requests from applications, by outcome: accepted (durable), refused (queue full, invalid, queue failure).",
                &["outcome"],
            ),
            started_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            registry,
        }
    }

    /// Creates the series of every known label value at 0, so they exist
    /// (and rates work) before the first event.
    pub fn init(&self, sources: &[String]) {
        for outcome in [
            "acknowledged",
            "duplicate",
            "failed",
            "overloaded",
            "refused",
            "dead_lettered",
        ] {
            self.batches.with_label_values(&[outcome]);
        }
        for outcome in ["accepted", "refused"] {
            self.pushes.with_label_values(&[outcome]);
        }
        for s in sources {
            let source = [s.as_str()];
            for counter in [
                &self.lines,
                &self.bytes,
                &self.rotations,
                &self.truncations,
                &self.uncounted_truncations,
                &self.parse_errors,
                &self.truncated_lines,
            ] {
                counter.with_label_values(&source);
            }
            self.files.with_label_values(&source);
            self.unread_bytes.with_label_values(&source);
            self.unread_age.with_label_values(&source);
            self.abandoned_bytes
                .with_label_values(&[s.as_str(), "truncated"]);
        }
    }

    /// Refreshes the queue gauges and renders every metric.
    pub fn render(&self, queue: &Queue) -> String {
        self.observe_queue(queue);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("the text encoder writes to memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    fn observe_queue(&self, queue: &Queue) {
        let depth = queue.depth();
        self.queue_records.set(depth.records as i64);
        self.queue_bytes.set(depth.bytes as i64);
        self.queue_oldest
            .set(depth.oldest_unacked.map_or(0.0, |d| d.as_secs_f64()));
        if let Ok(free) = queue.disk_free() {
            self.disk_free.set(free as i64);
        }
        let dead = queue.dead_letter_totals();
        self.dead_letter_batches.set(dead.batches as i64);
        self.dead_letter_records.set(dead.records as i64);
    }

    /// What this agent run could not ship, and how far behind it is:
    /// counters since it started, sent with every batch.
    pub fn report(&self, queue: &Queue) -> AgentReport {
        let sum = |v: &IntCounterVec| -> u64 {
            let mut n = 0;
            for family in v.collect() {
                for m in family.get_metric() {
                    n += m.get_counter().get_value() as u64;
                }
            }
            n
        };
        let unread: i64 = self
            .unread_bytes
            .collect()
            .iter()
            .flat_map(|f| {
                f.get_metric()
                    .iter()
                    .map(|m| m.get_gauge().get_value() as i64)
            })
            .sum();
        let depth = queue.depth();
        let dead = queue.dead_letter_totals();
        AgentReport {
            started_unix_s: self.started_s,
            abandoned_bytes: sum(&self.abandoned_bytes),
            truncated_lines: sum(&self.truncated_lines),
            parse_errors: sum(&self.parse_errors),
            unread_bytes: unread.max(0) as u64,
            queue_records: depth.records,
            oldest_unacked_s: depth.oldest_unacked.map_or(0, |d| d.as_secs()),
            dead_letter_batches: dead.batches,
            dead_letter_records: dead.records,
            queue_lost_records: self.queue_lost_records.get(),
            unread_age_s: self
                .unread_age
                .collect()
                .iter()
                .flat_map(|f| f.get_metric().iter().map(|m| m.get_gauge().get_value()))
                .fold(0.0, f64::max) as u64,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Serves `/metrics` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    queue: Arc<Queue>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    info!(addr = %listener.local_addr()?, "serving metrics at /metrics");
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (metrics, queue) = (Arc::clone(&metrics), Arc::clone(&queue));
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics.render(&queue),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}
