//! The latest snapshot as a file of its own beside the raft database
//! (`raft.snap` next to `raft.redb`), as etcd keeps `.snap` files beside
//! its WAL. In the database a multi-megabyte value costs a copy-on-write
//! allocation rounded up to a power of two, and the old one stays
//! allocated until its transaction is gone: the file grew to six times
//! the state. A file replaced by rename costs one copy of the state.
//!
//! Layout: the magic `BERTHSN1`, the metadata's length (u32, little
//! endian), the `SnapshotMetadata` protobuf, then the state-machine bytes
//! to the end. Written to `raft.snap.tmp`, synced, renamed over the old
//! one and the directory synced: a crash leaves the old file or the new,
//! never a torn one.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::SnapshotMetadata;

use crate::StoreError;

const MAGIC: &[u8; 8] = b"BERTHSN1";

/// Where the snapshot of the database at `db` lives.
pub fn path_for(db: &Path) -> PathBuf {
    db.with_extension("snap")
}

/// Where a snapshot at `index` is written before it replaces `path`.
pub fn tmp_path(path: &Path, index: u64) -> PathBuf {
    path.with_extension(format!("snap.{index}.tmp"))
}

/// Writes a snapshot durably, replacing the previous one.
pub fn write(path: &Path, meta: &SnapshotMetadata, data: &[u8]) -> Result<(), StoreError> {
    let tmp = tmp_path(path, meta.index);
    write_tmp(&tmp, meta, data)?;
    install(&tmp, path)
}

/// Writes and syncs a snapshot file at `tmp` (any thread may).
pub fn write_tmp(tmp: &Path, meta: &SnapshotMetadata, data: &[u8]) -> Result<(), StoreError> {
    let meta = meta
        .write_to_bytes()
        .map_err(|e| StoreError::Corrupt(format!("snapshot metadata: {e}")))?;
    let len = u32::try_from(meta.len())
        .map_err(|_| StoreError::Corrupt("snapshot metadata over 4 GiB".into()))?;
    let io = |e: std::io::Error| StoreError::Io(format!("{}: {e}", tmp.display()));
    let mut f = File::create(tmp).map_err(io)?;
    f.write_all(MAGIC).map_err(io)?;
    f.write_all(&len.to_le_bytes()).map_err(io)?;
    f.write_all(&meta).map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Moves a file written by [`write_tmp`] into place, durably.
pub fn install(tmp: &Path, path: &Path) -> Result<(), StoreError> {
    let io = |e: std::io::Error| StoreError::Io(format!("{}: {e}", path.display()));
    std::fs::rename(tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

/// Removes files a crash left half-written (`raft.snap.N.tmp`).
pub fn remove_leftovers(path: &Path) {
    let (Some(dir), Some(stem)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!("{}.", stem.to_string_lossy());
    let Ok(list) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in list.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Reads the snapshot at `path`; `None` when there is none.
pub fn read(path: &Path) -> Result<Option<(SnapshotMetadata, Vec<u8>)>, StoreError> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::Io(format!("{}: {e}", path.display()))),
    };
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)
        .map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))?;
    let bad = |why: &str| StoreError::Corrupt(format!("{}: {why}", path.display()));
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| bad("not a Berth snapshot (bad magic)"))?;
    let (len, rest) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| bad("truncated header"))?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len {
        return Err(bad("truncated metadata"));
    }
    let meta = SnapshotMetadata::parse_from_bytes(&rest[..len])
        .map_err(|e| bad(&format!("metadata: {e}")))?;
    let data = rest[len..].to_vec();
    Ok(Some((meta, data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("raft.redb"));
        assert!(read(&path).unwrap().is_none());
        let mut meta = SnapshotMetadata {
            index: 7,
            term: 2,
            ..Default::default()
        };
        write(&path, &meta, b"state one").unwrap();
        meta.index = 9;
        write(&path, &meta, b"two").unwrap();
        let (m, d) = read(&path).unwrap().unwrap();
        assert_eq!((m.index, m.term, d.as_slice()), (9, 2, &b"two"[..]));
        let left = tmp_path(&path, 11);
        std::fs::write(&left, b"half").unwrap();
        remove_leftovers(&path);
        assert!(!left.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.snap");
        std::fs::write(&path, b"garbage").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("bad magic"), "{e}");
        std::fs::write(&path, b"BERTHSN1\xff\x00\x00\x00ab").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("truncated metadata"), "{e}");
    }
}
