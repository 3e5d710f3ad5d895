//! Splits a byte stream into lines with a maximum line size.
//!
//! A line longer than the maximum is emitted cut to the maximum and marked,
//! and the rest of it, up to its newline, is skipped ("discarding"). Nothing
//! ever waits for a line that cannot fit, so a huge line neither stalls the
//! file nor grows memory past the maximum.
//!
//! The framer tracks how many fed bytes are settled: emitted as lines or
//! skipped. Bytes of an incomplete line are not settled; the checkpoint
//! stores the settled position, so a restart reads that line again whole.

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Lines {
    /// Each line followed by one '\n'.
    pub data: Vec<u8>,
    pub count: u32,
    /// Indexes of lines that were cut.
    pub truncated: Vec<u32>,
}

impl Lines {
    fn push(&mut self, line: &[u8], truncated: bool) {
        if truncated {
            self.truncated.push(self.count);
        }
        self.data.extend_from_slice(line);
        self.data.push(b'\n');
        self.count += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[derive(Debug, Clone)]
pub struct Framer {
    max_line: usize,
    partial: Vec<u8>,
    /// Skipping the rest of a line that was already emitted cut.
    pub discarding: bool,
}

impl Framer {
    pub fn new(max_line: usize, discarding: bool) -> Framer {
        Framer {
            max_line,
            partial: Vec::new(),
            discarding,
        }
    }

    /// Bytes held for an incomplete line.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Lines) {
        while !bytes.is_empty() {
            match memchr(bytes) {
                Some(i) => {
                    let segment = &bytes[..i];
                    bytes = &bytes[i + 1..];
                    if self.discarding {
                        self.discarding = false;
                    } else if self.partial.is_empty() {
                        self.emit(segment, out);
                    } else {
                        let mut line = std::mem::take(&mut self.partial);
                        line.extend_from_slice(segment);
                        self.emit(&line, out);
                    }
                }
                None => {
                    if !self.discarding {
                        self.partial.extend_from_slice(bytes);
                        if self.partial.len() > self.max_line {
                            out.push(&self.partial[..self.max_line], true);
                            self.partial.clear();
                            self.discarding = true;
                        }
                    }
                    return;
                }
            }
        }
    }

    /// Emits an incomplete final line as it is (its writer went idle, or the
    /// file is finished).
    pub fn flush(&mut self, out: &mut Lines) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            out.push(&line, false);
        }
    }

    /// Forgets everything held, for a truncated file read again from 0.
    pub fn reset(&mut self) {
        self.partial.clear();
        self.discarding = false;
    }

    fn emit(&self, line: &[u8], out: &mut Lines) {
        if line.len() > self.max_line {
            out.push(&line[..self.max_line], true);
        } else {
            out.push(line, false);
        }
    }
}

fn memchr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|b| *b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(max: usize, pieces: &[&[u8]]) -> (Lines, Framer) {
        let mut f = Framer::new(max, false);
        let mut out = Lines::default();
        for p in pieces {
            f.feed(p, &mut out);
        }
        (out, f)
    }

    #[test]
    fn splits_lines_across_reads() {
        let (out, f) = frame(100, &[b"ab", b"c\nde\n", b"f"]);
        assert_eq!(out.data, b"abc\nde\n");
        assert_eq!(out.count, 2);
        assert_eq!(f.pending(), 1);
    }

    #[test]
    fn long_line_is_cut_and_its_rest_skipped() {
        let (out, f) = frame(4, &[b"12345", b"678\nok\n"]);
        assert_eq!(out.data, b"1234\nok\n");
        assert_eq!(out.truncated, vec![0]);
        assert!(!f.discarding);
        let (out, _) = frame(4, &[b"123456\nok\n"]);
        assert_eq!(out.data, b"1234\nok\n");
    }

    #[test]
    fn flush_emits_a_final_line_without_newline() {
        let (mut out, mut f) = frame(10, &[b"a\nbc"]);
        f.flush(&mut out);
        assert_eq!(out.data, b"a\nbc\n");
        assert_eq!(f.pending(), 0);
    }

    proptest! {
        /// However the input is split into reads, the framer yields the same
        /// lines: each complete line, cut to the maximum when longer.
        #[test]
        fn framing_is_independent_of_read_boundaries(
            text in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'x'), any::<u8>()], 0..400),
            cuts in proptest::collection::vec(0usize..400, 0..10),
            max in 1usize..40,
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|c| *c <= text.len()).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for c in cuts {
                pieces.push(&text[last..c]);
                last = c;
            }
            pieces.push(&text[last..]);
            let (out, _) = frame(max, &pieces);
            let mut expected = Vec::new();
            let complete = text.iter().rposition(|b| *b == b'\n').map_or(&text[..0], |i| &text[..i + 1]);
            for line in complete.split(|b| *b == b'\n').take(complete.iter().filter(|b| **b == b'\n').count()) {
                expected.extend_from_slice(&line[..line.len().min(max)]);
                expected.push(b'\n');
            }
            // An unfinished line already longer than the maximum is emitted cut.
            let rest = &text[complete.len()..];
            if rest.len() > max {
                expected.extend_from_slice(&rest[..max]);
                expected.push(b'\n');
            }
            prop_assert_eq!(out.data, expected);
        }
    }
}
