//! On-disk formats of the queue. Golden tests pin every one of them: a queue
//! written by one version of the agent must be read by the next.
//!
//! ```text
//! column family `records`:  key  = first_seq: u64 BE
//!                           value = count: u32 BE, chunk: encoded logferry.v1.Chunk
//! column family `batches`:  key  = first_seq: u64 BE
//!                           value = last_seq: u64 BE, bytes: u64 BE, records: u64 BE
//! column family `dead_letters`: key = first_seq: u64 BE
//!                           value = a `batches` value, refused_unix_ms: u64 BE,
//!                                   reason: UTF-8 (the collector's words)
//! column family `checkpoints`: key and value owned by `tail::checkpoint`
//! column family `default`:  "agent_id" -> UTF-8 uuid, "epoch" -> u32 BE
//! ```
//!
//! Sequence numbers are `epoch << EPOCH_SHIFT | counter`. The epoch grows at
//! every start (a synced write), so numbers are never reused, even when a
//! power failure takes back writes that were not synced.

use logferry_proto::Chunk;
use prost::Message;

use crate::queue::QueueError;

pub const EPOCH_SHIFT: u32 = 40;

pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub fn decode_seq(key: &[u8]) -> Result<u64, QueueError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| QueueError::Corrupt("record key"))?;
    Ok(u64::from_be_bytes(bytes))
}

/// A chunk's record count, then the chunk encoded: one buffer, sized once.
pub fn record_value(count: u32, chunk: &Chunk) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + chunk.encoded_len());
    v.extend_from_slice(&count.to_be_bytes());
    chunk.encode_raw(&mut v);
    v
}

/// Splits a record value into its count and the encoded chunk.
pub fn split_record_value(value: &[u8]) -> Result<(u32, &[u8]), QueueError> {
    if value.len() < 4 {
        return Err(QueueError::Corrupt("record value"));
    }
    let (count, chunk) = value.split_at(4);
    let count = u32::from_be_bytes(count.try_into().expect("split at 4"));
    Ok((count, chunk))
}

/// What a batch covers, persisted before its first send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manifest {
    pub first_seq: u64,
    pub last_seq: u64,
    pub bytes: u64,
    pub records: u64,
}

impl Manifest {
    pub fn encode_value(&self) -> [u8; 24] {
        let mut v = [0u8; 24];
        v[..8].copy_from_slice(&self.last_seq.to_be_bytes());
        v[8..16].copy_from_slice(&self.bytes.to_be_bytes());
        v[16..].copy_from_slice(&self.records.to_be_bytes());
        v
    }

    pub fn decode(key: &[u8], value: &[u8]) -> Result<Manifest, QueueError> {
        let v: &[u8; 24] = value
            .try_into()
            .map_err(|_| QueueError::Corrupt("batch manifest"))?;
        let word = |i: usize| u64::from_be_bytes(v[i..i + 8].try_into().expect("8 bytes"));
        Ok(Manifest {
            first_seq: decode_seq(key)?,
            last_seq: word(0),
            bytes: word(8),
            records: word(16),
        })
    }
}

/// A batch every collector refused for good, set aside with its records
/// (which stay in `records`) until it is replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub manifest: Manifest,
    pub refused_unix_ms: u64,
    pub reason: String,
}

impl DeadLetter {
    pub fn encode_value(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(32 + self.reason.len());
        v.extend_from_slice(&self.manifest.encode_value());
        v.extend_from_slice(&self.refused_unix_ms.to_be_bytes());
        v.extend_from_slice(self.reason.as_bytes());
        v
    }

    pub fn decode(key: &[u8], value: &[u8]) -> Result<DeadLetter, QueueError> {
        if value.len() < 32 {
            return Err(QueueError::Corrupt("dead letter"));
        }
        let (manifest, rest) = value.split_at(24);
        let (at, reason) = rest.split_at(8);
        Ok(DeadLetter {
            manifest: Manifest::decode(key, manifest)?,
            refused_unix_ms: u64::from_be_bytes(at.try_into().expect("8 bytes")),
            reason: String::from_utf8_lossy(reason).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_format_is_stable() {
        assert_eq!(seq_key((3 << EPOCH_SHIFT) | 5), [0, 0, 3, 0, 0, 0, 0, 5]);
        let chunk = Chunk {
            first_seq: 7,
            ..Chunk::default()
        };
        let v = record_value(2, &chunk);
        // The count, then the chunk (field 1, varint 7).
        assert_eq!(v, [0, 0, 0, 2, 0x08, 7]);
        assert_eq!(split_record_value(&v).expect("valid"), (2, &[0x08, 7][..]));
        assert!(split_record_value(&[1, 2]).is_err());
    }

    #[test]
    fn manifest_format_is_stable() {
        let m = Manifest {
            first_seq: 1,
            last_seq: 2,
            bytes: 3,
            records: 2,
        };
        let v = m.encode_value();
        assert_eq!(
            v,
            [0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 2]
        );
        assert_eq!(Manifest::decode(&seq_key(1), &v).expect("valid"), m);
    }

    #[test]
    fn dead_letter_format_is_stable() {
        let d = DeadLetter {
            manifest: Manifest {
                first_seq: 1,
                last_seq: 2,
                bytes: 3,
                records: 2,
            },
            refused_unix_ms: 4,
            reason: "r".into(),
        };
        let v = d.encode_value();
        let mut expected = d.manifest.encode_value().to_vec();
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 4, b'r']);
        assert_eq!(v, expected);
        assert_eq!(DeadLetter::decode(&seq_key(1), &v).expect("valid"), d);
        assert!(DeadLetter::decode(&seq_key(1), &v[..31]).is_err());
    }
}
