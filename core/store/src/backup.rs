//! Backups of the cluster state (`berth snapshot save`) and starting a new
//! cluster from one (`berth server --restore`).
//!
//! A backup file is the magic `BERTHBAK`, one line of JSON ([`Header`]:
//! the format, the Berth version that wrote it, the log index it holds,
//! when, and a SHA-256 of the state), then the state as the raft
//! snapshots keep it. A file of a format newer than this build reads is
//! refused before anything is stored, naming both formats, as a torn or
//! altered file is by its checksum.

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::state::ClusterState;

/// The backup format this build writes and the newest it reads.
pub const FORMAT: u32 = 1;

/// The largest backup read (the state of a very large cluster fits).
pub const MAX_BACKUP: u64 = 4 << 30;

const MAGIC: &[u8; 8] = b"BERTHBAK";

/// What a backup says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The file format ([`FORMAT`] when written by this build).
    pub format: u32,
    /// The Berth version that wrote it.
    pub berth: String,
    /// The log index of the state it holds.
    pub index: u64,
    /// When it was taken (ms since the Unix epoch).
    pub created_ms: u64,
    /// SHA-256 of the state bytes, hex.
    pub sha256: String,
}

/// Why a backup cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackupError {
    /// Not a Berth backup at all.
    #[error("not a Berth snapshot (it does not start with BERTHBAK)")]
    NotABackup,
    /// Written by a newer Berth.
    #[error(
        "snapshot format {found} was written by Berth {by}, newer than this one (which reads format {FORMAT} and older): restore it with that version or later"
    )]
    Newer {
        /// The file's format.
        found: u32,
        /// Who wrote it.
        by: String,
    },
    /// Damaged or altered.
    #[error("snapshot is damaged: {0}")]
    Damaged(String),
}

/// Writes `state` (at log index `index`) as a backup.
pub fn encode(state: &ClusterState, index: u64, created_ms: u64) -> Result<Vec<u8>, String> {
    let data = serde_json::to_vec(state).map_err(|e| e.to_string())?;
    let header = Header {
        format: FORMAT,
        berth: env!("CARGO_PKG_VERSION").to_string(),
        index,
        created_ms,
        sha256: hex::encode(sha2::Sha256::digest(&data)),
    };
    let mut out = Vec::with_capacity(data.len() + 256);
    out.extend_from_slice(MAGIC);
    serde_json::to_writer(&mut out, &header).map_err(|e| e.to_string())?;
    out.push(b'\n');
    out.extend_from_slice(&data);
    Ok(out)
}

/// Reads a backup's header (and checks it is one this build reads).
pub fn header(bytes: &[u8]) -> Result<(Header, &[u8]), BackupError> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(BackupError::NotABackup)?;
    let nl = rest
        .iter()
        .take(64 * 1024)
        .position(|b| *b == b'\n')
        .ok_or_else(|| BackupError::Damaged("no header line".into()))?;
    // The format first, alone: a newer header may have other fields.
    #[derive(Deserialize)]
    struct Format {
        format: u32,
        #[serde(default)]
        berth: String,
    }
    let f: Format = serde_json::from_slice(&rest[..nl])
        .map_err(|e| BackupError::Damaged(format!("header: {e}")))?;
    if f.format > FORMAT {
        return Err(BackupError::Newer {
            found: f.format,
            by: f.berth,
        });
    }
    let h: Header = serde_json::from_slice(&rest[..nl])
        .map_err(|e| BackupError::Damaged(format!("header: {e}")))?;
    Ok((h, &rest[nl + 1..]))
}

/// Reads a whole backup: its header and the state, checked.
pub fn decode(bytes: &[u8]) -> Result<(Header, ClusterState), BackupError> {
    let (h, data) = header(bytes)?;
    if hex::encode(sha2::Sha256::digest(data)) != h.sha256 {
        return Err(BackupError::Damaged(
            "the state does not match its checksum (truncated or altered)".into(),
        ));
    }
    let mut state: ClusterState =
        serde_json::from_slice(data).map_err(|e| BackupError::Damaged(format!("state: {e}")))?;
    state.rebuild_indexes();
    Ok((h, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_round_trips_and_refuses_what_it_cannot_read() {
        let mut s = ClusterState::default();
        s.members.insert(7, "10.0.0.1:7000".into());
        let b = encode(&s, 42, 1000).unwrap();
        let (h, back) = decode(&b).unwrap();
        assert_eq!((h.format, h.index), (FORMAT, 42));
        assert_eq!(back.members, s.members);

        assert_eq!(decode(b"hello").unwrap_err(), BackupError::NotABackup);
        let mut cut = b.clone();
        cut.truncate(b.len() - 2);
        assert!(matches!(decode(&cut), Err(BackupError::Damaged(_))));
        let newer =
            String::from_utf8(b.clone())
                .unwrap()
                .replacen("\"format\":1", "\"format\":9", 1);
        let e = decode(newer.as_bytes()).unwrap_err();
        assert!(matches!(e, BackupError::Newer { found: 9, .. }), "{e}");
        assert!(e.to_string().contains("format 9"), "{e}");
    }
}
