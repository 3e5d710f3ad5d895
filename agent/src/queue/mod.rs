//! The durable queue: RocksDB holds every record from the moment it is
//! acknowledged (to an application) or its file position moves, until a
//! collector has acknowledged it.
//!
//! Lifecycle of a record:
//! 1. `commit`: a chunk of records, with the new read position of the file it
//!    came from, goes into one `WriteBatch`. Either both are durable or
//!    neither is, so after a crash the tailer resumes exactly where the queue
//!    ends.
//! 2. `cut_batch`: the forwarder groups the oldest records not yet in a batch
//!    and persists the batch's range (a manifest) before the first send, so a
//!    resend after any crash carries exactly the same records under the same
//!    identity.
//! 3. `ack`: once a collector acknowledged the batch, its records and
//!    manifest are deleted in one write.
//! 4. Or `dead_letter`: every collector refused the batch for good, and its
//!    manifest moves to `dead_letters` in one write; the records stay,
//!    counted in `bytes`, until `replay` moves the manifest back (same
//!    identity, so the collector still stores the batch once).
//!
//! Sequence numbers are assigned under a lock but written outside it, so that
//! concurrent commits share RocksDB's group commit (one fsync for many). A
//! batch is only cut below the lowest number still being written, so a slow
//! writer can never be skipped by the forwarder.
//!
//! Every method blocks on disk I/O: call them from a blocking thread.

mod format;
mod recover;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

use logferry_proto::Chunk;

use crate::config::MIN_QUEUE_MEMORY;

use format::{decode_seq, record_value, seq_key, split_record_value, EPOCH_SHIFT};
pub use format::{DeadLetter, Manifest};
pub use recover::{NoRefill, Recovery, Refill};

const CF_RECORDS: &str = "records";
const CF_BATCHES: &str = "batches";
const CF_CHECKPOINTS: &str = "checkpoints";
const CF_DEAD_LETTERS: &str = "dead_letters";

/// How stale the free space `room` goes by may be: far less than the
/// reserve can fill in that time.
const DISK_LOOK_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue is full ({bytes} of {max_bytes} bytes); waiting for collectors to catch up")]
    Full { bytes: u64, max_bytes: u64 },
    #[error(
        "the queue's disk has {available} bytes free, less than queue.min_free_bytes ({min_free}); \
         waiting for room (collectors catching up, or space freed)"
    )]
    DiskFull { available: u64, min_free: u64 },
    #[error("queue database error")]
    Db(#[from] rocksdb::Error),
    #[error("queue holds a corrupt {0}; the data directory was damaged or written by an incompatible version")]
    Corrupt(&'static str),
    #[error("a file operation of the queue failed")]
    Io(#[from] std::io::Error),
}

/// A batch ready to send: its identity and the encoded chunks it carries.
#[derive(Debug, Clone)]
pub struct Batch {
    pub manifest: Manifest,
    pub chunks: Vec<Bytes>,
}

#[derive(Debug)]
struct State {
    next_seq: u64,
    /// First sequence numbers assigned to commits still being written.
    writing: BTreeSet<u64>,
    bytes: u64,
    /// First sequence number not yet in a batch.
    cursor: u64,
    unbatched_records: u64,
    unbatched_bytes: u64,
    oldest_unbatched: Option<Instant>,
    /// Batches cut and not acknowledged: first sequence number → (records,
    /// when their oldest record was queued, as far as known: batches left
    /// from before a restart count from the restart).
    batches: BTreeMap<u64, (u64, Instant)>,
    dead: DeadLetters,
}

/// What the dead-letter area holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeadLetters {
    pub batches: u64,
    pub records: u64,
    pub bytes: u64,
}

impl DeadLetters {
    fn add(&mut self, m: &Manifest) {
        self.batches += 1;
        self.records += m.records;
        self.bytes += m.bytes;
    }

    fn remove(&mut self, m: &Manifest) {
        self.batches -= 1;
        self.records -= m.records;
        self.bytes -= m.bytes;
    }
}

/// What the queue holds, for metrics and the agent's loss report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Depth {
    /// Records to deliver (the dead-letter area's are not).
    pub records: u64,
    /// Bytes on disk, the dead-letter area's included (they count towards
    /// `max_bytes`).
    pub bytes: u64,
    /// How long the oldest record not yet acknowledged has waited.
    pub oldest_unacked: Option<Duration>,
}

/// A raw key and value of a column family.
pub type KeyValue = (Vec<u8>, Vec<u8>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub records: u64,
    pub bytes: u64,
    pub oldest: Option<Instant>,
}

pub struct Queue {
    db: DB,
    dir: std::path::PathBuf,
    /// Free space the queue leaves on its disk (0: no check).
    min_free: std::sync::atomic::AtomicU64,
    /// The last look at that free space: when, and how much. Commits and
    /// the tailer's every poll ask; the disk is looked at every
    /// `DISK_LOOK_EVERY` at most.
    disk: Mutex<Option<(Instant, u64)>>,
    agent_id: String,
    write_opts: WriteOptions,
    max_bytes: u64,
    state: Mutex<State>,
    /// Wakes the forwarder when records arrive.
    pub arrived: tokio::sync::Notify,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// Opens the queue in `dir`: at most `max_bytes` queued, commits synced
    /// when `sync`, RocksDB's write buffers and block cache within
    /// `memory` bytes together (at least `config::MIN_QUEUE_MEMORY`).
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        sync: bool,
        memory: u64,
    ) -> Result<Arc<Queue>, QueueError> {
        let db = open_db(dir, memory)?;
        let mut synced = WriteOptions::default();
        synced.set_sync(true);

        let agent_id = match db.get(b"agent_id")? {
            Some(v) => String::from_utf8(v).map_err(|_| QueueError::Corrupt("agent id"))?,
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                db.put_opt(b"agent_id", id.as_bytes(), &synced)?;
                id
            }
        };

        // Scan what is queued to rebuild the in-memory accounting.
        let mut bytes = 0;
        let mut end_seq = 0;
        let mut cursor = None;
        let mut batch_end = 0;
        let mut batches = BTreeMap::new();
        let opened = Instant::now();
        for item in db.iterator_cf(cf(&db, CF_BATCHES), rocksdb::IteratorMode::Start) {
            let (k, v) = item?;
            let m = Manifest::decode(&k, &v)?;
            batch_end = batch_end.max(m.last_seq + 1);
            batches.insert(m.first_seq, (m.records, opened));
        }
        let mut dead = DeadLetters::default();
        for item in db.iterator_cf(cf(&db, CF_DEAD_LETTERS), rocksdb::IteratorMode::Start) {
            let (k, v) = item?;
            let m = DeadLetter::decode(&k, &v)?.manifest;
            batch_end = batch_end.max(m.last_seq + 1);
            dead.add(&m);
        }
        let (mut unbatched_records, mut unbatched_bytes) = (0, 0);
        for item in db.iterator_cf(cf(&db, CF_RECORDS), rocksdb::IteratorMode::Start) {
            let (k, v) = item?;
            let seq = decode_seq(&k)?;
            let (count, _) = split_record_value(&v)?;
            bytes += v.len() as u64;
            end_seq = end_seq.max(seq + u64::from(count));
            if seq >= batch_end {
                cursor.get_or_insert(seq);
                unbatched_records += u64::from(count);
                unbatched_bytes += v.len() as u64;
            }
        }
        let last_epoch = match db.get(b"epoch")? {
            Some(v) => u32::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| QueueError::Corrupt("epoch"))?,
            ),
            None => 0,
        };
        let floor = end_seq.max(batch_end);
        let epoch = last_epoch.max((floor >> EPOCH_SHIFT) as u32) + 1;
        db.put_opt(b"epoch", epoch.to_be_bytes(), &synced)?;
        let next_seq = u64::from(epoch) << EPOCH_SHIFT;

        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(sync);
        Ok(Arc::new(Queue {
            db,
            dir: dir.to_path_buf(),
            min_free: std::sync::atomic::AtomicU64::new(0),
            disk: Mutex::new(None),
            agent_id,
            write_opts,
            max_bytes,
            state: Mutex::new(State {
                next_seq,
                writing: BTreeSet::new(),
                bytes,
                cursor: cursor.unwrap_or(next_seq).max(batch_end),
                unbatched_records,
                unbatched_bytes,
                oldest_unbatched: (unbatched_records > 0).then(Instant::now),
                batches,
                dead,
            }),
            arrived: tokio::sync::Notify::new(),
        }))
    }

    /// `open`; a queue whose files are damaged is first quarantined and
    /// what survives moved into a new one (`recover`), so that damage never
    /// stops the agent; `refill` reads lost records again where it can.
    /// The second value says what that recovery did.
    pub fn open_or_recover(
        dir: &Path,
        max_bytes: u64,
        sync: bool,
        memory: u64,
        refill: &dyn Refill,
    ) -> Result<(Arc<Queue>, Option<Recovery>), QueueError> {
        match Queue::open(dir, max_bytes, sync, memory) {
            Ok(q) => Ok((q, None)),
            Err(e) if recover::is_damage(&e) => {
                let recovery = recover::recover(dir, &e, refill)?;
                Ok((Queue::open(dir, max_bytes, sync, memory)?, Some(recovery)))
            }
            Err(e) => Err(e),
        }
    }

    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock is a bug elsewhere; the state itself
        // is a set of counters that stay meaningful.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn bytes(&self) -> u64 {
        self.state().bytes
    }

    /// Bytes waiting for the forwarder: `bytes` less the dead-letter area's.
    pub fn undelivered_bytes(&self) -> u64 {
        let s = self.state();
        s.bytes.saturating_sub(s.dead.bytes)
    }

    /// Leaves at least `bytes` free on the queue's filesystem: commits are
    /// refused below it, as when the queue is full, before RocksDB could
    /// fail a write for want of space.
    pub fn reserve_free(&self, bytes: u64) {
        self.min_free
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Bytes available to the agent on the queue's filesystem.
    pub fn disk_free(&self) -> Result<u64, QueueError> {
        let st = rustix::fs::statvfs(&self.dir).map_err(std::io::Error::from)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// Whether a commit would be taken now: `Full` or `DiskFull` if not.
    pub fn room(&self) -> Result<(), QueueError> {
        let bytes = self.state().bytes;
        if bytes >= self.max_bytes {
            return Err(QueueError::Full {
                bytes,
                max_bytes: self.max_bytes,
            });
        }
        let min_free = self.min_free.load(std::sync::atomic::Ordering::Relaxed);
        if min_free > 0 {
            let available = self.recent_disk_free()?;
            if available < min_free {
                return Err(QueueError::DiskFull {
                    available,
                    min_free,
                });
            }
        }
        Ok(())
    }

    /// `disk_free`, as looked at within the last `DISK_LOOK_EVERY`.
    fn recent_disk_free(&self) -> Result<u64, QueueError> {
        let mut last = self.disk.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, free)) = *last {
            if at.elapsed() < DISK_LOOK_EVERY {
                return Ok(free);
            }
        }
        let free = self.disk_free()?;
        *last = Some((Instant::now(), free));
        Ok(free)
    }

    pub fn backlog(&self) -> Backlog {
        let s = self.state();
        Backlog {
            records: s.unbatched_records,
            bytes: s.unbatched_bytes,
            oldest: s.oldest_unbatched,
        }
    }

    /// Durably appends `count` records (the chunk, whose `first_seq` is set
    /// here) together with an optional checkpoint, in one atomic write.
    /// Returns the first sequence number.
    pub fn commit(
        &self,
        count: u32,
        mut chunk: Chunk,
        checkpoint: Option<(&[u8], &[u8])>,
    ) -> Result<u64, QueueError> {
        self.room()?;
        let seq = {
            let mut s = self.state();
            let seq = s.next_seq;
            s.next_seq += u64::from(count);
            s.writing.insert(seq);
            seq
        };
        chunk.first_seq = seq;
        let value = record_value(count, &chunk);
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_RECORDS), seq_key(seq), &value);
        if let Some((k, v)) = checkpoint {
            batch.put_cf(cf(&self.db, CF_CHECKPOINTS), k, v);
        }
        let written = self.db.write_opt(batch, &self.write_opts);
        {
            let mut s = self.state();
            s.writing.remove(&seq);
            if written.is_ok() {
                s.bytes += value.len() as u64;
                s.unbatched_records += u64::from(count);
                s.unbatched_bytes += value.len() as u64;
                s.oldest_unbatched.get_or_insert_with(Instant::now);
            }
        }
        written?;
        self.arrived.notify_one();
        Ok(seq)
    }

    /// Groups the oldest unbatched records (at least one chunk, then up to the
    /// limits) into a batch and persists its manifest. `None` when there is
    /// nothing to send.
    pub fn cut_batch(&self, max_records: u64, max_bytes: u64) -> Result<Option<Batch>, QueueError> {
        let (cursor, limit) = {
            let s = self.state();
            (s.cursor, s.writing.first().copied().unwrap_or(s.next_seq))
        };
        let mut chunks = Vec::new();
        let (mut records, mut bytes, mut first_seq, mut end) = (0u64, 0u64, cursor, cursor);
        let mode = rocksdb::IteratorMode::From(&seq_key(cursor), rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(cf(&self.db, CF_RECORDS), mode) {
            let (k, v) = item?;
            let seq = decode_seq(&k)?;
            if seq >= limit {
                break;
            }
            let (count, chunk) = split_record_value(&v)?;
            let count = u64::from(count);
            if !chunks.is_empty()
                && (records + count > max_records || bytes + v.len() as u64 > max_bytes)
            {
                break;
            }
            if chunks.is_empty() {
                first_seq = seq;
            }
            chunks.push(Bytes::copy_from_slice(chunk));
            records += count;
            bytes += v.len() as u64;
            end = seq + count;
        }
        if chunks.is_empty() {
            return Ok(None);
        }
        let manifest = Manifest {
            first_seq,
            last_seq: end - 1,
            bytes,
            records,
        };
        self.db.put_cf_opt(
            cf(&self.db, CF_BATCHES),
            seq_key(first_seq),
            manifest.encode_value(),
            &self.write_opts,
        )?;
        let mut s = self.state();
        s.cursor = end;
        s.unbatched_records -= records;
        s.unbatched_bytes -= bytes;
        let oldest = s.oldest_unbatched.unwrap_or_else(Instant::now);
        s.batches.insert(first_seq, (records, oldest));
        s.oldest_unbatched = (s.unbatched_records > 0).then(Instant::now);
        Ok(Some(Batch { manifest, chunks }))
    }

    /// Batches cut before the last stop that were never acknowledged, oldest
    /// first, with the very records they held then.
    pub fn unacked_batches(&self) -> Result<Vec<Batch>, QueueError> {
        let mut batches = Vec::new();
        for item in self
            .db
            .iterator_cf(cf(&self.db, CF_BATCHES), rocksdb::IteratorMode::Start)
        {
            let (k, v) = item?;
            let manifest = Manifest::decode(&k, &v)?;
            let mut chunks = Vec::new();
            let mode = rocksdb::IteratorMode::From(&k, rocksdb::Direction::Forward);
            for item in self.db.iterator_cf(cf(&self.db, CF_RECORDS), mode) {
                let (k, v) = item?;
                if decode_seq(&k)? > manifest.last_seq {
                    break;
                }
                chunks.push(Bytes::copy_from_slice(split_record_value(&v)?.1));
            }
            batches.push(Batch { manifest, chunks });
        }
        Ok(batches)
    }

    /// Deletes an acknowledged batch: its records and its manifest, in one
    /// write. Not synced: if a power failure takes it back, the batch is sent
    /// again and the collector recognises it.
    pub fn ack(&self, manifest: &Manifest) -> Result<(), QueueError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            cf(&self.db, CF_RECORDS),
            seq_key(manifest.first_seq),
            seq_key(manifest.last_seq + 1),
        );
        batch.delete_cf(cf(&self.db, CF_BATCHES), seq_key(manifest.first_seq));
        self.db.write(batch)?;
        let mut s = self.state();
        s.bytes = s.bytes.saturating_sub(manifest.bytes);
        s.batches.remove(&manifest.first_seq);
        Ok(())
    }

    /// Sets aside a batch every collector refused for good: its manifest
    /// moves to the dead-letter area, its records stay where they are.
    pub fn dead_letter(&self, manifest: &Manifest, reason: &str) -> Result<(), QueueError> {
        let letter = DeadLetter {
            manifest: *manifest,
            refused_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            reason: reason.to_string(),
        };
        let key = seq_key(manifest.first_seq);
        let mut batch = WriteBatch::default();
        batch.delete_cf(cf(&self.db, CF_BATCHES), key);
        batch.put_cf(cf(&self.db, CF_DEAD_LETTERS), key, letter.encode_value());
        self.db.write_opt(batch, &self.write_opts)?;
        let mut s = self.state();
        s.batches.remove(&manifest.first_seq);
        s.dead.add(manifest);
        Ok(())
    }

    pub fn dead_letter_totals(&self) -> DeadLetters {
        self.state().dead
    }

    /// The dead-letter area, oldest batch first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        self.db
            .iterator_cf(cf(&self.db, CF_DEAD_LETTERS), rocksdb::IteratorMode::Start)
            .map(|item| {
                let (k, v) = item?;
                DeadLetter::decode(&k, &v)
            })
            .collect()
    }

    /// Moves dead letters back among the batches to send (all of them, or
    /// the one starting at `first_seq`), under the identity they had, and
    /// returns what it moved. Batches are read at start: replay with the
    /// agent stopped, and the next start sends them.
    pub fn replay(&self, first_seq: Option<u64>) -> Result<Vec<DeadLetter>, QueueError> {
        let letters: Vec<DeadLetter> = self
            .dead_letters()?
            .into_iter()
            .filter(|d| first_seq.is_none_or(|f| f == d.manifest.first_seq))
            .collect();
        let mut batch = WriteBatch::default();
        for d in &letters {
            let key = seq_key(d.manifest.first_seq);
            batch.delete_cf(cf(&self.db, CF_DEAD_LETTERS), key);
            batch.put_cf(cf(&self.db, CF_BATCHES), key, d.manifest.encode_value());
        }
        self.db.write_opt(batch, &self.write_opts)?;
        let mut s = self.state();
        for d in &letters {
            s.dead.remove(&d.manifest);
            s.batches
                .insert(d.manifest.first_seq, (d.manifest.records, Instant::now()));
        }
        Ok(letters)
    }

    pub fn depth(&self) -> Depth {
        let s = self.state();
        let oldest = s
            .batches
            .values()
            .map(|(_, t)| *t)
            .chain(s.oldest_unbatched)
            .min();
        Depth {
            records: s.unbatched_records + s.batches.values().map(|(n, _)| n).sum::<u64>(),
            bytes: s.bytes,
            oldest_unacked: oldest.map(|t| t.elapsed()),
        }
    }

    /// All checkpoints (key, value), for the tailer to resume from.
    pub fn checkpoints(&self) -> Result<Vec<KeyValue>, QueueError> {
        self.db
            .iterator_cf(cf(&self.db, CF_CHECKPOINTS), rocksdb::IteratorMode::Start)
            .map(|item| {
                item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(QueueError::from)
            })
            .collect()
    }

    /// Writes a checkpoint that moves without records (a truncation, a
    /// skipped remainder of an over-long line).
    pub fn put_checkpoint(&self, key: &[u8], value: &[u8]) -> Result<(), QueueError> {
        self.db
            .put_cf_opt(cf(&self.db, CF_CHECKPOINTS), key, value, &self.write_opts)?;
        Ok(())
    }

    /// Writes several checkpoints in one write (files found by one scan:
    /// one sync, however many there are).
    pub fn put_checkpoints(&self, items: &[(Vec<u8>, Vec<u8>)]) -> Result<(), QueueError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for (k, v) in items {
            batch.put_cf(cf(&self.db, CF_CHECKPOINTS), k, v);
        }
        self.db.write_opt(batch, &self.write_opts)?;
        Ok(())
    }

    pub fn delete_checkpoint(&self, key: &[u8]) -> Result<(), QueueError> {
        self.db.delete_cf(cf(&self.db, CF_CHECKPOINTS), key)?;
        Ok(())
    }

    /// Flushes the write-ahead log, for a clean shutdown with `sync = never`.
    pub fn flush(&self) -> Result<(), QueueError> {
        self.db.flush_wal(true)?;
        Ok(())
    }
}

/// Opens (or creates) the RocksDB database of a queue, every family in it,
/// its write buffers and block cache within `memory` bytes.
fn open_db(dir: &Path, memory: u64) -> Result<DB, rocksdb::Error> {
    // A record torn at the end of the WAL by a crash is dropped (it was
    // never acknowledged); damage anywhere else fails the open, and
    // `recover` takes over, instead of RocksDB's default of silently
    // dropping everything after it.
    open_db_with(
        dir,
        rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords,
        memory,
    )
}

/// Every family's write buffers are charged to one block cache of
/// `memory` bytes, and a write buffer manager of the same size flushes the
/// largest when they near it (and holds writers back past it): write
/// buffers and cached blocks stay within `memory` together.
fn open_db_with(
    dir: &Path,
    wal: rocksdb::DBRecoveryMode,
    memory: u64,
) -> Result<DB, rocksdb::Error> {
    let memory = usize::try_from(memory.max(MIN_QUEUE_MEMORY)).unwrap_or(usize::MAX);
    let cache = rocksdb::Cache::new_lru_cache(memory);
    let buffers = rocksdb::WriteBufferManager::new_write_buffer_manager_with_cache(
        memory,
        true,
        cache.clone(),
    );
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_block_cache(&cache);
    table.set_cache_index_and_filter_blocks(true);
    let family = |write_buffer: usize| {
        let mut o = Options::default();
        o.set_block_based_table_factory(&table);
        o.set_write_buffer_size(write_buffer);
        o
    };
    let mut opts = family(1 << 20);
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_write_buffer_manager(&buffers);
    opts.set_max_background_jobs(2);
    opts.set_wal_recovery_mode(wal);
    // Records: two write buffers, one filling while the other is flushed.
    // They are short-lived and leave compressed on the wire anyway.
    let mut records = family(memory / 2);
    records.set_compression_type(rocksdb::DBCompressionType::None);
    // The batches, checkpoints and dead-letter families hold a few small
    // keys.
    let cfs = vec![
        ColumnFamilyDescriptor::new(CF_RECORDS, records),
        ColumnFamilyDescriptor::new(CF_BATCHES, family(1 << 20)),
        ColumnFamilyDescriptor::new(CF_CHECKPOINTS, family(1 << 20)),
        ColumnFamilyDescriptor::new(CF_DEAD_LETTERS, family(1 << 20)),
    ];
    DB::open_cf_descriptors(&opts, dir, cfs)
}

fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name)
        .expect("column families are created at open")
}

#[cfg(test)]
mod tests;
