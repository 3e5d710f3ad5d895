//! File tailing: one blocking thread follows every file of every source.
//!
//! Each turn of the loop rescans the globs when a filesystem event asked for
//! it (or the safety-net interval passed), then reads at most
//! `read_chunk_bytes` from each file, frames lines, and commits them to the
//! queue together with the file's new checkpoint in one atomic write. The
//! position in memory may run ahead of the checkpoint (an incomplete line),
//! never the other way round; after a crash the file is read again from the
//! checkpoint, which is exactly where the queue ends. A file's checkpoint
//! is written as soon as it is followed, before its first read, so that a
//! crash before that read does not forget the file (see `register`).
//!
//! Rotation:
//! - by rename: the open file keeps its inode, so it is read to its end
//!   through the open descriptor, then closed once `rotated_grace_ms` has
//!   passed both since the rename was noticed and since its last new byte
//!   (a writer may still hold it); the new file is a new inode and starts
//!   at 0. A deleted file is handled the same way;
//! - by copytruncate: the file shrinks below the read position; the bytes
//!   not yet read are recovered from the copy (a file in the same directory
//!   with the same fingerprint) when there is one, then reading restarts at 0;
//! - while the agent was stopped: at start-up, a checkpointed file that no
//!   longer matches is looked for in its directory by inode and fingerprint
//!   and read to its end before anything else; a file that is gone is
//!   looked for as a gzip copy there (`compressed`), read from its
//!   checkpoint the same way.
//!
//! When the queue is full, reading pauses: the files are the buffer.

pub mod checkpoint;
mod compressed;
mod discover;
pub mod framer;
mod refill;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use logferry_proto::{chunk, Chunk, KeyValue, Origin, RawLines};
use tracing::{debug, info, warn};

use crate::config::{Format, SourceConfig, StartAt, TailConfig};
use crate::metrics::Metrics;
use crate::queue::{Queue, QueueError};
use crate::redact::Redactor;
use checkpoint::{fingerprint, source_key, Checkpoint, FileId};
pub use discover::Matcher;
use framer::{Framer, Lines};
pub use refill::FileRefill;

/// A hint from the filesystem watcher: `true` when files may have appeared
/// or gone (rescan), `false` when one was only written to (read now).
pub type Wake = bool;

struct Tracked {
    source: usize,
    path: PathBuf,
    file: File,
    read_pos: u64,
    /// The file's size when last looked at.
    size: u64,
    /// Whether this run has looked at the file's size yet: before that,
    /// `size` is only the checkpoint's offset, and what the file held past
    /// it before a truncation while the agent was stopped is unknown.
    sized: bool,
    framer: Framer,
    /// The checkpoint last made durable.
    saved: Checkpoint,
    matched: bool,
    /// When a rescan first found the file no longer matching (rotated away
    /// or deleted); the grace period runs from here and from `last_data`.
    unmatched_since: Option<Instant>,
    last_data: Instant,
    /// Check the head against the fingerprint at the next poll (set by
    /// rescans, so a file rewritten to its old size is still noticed).
    verify: bool,
    /// Since when the file has had bytes not read yet, as far as known (see
    /// `observe_files`).
    behind_since: Option<Instant>,
}

impl Tracked {
    fn settled(&self) -> u64 {
        self.read_pos - self.framer.pending() as u64
    }
}

pub struct Tailer {
    cfg: TailConfig,
    sources: Vec<SourceConfig>,
    queue: Arc<Queue>,
    matcher: Matcher,
    files: BTreeMap<FileId, Tracked>,
    /// Checkpoints of files not open now.
    known: HashMap<FileId, Checkpoint>,
    /// Sources that had been seen before this start.
    seen_sources: HashSet<String>,
    buf: Vec<u8>,
    metrics: Arc<Metrics>,
    /// When the sizes of files not polled (tailing paused) were last looked at.
    sized_at: Instant,
    /// Where compressed copies are unpacked (see `compressed`).
    spool_dir: PathBuf,
    /// Each source's detectors, by source index.
    redactors: Vec<Option<Redactor>>,
}

impl Tailer {
    pub fn new(
        cfg: TailConfig,
        sources: Vec<SourceConfig>,
        queue: Arc<Queue>,
        metrics: Arc<Metrics>,
        spool_dir: PathBuf,
    ) -> Result<Tailer, QueueError> {
        let mut known = HashMap::new();
        let mut seen_sources = HashSet::new();
        for (k, v) in queue.checkpoints()? {
            if let Some(name) = k.strip_prefix(b"source/") {
                seen_sources.insert(String::from_utf8_lossy(name).into_owned());
            } else if let (Some(id), Some(c)) = (FileId::from_key(&k), Checkpoint::decode(&v)) {
                known.insert(id, c);
            } else {
                warn!("ignoring an unreadable checkpoint");
            }
        }
        let redactors = sources
            .iter()
            .map(|s| {
                Redactor::new(&s.redact, &s.redact_patterns)
                    .unwrap_or_else(|e| panic!("source {}: redact was validated: {e}", s.name))
            })
            .collect();
        Ok(Tailer {
            redactors,
            matcher: Matcher::new(&sources),
            buf: vec![0; cfg.read_chunk_bytes],
            cfg,
            sources,
            queue,
            files: BTreeMap::new(),
            known,
            seen_sources,
            metrics,
            sized_at: Instant::now(),
            spool_dir,
        })
    }

    /// Why tailing waits now, if it does: the queue is full (its byte limit,
    /// or its disk's reserve), or holds as much file data ahead of the
    /// forwarder as is worth copying (`max_queued_bytes`; dead letters do
    /// not count, they wait for a replay, not for the forwarder).
    fn pause(&self) -> Option<Result<(), QueueError>> {
        match self.queue.room() {
            Err(e) => Some(Err(e)),
            Ok(()) => {
                (self.queue.undelivered_bytes() >= self.cfg.max_queued_bytes).then_some(Ok(()))
            }
        }
    }

    fn queue_full(&self) -> bool {
        self.pause().is_some()
    }

    /// Runs until `stop` is set. Returns only on a queue failure.
    pub fn run(mut self, wake: Receiver<Wake>, stop: Arc<AtomicBool>) -> Result<(), QueueError> {
        self.start()?;
        let interval = Duration::from_millis(self.cfg.rescan_interval_ms);
        let mut next_rescan = Instant::now() + interval;
        let mut rescan_now = false;
        let mut paused = false;
        while !stop.load(Ordering::Relaxed) {
            let pause = self.pause();
            if pause.is_some() != paused {
                paused = pause.is_some();
                if let Some(Err(e)) = pause {
                    warn!(queued_bytes = self.queue.bytes(), "tailing paused: {e}");
                } else if paused {
                    info!(
                        queued_bytes = self.queue.bytes(),
                        "tailing paused until collectors catch up (the files are the buffer)"
                    );
                } else {
                    info!("queue has room again; tailing resumed");
                }
            }
            if rescan_now || Instant::now() >= next_rescan {
                self.rescan(false)?;
                next_rescan = Instant::now() + interval;
                rescan_now = false;
            }
            let progressed = self.poll_all()?;
            if !progressed {
                // While paused, look again soon: acknowledgements free room quickly.
                let wait = if self.queue_full() { 10 } else { 100 };
                match wake.recv_timeout(Duration::from_millis(wait)) {
                    Ok(rescan) => rescan_now |= rescan,
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        std::thread::sleep(Duration::from_millis(wait))
                    }
                }
                while let Ok(rescan) = wake.try_recv() {
                    rescan_now |= rescan;
                }
            }
        }
        Ok(())
    }

    /// What a start does before following files: finish rotated files, find
    /// the current ones, remember the sources as seen.
    fn start(&mut self) -> Result<(), QueueError> {
        self.recover_rotated()?;
        self.rescan(true)?;
        for s in &self.sources {
            if !self.seen_sources.contains(&s.name) {
                self.queue.put_checkpoint(&source_key(&s.name), b"")?;
            }
        }
        Ok(())
    }

    /// Polls a file until it has nothing more, waiting while the queue is
    /// full. `draining`: see `poll_file`.
    fn drain(&mut self, id: FileId, draining: bool) -> Result<(), QueueError> {
        loop {
            if self.queue_full() {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            let progressed = if draining {
                self.poll_file(id, true)?
            } else {
                self.poll_file_no_truncation_check(id)?
            };
            if !progressed {
                return Ok(());
            }
        }
    }

    /// Files rotated away while the agent was stopped: found by inode and
    /// fingerprint in the directory they were in, and read to their end
    /// before any other file. Checkpoints of files that are gone are dropped.
    fn recover_rotated(&mut self) -> Result<(), QueueError> {
        let matched: HashSet<FileId> = self.matcher.scan().into_iter().map(|f| f.id).collect();
        let orphans: Vec<(FileId, Checkpoint)> = self
            .known
            .iter()
            .filter(|(id, _)| !matched.contains(id))
            .map(|(id, c)| (*id, c.clone()))
            .collect();
        for (id, ckpt) in orphans {
            let Some(source) = self.source_of(&ckpt.path) else {
                continue;
            };
            let found = find_in_dir(&ckpt.path, |meta, path| {
                meta.dev() == id.dev && meta.ino() == id.ino && head_matches(path, &ckpt)
            });
            match found {
                // Already read to its end before the stop: nothing to do.
                Some(path) if std::fs::metadata(&path).is_ok_and(|m| m.len() <= ckpt.offset) => {}
                Some(path) => {
                    info!(path = %path.display(), offset = ckpt.offset, "finishing a file rotated while the agent was stopped");
                    self.known.remove(&id);
                    self.open(id, source, path, Some(ckpt))?;
                    if let Some(t) = self.files.get_mut(&id) {
                        t.matched = false;
                    }
                    self.drain(id, true)?;
                    self.finish(id)?;
                }
                None => {
                    self.known.remove(&id);
                    self.finish_compressed(id, source, ckpt)?;
                }
            }
        }
        Ok(())
    }

    /// A checkpointed file gone while the agent was stopped: its unread
    /// lines are read from a compressed copy if there is one (see
    /// `compressed`); either way its checkpoint goes.
    fn finish_compressed(
        &mut self,
        id: FileId,
        source: usize,
        ckpt: Checkpoint,
    ) -> Result<(), QueueError> {
        match self.unpack(&ckpt) {
            Ok(Some(u)) if u.len > ckpt.offset => {
                info!(path = %ckpt.path.display(), copy = %u.from.display(), offset = ckpt.offset, "finishing a file rotated and compressed while the agent was stopped");
                let path = ckpt.path.clone();
                self.follow(id, source, path, u.file, Some(ckpt));
                if let Some(t) = self.files.get_mut(&id) {
                    t.matched = false;
                }
                self.drain(id, true)?;
                // The spool file is unlinked: `finish` drops the checkpoint.
                return self.finish(id);
            }
            Ok(Some(u)) => {
                debug!(path = %ckpt.path.display(), copy = %u.from.display(), "file compressed after it was read to its end");
            }
            Ok(None) => {
                debug!(path = %ckpt.path.display(), offset = ckpt.offset, "file gone while the agent was stopped, and no copy of it found");
            }
            Err(why) => {
                warn!(path = %ckpt.path.display(), offset = ckpt.offset, "file rotated and compressed while the agent was stopped, and its copy cannot be read: any lines past the offset are lost: {why}");
            }
        }
        self.queue.delete_checkpoint(&id.key())
    }

    /// `compressed::unpack`, within the queue's disk reserve.
    fn unpack(&self, ckpt: &Checkpoint) -> Result<Option<compressed::Unpacked>, String> {
        let room = || !matches!(self.queue.room(), Err(QueueError::DiskFull { .. }));
        let head = self.cfg.fingerprint_bytes as u64;
        compressed::unpack(ckpt, head, &self.spool_dir, room)
    }

    /// The source whose include globs match `path`, for a rotated file whose
    /// new name no longer does: the one whose globs matched its old name.
    fn source_of(&self, old_path: &Path) -> Option<usize> {
        self.sources.iter().position(|s| {
            s.include
                .iter()
                .any(|g| glob::Pattern::new(g).is_ok_and(|p| p.matches_path(old_path)))
        })
    }

    fn rescan(&mut self, initial: bool) -> Result<(), QueueError> {
        for t in self.files.values_mut() {
            t.matched = false;
        }
        let mut fresh = Vec::new();
        for found in self.matcher.scan() {
            if let Some(t) = self.files.get_mut(&found.id) {
                t.matched = true;
                t.verify = true;
                t.path = found.path;
                continue;
            }
            // A checkpoint whose file no longer begins as it did (truncated,
            // or the inode reused by another file) is still taken: the first
            // poll sees the new head and goes through `truncated`, which
            // finishes the old content from a copy if there is one.
            let ckpt = self.known.remove(&found.id);
            let source = &self.sources[found.source];
            let start_at_end = ckpt.is_none()
                && initial
                && source.start_at == StartAt::End
                && !self.seen_sources.contains(&source.name);
            if ckpt.is_none() {
                fresh.push(found.id);
            }
            let ckpt = match ckpt {
                Some(c) => Some(c),
                None if start_at_end => Some(end_checkpoint(&found.path)),
                None => None,
            };
            self.open(found.id, found.source, found.path, ckpt)?;
        }
        self.register(&fresh)?;
        let now = Instant::now();
        for t in self.files.values_mut() {
            if !t.matched && t.unmatched_since.is_none() {
                self.metrics
                    .rotations
                    .with_label_values(&[&self.sources[t.source].name])
                    .inc();
            }
            t.unmatched_since = if t.matched {
                None
            } else {
                t.unmatched_since.or(Some(now))
            };
        }
        Ok(())
    }

    fn open(
        &mut self,
        id: FileId,
        source: usize,
        path: PathBuf,
        ckpt: Option<Checkpoint>,
    ) -> Result<(), QueueError> {
        match File::open(&path) {
            Ok(file) => self.follow(id, source, path, file, ckpt),
            Err(e) => debug!(path = %path.display(), error = %e, "cannot open file"),
        }
        Ok(())
    }

    /// Follows `file` (open at `path`) from its checkpoint.
    fn follow(
        &mut self,
        id: FileId,
        source: usize,
        path: PathBuf,
        file: File,
        ckpt: Option<Checkpoint>,
    ) {
        let saved = ckpt.unwrap_or_else(|| Checkpoint {
            offset: 0,
            fp_len: 0,
            fp: fingerprint(b""),
            discarding: false,
            path: path.clone(),
        });
        debug!(path = %path.display(), offset = saved.offset, "following file");
        let max_line = self.sources[source].max_line_bytes;
        self.files.insert(
            id,
            Tracked {
                source,
                read_pos: saved.offset,
                size: saved.offset,
                sized: false,
                framer: Framer::new(max_line, saved.discarding),
                saved,
                path,
                file,
                matched: true,
                unmatched_since: None,
                last_data: Instant::now(),
                verify: true,
                behind_since: None,
            },
        );
    }

    /// Makes newly followed files' checkpoints durable before anything of
    /// them is read, each with the fingerprint of what it holds now, in one
    /// write: a crash before a file's first read (tailing paused, say)
    /// followed by a rotation would otherwise leave no record of the file,
    /// and its lines would never be read; a `start_at = "end"` position
    /// would be forgotten.
    fn register(&mut self, ids: &[FileId]) -> Result<(), QueueError> {
        let mut head = vec![0; self.cfg.fingerprint_bytes];
        let mut items = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(t) = self.files.get_mut(id) else {
                continue;
            };
            if let Ok(n) = read_full_at(&t.file, &mut head, 0) {
                t.saved.fp_len = n as u32;
                t.saved.fp = fingerprint(&head[..n]);
            }
            items.push((id.key().to_vec(), t.saved.encode()));
        }
        self.queue.put_checkpoints(&items)
    }

    /// One read from each file, rotated-away files first. True when any
    /// file moved.
    fn poll_all(&mut self) -> Result<bool, QueueError> {
        let mut ids: Vec<(bool, FileId)> =
            self.files.iter().map(|(id, t)| (t.matched, *id)).collect();
        ids.sort();
        let mut progressed = false;
        let mut paused = false;
        for (_, id) in ids {
            if self.queue_full() {
                paused = true;
                break;
            }
            progressed |= self.poll_file(id, false)?;
            self.close_if_done(id)?;
        }
        if paused && self.sized_at.elapsed() >= Duration::from_secs(1) {
            // Files are not polled while paused: look at their sizes, so
            // the backlog shows what is waiting.
            for t in self.files.values_mut() {
                if let Ok(m) = t.file.metadata() {
                    t.size = t.size.max(m.len());
                }
            }
            self.sized_at = Instant::now();
        }
        self.observe_files();
        Ok(progressed)
    }

    /// Files followed, bytes not read yet and for how long, per source.
    /// A file found behind at its first look (after a start) counts from
    /// its last modification: its oldest unread line is at least that old.
    fn observe_files(&mut self) {
        let mut per_source = vec![(0i64, 0i64, 0f64); self.sources.len()];
        for t in self.files.values_mut() {
            let unread = t.size.saturating_sub(t.read_pos);
            t.behind_since = match (unread, t.behind_since) {
                (0, _) => None,
                (_, Some(since)) => Some(since),
                (_, None) => {
                    let modified = t.file.metadata().and_then(|m| m.modified()).ok();
                    let age = modified.and_then(|m| m.elapsed().ok()).unwrap_or_default();
                    Some(Instant::now().checked_sub(age).unwrap_or_else(Instant::now))
                }
            };
            let s = &mut per_source[t.source];
            s.0 += 1;
            s.1 += unread as i64;
            s.2 =
                s.2.max(t.behind_since.map_or(0.0, |b| b.elapsed().as_secs_f64()));
        }
        for (source, (files, unread, age)) in self.sources.iter().zip(per_source) {
            let label = [source.name.as_str()];
            self.metrics.files.with_label_values(&label).set(files);
            self.metrics
                .unread_bytes
                .with_label_values(&label)
                .set(unread);
            self.metrics.unread_age.with_label_values(&label).set(age);
        }
    }

    /// Reads once from a file. `draining`: the file is known complete, so a
    /// final line without newline is emitted at once.
    fn poll_file(&mut self, id: FileId, draining: bool) -> Result<bool, QueueError> {
        let partial_timeout = Duration::from_millis(
            self.files
                .get(&id)
                .map_or(0, |t| self.sources[t.source].partial_line_timeout_ms),
        );
        let Some(t) = self.files.get_mut(&id) else {
            return Ok(false);
        };
        let size = match t.file.metadata() {
            Ok(m) => m.len(),
            Err(e) => {
                warn!(path = %t.path.display(), error = %e, "cannot stat file; dropping it until the next scan");
                self.files.remove(&id);
                return Ok(false);
            }
        };
        // Copytruncate shows as a file shorter than what was read, or, when
        // the writer refilled it past that point already, as a new head.
        let last_size = std::mem::replace(&mut t.size, size);
        let sized = std::mem::replace(&mut t.sized, true);
        let verify = std::mem::take(&mut t.verify) || size > t.read_pos;
        if size < t.read_pos
            || (verify && t.saved.fp_len > 0 && !head_matches_file(&t.file, &t.saved))
        {
            self.truncated(id, last_size, sized)?;
            return Ok(true);
        }
        let mut lines = Lines::default();
        if size == t.read_pos {
            if t.framer.pending() > 0 && (draining || t.last_data.elapsed() >= partial_timeout) {
                t.framer.flush(&mut lines);
                self.save(id, lines)?;
                return Ok(true);
            }
            return Ok(false);
        }
        let want = (size - t.read_pos).min(self.buf.len() as u64) as usize;
        let n = match read_full_at(&t.file, &mut self.buf[..want], t.read_pos) {
            Ok(n) => n,
            Err(e) => {
                warn!(path = %t.path.display(), error = %e, "cannot read file; dropping it until the next scan");
                self.files.remove(&id);
                return Ok(false);
            }
        };
        t.read_pos += n as u64;
        t.last_data = Instant::now();
        t.framer.feed(&self.buf[..n], &mut lines);
        self.save(id, lines)?;
        Ok(n > 0)
    }

    /// Commits framed lines with the file's new checkpoint. If the queue is
    /// full the read is undone, to be done again once there is room.
    fn save(&mut self, id: FileId, lines: Lines) -> Result<(), QueueError> {
        let Some(t) = self.files.get_mut(&id) else {
            return Ok(());
        };
        let settled = t.settled();
        let mut next = Checkpoint {
            offset: settled,
            fp_len: t.saved.fp_len,
            fp: t.saved.fp,
            discarding: t.framer.discarding,
            path: t.path.clone(),
        };
        let fp_target = settled.min(self.cfg.fingerprint_bytes as u64) as u32;
        if fp_target > next.fp_len {
            let mut head = vec![0; fp_target as usize];
            if read_full_at(&t.file, &mut head, 0).is_ok_and(|n| n == head.len()) {
                next.fp_len = fp_target;
                next.fp = fingerprint(&head);
            }
        }
        if lines.is_empty() && next == t.saved {
            return Ok(());
        }
        let key = id.key();
        let value = next.encode();
        let result = if lines.is_empty() {
            self.queue.put_checkpoint(&key, &value)
        } else {
            let source = &self.sources[t.source];
            count_lines(&self.metrics, source, &lines);
            let lines = match &self.redactors[t.source] {
                Some(r) => redact(&self.metrics, source, r, lines),
                None => lines,
            };
            let origin = origin_for(source, &t.path);
            let count = lines.count;
            let chunk = lines_chunk(origin, lines, t.saved.offset);
            self.queue
                .commit(count, chunk, Some((&key, &value)))
                .map(|_| ())
        };
        match result {
            Ok(()) => {
                t.saved = next;
                Ok(())
            }
            Err(QueueError::Full { .. } | QueueError::DiskFull { .. }) => {
                t.read_pos = t.saved.offset;
                t.framer = Framer::new(self.sources[t.source].max_line_bytes, t.saved.discarding);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The file shrank below what was read: copytruncate or a truncation.
    /// Lines not yet read are taken from the copy when one exists; then the
    /// file is read again from 0. Without a copy, what the file held past
    /// the checkpoint when last seen (`last_size`) is lost, and counted.
    /// When the file was not seen since the agent started (`sized` false),
    /// how much it held is unknown: a copy exactly as long as what was read
    /// shows that nothing was lost; without any copy, the loss cannot be
    /// counted and is reported as such.
    fn truncated(&mut self, id: FileId, last_size: u64, sized: bool) -> Result<(), QueueError> {
        let Some(t) = self.files.get_mut(&id) else {
            return Ok(());
        };
        info!(path = %t.path.display(), offset = t.saved.offset, "file truncated or replaced; reading it again from the start");
        let source_name = self.sources[t.source].name.clone();
        self.metrics
            .truncations
            .with_label_values(&[&source_name])
            .inc();
        let saved = t.saved.clone();
        let path = t.path.clone();
        // A copy of the old content: a file beside it that begins as it did
        // and is at least `min_len` long.
        let beside = |min_len: u64| {
            (saved.fp_len > 0)
                .then(|| {
                    find_in_dir(&path, |meta, path| {
                        (meta.dev(), meta.ino()) != (id.dev, id.ino)
                            && meta.len() >= min_len
                            && head_matches(path, &saved)
                    })
                })
                .flatten()
        };
        let plain = beside(saved.offset + 1).and_then(|p| Some((File::open(&p).ok()?, p)));
        // Rotated and compressed at once, the new file on the old inode.
        let mut compressed = false;
        let copy = plain.or_else(|| match self.unpack(&saved) {
            Ok(Some(u)) => {
                compressed = true;
                (u.len > saved.offset).then_some((u.file, u.from))
            }
            Ok(None) => None,
            Err(why) => {
                warn!(path = %path.display(), "the compressed copy of a truncated file cannot be read: {why}");
                None
            }
        });
        let Some(t) = self.files.get_mut(&id) else {
            return Ok(());
        };
        let mut lines = Lines::default();
        if copy.is_none() {
            let lost = last_size.max(t.read_pos).saturating_sub(saved.offset);
            if lost > 0 {
                warn!(path = %t.path.display(), bytes = lost, "file truncated before it was read to its end, and no copy found: these bytes are lost");
                self.metrics
                    .abandoned_bytes
                    .with_label_values(&[&source_name, "truncated"])
                    .inc_by(lost);
            } else if !sized && !compressed && saved.fp_len > 0 && beside(saved.offset).is_none() {
                warn!(path = %t.path.display(), offset = saved.offset, "file truncated while the agent was stopped, and no copy of its old content found: lines written past this offset before the truncation, if there were any, are lost and cannot be counted");
                self.metrics
                    .uncounted_truncations
                    .with_label_values(&[&source_name])
                    .inc();
            }
        }
        if let Some((copy, copy_path)) = copy {
            info!(copy = %copy_path.display(), "reading the lines not yet shipped from the copy");
            t.file = copy;
            t.read_pos = saved.offset;
            t.framer = Framer::new(self.sources[t.source].max_line_bytes, saved.discarding);
            let reopen = t.path.clone();
            // The copy stands in for the file until its end, with the
            // file's own checkpoint: a crash meanwhile repeats this step.
            self.drain(id, false)?;
            let Some(t) = self.files.get_mut(&id) else {
                return Ok(());
            };
            t.framer.flush(&mut lines);
            match File::open(&reopen) {
                Ok(f) => t.file = f,
                Err(_) => {
                    self.files.remove(&id);
                    return Ok(());
                }
            }
        }
        let Some(t) = self.files.get_mut(&id) else {
            return Ok(());
        };
        t.read_pos = 0;
        t.framer.reset();
        t.saved.fp_len = 0;
        t.saved.fp = fingerprint(b"");
        t.saved.discarding = false;
        let lines_offset = t.saved.offset;
        t.saved.offset = 0;
        // Commit the copy's remaining lines with the reset checkpoint in one write.
        let key = id.key();
        let value = t.saved.encode();
        if lines.is_empty() {
            self.queue.put_checkpoint(&key, &value)
        } else {
            let source = &self.sources[t.source];
            count_lines(&self.metrics, source, &lines);
            let lines = match &self.redactors[t.source] {
                Some(r) => redact(&self.metrics, source, r, lines),
                None => lines,
            };
            let origin = origin_for(source, &t.path);
            let count = lines.count;
            self.queue
                .commit(
                    count,
                    lines_chunk(origin, lines, lines_offset),
                    Some((&key, &value)),
                )
                .map(|_| ())
        }
    }

    /// Reads the copy of a truncated file: the same as `poll_file`, where a
    /// size below the position cannot mean another truncation.
    fn poll_file_no_truncation_check(&mut self, id: FileId) -> Result<bool, QueueError> {
        let Some(t) = self.files.get_mut(&id) else {
            return Ok(false);
        };
        let size = t.file.metadata().map(|m| m.len()).unwrap_or(0);
        if size <= t.read_pos {
            return Ok(false);
        }
        self.poll_file(id, false)
    }

    fn close_if_done(&mut self, id: FileId) -> Result<(), QueueError> {
        let grace = Duration::from_millis(self.cfg.rotated_grace_ms);
        let done = self.files.get(&id).is_some_and(|t| {
            !t.matched
                && t.unmatched_since
                    .is_some_and(|since| since.elapsed() >= grace)
                && t.last_data.elapsed() >= grace
                && t.file.metadata().is_ok_and(|m| m.len() == t.read_pos)
        });
        if done {
            self.finish(id)?;
        }
        Ok(())
    }

    /// A file no longer followed: its last line is shipped, then it is
    /// closed. Its checkpoint stays while the file exists, so it is not read
    /// again should a glob match it later.
    fn finish(&mut self, id: FileId) -> Result<(), QueueError> {
        if self.files.get(&id).is_some_and(|t| t.framer.pending() > 0) {
            self.drain(id, true)?;
        }
        let Some(t) = self.files.remove(&id) else {
            return Ok(());
        };
        let linked = t.file.metadata().is_ok_and(|m| m.nlink() > 0);
        debug!(path = %t.path.display(), linked, "file finished");
        if linked {
            self.known.insert(id, t.saved);
        } else {
            self.queue.delete_checkpoint(&id.key())?;
        }
        Ok(())
    }
}

/// Counts queued lines: their number and bytes, the cut ones, and for JSON
/// sources those that are not JSON objects.
pub fn count_lines(metrics: &Metrics, source: &SourceConfig, lines: &Lines) {
    let name = [source.name.as_str()];
    metrics
        .lines
        .with_label_values(&name)
        .inc_by(u64::from(lines.count));
    metrics
        .bytes
        .with_label_values(&name)
        .inc_by(lines.data.len() as u64);
    if !lines.truncated.is_empty() {
        metrics
            .truncated_lines
            .with_label_values(&name)
            .inc_by(lines.truncated.len() as u64);
    }
    if source.format == Format::Json {
        let bad = lines
            .data
            .split(|b| *b == b'\n')
            .take(lines.count as usize)
            .enumerate()
            .filter(|(i, line)| !lines.truncated.contains(&(*i as u32)) && !is_json_object(line))
            .count();
        if bad > 0 {
            metrics
                .parse_errors
                .with_label_values(&name)
                .inc_by(bad as u64);
        }
    }
}

/// `lines` through the source's detectors, their findings counted.
fn redact(metrics: &Metrics, source: &SourceConfig, r: &Redactor, lines: Lines) -> Lines {
    let names: Vec<&str> = r.names().collect();
    let mut found = vec![0; names.len()];
    let data = r.redact_lines(&lines.data, &mut found);
    for (name, n) in names.iter().zip(found) {
        if n > 0 {
            metrics
                .redactions
                .with_label_values(&[source.name.as_str(), name])
                .inc_by(n);
        }
    }
    Lines { data, ..lines }
}

fn is_json_object(line: &[u8]) -> bool {
    line.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok()
}

fn lines_chunk(origin: Origin, lines: Lines, file_offset: u64) -> Chunk {
    Chunk {
        first_seq: 0,
        origin: Some(origin),
        observed_time_unix_nano: now_nanos(),
        body: Some(chunk::Body::Lines(RawLines {
            data: lines.data.into(),
            truncated: lines.truncated,
            file_offset,
        })),
    }
}

pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn origin_for(source: &SourceConfig, path: &Path) -> Origin {
    Origin {
        source: source.name.clone(),
        file_path: path.to_string_lossy().into_owned(),
        format: match source.format {
            Format::Json => logferry_proto::Format::Json,
            Format::Text => logferry_proto::Format::Text,
        } as i32,
        service_name: source.service.clone(),
        attributes: source
            .attributes
            .iter()
            .map(|(k, v)| KeyValue::string(k, v))
            .collect(),
    }
}

/// A checkpoint at the end of a file, for `start_at = "end"`: a line in
/// progress there is skipped up to its newline.
fn end_checkpoint(path: &Path) -> Checkpoint {
    let len = std::fs::metadata(path).map_or(0, |m| m.len());
    let mut last = [0u8; 1];
    let mid_line = len > 0
        && File::open(path)
            .and_then(|f| f.read_exact_at(&mut last, len - 1))
            .is_ok_and(|()| last[0] != b'\n');
    Checkpoint {
        offset: len,
        fp_len: 0,
        fp: fingerprint(b""),
        discarding: mid_line,
        path: path.to_path_buf(),
    }
}

/// True when the file at `path` begins with the bytes the checkpoint
/// fingerprinted.
fn head_matches(path: &Path, ckpt: &Checkpoint) -> bool {
    File::open(path).is_ok_and(|f| head_matches_file(&f, ckpt))
}

fn head_matches_file(file: &File, ckpt: &Checkpoint) -> bool {
    let mut head = vec![0; ckpt.fp_len as usize];
    read_full_at(file, &mut head, 0).is_ok_and(|n| n == head.len() && fingerprint(&head) == ckpt.fp)
}

/// The most recently modified regular file in `path`'s directory that
/// satisfies `pred`.
fn find_in_dir(path: &Path, pred: impl Fn(&std::fs::Metadata, &Path) -> bool) -> Option<PathBuf> {
    let dir = path.parent()?;
    let mut best: Option<(SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if !meta.is_file() || !pred(&meta, &p) {
            continue;
        }
        let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        if best.as_ref().is_none_or(|(t, _)| mtime > *t) {
            best = Some((mtime, p));
        }
    }
    best.map(|(_, p)| p)
}

fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
