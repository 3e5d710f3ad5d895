//! The agent's line framer (`agent/src/tail/framer.rs`): whatever the bytes
//! and however reads split them, the lines are those of the whole stream,
//! each cut to the maximum and marked when longer, and the framer never
//! holds more than the maximum.
//!
//! Input: the maximum line size (1 to 64, first byte), read sizes (second
//! byte: each read takes the next of `1 + byte % 16` sizes cycling through
//! the following bytes), then the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The agent's own source, compiled here: the agent crate links RocksDB's
// C++, which this instrumented build would compile again (10 to 25 min).
#[allow(dead_code)]
#[path = "../../agent/src/tail/framer.rs"]
mod framer;

use framer::{Framer, Lines};

fuzz_target!(|data: &[u8]| {
    let [max, n, rest @ ..] = data else { return };
    let max_line = usize::from(max % 64) + 1;
    let n = usize::from(n % 16) + 1;
    if rest.len() < n {
        return;
    }
    let (sizes, stream) = rest.split_at(n);

    let mut framer = Framer::new(max_line, false);
    let mut got = Lines::default();
    let (mut at, mut i) = (0, 0);
    while at < stream.len() {
        let len = (usize::from(sizes[i % n]) + 1).min(stream.len() - at);
        framer.feed(&stream[at..at + len], &mut got);
        assert!(framer.pending() <= max_line, "holds more than a line");
        at += len;
        i += 1;
    }
    framer.flush(&mut got);

    // The model: split the whole stream on newlines.
    let mut want = Lines::default();
    let mut truncated = Vec::new();
    let mut data = Vec::new();
    let mut count = 0u32;
    let pieces: Vec<&[u8]> = stream.split(|b| *b == b'\n').collect();
    let last = pieces.len() - 1;
    for (k, piece) in pieces.into_iter().enumerate() {
        if k == last && piece.is_empty() {
            break;
        }
        if piece.len() > max_line {
            truncated.push(count);
        }
        data.extend_from_slice(&piece[..piece.len().min(max_line)]);
        data.push(b'\n');
        count += 1;
    }
    want.data = data;
    want.count = count;
    want.truncated = truncated;
    assert_eq!(got, want);
});
