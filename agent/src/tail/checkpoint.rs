//! Where each file is read up to, and how it is recognised.
//!
//! A file is identified by its (device, inode) and checked by a fingerprint:
//! a hash of its first `min(settled offset, fingerprint_bytes)` bytes. A
//! rename keeps the inode, so the position follows the file; an inode reused
//! by a new file fails the fingerprint and is read from the start; two files
//! with the same first bytes have different inodes, so both are followed; a
//! file shorter than the fingerprint length is fingerprinted over what it has.
//!
//! ```text
//! key:   dev: u64 BE, ino: u64 BE
//! value: version: u8 = 1, offset: u64 BE, fp_len: u32 BE, fp: u64 BE,
//!        discarding: u8, path: UTF-8 bytes (lossy)
//! ```
//! A second kind of key, `source/<name>`, marks a source as seen before, so
//! `start_at = "end"` only applies the first time.

use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn key(&self) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&self.dev.to_be_bytes());
        k[8..].copy_from_slice(&self.ino.to_be_bytes());
        k
    }

    pub fn from_key(key: &[u8]) -> Option<FileId> {
        let key: &[u8; 16] = key.try_into().ok()?;
        Some(FileId {
            dev: u64::from_be_bytes(key[..8].try_into().ok()?),
            ino: u64::from_be_bytes(key[8..].try_into().ok()?),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub offset: u64,
    pub fp_len: u32,
    pub fp: u64,
    pub discarding: bool,
    pub path: PathBuf,
}

pub fn source_key(name: &str) -> Vec<u8> {
    format!("source/{name}").into_bytes()
}

pub fn fingerprint(head: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(head)
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let path = self.path.to_string_lossy();
        let mut v = Vec::with_capacity(22 + path.len());
        v.push(1);
        v.extend_from_slice(&self.offset.to_be_bytes());
        v.extend_from_slice(&self.fp_len.to_be_bytes());
        v.extend_from_slice(&self.fp.to_be_bytes());
        v.push(u8::from(self.discarding));
        v.extend_from_slice(path.as_bytes());
        v
    }

    pub fn decode(v: &[u8]) -> Option<Checkpoint> {
        if v.len() < 22 || v[0] != 1 {
            return None;
        }
        Some(Checkpoint {
            offset: u64::from_be_bytes(v[1..9].try_into().ok()?),
            fp_len: u32::from_be_bytes(v[9..13].try_into().ok()?),
            fp: u64::from_be_bytes(v[13..21].try_into().ok()?),
            discarding: v[21] != 0,
            path: PathBuf::from(String::from_utf8_lossy(&v[22..]).into_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_format_is_stable() {
        let c = Checkpoint {
            offset: 258,
            fp_len: 3,
            fp: fingerprint(b"abc"),
            discarding: true,
            path: "/l".into(),
        };
        let v = c.encode();
        assert_eq!(&v[..13], &[1, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 3]);
        assert_eq!(&v[21..], &[1, b'/', b'l']);
        assert_eq!(c.fp, 0x78af_5f94_892f_3950, "xxh3 is part of the format");
        assert_eq!(Checkpoint::decode(&v), Some(c));
        let id = FileId { dev: 1, ino: 2 };
        assert_eq!(FileId::from_key(&id.key()), Some(id));
    }
}
