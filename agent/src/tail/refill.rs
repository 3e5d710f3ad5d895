//! Reads lines that a damaged queue lost again from their file.
//!
//! A hole in the queue between two records that survived, both lines of
//! the same file, is the bytes between them in that file: from the end of
//! the first chunk to the offset of the second. Those bytes are read again
//! only when the file (or a file in its directory, where a rotation moved
//! it) still holds both neighbours' bytes in place around them, and the
//! hole frames into exactly as many lines as were lost, cut and redacted
//! as the source cuts and redacts them. Anything else is left to the loss
//! ledger (so is a hole next to a line that redaction changed: its bytes
//! are no longer the file's).

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use logferry_proto::{chunk, Chunk, RawLines};

use super::framer::{Framer, Lines};
use super::{find_in_dir, read_full_at};
use crate::config::SourceConfig;
use crate::queue::Refill;
use crate::redact::Redactor;

/// A hole larger than this is not read again (it is counted lost).
const MAX_HOLE_BYTES: u64 = 256 << 20;
/// The bytes of each neighbour compared with the file, at most.
const ANCHOR_BYTES: usize = 4096;
/// The lines read again are queued in chunks of about this size.
const CHUNK_BYTES: usize = 1 << 20;

/// The tailer's `Refill`: each source's line limit and detectors, by
/// source name.
pub struct FileRefill {
    sources: HashMap<String, (usize, Option<Redactor>)>,
}

impl FileRefill {
    /// Sources whose detectors do not compile (the config was validated)
    /// are left out: their holes are counted lost, never read unredacted.
    pub fn new(sources: &[SourceConfig]) -> FileRefill {
        FileRefill {
            sources: sources
                .iter()
                .filter_map(|s| {
                    let redactor = Redactor::new(&s.redact, &s.redact_patterns).ok()?;
                    Some((s.name.clone(), (s.max_line_bytes, redactor)))
                })
                .collect(),
        }
    }
}

impl Refill for FileRefill {
    fn refill(
        &self,
        (before, _): (&Chunk, u32),
        after: &Chunk,
        lost: u64,
    ) -> Result<Vec<(u32, Chunk)>, String> {
        let (Some(chunk::Body::Lines(b)), Some(chunk::Body::Lines(a))) =
            (&before.body, &after.body)
        else {
            return Err("not lines of a file".into());
        };
        let origin = before.origin.clone().unwrap_or_default();
        if origin.file_path.is_empty() || after.origin.as_ref() != Some(&origin) {
            return Err("the records around them come from different places".into());
        }
        let path = Path::new(&origin.file_path);
        let (max_line, redactor) = self
            .sources
            .get(&origin.source)
            .ok_or_else(|| format!("source {:?} is no longer configured", origin.source))?;
        if !b.truncated.is_empty() {
            return Err(format!(
                "{}: a line before them was cut, so where they begin is not known",
                path.display()
            ));
        }
        let start = b.file_offset + b.data.len() as u64;
        let end = a.file_offset;
        if end < start {
            return Err(format!(
                "{}: the file was read again from its start between them",
                path.display()
            ));
        }
        if end - start > MAX_HOLE_BYTES {
            return Err(format!(
                "{}: {} bytes apart, too many to read again",
                path.display(),
                end - start
            ));
        }
        let anchors = |file: &File| {
            matches_at(file, tail(&b.data), start - tail(&b.data).len() as u64)
                && matches_at(file, head(&a.data), end)
        };
        let found = find_in_dir(path, |_, p| File::open(p).is_ok_and(|f| anchors(&f))).ok_or_else(
            || {
                format!(
                    "{} bytes {start}..{end}: no file holds these lines any more",
                    path.display()
                )
            },
        )?;
        let file = File::open(&found).map_err(|e| format!("{}: {e}", found.display()))?;
        let chunks = read_lines(&file, start, end, *max_line)
            .map_err(|e| format!("{}: {e}", found.display()))?;
        let read: u64 = chunks.iter().map(|(lines, _)| u64::from(lines.count)).sum();
        if read != lost {
            return Err(format!(
                "{} bytes {start}..{end}: {read} lines where {lost} were lost",
                found.display()
            ));
        }
        Ok(chunks
            .into_iter()
            .map(|(mut lines, file_offset)| {
                if let Some(r) = redactor {
                    let mut found = vec![0; r.names().count()];
                    lines.data = r.redact_lines(&lines.data, &mut found);
                }
                let chunk = Chunk {
                    first_seq: 0,
                    origin: Some(origin.clone()),
                    observed_time_unix_nano: before.observed_time_unix_nano,
                    body: Some(chunk::Body::Lines(RawLines {
                        data: lines.data.into(),
                        truncated: lines.truncated,
                        file_offset,
                    })),
                };
                (lines.count, chunk)
            })
            .collect())
    }
}

/// The last line of `data` (which ends with its newline), at most
/// `ANCHOR_BYTES` of it.
fn tail(data: &[u8]) -> &[u8] {
    let body = &data[..data.len().saturating_sub(1)];
    let from = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    &data[from.max(data.len().saturating_sub(ANCHOR_BYTES))..]
}

/// The first line of `data` without its newline (a cut line's bytes are
/// the start of the line in the file), at most `ANCHOR_BYTES` of it.
fn head(data: &[u8]) -> &[u8] {
    let line = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    &data[..line.min(ANCHOR_BYTES)]
}

fn matches_at(file: &File, expected: &[u8], offset: u64) -> bool {
    let mut buf = vec![0; expected.len()];
    read_full_at(file, &mut buf, offset).is_ok_and(|n| n == buf.len() && buf == expected)
}

/// The lines of `file` in `[start, end)`, framed with `max_line`, in
/// pieces of whole lines of about `CHUNK_BYTES`, each with the offset of
/// its first byte.
fn read_lines(
    file: &File,
    start: u64,
    end: u64,
    max_line: usize,
) -> std::io::Result<Vec<(Lines, u64)>> {
    let mut out = Vec::new();
    let mut framer = Framer::new(max_line, false);
    let (mut lines, mut lines_from) = (Lines::default(), start);
    let mut buf = vec![0; CHUNK_BYTES];
    let mut at = start;
    while at < end {
        let want = buf.len().min((end - at) as usize);
        let n = read_full_at(file, &mut buf[..want], at)?;
        if n < want {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file ends before the lines do",
            ));
        }
        // Fed up to the last newline, so that a piece ends with a line.
        let piece = &buf[..n];
        let whole = piece.iter().rposition(|b| *b == b'\n').map_or(n, |i| i + 1);
        framer.feed(&piece[..whole], &mut lines);
        at += whole as u64;
        if framer.pending() == 0 && !framer.discarding && lines.data.len() >= CHUNK_BYTES / 2 {
            out.push((std::mem::take(&mut lines), lines_from));
            lines_from = at;
        }
    }
    framer.flush(&mut lines);
    if !lines.is_empty() {
        out.push((lines, lines_from));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_proto::Origin;

    fn origin(path: &Path) -> Origin {
        Origin {
            source: "app".into(),
            file_path: path.display().to_string(),
            ..Origin::default()
        }
    }

    fn chunk_of(path: &Path, data: &[u8], file_offset: u64) -> Chunk {
        Chunk {
            origin: Some(origin(path)),
            body: Some(chunk::Body::Lines(RawLines {
                data: data.to_vec().into(),
                truncated: Vec::new(),
                file_offset,
            })),
            ..Chunk::default()
        }
    }

    fn refill() -> FileRefill {
        FileRefill::new(&[SourceConfig {
            name: "app".into(),
            max_line_bytes: 8,
            ..SourceConfig::default()
        }])
    }

    fn lines(chunks: &[(u32, Chunk)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (_, c) in chunks {
            let Some(chunk::Body::Lines(l)) = &c.body else {
                panic!("lines")
            };
            out.extend_from_slice(&l.data);
        }
        out
    }

    #[test]
    fn the_lines_between_two_chunks_are_read_again_and_cut_as_the_source_cuts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.log");
        std::fs::write(&path, b"one\ntwo\nthree-is-long\nfour\nfive\n").expect("write");
        let before = chunk_of(&path, b"one\n", 0);
        let after = chunk_of(&path, b"five\n", 27);
        let got = refill()
            .refill((&before, 1), &after, 3)
            .expect("read again");
        assert_eq!(lines(&got), b"two\nthree-is\nfour\n");
        let Some(chunk::Body::Lines(l)) = &got[0].1.body else {
            panic!("lines")
        };
        assert_eq!((l.file_offset, l.truncated.as_slice()), (4, &[1][..]));
        assert_eq!(got.iter().map(|(n, _)| n).sum::<u32>(), 3);
    }

    #[test]
    fn lines_read_again_are_redacted_as_the_source_redacts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.log");
        std::fs::write(&path, b"one\nto a@b.io\nend\n").expect("write");
        let r = FileRefill::new(&[SourceConfig {
            name: "app".into(),
            redact: vec!["email".into()],
            ..SourceConfig::default()
        }]);
        let got = r
            .refill(
                (&chunk_of(&path, b"one\n", 0), 1),
                &chunk_of(&path, b"end\n", 14),
                1,
            )
            .expect("read again");
        assert_eq!(lines(&got), b"to [REDACTED:email]\n");
    }

    #[test]
    fn a_rotated_file_is_found_by_its_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.log");
        std::fs::write(dir.path().join("app.log.1"), b"a\nb\nc\n").expect("write");
        std::fs::write(&path, b"new\n").expect("write");
        let got = refill()
            .refill(
                (&chunk_of(&path, b"a\n", 0), 1),
                &chunk_of(&path, b"c\n", 4),
                1,
            )
            .expect("read again from the rotated file");
        assert_eq!(lines(&got), b"b\n");
    }

    #[test]
    fn a_hole_that_does_not_match_is_left_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.log");
        std::fs::write(&path, b"one\ntwo\nthree\n").expect("write");
        let before = chunk_of(&path, b"one\n", 0);
        let after = chunk_of(&path, b"three\n", 8);
        let r = refill();
        let why = r
            .refill((&before, 1), &after, 2)
            .expect_err("one line, two lost");
        assert!(why.contains("1 lines where 2 were lost"), "{why}");
        let replaced = chunk_of(&path, b"ONE\n", 0);
        let why = r
            .refill((&replaced, 1), &after, 1)
            .expect_err("other bytes");
        assert!(why.contains("no file holds these lines"), "{why}");
        std::fs::remove_file(&path).expect("remove");
        assert!(r.refill((&before, 1), &after, 1).is_err());
    }

    #[test]
    fn a_large_hole_is_queued_in_chunks_of_whole_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.log");
        let line = b"0123456\n";
        let n = 3 * CHUNK_BYTES / line.len();
        let mut data = b"first\n".to_vec();
        for _ in 0..n {
            data.extend_from_slice(line);
        }
        let hole_end = data.len() as u64;
        data.extend_from_slice(b"last\n");
        std::fs::write(&path, &data).expect("write");
        let got = refill()
            .refill(
                (&chunk_of(&path, b"first\n", 0), 1),
                &chunk_of(&path, b"last\n", hole_end),
                n as u64,
            )
            .expect("read again");
        assert!(got.len() >= 3, "{} chunks", got.len());
        let mut offset = 6;
        for (count, c) in &got {
            let Some(chunk::Body::Lines(l)) = &c.body else {
                panic!("lines")
            };
            assert_eq!(l.file_offset, offset);
            assert_eq!(l.data.len(), *count as usize * line.len());
            offset += l.data.len() as u64;
        }
        assert_eq!(offset, hole_end);
    }
}
