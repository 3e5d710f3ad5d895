//! The tailer against a model: random sequences of writes, rename
//! rotations, copytruncates, deletions and restarts drive real files, and
//! every line written must come out of the queue exactly once.

use super::*;
use crate::config::SourceConfig;
use crate::config::MIN_QUEUE_MEMORY;
use logferry_proto::chunk::Body;
use proptest::prelude::*;
use prost::Message;
use std::collections::BTreeMap;
use std::io::Write;

struct Harness {
    dir: tempfile::TempDir,
    qdir: tempfile::TempDir,
    spool: tempfile::TempDir,
    queue: Option<Arc<Queue>>,
    tailer: Option<Tailer>,
    sources: Vec<SourceConfig>,
    delivered: Vec<String>,
    grace_ms: u64,
    max_queued_bytes: u64,
    metrics: Arc<Metrics>,
}

impl Harness {
    fn new(start_at: StartAt) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let sources = vec![SourceConfig {
            name: "app".into(),
            include: vec![format!("{}/*.log", dir.path().display())],
            start_at,
            max_line_bytes: 64,
            partial_line_timeout_ms: 0,
            ..SourceConfig::default()
        }];
        let mut h = Harness {
            dir,
            qdir: tempfile::tempdir().expect("tempdir"),
            spool: tempfile::tempdir().expect("tempdir"),
            queue: None,
            tailer: None,
            sources,
            delivered: Vec::new(),
            grace_ms: 0,
            max_queued_bytes: TailConfig::default().max_queued_bytes,
            metrics: Arc::new(Metrics::new()),
        };
        h.restart();
        h
    }

    /// A harness whose agent has not started yet: files written now exist
    /// before its first start.
    fn unstarted(start_at: StartAt) -> Harness {
        let mut h = Harness::new(start_at);
        h.tailer = None;
        h.queue = None;
        h.qdir = tempfile::tempdir().expect("tempdir");
        h
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn restart(&mut self) {
        self.tailer = None;
        self.queue = None;
        let queue = Queue::open(self.qdir.path(), 1 << 30, false, MIN_QUEUE_MEMORY).expect("queue");
        let cfg = TailConfig {
            rotated_grace_ms: self.grace_ms,
            read_chunk_bytes: 4096,
            max_queued_bytes: self.max_queued_bytes,
            ..TailConfig::default()
        };
        let mut tailer = Tailer::new(
            cfg,
            self.sources.clone(),
            queue.clone(),
            self.metrics.clone(),
            self.spool.path().to_path_buf(),
        )
        .expect("tailer");
        tailer.start().expect("start");
        self.queue = Some(queue);
        self.tailer = Some(tailer);
    }

    fn tailer(&mut self) -> &mut Tailer {
        self.tailer.as_mut().expect("running")
    }

    /// What the running agent does between events: scan, read everything.
    fn settle(&mut self) {
        self.tailer().rescan(false).expect("rescan");
        while self.tailer().poll_all().expect("poll") {}
        self.collect();
    }

    fn collect(&mut self) {
        let q = self.queue.clone().expect("running");
        while let Some(b) = q.cut_batch(u64::MAX, u64::MAX).expect("cut") {
            for c in &b.chunks {
                let chunk = Chunk::decode(c.as_ref()).expect("chunk");
                let Some(Body::Lines(l)) = chunk.body else {
                    panic!("lines")
                };
                for line in l.data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    self.delivered
                        .push(String::from_utf8_lossy(line).into_owned());
                }
            }
            q.ack(&b.manifest).expect("ack");
        }
    }

    /// Truncates a file to nothing, as copytruncate's second step does.
    fn truncate(&self, name: &str) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(self.path(name))
            .and_then(|f| f.set_len(0))
            .expect("truncate");
    }

    fn append(&self, name: &str, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(name))
            .expect("open");
        f.write_all(text.as_bytes()).expect("write");
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write(u8, u8),
    Rotate,
    CopyTruncate,
    Delete,
    Restart,
    Settle,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..2, 1u8..20).prop_map(|(f, n)| Op::Write(f, n)),
        1 => Just(Op::Rotate),
        1 => Just(Op::CopyTruncate),
        1 => Just(Op::Delete),
        1 => Just(Op::Restart),
        3 => Just(Op::Settle),
    ]
}

fn counts(lines: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        *m.entry(l.clone()).or_insert(0) += 1;
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn every_line_is_delivered_exactly_once(ops in proptest::collection::vec(op(), 1..40)) {
        let mut h = Harness::new(StartAt::Beginning);
        let mut written = Vec::new();
        let mut rotations = 0;
        for op in ops {
            match op {
                Op::Write(f, n) => {
                    let mut text = String::new();
                    for _ in 0..n {
                        // Same first bytes in both files, on purpose.
                        let line = format!("line {} of file {f}", written.len());
                        text.push_str(&line);
                        text.push('\n');
                        written.push(line);
                    }
                    h.append(&format!("f{f}.log"), &text);
                }
                Op::Rotate => {
                    rotations += 1;
                    // The agent follows the file; lines written since its
                    // last read are read from the renamed file.
                    h.settle();
                    if h.path("f0.log").exists() {
                        h.append("f0.log", "line before the rename\n");
                        written.push("line before the rename".into());
                    }
                    let _ = std::fs::rename(h.path("f0.log"), h.path(&format!("f0.log.{rotations}")));
                }
                Op::CopyTruncate => {
                    rotations += 1;
                    // The agent has read some of the file (so it knows its
                    // fingerprint); lines written since are in the copy.
                    let read_before = std::fs::metadata(h.path("f1.log")).map_or(0, |m| m.len());
                    h.settle();
                    h.append("f1.log", "line after the last read\n");
                    written.push("line after the last read".into());
                    if read_before > 0 {
                        std::fs::copy(h.path("f1.log"), h.path(&format!("f1.log.{rotations}"))).expect("copy");
                        h.truncate("f1.log");
                    }
                }
                Op::Delete => {
                    // The agent has seen the file before it goes.
                    h.settle();
                    let _ = std::fs::remove_file(h.path("f0.log"));
                }
                Op::Restart => h.restart(),
                Op::Settle => h.settle(),
            }
        }
        h.settle();
        h.settle();
        prop_assert_eq!(counts(&h.delivered), counts(&written));
    }
}

#[test]
fn reused_inode_is_read_from_the_start() {
    let mut h = Harness::new(StartAt::Beginning);
    h.append("a.log", "new file line\n");
    let meta = std::fs::metadata(h.path("a.log")).expect("stat");
    let id = FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    };
    // A checkpoint of an older file that had this inode.
    let old = Checkpoint {
        offset: 5,
        fp_len: 5,
        fp: fingerprint(b"older"),
        discarding: false,
        path: h.path("a.log"),
    };
    h.queue
        .as_ref()
        .expect("queue")
        .put_checkpoint(&id.key(), &old.encode())
        .expect("put");
    h.restart();
    h.settle();
    assert_eq!(h.delivered, vec!["new file line"]);
}

#[test]
fn rename_keeps_the_position_across_a_restart() {
    let mut h = Harness::new(StartAt::Beginning);
    h.append("a.log", "one\n");
    h.settle();
    h.tailer = None;
    h.append("a.log", "two\n");
    std::fs::rename(h.path("a.log"), h.path("a.log.1")).expect("rename");
    h.append("a.log", "three\n");
    h.restart();
    h.settle();
    assert_eq!(
        h.delivered,
        vec!["one", "two", "three"],
        "rotated file finished first"
    );
}

#[test]
fn a_file_found_but_not_yet_read_is_finished_after_a_crash_and_its_rotation() {
    let mut h = Harness::new(StartAt::Beginning);
    h.append("a.log", "one\n");
    // A rescan finds the file; the agent is killed before its first read
    // (tailing paused for a full queue, say) ...
    h.tailer().rescan(false).expect("rescan");
    h.tailer = None;
    // ... and the file is rotated away meanwhile.
    h.append("a.log", "two\n");
    std::fs::rename(h.path("a.log"), h.path("a.log.1")).expect("rename");
    h.append("a.log", "three\n");
    h.restart();
    h.settle();
    assert_eq!(h.delivered, vec!["one", "two", "three"]);
}

#[test]
fn start_at_end_holds_across_a_crash_before_the_first_new_line() {
    let mut h = Harness::unstarted(StartAt::End);
    h.append("a.log", "old\n");
    h.restart();
    h.tailer = None;
    h.append("a.log", "new\n");
    h.restart();
    h.settle();
    assert_eq!(h.delivered, vec!["new"]);
}

fn gzip(from: &Path, to: &Path) {
    let data = std::fs::read(from).expect("read");
    let out = std::fs::File::create(to).expect("create");
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    gz.write_all(&data).expect("compress");
    gz.finish().expect("finish");
}

/// A start after `h`'s files were rotated with compression while it was
/// stopped: every line once, nothing read again at the next start.
fn assert_compressed_copy_read(h: &mut Harness) {
    h.append("a.log", "four\n");
    h.restart();
    h.settle();
    assert_eq!(h.delivered, vec!["one", "two", "three", "four"]);
    h.restart();
    h.settle();
    assert_eq!(h.delivered.len(), 4);
    assert_eq!(std::fs::read_dir(h.spool.path()).expect("spool").count(), 0);
}

#[test]
fn a_file_rotated_and_compressed_while_stopped_is_read_from_its_copy() {
    let mut h = Harness::new(StartAt::Beginning);
    h.append("a.log", "one\n");
    h.settle();
    h.tailer = None;
    h.append("a.log", "two\nthree\n");
    // logrotate's `compress` without `delaycompress`: renamed, a new file
    // created, the old one gzipped and removed.
    std::fs::rename(h.path("a.log"), h.path("a.log.1")).expect("rename");
    h.append("a.log", "");
    gzip(&h.path("a.log.1"), &h.path("a.log.1.gz"));
    std::fs::remove_file(h.path("a.log.1")).expect("remove");
    assert_compressed_copy_read(&mut h);
}

#[test]
fn a_file_copied_compressed_and_truncated_while_stopped_is_read_from_its_copy() {
    let mut h = Harness::new(StartAt::Beginning);
    h.append("a.log", "one\n");
    h.settle();
    h.tailer = None;
    h.append("a.log", "two\nthree\n");
    // `copytruncate` and `compress`: the copy is gzipped, the file emptied.
    gzip(&h.path("a.log"), &h.path("a.log.1.gz"));
    h.truncate("a.log");
    assert_compressed_copy_read(&mut h);
}

#[test]
fn redacted_values_never_reach_the_queue_and_are_counted() {
    let mut h = Harness::new(StartAt::Beginning);
    h.sources[0].redact = vec!["email".into(), "card".into()];
    h.sources[0].redact_patterns = vec![r"token=(\w+)".into()];
    h.restart();
    h.append(
        "a.log",
        "mail a@b.io twice a@b.io\ncard 4111111111111111 token=abc\nplain\n",
    );
    h.settle();
    assert_eq!(
        h.delivered,
        vec![
            "mail [REDACTED:email] twice [REDACTED:email]",
            "card [REDACTED:card] token=[REDACTED:custom.0]",
            "plain"
        ]
    );
    let count = |d: &str| h.metrics.redactions.with_label_values(&["app", d]).get();
    assert_eq!(
        (count("email"), count("card"), count("custom.0")),
        (2, 1, 1)
    );
}

#[test]
fn start_at_end_skips_existing_content_only_the_first_time() {
    let mut h = Harness::unstarted(StartAt::End);
    h.append("a.log", "old line\npartial");
    h.restart();
    h.append("a.log", " rest\nnew line\n");
    h.settle();
    assert_eq!(
        h.delivered,
        vec!["new line"],
        "existing content and the line in progress are skipped"
    );
    h.restart();
    h.append("a.log", "after restart\n");
    h.append("b.log", "b line\n");
    h.settle();
    h.delivered.sort();
    assert_eq!(
        h.delivered,
        vec!["after restart", "b line", "new line"],
        "later files are read whole"
    );
}

#[test]
fn short_file_long_line_and_partial_line() {
    let mut h = Harness::new(StartAt::Beginning);
    h.append("a.log", "x");
    h.settle();
    assert_eq!(
        h.delivered,
        vec!["x"],
        "a final line without newline is shipped after the idle time"
    );
    h.append("a.log", &format!("\n{}\nok\n", "y".repeat(200)));
    h.settle();
    assert_eq!(
        h.delivered,
        vec!["x".to_string(), "y".repeat(64), "ok".to_string()]
    );
}

#[test]
fn copytruncate_recovers_unread_lines_from_the_copy() {
    let mut h = Harness::new(StartAt::Beginning);
    h.append("a.log", "one\n");
    h.settle();
    h.append("a.log", "two\n");
    std::fs::copy(h.path("a.log"), h.path("a.log.1")).expect("copy");
    h.truncate("a.log");
    h.settle();
    assert_eq!(h.delivered, vec!["one", "two"]);
    h.append("a.log", "three\n");
    h.settle();
    assert_eq!(h.delivered, vec!["one", "two", "three"]);
}

/// A file truncated while the agent was stopped: how much it held past
/// the checkpoint is unknown. Stops the agent after `one`, then runs
/// `meanwhile` and starts it again; answers what was shipped and the
/// uncounted truncations.
fn truncated_while_stopped(meanwhile: impl FnOnce(&Harness)) -> (Vec<String>, u64) {
    let mut h = Harness::new(StartAt::Beginning);
    h.append("a.log", "one\n");
    h.settle();
    h.tailer = None;
    meanwhile(&h);
    h.restart();
    h.settle();
    let uncounted = h.metrics.uncounted_truncations.with_label_values(&["app"]);
    (h.delivered.clone(), uncounted.get())
}

#[test]
fn a_truncation_while_stopped_with_no_copy_is_reported_as_an_uncounted_loss() {
    let (delivered, uncounted) = truncated_while_stopped(|h| {
        h.append("a.log", "two\n");
        h.truncate("a.log");
        h.append("a.log", "three\n");
    });
    assert_eq!(delivered, vec!["one", "three"]);
    assert_eq!(uncounted, 1);
}

#[test]
fn a_copy_as_long_as_what_was_read_shows_a_truncation_while_stopped_lost_nothing() {
    let (delivered, uncounted) = truncated_while_stopped(|h| {
        std::fs::copy(h.path("a.log"), h.path("a.log.1")).expect("copy");
        h.truncate("a.log");
        h.append("a.log", "two\n");
    });
    assert_eq!(delivered, vec!["one", "two"]);
    assert_eq!(uncounted, 0);
}

#[test]
fn files_that_begin_with_the_same_bytes_are_both_followed() {
    let mut h = Harness::new(StartAt::Beginning);
    h.append("a.log", "same\n");
    h.append("b.log", "same\n");
    h.settle();
    assert_eq!(h.delivered, vec!["same", "same"]);
}

#[test]
fn a_deleted_file_is_read_for_the_grace_period_after_the_deletion_is_noticed() {
    let mut h = Harness::new(StartAt::Beginning);
    h.grace_ms = 300;
    h.restart();
    let mut writer = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(h.path("a.log"))
        .expect("open");
    writer.write_all(b"one\n").expect("write");
    h.settle();
    // The file has been idle for longer than the grace period when it goes.
    std::thread::sleep(std::time::Duration::from_millis(400));
    std::fs::remove_file(h.path("a.log")).expect("delete");
    h.settle();
    writer
        .write_all(b"two\n")
        .expect("write to the deleted file");
    h.settle();
    assert_eq!(h.delivered, vec!["one", "two"]);
}

#[test]
fn metrics_count_lines_cuts_parse_errors_and_what_a_truncation_lost() {
    let mut h = Harness::new(StartAt::Beginning);
    h.append(
        "a.log",
        &format!("{{\"a\":1}}\nnot json\n{}\n", "y".repeat(100)),
    );
    h.settle();
    let app = ["app"];
    let m = h.metrics.clone();
    assert_eq!(m.lines.with_label_values(&app).get(), 3);
    assert_eq!(m.bytes.with_label_values(&app).get(), 8 + 9 + 65);
    assert_eq!(m.truncated_lines.with_label_values(&app).get(), 1);
    assert_eq!(
        m.parse_errors.with_label_values(&app).get(),
        1,
        "a cut line is not judged"
    );
    assert_eq!(m.files.with_label_values(&app).get(), 1);

    // 100 lines of 51 bytes; one read takes 4096 of them (80 whole lines),
    // then the file is truncated with no copy: the 20 lines seen but not
    // read are lost, and counted.
    h.append("a.log", &format!("{}\n", "z".repeat(50)).repeat(100));
    h.tailer().poll_all().expect("poll");
    assert_eq!(
        m.unread_bytes.with_label_values(&app).get(),
        5100 - 4096,
        "how far behind the file the agent is"
    );
    h.truncate("a.log");
    h.settle();
    assert_eq!(m.truncations.with_label_values(&app).get(), 1);
    assert_eq!(
        m.abandoned_bytes
            .with_label_values(&["app", "truncated"])
            .get(),
        20 * 51
    );
    assert_eq!(h.delivered.len(), 3 + 80);
}

#[test]
fn the_backlog_shows_while_tailing_is_paused() {
    let mut h = Harness::new(StartAt::Beginning);
    // Any queued byte pauses tailing.
    h.max_queued_bytes = 1;
    h.restart();
    let m = h.metrics.clone();
    let app = ["app"];
    h.append("a.log", "first\n");
    h.tailer().rescan(false).expect("rescan");
    while h.tailer().poll_all().expect("poll") {}
    assert_eq!(m.unread_bytes.with_label_values(&app).get(), 0);
    h.append("a.log", &"x\n".repeat(1000));
    std::thread::sleep(Duration::from_millis(1100));
    assert!(!h.tailer().poll_all().expect("poll"), "paused");
    assert_eq!(
        m.unread_bytes.with_label_values(&app).get(),
        2000,
        "what waits in the file, while nothing is read"
    );
    let age = m.unread_age.with_label_values(&app).get();
    assert!(
        age >= 1.0,
        "at least as old as the file's last write: {age}"
    );
    h.collect();
    h.settle();
    assert_eq!(h.delivered.len(), 1001);
    assert_eq!(m.unread_bytes.with_label_values(&app).get(), 0);
    assert_eq!(m.unread_age.with_label_values(&app).get(), 0.0);
}
