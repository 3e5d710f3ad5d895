//! Group commit: the batches that wait for ClickHouse at the same moment
//! are written together, with one INSERT of their pending ledger entries,
//! one of their rows (one per `MAX_DAYS_PER_INSERT` day partitions) and one
//! of their committed entries, instead of three or more statements each.
//!
//! At most `ingest.max_concurrent_inserts` groups are written at once.
//! A batch that finds a free slot is written at once, alone: an idle
//! collector adds no wait. Batches that arrive while every slot is busy
//! queue, and the next free slot takes all of them (up to
//! `ingest.max_insert_rows` rows and `MAX_GROUP` batches) as one group. So
//! the statements and new parts per second are bounded by the slots and
//! the time an INSERT takes, however many agents send, and a group grows
//! with the load instead of the part count.
//!
//! Exactly-once is the ledger's, per batch, as before: each member's
//! pending entry lands before any of its rows, its committed entry after
//! all of them, and every statement's query id names every member
//! (`lf-`, each member's `query_member`, a unique suffix), so a
//! later attempt of any member sees the INSERT while it still runs
//! (`Store::inserts_running`). A group that fails fails every member;
//! each is retried by its agent and resumed from the ledger. A member
//! whose attempt was abandoned (its request dropped) or whose deadline
//! came while it queued is left out before anything of it is written.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use logferry_daemon::error_chain;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::{too_many_parts, Refusal, RETRY_AFTER_PARTS};
use crate::metrics::Metrics;
use crate::record::LogRow;
use crate::store::{LedgerEntry, Store, COMMITTED};

/// Most batches in one group: every statement's query id names each of
/// them (17 characters apiece).
pub const MAX_GROUP: usize = 64;

/// A member with less time than this left is not started: its INSERT
/// would time out, and the agent's retry is better served by the ledger.
const MIN_REMAINING: Duration = Duration::from_millis(500);

/// Removes a batch from its collector's in-progress set when the last
/// holder lets go: the attempt, or the group that writes it after the
/// attempt was dropped.
pub struct InProgress {
    pub set: Arc<Mutex<HashSet<(String, String, u64)>>>,
    pub key: (String, String, u64),
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

/// One batch's part of a group.
pub struct Job {
    pub store: Store,
    /// The batch's pending entry; committed after the rows land.
    pub entry: LedgerEntry,
    pub rows: Vec<LogRow>,
    /// The batch's `query_member`.
    pub member: String,
    /// When the batch's attempt gives up (`ingest.batch_deadline_ms`).
    pub deadline: Instant,
    /// Set when the attempt was dropped.
    pub abandoned: Arc<AtomicBool>,
    /// Held until the group is written, so this collector takes no
    /// second attempt of the batch while the first may still write.
    pub _in_progress: InProgress,
}

type Reply = oneshot::Sender<Result<(), Refusal>>;

#[derive(Debug)]
pub struct Coalescer {
    jobs: mpsc::UnboundedSender<(Job, Reply)>,
}

impl Coalescer {
    /// Starts the task that forms groups; it ends when the coalescer is
    /// dropped and the groups in flight are written.
    pub fn start(max_concurrent_inserts: usize, max_rows: usize, metrics: Arc<Metrics>) -> Self {
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(form_groups(
            rx,
            Arc::new(Semaphore::new(max_concurrent_inserts)),
            max_rows,
            metrics,
        ));
        Coalescer { jobs }
    }

    /// Writes a batch's pending entry, rows and committed entry, with
    /// whichever batches wait at the same moment.
    pub async fn write(&self, job: Job) -> Result<(), Refusal> {
        let (reply, done) = oneshot::channel();
        self.jobs
            .send((job, reply))
            .map_err(|_| Refusal::Unavailable("the collector is shutting down".into()))?;
        done.await
            .map_err(|_| Refusal::Unavailable("the collector is shutting down".into()))?
    }
}

async fn form_groups(
    mut rx: mpsc::UnboundedReceiver<(Job, Reply)>,
    slots: Arc<Semaphore>,
    max_rows: usize,
    metrics: Arc<Metrics>,
) {
    while let Some(first) = rx.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        // What queued while every slot was busy joins this group.
        let mut rows = first.0.rows.len();
        let mut group = vec![first];
        while rows < max_rows && group.len() < MAX_GROUP {
            let Ok(job) = rx.try_recv() else { break };
            rows += job.0.rows.len();
            group.push(job);
        }
        tokio::spawn(write_group(group, slot, Arc::clone(&metrics)));
    }
}

async fn write_group(group: Vec<(Job, Reply)>, _slot: OwnedSemaphorePermit, metrics: Arc<Metrics>) {
    let now = Instant::now();
    let mut members = Vec::with_capacity(group.len());
    for (job, reply) in group {
        // Nothing of an abandoned member is written; dropping it lets
        // its agent's next attempt in.
        if job.abandoned.load(Ordering::Relaxed) {
            continue;
        }
        if job.deadline.saturating_duration_since(now) < MIN_REMAINING {
            let _ = reply.send(Err(Refusal::Deadline));
            continue;
        }
        members.push((job, reply));
    }
    if members.is_empty() {
        return;
    }
    let (mut jobs, replies): (Vec<Job>, Vec<Reply>) = members.into_iter().unzip();
    let result = write_members(&mut jobs, &metrics).await;
    for reply in replies {
        let _ = reply.send(result.clone());
    }
}

async fn write_members(jobs: &mut [Job], metrics: &Metrics) -> Result<(), Refusal> {
    let store = jobs[0].store.clone();
    let pending: Vec<&LedgerEntry> = jobs.iter().map(|j| &j.entry).collect();
    store
        .record_batches(&pending)
        .await
        .map_err(Refusal::store)?;
    let deadline = jobs
        .iter()
        .map(|j| j.deadline)
        .min()
        .unwrap_or_else(Instant::now);
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(Refusal::Deadline);
    }
    // Moved, not copied: a lone batch's rows are handed over as they are,
    // and each further member's buffer is freed once appended.
    let mut rows: Vec<LogRow> = Vec::new();
    for job in jobs.iter_mut() {
        let mine = std::mem::take(&mut job.rows);
        if rows.is_empty() {
            rows = mine;
        } else {
            rows.extend(mine);
        }
    }
    if !rows.is_empty() {
        let members: String = jobs.iter().map(|j| j.member.as_str()).collect();
        let query_ids = format!("lf-{members}{}-", uuid::Uuid::new_v4().simple());
        let insert = Instant::now();
        let inserted = store.insert_logs(&mut rows, remaining, &query_ids).await;
        metrics
            .clickhouse_insert_seconds
            .observe(insert.elapsed().as_secs_f64());
        if let Err(e) = inserted {
            metrics.clickhouse_insert_failures.inc();
            return Err(if too_many_parts(&e) {
                Refusal::Overloaded {
                    after: RETRY_AFTER_PARTS,
                    message: format!(
                        "clickhouse has too many parts, merges lag behind inserts; retry in {} ms: {}",
                        RETRY_AFTER_PARTS.as_millis(),
                        error_chain(&e)
                    ),
                }
            } else {
                Refusal::store(e)
            });
        }
        metrics.clickhouse_insert_batches.observe(jobs.len() as f64);
    }
    let recorded_at = (crate::clock::now_ms() / 1000) as u32;
    for job in jobs.iter_mut() {
        job.entry.state = COMMITTED;
        job.entry.recorded_at = recorded_at;
    }
    let committed: Vec<&LedgerEntry> = jobs.iter().map(|j| &j.entry).collect();
    store
        .record_batches(&committed)
        .await
        .map_err(Refusal::store)
}
