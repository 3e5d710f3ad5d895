//! gRPC ingest (`logferry.v1.IngestService`): store each batch exactly once.
//!
//! A batch is identified by (tenant, agent id, first sequence number), the
//! tenant being its credential's, and its rows by (tenant, agent id,
//! sequence number). The ledger table `ingest_batches` records, per batch,
//! a *pending* entry (who is storing it, until when) before its rows are
//! inserted and a *committed* entry after. For each batch:
//!
//! 1. committed in the ledger: answer `duplicate`, write nothing;
//! 2. pending, by an attempt (this collector's own included) whose deadline
//!    plus `SETTLE_MS` has not passed, or whose INSERT still runs on the
//!    server: answer UNAVAILABLE; the agent retries later;
//! 3. pending, expired (an attempt died mid-way): insert only the rows whose
//!    sequence numbers are not in `logs` yet, then commit;
//! 4. absent: write pending, insert all rows, commit.
//!
//! The agent never has one batch in two attempts at once (an attempt ends
//! before the next starts, and its timeout exceeds `batch_deadline_ms`), and
//! a collector gives up a batch at its deadline. So the only concurrent
//! attempts the ledger must arbitrate are ones that already ended. See
//! ARCHITECTURE.md for the argument and its one residual window.
//!
//! An acknowledgement is sent only after ClickHouse accepted the rows and the
//! commit entry; while ClickHouse is unreachable every batch is answered
//! UNAVAILABLE and the agents keep their queues. Every refusal is a
//! `Refusal` (`refusal.rs`), which gives its answer and its metric label.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use logferry_daemon::error_chain;
use logferry_proto::ingest_service_server::IngestService;
use logferry_proto::{ExportRequest, ExportResponse};
use tokio::sync::{watch, Semaphore, SemaphorePermit};
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

mod coalesce;
mod refusal;

use crate::analyze::{self, Registry};
use crate::auth::agents::AgentIds;
use crate::auth::Auth;
use crate::background::Background;
use crate::clock::now_ms;
use crate::config::IngestConfig;
use crate::decode::{decode_batch, DecodeError};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::record::LogRow;
use crate::store::alerts::AgentReportRow;
use crate::store::{LedgerEntry, PatternRow, Store, StoreError, COMMITTED, PENDING};
use coalesce::{Coalescer, InProgress, Job};
pub use refusal::Refusal;

/// The tenant of every record when agents ship without credentials
/// (`ingest.require_credentials = false`).
pub const DEFAULT_TENANT: &str = "default";

#[derive(Debug)]
pub struct Ingest {
    store: watch::Receiver<Option<Store>>,
    /// `None`: agents ship without credentials, into `DEFAULT_TENANT`.
    auth: Option<Arc<Auth>>,
    collector_id: String,
    deadline: Duration,
    /// Stamp patterns and security classes (`ingest.analyze`).
    analyze: bool,
    max_batch_records: u64,
    metrics: Arc<Metrics>,
    patterns: Registry,
    agent_ids: AgentIds,
    /// (tenant, agent id, first seq) of the batches being stored here.
    in_progress: Arc<Mutex<HashSet<(String, String, u64)>>>,
    coalescer: Coalescer,
    /// Per agent: when its loss report was last written, and its loss
    /// counters then.
    reports: Mutex<HashMap<String, (Instant, [u64; 5])>>,
    /// Where the reports are written from.
    background: Background,
    /// When a refusal was last logged as a warning (ms since the epoch):
    /// during an outage every batch is refused, the log says so every 10 s.
    last_warning_ms: AtomicU64,
    /// Admission: batches being stored, and their KiB.
    batches: Semaphore,
    kib: Semaphore,
    max_kib: u32,
    admission_wait: Duration,
}

/// How long an overloaded collector asks an agent to wait.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// The same after ClickHouse answered "too many parts": merges need time.
const RETRY_AFTER_PARTS: Duration = Duration::from_secs(5);

/// ClickHouse refusing an insert because merges lag behind inserts
/// (TOO_MANY_PARTS, code 252, worded alike by 18.16 and 26.x).
fn too_many_parts(e: &StoreError) -> bool {
    error_chain(e).contains("Code: 252")
}

impl Ingest {
    pub fn new(
        store: watch::Receiver<Option<Store>>,
        auth: Option<Arc<Auth>>,
        collector_id: String,
        config: &IngestConfig,
        metrics: Arc<Metrics>,
        background: Background,
    ) -> Arc<Ingest> {
        Arc::new(Ingest {
            store,
            auth,
            collector_id,
            deadline: Duration::from_millis(config.batch_deadline_ms),
            analyze: config.analyze,
            max_batch_records: config.max_batch_records,
            patterns: Registry::default(),
            agent_ids: AgentIds::default(),
            in_progress: Arc::default(),
            coalescer: Coalescer::start(
                config.max_concurrent_inserts,
                config.max_insert_rows,
                Arc::clone(&metrics),
            ),
            reports: Mutex::default(),
            background,
            last_warning_ms: AtomicU64::new(0),
            batches: Semaphore::new(config.max_concurrent_batches),
            kib: Semaphore::new((config.max_in_flight_bytes >> 10) as usize),
            max_kib: (config.max_in_flight_bytes >> 10).min(u64::from(u32::MAX)) as u32,
            admission_wait: Duration::from_millis(config.admission_wait_ms),
            metrics,
        })
    }

    /// The caller's agent credential and its tenant, admitted to ship
    /// under `agent_id`.
    async fn shipper(
        &self,
        store: &Store,
        authorization: Option<&str>,
        agent_id: &str,
    ) -> Result<String, Refusal> {
        let Some(auth) = &self.auth else {
            return Ok(DEFAULT_TENANT.to_string());
        };
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Refusal::Auth(Status::unauthenticated(
                    "this collector needs an agent credential: set forward.token_file in the agent",
                ))
            })?;
        let shipper = auth
            .authenticate_agent(store, token.trim())
            .await
            .map_err(|e| Refusal::Auth(Status::from(ApiError::from(e))))?;
        self.agent_ids
            .bind(store, &shipper, agent_id, &self.collector_id)
            .await
            .map_err(|e| Refusal::Auth(Status::from(ApiError::from(e))))?;
        Ok(shipper.tenant)
    }

    async fn store_batch(
        &self,
        req: ExportRequest,
        authorization: Option<&str>,
    ) -> Result<ExportResponse, Refusal> {
        let started = Instant::now();
        let store = self.store.borrow().clone().ok_or_else(|| {
            Refusal::Unavailable("collector is still connecting to clickhouse".into())
        })?;
        if req.agent_id.is_empty() || req.first_seq > req.last_seq {
            return Err(Refusal::Malformed(
                "a batch needs an agent id and first_seq <= last_seq".into(),
            ));
        }
        let tenant = self.shipper(&store, authorization, &req.agent_id).await?;
        let _admitted = self.admit(&req).await?;
        let key = (tenant.clone(), req.agent_id.clone(), req.first_seq);
        if !self
            .in_progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone())
        {
            return Err(Refusal::Busy(
                "this batch is already being stored by this collector".into(),
            ));
        }
        let in_progress = InProgress {
            set: Arc::clone(&self.in_progress),
            key,
        };
        self.record_report(&store, &tenant, &req);
        let deadline_ms = now_ms() + self.deadline.as_millis() as u64;
        let (agent_id, first_seq, last_seq) = (req.agent_id.clone(), req.first_seq, req.last_seq);
        let (analyze, collector_id) = (self.analyze, self.collector_id.clone());
        let tenant_label = tenant.clone();
        let max_records = self.max_batch_records;
        // The blocking work stops when this attempt is abandoned (the
        // agent timed out or went away, and this future was dropped) or
        // when its share of the deadline is spent.
        let abandoned = Abandoned::default();
        let flag = abandoned.flag();
        let budget = started + self.deadline.mul_f64(ANALYSIS_SHARE);
        let (decoded, stamped) = tokio::task::spawn_blocking(move || {
            let mut decoded = decode_batch(&req, &tenant, max_records).map_err(|e| match e {
                DecodeError::TooManyRecords { .. } => Refusal::TooLarge(e.to_string()),
                e => Refusal::Malformed(error_chain(&e)),
            })?;
            let stamped = if analyze {
                let go_on = || !flag.load(Ordering::Relaxed) && Instant::now() < budget;
                Some(new_templates(&mut decoded.rows, &collector_id, go_on))
            } else {
                None
            };
            Ok::<_, Refusal>((decoded, stamped))
        })
        .await
        .map_err(|_| Refusal::Internal("batch decoder failed"))??;
        drop(abandoned);
        let mut rows = decoded.rows;
        let templates = match stamped {
            Some(Stamped {
                templates,
                unstamped,
            }) => {
                if unstamped > 0 {
                    self.metrics.ingest_unanalyzed_records.inc_by(unstamped);
                    warn!(
                        agent_id,
                        first_seq,
                        unstamped,
                        "analysis of a batch ran out of its share of the deadline; the rest of its records are stored without pattern and security stamps"
                    );
                }
                templates
            }
            None => Vec::new(),
        };

        let deadline = started + self.deadline;
        past(deadline)?;
        let ledger = store
            .ledger(&tenant_label, &agent_id, first_seq)
            .await
            .map_err(Refusal::store)?;
        let pending = match decide(&ledger, now_ms()) {
            Decision::Duplicate => {
                debug!(agent_id, first_seq, "batch already stored");
                self.metrics.ingest_duplicate_batches.inc();
                return Ok(ExportResponse {
                    stored: 0,
                    duplicate: true,
                });
            }
            Decision::Busy { collector_id } => {
                return Err(Refusal::Busy(format!(
                    "this batch is being stored by collector {collector_id} until its deadline; retry later"
                )));
            }
            Decision::Resume(pending) => Some(pending),
            Decision::Fresh => None,
        };
        if let Some(pending) = pending {
            past(deadline)?;
            if store
                .inserts_running(&format!(
                    "-{}",
                    query_member(&tenant_label, &agent_id, first_seq)
                ))
                .await
                .map_err(Refusal::store)?
            {
                return Err(Refusal::Busy(
                    "an earlier attempt's insert of this batch is still being stored by the clickhouse server; retry later".into(),
                ));
            }
            past(deadline)?;
            let stored = store
                .stored_seqs(&tenant_label, pending)
                .await
                .map_err(Refusal::store)?;
            if !stored.is_empty() {
                warn!(
                    agent_id,
                    first_seq,
                    already = stored.len(),
                    "completing a batch whose earlier attempt was cut short"
                );
                rows.retain(|r| !stored.contains(&r.seq));
            }
        }
        let records = rows.len() as u64;
        let entry = LedgerEntry {
            tenant: tenant_label.clone(),
            agent_id,
            first_seq,
            last_seq,
            state: PENDING,
            collector_id: self.collector_id.clone(),
            deadline_ms,
            records,
            min_time: decoded.min_time,
            max_time: decoded.max_time,
            recorded_at: (now_ms() / 1000) as u32,
        };
        let abandoned = Abandoned::default();
        let job = Job {
            store: store.clone(),
            member: query_member(&tenant_label, &entry.agent_id, first_seq),
            entry,
            rows,
            deadline,
            abandoned: abandoned.flag(),
            _in_progress: in_progress,
        };
        self.coalescer.write(job).await?;
        drop(abandoned);
        let tenant = tenant_label.as_str();
        self.metrics
            .ingest_records
            .with_label_values(&[tenant])
            .inc_by(records);
        self.metrics
            .ingest_batches
            .with_label_values(&[tenant])
            .inc();
        // After the commit: a template that fails to register is retried
        // with the next batch that carries it; the records keep their ids.
        let fresh = self.patterns.fresh(templates);
        if !fresh.is_empty() {
            if let Err(e) = store.insert_patterns(&fresh).await {
                self.patterns.forget(&fresh);
                warn!(error = %error_chain(&e), "cannot register new message patterns; will retry");
            }
        }
        Ok(ExportResponse {
            stored: records,
            duplicate: false,
        })
    }
}

impl Ingest {
    /// Waits up to `admission_wait` for room for one more batch of this
    /// size; holds it until dropped.
    async fn admit(
        &self,
        req: &ExportRequest,
    ) -> Result<(SemaphorePermit<'_>, SemaphorePermit<'_>), Refusal> {
        let bytes: usize = req.chunks.iter().map(|c| c.len()).sum();
        let kib = ((bytes >> 10) as u64 + 1).min(u64::from(self.max_kib)) as u32;
        let room = async {
            let batch = self.batches.acquire().await;
            let bytes = self.kib.acquire_many(kib).await;
            (batch, bytes)
        };
        match tokio::time::timeout(self.admission_wait, room).await {
            Ok((Ok(batch), Ok(bytes))) => Ok((batch, bytes)),
            _ => Err(Refusal::Overloaded {
                after: RETRY_AFTER,
                message: format!(
                    "this collector is storing as many batches as it takes at once \
                     (ingest.max_concurrent_batches, max_in_flight_bytes); retry in {} ms",
                    RETRY_AFTER.as_millis()
                ),
            }),
        }
    }

    /// Writes the agent's loss report to `agent_reports`, in the
    /// background: when its loss counters moved, else at most every
    /// `REPORT_EVERY` per agent and collector.
    fn record_report(&self, store: &Store, tenant: &str, req: &ExportRequest) {
        let Some(report) = &req.report else { return };
        let losses = [
            report.abandoned_bytes,
            report.truncated_lines,
            report.parse_errors,
            report.dead_letter_records,
            report.queue_lost_records,
        ];
        {
            let mut reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, last)) = reports.get(&req.agent_id) {
                if *last == losses && at.elapsed() < REPORT_EVERY {
                    return;
                }
            }
            reports.insert(req.agent_id.clone(), (Instant::now(), losses));
        }
        let host = req
            .resource
            .iter()
            .find(|kv| kv.key == "host.name")
            .and_then(|kv| kv.value.as_ref())
            .map(crate::decode::text_of)
            .unwrap_or_default();
        let row = AgentReportRow {
            tenant: tenant.to_string(),
            agent_id: req.agent_id.clone(),
            host,
            time: (now_ms() / 1000) as u32,
            abandoned_bytes: report.abandoned_bytes,
            truncated_lines: report.truncated_lines,
            parse_errors: report.parse_errors,
            unread_bytes: report.unread_bytes,
            queue_records: report.queue_records,
            oldest_unacked_s: report.oldest_unacked_s,
            started_s: report.started_unix_s,
            dead_letter_batches: report.dead_letter_batches,
            dead_letter_records: report.dead_letter_records,
            queue_lost_records: report.queue_lost_records,
            unread_age_s: report.unread_age_s,
        };
        let store = store.clone();
        self.background.spawn(async move {
            if let Err(e) = store.insert_agent_report(&row).await {
                debug!(error = %error_chain(&e), "cannot record an agent's report");
            }
        });
    }
}

/// How often an agent's unchanged loss report is written.
const REPORT_EVERY: Duration = Duration::from_secs(10);

#[tonic::async_trait]
impl IngestService for Ingest {
    async fn export(
        &self,
        request: Request<ExportRequest>,
    ) -> Result<Response<ExportResponse>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        match self
            .store_batch(request.into_inner(), authorization.as_deref())
            .await
        {
            Ok(resp) => Ok(Response::new(resp)),
            Err(refusal) => {
                self.metrics
                    .ingest_refused_batches
                    .with_label_values(&[refusal.label()])
                    .inc();
                let now = now_ms();
                let last = self.last_warning_ms.load(Ordering::Relaxed);
                let warn_now = !refusal.transient()
                    || (now.saturating_sub(last) >= 10_000
                        && self
                            .last_warning_ms
                            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                            .is_ok());
                let permanent = refusal.permanent();
                let status = refusal.status();
                if warn_now && permanent {
                    warn!(code = ?status.code(), message = status.message(), "batch refused for good; the agent sets it aside once every collector refused it");
                } else if warn_now {
                    warn!(code = ?status.code(), message = status.message(), "batch refused; the agent will retry");
                } else {
                    debug!(code = ?status.code(), message = status.message(), "batch refused");
                }
                Err(status)
            }
        }
    }
}

/// A batch's name in the query ids of the INSERTs that write its rows, the
/// same on every collector: a hash of (tenant, agent id, first seq), then
/// `-` (see `coalesce`).
fn query_member(tenant: &str, agent_id: &str, first_seq: u64) -> String {
    let key = format!("{tenant}\0{agent_id}\0{first_seq}");
    format!("{:016x}-", xxhash_rust::xxh3::xxh3_64(key.as_bytes()))
}

/// How long past an attempt's deadline its INSERT may still land: an
/// INSERT whose request ended at the deadline (timed out, or dropped with
/// its attempt) can still be completed by the server. Only after this is a
/// pending entry taken over and its missing rows looked up.
const SETTLE_MS: u64 = 5_000;

/// What the ledger's entries for a batch say about storing it now.
#[derive(Debug, PartialEq)]
enum Decision<'a> {
    /// A collector committed it: acknowledge it without writing.
    Duplicate,
    /// An attempt may still be writing: its deadline, plus `SETTLE_MS` for
    /// an INSERT the server still completes, has not passed. This
    /// collector's own earlier attempts count too: one may have been
    /// dropped (the agent timed out) while ClickHouse goes on.
    Busy { collector_id: &'a str },
    /// Every attempt is over without a commit: complete the batch, without
    /// the rows the latest attempt's INSERT already stored.
    Resume(&'a LedgerEntry),
    /// No attempt yet.
    Fresh,
}

/// The exactly-once decision, from the entries of one batch in any order.
fn decide(entries: &[LedgerEntry], now_ms: u64) -> Decision<'_> {
    if entries.iter().any(|e| e.state == COMMITTED) {
        return Decision::Duplicate;
    }
    let latest = entries
        .iter()
        .filter(|e| e.state == PENDING)
        .max_by_key(|e| e.deadline_ms);
    match latest {
        None => Decision::Fresh,
        Some(p) if p.deadline_ms + SETTLE_MS > now_ms => Decision::Busy {
            collector_id: &p.collector_id,
        },
        Some(p) => Decision::Resume(p),
    }
}

/// A batch's attempt gives up at its deadline: checked before each step
/// that waits on ClickHouse (the coalescer checks it again before the
/// INSERT, which runs with the time that remains).
fn past(deadline: Instant) -> Result<(), Refusal> {
    if Instant::now() >= deadline {
        Err(Refusal::Deadline)
    } else {
        Ok(())
    }
}

/// The share of `ingest.batch_deadline_ms` that stamping a batch may take.
/// Stamping costs microseconds a record, so this is a bound for records
/// built to be slow, not a limit that ordinary batches meet: it keeps every
/// batch storable within its deadline, whatever its records hold.
const ANALYSIS_SHARE: f64 = 0.25;

/// Set when the attempt that spawned blocking work is dropped.
#[derive(Default)]
struct Abandoned(Arc<AtomicBool>);

impl Abandoned {
    fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

struct Stamped {
    templates: Vec<PatternRow>,
    /// Rows left unstamped because `go_on` said stop.
    unstamped: u64,
}

/// Stamps rows (`analyze::stamp`) while `go_on` holds (asked every 256
/// rows) and returns each distinct template of the batch once, with its
/// earliest time. A batch has one tenant (its credential's), so templates
/// are keyed by id alone.
fn new_templates(rows: &mut [LogRow], collector_id: &str, go_on: impl Fn() -> bool) -> Stamped {
    let mut out: HashMap<u64, PatternRow> = HashMap::new();
    let mut unstamped = 0;
    for (i, row) in rows.iter_mut().enumerate() {
        if i % 256 == 0 && !go_on() {
            unstamped = (rows.len() - i) as u64;
            break;
        }
        let template = analyze::stamp(row);
        out.entry(template.id)
            .and_modify(|p| p.first_seen = p.first_seen.min(row.timestamp))
            .or_insert_with(|| PatternRow {
                tenant: row.tenant.clone(),
                pattern_id: template.id,
                template: template.text,
                first_seen: row.timestamp,
                collector_id: collector_id.to_string(),
            });
    }
    Stamped {
        templates: out.into_values().collect(),
        unstamped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn rows(n: usize) -> Vec<LogRow> {
        (0..n)
            .map(|i| LogRow {
                body: format!("request {i} took {i} ms"),
                http_path: "/api/v1/items?id=1".into(),
                ..LogRow::default()
            })
            .collect()
    }

    #[test]
    fn stamping_stops_when_told_and_counts_what_it_left() {
        let mut all = rows(1000);
        let stamped = new_templates(&mut all, "c1", || true);
        assert_eq!(stamped.unstamped, 0);
        assert!(all
            .iter()
            .all(|r| r.pattern_id != 0 && !r.security_class.is_empty()));
        assert_eq!(stamped.templates.len(), 1, "one template, once");

        // Asked every 256 rows: stopping at the second question leaves
        // the rows from 256 on unstamped, and says how many.
        let mut some = rows(1000);
        let asked = Cell::new(0);
        let stamped = new_templates(&mut some, "c1", || {
            asked.set(asked.get() + 1);
            asked.get() < 2
        });
        assert_eq!(stamped.unstamped, 744);
        assert!(some[..256].iter().all(|r| r.pattern_id != 0));
        assert!(some[256..]
            .iter()
            .all(|r| r.pattern_id == 0 && r.security_class.is_empty()));
    }

    fn entry(state: u8, collector_id: &str, deadline_ms: u64) -> LedgerEntry {
        LedgerEntry {
            tenant: "acme".into(),
            agent_id: "a".into(),
            first_seq: 1,
            last_seq: 9,
            state,
            collector_id: collector_id.into(),
            deadline_ms,
            records: 9,
            min_time: 0,
            max_time: 0,
            recorded_at: 0,
        }
    }

    #[test]
    fn the_ledger_decides_every_case() {
        let now = 100_000;
        let settled = now - SETTLE_MS - 1;
        let (c1, c2) = ("c1", "c2");
        let live = entry(PENDING, c2, now + 1);
        let settling = entry(PENDING, c2, now - SETTLE_MS + 1);
        let expired = entry(PENDING, c1, settled);
        let older = entry(PENDING, c2, settled - 10_000);
        let committed = entry(COMMITTED, c1, settled);
        let cases: Vec<(&str, Vec<&LedgerEntry>, Decision)> = vec![
            ("no entry", vec![], Decision::Fresh),
            ("committed", vec![&committed], Decision::Duplicate),
            (
                "committed wins over a live attempt",
                vec![&live, &committed],
                Decision::Duplicate,
            ),
            (
                "an attempt within its deadline",
                vec![&live],
                Decision::Busy { collector_id: c2 },
            ),
            (
                "an attempt past its deadline, still settling",
                vec![&settling],
                Decision::Busy { collector_id: c2 },
            ),
            (
                "an attempt settled",
                vec![&expired],
                Decision::Resume(&expired),
            ),
            (
                "the latest attempt decides, in any order",
                vec![&expired, &live],
                Decision::Busy { collector_id: c2 },
            ),
            (
                "the latest of settled attempts is resumed",
                vec![&older, &expired],
                Decision::Resume(&expired),
            ),
            (
                "reversed",
                vec![&expired, &older],
                Decision::Resume(&expired),
            ),
        ];
        for (case, entries, want) in cases {
            let entries: Vec<LedgerEntry> = entries.into_iter().cloned().collect();
            assert_eq!(decide(&entries, now), want, "{case}");
        }
    }

    #[test]
    fn too_many_parts_is_recognised_in_both_servers_words() {
        let answer =
            |text: &str| StoreError::ClickHouse(clickhouse::error::Error::BadResponse(text.into()));
        assert!(too_many_parts(&answer(
            "Code: 252, e.displayText() = DB::Exception: Too many parts (300). Merges are processing significantly slower than inserts."
        )));
        assert!(too_many_parts(&answer(
            "Code: 252. DB::Exception: Too many parts (3001 with average size of 1.00 KiB) in table 'logs'. (TOO_MANY_PARTS)"
        )));
        assert!(!too_many_parts(&answer(
            "Code: 241. DB::Exception: Memory limit exceeded"
        )));
    }

    #[test]
    fn a_batchs_query_id_member_is_the_same_on_every_collector() {
        let a = query_member("acme", "agent-1", 42);
        assert_eq!(a, query_member("acme", "agent-1", 42));
        assert!(
            a.ends_with('-') && a.len() == 17 && !a[..16].contains('-'),
            "{a}"
        );
        assert_ne!(a, query_member("globex", "agent-1", 42));
        assert_ne!(a, query_member("acme", "agent-1", 43));
    }

    #[test]
    fn an_abandoned_attempt_raises_its_flag_when_dropped() {
        let abandoned = Abandoned::default();
        let flag = abandoned.flag();
        assert!(!flag.load(Ordering::Relaxed));
        drop(abandoned);
        assert!(flag.load(Ordering::Relaxed));
    }
}
