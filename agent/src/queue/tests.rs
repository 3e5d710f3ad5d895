use super::*;
use logferry_proto::{chunk, RawLines};
use proptest::prelude::*;
use prost::Message;
use std::path::Path;

fn lines_chunk(lines: &[String]) -> Chunk {
    let mut data = Vec::new();
    for l in lines {
        data.extend_from_slice(l.as_bytes());
        data.push(b'\n');
    }
    Chunk {
        body: Some(chunk::Body::Lines(RawLines {
            data: data.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn lines_of(batch: &Batch) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for bytes in &batch.chunks {
        let c = Chunk::decode(bytes.as_ref()).expect("chunk decodes");
        let Some(chunk::Body::Lines(l)) = c.body else {
            panic!("lines")
        };
        for (i, line) in l
            .data
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            out.push((
                c.first_seq + i as u64,
                String::from_utf8_lossy(line).into_owned(),
            ));
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Op {
    Commit(u8),
    Cut(u8),
    Ack(usize),
    DeadLetter(usize),
    Replay,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..5).prop_map(Op::Commit),
        2 => (1u8..8).prop_map(Op::Cut),
        2 => any::<usize>().prop_map(Op::Ack),
        1 => any::<usize>().prop_map(Op::DeadLetter),
        1 => Just(Op::Replay),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Against a plain in-memory model: whatever the interleaving of commits,
    /// batches, acknowledgements, dead letters, replays and restarts, every
    /// committed record is delivered in an acknowledged batch exactly once,
    /// in commit order, and a resent or replayed batch carries the same
    /// records under the same identity.
    #[test]
    fn queue_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut q = Queue::open(dir.path(), 1 << 30, false, MIN_QUEUE_MEMORY).expect("open");
        let mut committed: Vec<String> = Vec::new();
        let mut in_flight: Vec<Batch> = Vec::new();
        let mut acked: Vec<(u64, String)> = Vec::new();
        let mut dead: Vec<Batch> = Vec::new();
        for op in ops {
            match op {
                Op::Commit(n) => {
                    let lines: Vec<String> = (0..n).map(|i| format!("r{}-{i}", committed.len())).collect();
                    q.commit(u32::from(n), lines_chunk(&lines), None).expect("commit");
                    committed.extend(lines);
                }
                Op::Cut(max) => {
                    if let Some(b) = q.cut_batch(u64::from(max), u64::MAX).expect("cut") {
                        in_flight.push(b);
                    }
                }
                Op::Ack(i) if !in_flight.is_empty() => {
                    let b = in_flight.remove(i % in_flight.len());
                    q.ack(&b.manifest).expect("ack");
                    acked.extend(lines_of(&b));
                }
                Op::Ack(_) => {}
                Op::DeadLetter(i) if !in_flight.is_empty() => {
                    let b = in_flight.remove(i % in_flight.len());
                    q.dead_letter(&b.manifest, "refused").expect("dead letter");
                    dead.push(b);
                }
                Op::DeadLetter(_) => {}
                Op::Replay => {
                    let replayed = q.replay(None).expect("replay");
                    prop_assert_eq!(replayed.len(), dead.len());
                    in_flight.append(&mut dead);
                }
                Op::Reopen => {
                    drop(q);
                    q = Queue::open(dir.path(), 1 << 30, false, MIN_QUEUE_MEMORY).expect("reopen");
                    let resent = q.unacked_batches().expect("unacked");
                    let mut before: Vec<_> = in_flight.iter().map(|b| (b.manifest, lines_of(b))).collect();
                    before.sort_by_key(|(m, _)| m.first_seq);
                    let after: Vec<_> = resent.iter().map(|b| (b.manifest, lines_of(b))).collect();
                    prop_assert_eq!(before, after);
                    in_flight = resent;
                }
            }
            let totals = q.dead_letter_totals();
            prop_assert_eq!(totals.batches, dead.len() as u64);
            prop_assert_eq!(totals.records, dead.iter().map(|b| b.manifest.records).sum::<u64>());
            let owed = committed.len() as u64 - acked.len() as u64 - totals.records;
            prop_assert_eq!(q.depth().records, owed);
        }
        q.replay(None).expect("replay");
        in_flight.append(&mut dead);
        while let Some(b) = q.cut_batch(3, u64::MAX).expect("cut") {
            in_flight.push(b);
        }
        for b in in_flight.drain(..) {
            q.ack(&b.manifest).expect("ack");
            acked.extend(lines_of(&b));
        }
        acked.sort_by_key(|(seq, _)| *seq);
        let delivered: Vec<String> = acked.iter().map(|(_, l)| l.clone()).collect();
        prop_assert_eq!(delivered, committed);
        prop_assert_eq!(q.bytes(), 0);
    }
}

#[test]
fn full_queue_refuses_commits_until_acked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = Queue::open(dir.path(), 1 << 20, true, MIN_QUEUE_MEMORY).expect("open");
    let big = vec!["x".repeat(600 << 10)];
    q.commit(1, lines_chunk(&big), None).expect("first fits");
    q.commit(1, lines_chunk(&big), None)
        .expect("second crosses the limit");
    assert!(q.room().is_err());
    assert!(matches!(
        q.commit(1, lines_chunk(&big), None),
        Err(QueueError::Full { .. })
    ));
    let b = q.cut_batch(10, u64::MAX).expect("cut").expect("batch");
    q.ack(&b.manifest).expect("ack");
    assert!(q.room().is_ok());
    q.commit(1, lines_chunk(&big), None).expect("room again");
}

#[test]
fn checkpoint_commits_with_its_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = Queue::open(dir.path(), 1 << 30, true, MIN_QUEUE_MEMORY).expect("open");
    q.commit(1, lines_chunk(&["a".into()]), Some((b"file", b"pos-1")))
        .expect("commit");
    let id = q.agent_id().to_string();
    drop(q);
    let q = Queue::open(dir.path(), 1 << 30, true, MIN_QUEUE_MEMORY).expect("reopen");
    assert_eq!(q.agent_id(), id, "the agent id is stable");
    assert_eq!(
        q.checkpoints().expect("read"),
        vec![(b"file".to_vec(), b"pos-1".to_vec())]
    );
    let b = q.cut_batch(10, u64::MAX).expect("cut").expect("batch");
    assert_eq!(b.manifest.records, 1);
}

#[test]
fn sequence_numbers_grow_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = Queue::open(dir.path(), 1 << 30, false, MIN_QUEUE_MEMORY).expect("open");
    let a = q
        .commit(1, lines_chunk(&["a".into()]), None)
        .expect("commit");
    let b = q.cut_batch(10, u64::MAX).expect("cut").expect("batch");
    q.ack(&b.manifest).expect("ack");
    drop(q);
    let q = Queue::open(dir.path(), 1 << 30, false, MIN_QUEUE_MEMORY).expect("reopen");
    let c = q
        .commit(1, lines_chunk(&["c".into()]), None)
        .expect("commit");
    assert!(c > a, "{c} > {a}: numbers are never reused");
}

#[test]
fn a_dead_letter_keeps_its_records_and_identity_until_replayed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = Queue::open(dir.path(), 1 << 30, true, MIN_QUEUE_MEMORY).expect("open");
    q.commit(2, lines_chunk(&["a".into(), "b".into()]), None)
        .expect("commit");
    let refused = q.cut_batch(10, u64::MAX).expect("cut").expect("batch");
    q.dead_letter(&refused.manifest, "too-large: 2 records")
        .expect("dead letter");
    q.commit(1, lines_chunk(&["c".into()]), None)
        .expect("commit");
    drop(q);

    let q = Queue::open(dir.path(), 1 << 30, true, MIN_QUEUE_MEMORY).expect("reopen");
    assert!(q.unacked_batches().expect("unacked").is_empty());
    let next = q.cut_batch(10, u64::MAX).expect("cut").expect("batch");
    assert_eq!(
        lines_of(&next)
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>(),
        ["c"],
        "the dead letter's records are not cut again"
    );
    q.ack(&next.manifest).expect("ack");
    let letters = q.dead_letters().expect("list");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].manifest, refused.manifest);
    assert_eq!(letters[0].reason, "too-large: 2 records");
    assert!(q.bytes() > 0, "its records are still on disk");
    assert_eq!(
        q.undelivered_bytes(),
        0,
        "dead letters do not hold up tailing"
    );
    assert!(
        q.replay(Some(refused.manifest.first_seq + 1))
            .expect("replay")
            .is_empty(),
        "only the batch asked for"
    );
    assert_eq!(q.replay(None).expect("replay").len(), 1);
    drop(q);

    let q = Queue::open(dir.path(), 1 << 30, true, MIN_QUEUE_MEMORY).expect("reopen");
    let resent = q.unacked_batches().expect("unacked");
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].manifest, refused.manifest);
    assert_eq!(lines_of(&resent[0]), lines_of(&refused));
    q.ack(&resent[0].manifest).expect("ack");
    assert_eq!(q.bytes(), 0);
    assert_eq!(q.dead_letter_totals(), DeadLetters::default());
}

/// Commits 40 chunks of 5 records (with a checkpoint each) and cuts two
/// batches; `flush` moves everything from the WAL into SSTs.
fn damaged_queue_fixture(dir: &Path, flush: bool) -> (String, Vec<String>) {
    queue_fixture(dir, flush, None)
}

/// `damaged_queue_fixture` whose lines were read from `file`: it is written
/// with them, and each chunk carries its origin and offset.
fn file_queue_fixture(dir: &Path, file: &Path) -> Vec<String> {
    queue_fixture(dir, true, Some(file)).1
}

fn queue_fixture(dir: &Path, flush: bool, file: Option<&Path>) -> (String, Vec<String>) {
    let q = Queue::open(dir, 1 << 30, true, MIN_QUEUE_MEMORY).expect("open");
    let mut committed = Vec::new();
    let mut offset = 0u64;
    for c in 0..40 {
        let lines: Vec<String> = (0..5)
            .map(|i| format!("{c}-{i}-{}", "x".repeat(900)))
            .collect();
        let mut chunk = lines_chunk(&lines);
        if let (Some(path), Some(chunk::Body::Lines(l))) = (file, &mut chunk.body) {
            l.file_offset = offset;
            offset += l.data.len() as u64;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("open the file");
            std::io::Write::write_all(&mut f, &l.data).expect("append");
            chunk.origin = Some(logferry_proto::Origin {
                source: "app".into(),
                file_path: path.display().to_string(),
                ..Default::default()
            });
        }
        q.commit(5, chunk, Some((b"file", format!("pos-{c}").as_bytes())))
            .expect("commit");
        committed.extend(lines);
    }
    q.cut_batch(25, u64::MAX).expect("cut").expect("batch");
    q.cut_batch(25, u64::MAX).expect("cut").expect("batch");
    if flush {
        for family in [CF_RECORDS, CF_BATCHES, CF_CHECKPOINTS] {
            q.db.flush_cf(cf(&q.db, family)).expect("flush");
        }
        q.db.flush().expect("flush default");
    }
    (q.agent_id().to_string(), committed)
}

/// Flips bytes in the middle of the largest file whose name ends with
/// `suffix` or starts with `prefix`.
fn flip(dir: &Path, matches: impl Fn(&str) -> bool) {
    let victim = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| matches(&p.file_name().expect("name").to_string_lossy()))
        .max_by_key(|p| std::fs::metadata(p).expect("meta").len())
        .expect("a file to damage");
    let mut bytes = std::fs::read(&victim).expect("read");
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0x5a;
    }
    std::fs::write(&victim, bytes).expect("write");
}

/// Everything a recovered queue still delivers, each line once.
fn drain(q: &Queue) -> Vec<String> {
    let mut lines = Vec::new();
    let mut batches = q.unacked_batches().expect("unacked");
    while let Some(b) = q.cut_batch(1000, u64::MAX).expect("cut") {
        batches.push(b);
    }
    for b in batches {
        q.ack(&b.manifest).expect("ack");
        lines.extend(lines_of(&b).into_iter().map(|(_, l)| l));
    }
    lines
}

fn recovered(dir: &Path) -> (Arc<Queue>, Recovery) {
    let (q, recovery) = Queue::open_or_recover(dir, 1 << 30, true, MIN_QUEUE_MEMORY, &NoRefill)
        .expect("never an error");
    (q, recovery.expect("the damage was seen"))
}

#[test]
fn a_damaged_sst_costs_only_its_own_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = dir.path().join("queue");
    let (id, committed) = damaged_queue_fixture(&queue, true);
    flip(&queue, |n| n.ends_with(".sst"));
    let (q, r) = recovered(&queue);
    assert!(r.quarantine.join("CURRENT").exists(), "{r}");
    assert!(!r.unreadable.is_empty(), "{r}");
    let delivered = drain(&q);
    assert!(
        !delivered.is_empty() && delivered.len() < committed.len(),
        "{r}"
    );
    assert_eq!(delivered.len() as u64, r.salvaged_records, "{r}");
    assert_eq!(
        r.salvaged_records + r.lost_records,
        200,
        "every loss counted: {r}"
    );
    let mut unique = delivered.clone();
    unique.dedup();
    assert_eq!(unique, delivered, "each once, in order");
    assert!(delivered.iter().all(|l| committed.contains(l)));
    assert_eq!(q.agent_id(), id, "{r}");
    assert_eq!(q.checkpoints().expect("read").len(), 1);
    assert_eq!(q.bytes(), 0);
}

#[test]
fn a_damaged_manifest_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = dir.path().join("queue");
    let (id, committed) = damaged_queue_fixture(&queue, true);
    flip(&queue, |n| n.starts_with("MANIFEST-"));
    let (q, r) = recovered(&queue);
    assert_eq!((r.salvaged_records, r.lost_records), (200, 0), "{r}");
    assert_eq!(q.agent_id(), id, "{r}");
    assert_eq!(drain(&q), committed);
    assert_eq!(
        q.checkpoints().expect("read"),
        vec![(b"file".to_vec(), b"pos-39".to_vec())]
    );
}

#[test]
fn a_damaged_wal_is_seen_and_what_survives_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = dir.path().join("queue");
    let (_, committed) = damaged_queue_fixture(&queue, false);
    flip(&queue, |n| n.ends_with(".log") && !n.starts_with("LOG"));
    let (q, r) = recovered(&queue);
    let delivered = drain(&q);
    assert!(delivered.len() < committed.len(), "{r}");
    assert!(
        !delivered.is_empty(),
        "the records before and after the damage survive: {r}"
    );
    assert_eq!(delivered.len() as u64, r.salvaged_records, "{r}");
    assert_eq!(
        r.salvaged_records + r.lost_records,
        200,
        "every loss counted: {r}"
    );
    assert!(delivered.iter().all(|l| committed.contains(l)));
    // Reopened, the new queue is healthy.
    drop(q);
    let (_, again) =
        Queue::open_or_recover(&queue, 1 << 30, true, MIN_QUEUE_MEMORY, &NoRefill).expect("open");
    assert!(again.is_none());
}

fn file_refill() -> crate::tail::FileRefill {
    crate::tail::FileRefill::new(&[crate::config::SourceConfig {
        name: "app".into(),
        ..Default::default()
    }])
}

#[test]
fn records_a_damaged_sst_lost_are_read_again_from_their_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (queue, file) = (dir.path().join("queue"), dir.path().join("app.log"));
    let committed = file_queue_fixture(&queue, &file);
    flip(&queue, |n| n.ends_with(".sst"));
    let (q, r) = Queue::open_or_recover(&queue, 1 << 30, true, MIN_QUEUE_MEMORY, &file_refill())
        .expect("open");
    let r = r.expect("the damage was seen");
    assert!(r.refilled_records > 0, "{r}");
    assert_eq!((r.salvaged_records, r.lost_records), (200, 0), "{r}");
    assert!(r.to_string().contains("read again from their files"), "{r}");
    assert_eq!(drain(&q), committed, "every line once, in order");
}

#[test]
fn records_whose_file_is_gone_are_counted_lost_with_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (queue, file) = (dir.path().join("queue"), dir.path().join("app.log"));
    file_queue_fixture(&queue, &file);
    std::fs::remove_file(&file).expect("remove");
    flip(&queue, |n| n.ends_with(".sst"));
    let (q, r) = Queue::open_or_recover(&queue, 1 << 30, true, MIN_QUEUE_MEMORY, &file_refill())
        .expect("open");
    let r = r.expect("the damage was seen");
    assert_eq!(r.refilled_records, 0, "{r}");
    assert!(r.lost_records > 0, "{r}");
    assert_eq!(r.salvaged_records + r.lost_records, 200, "{r}");
    assert!(r.to_string().contains("no file holds these lines"), "{r}");
    let named = format!("{} bytes ", file.display());
    assert!(r.to_string().contains(&named), "file and offsets: {r}");
    assert_eq!(drain(&q).len() as u64, r.salvaged_records);
}
