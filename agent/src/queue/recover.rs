//! Recovery of a damaged queue, so that a flipped byte never turns into a
//! crash loop.
//!
//! `Queue::open` reads every key of the queue at start (its accounting
//! needs them), with RocksDB's checksums: any damage to an SST, the WAL or
//! the MANIFEST that RocksDB can see shows up there. Then `recover`:
//! 1. moves the whole queue directory, untouched, to
//!    `<data_dir>/quarantine/<UTC time>/queue`;
//! 2. opens a copy (the original itself when the disk has no room for
//!    one), skipping the WAL records that do not read; if that
//!    fails, runs RocksDB's repair on the copy first (it rebuilds a damaged
//!    MANIFEST from the SSTs);
//! 3. reads what it can from the copy: every family keyed by sequence
//!    number is read block by block, and a block that does not read is
//!    stepped over (the first key after it is found by seeking, so one bad
//!    block costs its own keys only); every value is checked by its decoder;
//! 4. writes what it read into a new queue in the original place: records,
//!    batch manifests and dead letters (their counts recomputed from the
//!    records that survived; records whose manifest was lost are batched
//!    again, by contiguous runs), checkpoints, the agent id and epoch.
//!
//! What was lost is found from the sequence numbers, which are assigned
//! one per record without gaps within an epoch: the holes in the batch
//! manifests that survived, and every gap among the records not yet in a
//! batch (acknowledged records leave gaps only where batches were). A hole
//! between two records that survived is offered to a `Refill` first (the
//! tailer's reads the lines again from their file where it still holds
//! them); what no refill fills is counted lost. What such a count cannot
//! see: records lost after the last that survived (their checkpoint went
//! with them when they came from a file, so the tailer reads them again),
//! and records lost together with the manifest of their batch. If the agent
//! id or the epoch did not survive, the new queue gets a new agent id, so
//! no sequence number can ever mean two records.

use std::path::{Path, PathBuf};

use logferry_proto::Chunk;
use prost::Message;
use rocksdb::{Options, WriteBatch, DB};

use super::format::{
    decode_seq, record_value, split_record_value, DeadLetter, Manifest, EPOCH_SHIFT,
};
use super::{
    cf, open_db, open_db_with, seq_key, QueueError, CF_BATCHES, CF_CHECKPOINTS, CF_DEAD_LETTERS,
    CF_RECORDS,
};
use crate::config::MIN_QUEUE_MEMORY;

/// What a recovery kept and what it could not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// What `Queue::open` found.
    pub cause: String,
    /// Where the damaged queue was moved, untouched.
    pub quarantine: PathBuf,
    /// Records moved into the new queue.
    pub salvaged_records: u64,
    /// Of those, records that were lost in the queue and read again from
    /// where they came from (see `Refill`).
    pub refilled_records: u64,
    /// Records known lost (see the module's account of what it can see).
    pub lost_records: u64,
    /// What could not be read, in words (families and key ranges).
    pub unreadable: Vec<String>,
    /// The agent id or epoch did not survive: the queue has a new agent id.
    pub new_agent_id: bool,
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; {} records salvaged",
            self.cause, self.salvaged_records
        )?;
        if self.refilled_records > 0 {
            write!(
                f,
                " ({} of them read again from their files)",
                self.refilled_records
            )?;
        }
        write!(f, ", {} known lost", self.lost_records)?;
        if !self.unreadable.is_empty() {
            write!(f, "; unreadable: {}", self.unreadable.join(", "))?;
        }
        if self.new_agent_id {
            f.write_str("; the agent id did not survive: this agent ships under a new one")?;
        }
        write!(
            f,
            "; the damaged queue is kept in {}",
            self.quarantine.display()
        )
    }
}

/// Reads lost records again from where they came from. `before` and
/// `after` are the records on either side of a hole of `lost` records (their
/// chunks, decoded, and `before`'s record count); the answer is chunks that
/// hold exactly the `lost` records, in order, with their counts (the queue
/// numbers them), or why it cannot.
pub trait Refill {
    fn refill(
        &self,
        before: (&Chunk, u32),
        after: &Chunk,
        lost: u64,
    ) -> Result<Vec<(u32, Chunk)>, String>;
}

/// Refills nothing: every hole is counted lost.
pub struct NoRefill;

impl Refill for NoRefill {
    fn refill(&self, _: (&Chunk, u32), _: &Chunk, _: u64) -> Result<Vec<(u32, Chunk)>, String> {
        Err("nothing to read them again from".into())
    }
}

/// Whether an error opening the queue means its files are damaged (as
/// opposed to, say, a directory that cannot be written).
pub fn is_damage(e: &QueueError) -> bool {
    match e {
        QueueError::Corrupt(_) => true,
        QueueError::Db(e) => e.kind() == rocksdb::ErrorKind::Corruption,
        QueueError::Full { .. } | QueueError::DiskFull { .. } | QueueError::Io(_) => false,
    }
}

/// Quarantines the damaged queue in `dir` and writes what survives into a
/// new one in its place.
pub fn recover(
    dir: &Path,
    cause: &QueueError,
    refill: &dyn Refill,
) -> Result<Recovery, QueueError> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let parent = dir.parent().unwrap_or(Path::new("."));
    let quarantine = parent.join("quarantine").join(stamp);
    std::fs::create_dir_all(&quarantine)?;
    let original = quarantine.join("queue");
    std::fs::rename(dir, &original)?;
    let mut recovery = Recovery {
        cause: logferry_daemon::error_chain(cause),
        quarantine: original.clone(),
        ..Recovery::default()
    };
    // Without room for a copy (a full disk may be what damaged the queue),
    // the original is salvaged in place: evidence matters less than records.
    let copy = quarantine.join("repaired");
    let repaired = match copy_dir(&original, &copy) {
        Ok(()) => copy.clone(),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&copy);
            recovery.unreadable.push(format!(
                "no copy could be made ({e}), so the quarantined queue was repaired in place"
            ));
            original
        }
    };
    let mut salvage = Salvage::default();
    // A copy that opens is read as it is (RocksDB's repair would set aside
    // a whole SST for one bad block); one that does not is repaired first.
    let salvaging = rocksdb::DBRecoveryMode::SkipAnyCorruptedRecord;
    let opened = open_db_with(&repaired, salvaging, MIN_QUEUE_MEMORY).or_else(|_| {
        if let Err(e) = DB::repair(&Options::default(), &repaired) {
            recovery.unreadable.push(format!("repair failed ({e})"));
        }
        open_db_with(&repaired, salvaging, MIN_QUEUE_MEMORY)
    });
    match opened {
        Ok(db) => salvage = Salvage::read(&db, &mut recovery.unreadable),
        Err(e) => recovery.unreadable.push(format!("the whole queue ({e})")),
    }
    salvage.refill_holes(refill, &mut recovery);
    salvage.write(dir, &mut recovery)?;
    // The original stays; the repaired copy has served its purpose.
    let _ = std::fs::remove_dir_all(&copy);
    Ok(recovery)
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// What could be read from a damaged queue.
#[derive(Debug, Default)]
struct Salvage {
    agent_id: Option<Vec<u8>>,
    epoch: Option<Vec<u8>>,
    /// (first seq, record count, value) of every readable record.
    records: Vec<(u64, u32, Vec<u8>)>,
    manifests: Vec<Manifest>,
    dead_letters: Vec<DeadLetter>,
    checkpoints: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Salvage {
    fn read(db: &DB, unreadable: &mut Vec<String>) -> Salvage {
        let mut s = Salvage {
            agent_id: db
                .get(b"agent_id")
                .ok()
                .flatten()
                .filter(|v| std::str::from_utf8(v).is_ok()),
            epoch: db.get(b"epoch").ok().flatten().filter(|v| v.len() == 4),
            ..Salvage::default()
        };
        for (k, v) in by_seq(db, CF_RECORDS, unreadable) {
            match (decode_seq(&k), split_record_value(&v)) {
                (Ok(seq), Ok((count, _))) if count > 0 => s.records.push((seq, count, v)),
                _ => unreadable.push(format!("a record value at key {k:02x?}")),
            }
        }
        for (k, v) in by_seq(db, CF_BATCHES, unreadable) {
            match Manifest::decode(&k, &v) {
                Ok(m) => s.manifests.push(m),
                Err(_) => unreadable.push(format!("a batch manifest at key {k:02x?}")),
            }
        }
        for (k, v) in by_seq(db, CF_DEAD_LETTERS, unreadable) {
            match DeadLetter::decode(&k, &v) {
                Ok(d) => s.dead_letters.push(d),
                Err(_) => unreadable.push(format!("a dead letter at key {k:02x?}")),
            }
        }
        let mut it = db.raw_iterator_cf(cf(db, CF_CHECKPOINTS));
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            s.checkpoints.push((k.to_vec(), v.to_vec()));
            it.next();
        }
        if it.status().is_err() {
            let after = s
                .checkpoints
                .last()
                .map(|(k, _)| String::from_utf8_lossy(k).into_owned());
            unreadable.push(format!(
                "checkpoints after {}",
                after.as_deref().unwrap_or("the first")
            ));
        }
        s
    }

    /// Every batch manifest that survived, the dead letters' included.
    fn batches(&self) -> impl Iterator<Item = &Manifest> {
        self.manifests
            .iter()
            .chain(self.dead_letters.iter().map(|d| &d.manifest))
    }

    /// Where the records not yet in a batch begin.
    fn batched_end(&self) -> Option<u64> {
        self.batches().map(|m| m.last_seq + 1).max()
    }

    /// Sequence ranges `[from, to)` known lost: the holes in the batches
    /// that survived, and the gaps among the records past the last batch,
    /// within an epoch.
    fn holes(&self) -> Vec<(u64, u64)> {
        let mut holes = Vec::new();
        for m in self.batches() {
            let mut next = m.first_seq;
            let inside = self
                .records
                .iter()
                .filter(|(seq, _, _)| (m.first_seq..=m.last_seq).contains(seq));
            for (seq, count, _) in inside {
                if *seq > next {
                    holes.push((next, *seq));
                }
                next = seq + u64::from(*count);
            }
            if next <= m.last_seq {
                holes.push((next, m.last_seq + 1));
            }
        }
        let batched_end = self.batched_end();
        let mut expected = batched_end;
        for (seq, count, _) in &self.records {
            let same_epoch = |e: &u64| *seq > *e && seq >> EPOCH_SHIFT == *e >> EPOCH_SHIFT;
            if let Some(next) = expected.filter(same_epoch) {
                holes.push((next, *seq));
            }
            if batched_end.is_none_or(|end| seq + u64::from(*count) > end) {
                expected = Some(seq + u64::from(*count));
            }
        }
        holes.sort_unstable();
        holes
    }

    /// Offers each hole between two records that survived to `refill`, and
    /// keeps what it reads; every hole it does not fill is reported.
    fn refill_holes(&mut self, refill: &dyn Refill, recovery: &mut Recovery) {
        let chunk_at = |i: usize| {
            let (_, count, value) = &self.records[i];
            let (_, chunk) = split_record_value(value).ok()?;
            Some((Chunk::decode(chunk).ok()?, *count))
        };
        let mut found = Vec::new();
        for (from, to) in self.holes() {
            let before = self
                .records
                .partition_point(|(seq, _, _)| *seq < from)
                .checked_sub(1)
                .filter(|&i| self.records[i].0 + u64::from(self.records[i].1) == from);
            let after = self.records.binary_search_by_key(&to, |r| r.0).ok();
            let (Some((before, count)), Some((after, _))) =
                (before.and_then(chunk_at), after.and_then(chunk_at))
            else {
                recovery.unreadable.push(format!(
                    "records {from}..{to} (no record survived on both sides of them)"
                ));
                continue;
            };
            let lost = to - from;
            match refill.refill((&before, count), &after, lost) {
                Ok(chunks) if chunks.iter().map(|(n, _)| u64::from(*n)).sum::<u64>() == lost => {
                    let mut seq = from;
                    for (count, mut chunk) in chunks {
                        chunk.first_seq = seq;
                        found.push((seq, count, record_value(count, &chunk)));
                        seq += u64::from(count);
                    }
                    recovery.refilled_records += lost;
                }
                Ok(_) => recovery.unreadable.push(format!(
                    "records {from}..{to} (read again, but as a different number of records)"
                )),
                Err(why) => recovery
                    .unreadable
                    .push(format!("records {from}..{to} ({why})")),
            }
        }
        self.records.extend(found);
        self.records.sort_unstable_by_key(|(seq, _, _)| *seq);
    }

    /// Writes the salvage into a new queue at `dir`, batches and dead
    /// letters cut down to the records that survived.
    fn write(self, dir: &Path, recovery: &mut Recovery) -> Result<(), QueueError> {
        let db = open_db(dir, MIN_QUEUE_MEMORY)?;
        let mut batch = WriteBatch::default();
        let same_identity = self.agent_id.is_some() && self.epoch.is_some();
        if let (true, Some(id), Some(epoch)) = (same_identity, &self.agent_id, &self.epoch) {
            batch.put(b"agent_id", id);
            batch.put(b"epoch", epoch);
        }
        recovery.new_agent_id = !same_identity;
        for (seq, count, value) in &self.records {
            batch.put_cf(cf(&db, CF_RECORDS), seq_key(*seq), value);
            recovery.salvaged_records += u64::from(*count);
        }
        let survivors = |m: &Manifest| {
            let mut kept = *m;
            (kept.records, kept.bytes) = (0, 0);
            for (seq, count, value) in &self.records {
                if *seq >= m.first_seq && *seq <= m.last_seq {
                    kept.records += u64::from(*count);
                    kept.bytes += value.len() as u64;
                }
            }
            kept
        };
        // Holes in the batches are counted by what each batch kept; those
        // past the last batch here.
        let batched_end = self.batched_end();
        for (from, to) in self.holes() {
            if batched_end.is_none_or(|end| from >= end) {
                recovery.lost_records += to - from;
            }
        }
        for m in &self.manifests {
            let kept = survivors(m);
            recovery.lost_records += m.records.saturating_sub(kept.records);
            if kept.records > 0 {
                batch.put_cf(
                    cf(&db, CF_BATCHES),
                    seq_key(m.first_seq),
                    kept.encode_value(),
                );
            }
        }
        for d in &self.dead_letters {
            let kept = survivors(&d.manifest);
            recovery.lost_records += d.manifest.records.saturating_sub(kept.records);
            if kept.records > 0 {
                let letter = DeadLetter {
                    manifest: kept,
                    ..d.clone()
                };
                batch.put_cf(
                    cf(&db, CF_DEAD_LETTERS),
                    seq_key(kept.first_seq),
                    letter.encode_value(),
                );
            }
        }
        // Records of batches whose manifest did not survive: batched again
        // by contiguous runs, so each run starts where its batch did (the
        // collector then recognises a batch it stored before).
        let covered = |seq: u64| {
            self.batches()
                .any(|m| (m.first_seq..=m.last_seq).contains(&seq))
        };
        let mut run: Option<Manifest> = None;
        let orphans = self
            .records
            .iter()
            .filter(|(seq, _, _)| batched_end.is_some_and(|end| *seq < end) && !covered(*seq));
        for (seq, count, value) in orphans {
            let (count, bytes) = (u64::from(*count), value.len() as u64);
            match &mut run {
                Some(m) if m.last_seq + 1 == *seq => {
                    m.last_seq += count;
                    m.records += count;
                    m.bytes += bytes;
                }
                _ => {
                    if let Some(m) = run.take() {
                        batch.put_cf(cf(&db, CF_BATCHES), seq_key(m.first_seq), m.encode_value());
                    }
                    run = Some(Manifest {
                        first_seq: *seq,
                        last_seq: seq + count - 1,
                        bytes,
                        records: count,
                    });
                }
            }
        }
        if let Some(m) = run {
            batch.put_cf(cf(&db, CF_BATCHES), seq_key(m.first_seq), m.encode_value());
        }
        for (k, v) in &self.checkpoints {
            batch.put_cf(cf(&db, CF_CHECKPOINTS), k, v);
        }
        let mut synced = rocksdb::WriteOptions::default();
        synced.set_sync(true);
        db.write_opt(batch, &synced)?;
        Ok(())
    }
}

/// Every readable (key, value) of a family keyed by sequence number. A
/// block that does not read is stepped over: the first key after it is
/// found by seeking (exponentially, then by bisection), and the range of
/// keys between is reported as unreadable.
fn by_seq(db: &DB, family: &str, unreadable: &mut Vec<String>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut it = db.raw_iterator_cf(cf(db, family));
    let readable_from = |it: &mut rocksdb::DBRawIterator, seq: u64| {
        it.seek(seq_key(seq));
        it.status().is_ok()
    };
    let mut out = Vec::new();
    let mut from = 0u64;
    loop {
        if !readable_from(&mut it, from) {
            // Find the first key that reads, past the damaged block.
            let (mut bad, mut step) = (from, 1u64);
            let good = loop {
                match from.checked_add(step) {
                    Some(x) if readable_from(&mut it, x) => break Some(x),
                    Some(x) => (bad, step) = (x, step.saturating_mul(2)),
                    None => break None,
                }
            };
            let Some(mut good) = good else {
                unreadable.push(format!("{family} from key {from}"));
                break;
            };
            while good - bad > 1 {
                let mid = bad + (good - bad) / 2;
                if readable_from(&mut it, mid) {
                    good = mid;
                } else {
                    bad = mid;
                }
            }
            unreadable.push(format!("{family} keys {from}..{good}"));
            from = good;
            continue;
        }
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if let Ok(seq) = decode_seq(k) {
                from = seq.saturating_add(1);
            }
            out.push((k.to_vec(), v.to_vec()));
            it.next();
        }
        if it.status().is_ok() || from == u64::MAX {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::format::record_value;

    #[test]
    fn lost_records_are_counted_and_orphans_batched_again() {
        let e = 1u64 << EPOCH_SHIFT;
        // A chunk 5 bytes long encoded: 9 bytes a value.
        let chunk = Chunk {
            first_seq: 1 << 21,
            ..Chunk::default()
        };
        let record = |seq: u64| (e + seq, 5, record_value(5, &chunk));
        let salvage = Salvage {
            agent_id: Some(b"id".to_vec()),
            epoch: Some(1u32.to_be_bytes().to_vec()),
            // A batch 0..=9 whose manifest was lost, a batch 10..=19 missing
            // its second record, unbatched records with a gap at 25..30.
            records: vec![record(0), record(5), record(10), record(20), record(30)],
            manifests: vec![Manifest {
                first_seq: e + 10,
                last_seq: e + 19,
                bytes: 2 * 9,
                records: 10,
            }],
            ..Salvage::default()
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let mut recovery = Recovery::default();
        salvage.write(dir.path(), &mut recovery).expect("write");
        assert_eq!(recovery.salvaged_records, 25);
        assert_eq!(recovery.lost_records, 5 + 5, "{recovery}");
        assert!(!recovery.new_agent_id);
        let db = open_db(dir.path(), MIN_QUEUE_MEMORY).expect("open");
        let manifests: Vec<Manifest> = db
            .iterator_cf(cf(&db, CF_BATCHES), rocksdb::IteratorMode::Start)
            .map(|item| {
                let (k, v) = item.expect("read");
                Manifest::decode(&k, &v).expect("manifest")
            })
            .collect();
        assert_eq!(
            manifests,
            [
                Manifest {
                    first_seq: e,
                    last_seq: e + 9,
                    bytes: 18,
                    records: 10
                },
                Manifest {
                    first_seq: e + 10,
                    last_seq: e + 19,
                    bytes: 9,
                    records: 5
                },
            ]
        );
    }
}
