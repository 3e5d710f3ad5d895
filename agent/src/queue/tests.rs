use super::*;
use logferry_proto::{chunk, RawLines};
use proptest::prelude::*;

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
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..5).prop_map(Op::Commit),
        2 => (1u8..8).prop_map(Op::Cut),
        2 => any::<usize>().prop_map(Op::Ack),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Against a plain in-memory model: whatever the interleaving of commits,
    /// batches, acknowledgements and restarts, every committed record is
    /// delivered in an acknowledged batch exactly once, in commit order, and
    /// a resent batch carries the same records under the same identity.
    #[test]
    fn queue_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut q = Queue::open(dir.path(), 1 << 30, false).expect("open");
        let mut committed: Vec<String> = Vec::new();
        let mut in_flight: Vec<Batch> = Vec::new();
        let mut acked: Vec<(u64, String)> = Vec::new();
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
                Op::Reopen => {
                    drop(q);
                    q = Queue::open(dir.path(), 1 << 30, false).expect("reopen");
                    let resent = q.unacked_batches().expect("unacked");
                    let mut before: Vec<_> = in_flight.iter().map(|b| (b.manifest, lines_of(b))).collect();
                    before.sort_by_key(|(m, _)| m.first_seq);
                    let after: Vec<_> = resent.iter().map(|b| (b.manifest, lines_of(b))).collect();
                    prop_assert_eq!(before, after);
                    in_flight = resent;
                }
            }
        }
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
    let q = Queue::open(dir.path(), 1 << 20, true).expect("open");
    let big = vec!["x".repeat(600 << 10)];
    q.commit(1, lines_chunk(&big), None).expect("first fits");
    q.commit(1, lines_chunk(&big), None)
        .expect("second crosses the limit");
    assert!(q.is_full());
    assert!(matches!(
        q.commit(1, lines_chunk(&big), None),
        Err(QueueError::Full { .. })
    ));
    let b = q.cut_batch(10, u64::MAX).expect("cut").expect("batch");
    q.ack(&b.manifest).expect("ack");
    assert!(!q.is_full());
    q.commit(1, lines_chunk(&big), None).expect("room again");
}

#[test]
fn checkpoint_commits_with_its_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = Queue::open(dir.path(), 1 << 30, true).expect("open");
    q.commit(1, lines_chunk(&["a".into()]), Some((b"file", b"pos-1")))
        .expect("commit");
    let id = q.agent_id().to_string();
    drop(q);
    let q = Queue::open(dir.path(), 1 << 30, true).expect("reopen");
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
    let q = Queue::open(dir.path(), 1 << 30, false).expect("open");
    let a = q
        .commit(1, lines_chunk(&["a".into()]), None)
        .expect("commit");
    let b = q.cut_batch(10, u64::MAX).expect("cut").expect("batch");
    q.ack(&b.manifest).expect("ack");
    drop(q);
    let q = Queue::open(dir.path(), 1 << 30, false).expect("reopen");
    let c = q
        .commit(1, lines_chunk(&["c".into()]), None)
        .expect("commit");
    assert!(c > a, "{c} > {a}: numbers are never reused");
}
