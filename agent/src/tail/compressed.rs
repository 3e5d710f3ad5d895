//! Files rotated and compressed while the agent was stopped (logrotate's
//! `compress` without `delaycompress`): the checkpointed file is gone and
//! its unread tail is in a gzip copy in its directory.
//!
//! The copy is the `.gz` file whose decompressed head matches the
//! checkpoint's fingerprint. It is unpacked into an unlinked spool file
//! under the data directory, at the same offsets as the original: the head
//! (what the tailer fingerprints), then a hole up to the checkpoint, then
//! the unread bytes. That file then stands in for the original from its
//! checkpoint; a crash meanwhile leaves nothing behind, and the next start
//! does this again from the checkpoint it reached.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::checkpoint::{fingerprint, Checkpoint};

/// A compressed copy, unpacked.
pub struct Unpacked {
    /// The spool file (unlinked): reads at the original's offsets.
    pub file: File,
    /// The compressed copy it came from.
    pub from: PathBuf,
    /// The original's length.
    pub len: u64,
}

/// Finds the compressed copy of the file `ckpt` describes and unpacks it
/// into `spool_dir`, `head_len` bytes of head kept. `Ok(None)`: no copy (or
/// no fingerprint to know it by). `room` is asked before each MiB written;
/// `false` gives up, as does any failure to read or write.
pub fn unpack(
    ckpt: &Checkpoint,
    head_len: u64,
    spool_dir: &Path,
    room: impl Fn() -> bool,
) -> Result<Option<Unpacked>, String> {
    if ckpt.fp_len == 0 {
        return Ok(None);
    }
    let Some(from) = find(ckpt) else {
        return Ok(None);
    };
    let at = |e: std::io::Error| format!("{}: {e}", from.display());
    std::fs::create_dir_all(spool_dir).map_err(|e| format!("{}: {e}", spool_dir.display()))?;
    let spool_path = spool_dir.join("unpacking");
    let mut spool = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&spool_path)
        .map_err(|e| format!("{}: {e}", spool_path.display()))?;
    // Unlinked at once: the open file is all that is needed.
    std::fs::remove_file(&spool_path).map_err(|e| format!("{}: {e}", spool_path.display()))?;
    let mut gz = MultiGzDecoder::new(File::open(&from).map_err(at)?);
    let keep_head = head_len.max(u64::from(ckpt.fp_len)).min(ckpt.offset);
    let mut len = std::io::copy(&mut (&mut gz).take(keep_head), &mut spool).map_err(at)?;
    // Skipped up to the checkpoint: those bytes were read before the stop.
    len += std::io::copy(
        &mut (&mut gz).take(ckpt.offset - keep_head),
        &mut std::io::sink(),
    )
    .map_err(at)?;
    spool.seek(SeekFrom::Start(len)).map_err(at)?;
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = read_some(&mut gz, &mut buf).map_err(at)?;
        if n == 0 {
            break;
        }
        if !room() {
            return Err(format!(
                "{}: no room to unpack it under the data directory",
                from.display()
            ));
        }
        spool.write_all(&buf[..n]).map_err(at)?;
        len += n as u64;
    }
    spool.set_len(len).map_err(at)?;
    Ok(Some(Unpacked {
        file: spool,
        from,
        len,
    }))
}

fn read_some(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// The most recently modified `.gz` file in the checkpointed file's
/// directory whose decompressed head matches its fingerprint.
fn find(ckpt: &Checkpoint) -> Option<PathBuf> {
    let dir = ckpt.path.parent()?;
    let mut candidates: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "gz"))
        .filter_map(|p| {
            let meta = std::fs::metadata(&p).ok().filter(|m| m.is_file())?;
            Some((meta.modified().ok()?, p))
        })
        .collect();
    candidates.sort_by_key(|(mtime, _)| std::cmp::Reverse(*mtime));
    candidates.into_iter().map(|(_, p)| p).find(|p| {
        let mut head = vec![0; ckpt.fp_len as usize];
        File::open(p)
            .map(MultiGzDecoder::new)
            .and_then(|mut gz| gz.read_exact(&mut head))
            .is_ok_and(|()| fingerprint(&head) == ckpt.fp)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn gzip(path: &Path, data: &[u8]) {
        let mut gz =
            flate2::write::GzEncoder::new(File::create(path).expect("create"), Default::default());
        gz.write_all(data).expect("compress");
        gz.finish().expect("finish");
    }

    fn checkpoint(path: &Path, head: &[u8], offset: u64) -> Checkpoint {
        Checkpoint {
            offset,
            fp_len: head.len() as u32,
            fp: fingerprint(head),
            discarding: false,
            path: path.to_path_buf(),
        }
    }

    #[test]
    fn the_copy_whose_head_matches_is_unpacked_at_the_original_offsets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..50_000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        gzip(&dir.path().join("app.log.2.gz"), b"other file\n");
        gzip(&dir.path().join("app.log.1.gz"), &data);
        let ckpt = checkpoint(&dir.path().join("app.log"), &data[..7], 100_000);
        let spool = dir.path().join("spool");
        let u = unpack(&ckpt, 16, &spool, || true)
            .expect("unpacked")
            .expect("found");
        assert_eq!(u.from, dir.path().join("app.log.1.gz"));
        assert_eq!(u.len, data.len() as u64);
        assert_eq!(u.file.metadata().expect("meta").len(), u.len);
        let mut head = [0; 16];
        u.file.read_exact_at(&mut head, 0).expect("head");
        assert_eq!(head, data[..16]);
        let mut rest = vec![0; data.len() - 100_000];
        u.file.read_exact_at(&mut rest, 100_000).expect("rest");
        assert_eq!(rest, data[100_000..]);
        assert_eq!(
            std::fs::read_dir(&spool).expect("spool").count(),
            0,
            "unlinked"
        );
    }

    #[test]
    fn no_copy_or_no_room_is_said() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.log");
        let spool = dir.path().join("spool");
        let ckpt = checkpoint(&path, b"first", 3);
        assert!(unpack(&ckpt, 16, &spool, || true)
            .expect("no error")
            .is_none());
        gzip(
            &dir.path().join("app.log.1.gz"),
            b"first line\nsecond line\n",
        );
        let why = unpack(&ckpt, 16, &spool, || false).err().expect("no room");
        assert!(why.contains("no room"), "{why}");
        let unknown = checkpoint(&path, b"", 0);
        assert!(unpack(&unknown, 16, &spool, || true)
            .expect("no error")
            .is_none());
    }
}
