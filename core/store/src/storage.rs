//! The durable raft log: entries, hard state and conf state kept in
//! `redb`, the latest snapshot in a file beside it ([`crate::snapfile`]),
//! all mirrored in memory for raft's reads.
//!
//! Writes go to disk first (one transaction per `Ready`), then to the
//! in-memory mirror, so what raft sees is always what is on disk.
//!
//! A snapshot is installed in two steps: its file is renamed into place,
//! then one transaction records its metadata and drops the log it covers.
//! A crash between the two leaves a file ahead of the database; opening
//! finishes the install (see [`RedbStorage::open`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::StoreError;
use crate::snapfile;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
/// Where data directories from before the snapshot file kept the
/// snapshot's bytes; moved to the file when opened.
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");

const HARD_STATE: &str = "hard_state";
const CONF_STATE: &str = "conf_state";
const SNAP_META: &str = "snapshot_meta";
const SNAP_DATA: &str = "snapshot_data";

/// Raft storage over redb.
pub struct RedbStorage {
    db: Database,
    snap_path: PathBuf,
    entries: Vec<Entry>,
    /// Bytes of command data in `entries`.
    log_bytes: u64,
    hard_state: HardState,
    conf_state: ConfState,
    snap_meta: SnapshotMetadata,
    snap_data: Vec<u8>,
    snapshot_wanted: AtomicBool,
    commit_dirty: bool,
}

fn data_bytes(entries: &[Entry]) -> u64 {
    entries.iter().map(|e| e.data.len() as u64).sum()
}

fn decode<M: protobuf::Message>(bytes: &[u8], what: &str) -> Result<M, StoreError> {
    M::parse_from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn encode<M: protobuf::Message>(m: &M) -> Vec<u8> {
    // Encoding an in-memory protobuf message only fails on invalid UTF-8
    // strings, which raft's messages do not contain.
    m.write_to_bytes().unwrap_or_default()
}

impl RedbStorage {
    /// Opens (or creates) the raft database at `path` and loads it.
    /// Detects gaps and term regressions in the stored log.
    pub fn open(path: &Path) -> Result<RedbStorage, StoreError> {
        let db = Database::create(path)?;
        let snap_path = snapfile::path_for(path);
        let (hard_state, conf_state, db_meta, legacy) = {
            let tx = db.begin_write()?;
            tx.open_table(LOG)?;
            tx.open_table(SNAPSHOT)?;
            let meta = tx.open_table(META)?;
            let get = |key: &str| -> Result<Option<Vec<u8>>, StoreError> {
                Ok(meta.get(key)?.map(|v| v.value().to_vec()))
            };
            let hard_state: HardState = match get(HARD_STATE)? {
                Some(b) => decode(&b, "hard state")?,
                None => HardState::default(),
            };
            let conf_state: ConfState = match get(CONF_STATE)? {
                Some(b) => decode(&b, "conf state")?,
                None => ConfState::default(),
            };
            let db_meta: SnapshotMetadata = match get(SNAP_META)? {
                Some(b) => decode(&b, "snapshot metadata")?,
                None => SnapshotMetadata::default(),
            };
            // The bytes of the oldest layouts: in META, then their own table.
            let mut legacy = get(SNAP_DATA)?;
            if legacy.is_none() {
                legacy = tx
                    .open_table(SNAPSHOT)?
                    .get(SNAP_DATA)?
                    .map(|v| v.value().to_vec());
            }
            drop(meta);
            tx.commit()?;
            (hard_state, conf_state, db_meta, legacy)
        };
        snapfile::remove_leftovers(&snap_path);
        let (snap_meta, snap_data) = match (snapfile::read(&snap_path)?, legacy) {
            (Some((m, d)), _) if m.index >= db_meta.index => (m, d),
            (Some((m, _)), _) => {
                return Err(StoreError::Corrupt(format!(
                    "{}: snapshot at index {} is older than the one the log records ({})",
                    snap_path.display(),
                    m.index,
                    db_meta.index
                )));
            }
            (None, Some(bytes)) => {
                snapfile::write(&snap_path, &db_meta, &bytes)?;
                (db_meta.clone(), bytes)
            }
            (None, None) if db_meta.index == 0 => (db_meta.clone(), Vec::new()),
            (None, None) => {
                return Err(StoreError::Corrupt(format!(
                    "{} is missing: the log records a snapshot at index {}",
                    snap_path.display(),
                    db_meta.index
                )));
            }
        };
        // A file ahead of the database: a crash between the two steps of
        // an install. The log past it is kept while it follows on; an
        // entry that does not (a stale suffix of a log the leader's
        // snapshot replaced) ends it.
        let ahead = snap_meta.index > db_meta.index;
        let tx = db.begin_read()?;
        let log = tx.open_table(LOG)?;
        let mut entries = Vec::new();
        let mut last_term = snap_meta.term;
        for (expect, row) in (snap_meta.index + 1..).zip(log.range(snap_meta.index + 1..)?) {
            let (k, v) = row?;
            let e: Entry = decode(v.value(), "log entry")?;
            if k.value() != expect || e.index != expect || e.term < last_term {
                if ahead {
                    break;
                }
                return Err(StoreError::Corrupt(format!(
                    "raft log is damaged at index {} (expected index {expect}, term >= {last_term}; found index {} term {})",
                    k.value(),
                    e.index,
                    e.term
                )));
            }
            last_term = e.term;
            entries.push(e);
        }
        drop(log);
        drop(tx);
        let log_bytes = data_bytes(&entries);
        let mut s = RedbStorage {
            db,
            snap_path,
            entries,
            log_bytes,
            hard_state,
            conf_state,
            snap_meta,
            snap_data,
            snapshot_wanted: AtomicBool::new(false),
            commit_dirty: false,
        };
        if ahead {
            s.finish_install()?;
        } else if s.db_has_legacy_bytes()? {
            s.drop_legacy_bytes()?;
        }
        let last = s.last_index_inner();
        if s.hard_state.commit > last {
            return Err(StoreError::Corrupt(format!(
                "the log ends at index {last} but index {} was committed: its tail is missing",
                s.hard_state.commit
            )));
        }
        Ok(s)
    }

    /// Records the snapshot file's metadata in the database and drops the
    /// log it covers and anything past the entries kept in memory.
    fn finish_install(&mut self) -> Result<(), StoreError> {
        let meta = self.snap_meta.clone();
        self.conf_state = meta.get_conf_state().clone();
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        let keep_to = self.last_index_inner();
        let tx = self.db.begin_write()?;
        {
            let mut log = tx.open_table(LOG)?;
            log.retain(|k, _| k > meta.index && k <= keep_to)?;
            let mut m = tx.open_table(META)?;
            m.insert(SNAP_META, encode(&meta).as_slice())?;
            m.insert(CONF_STATE, encode(&self.conf_state).as_slice())?;
            m.insert(HARD_STATE, encode(&self.hard_state).as_slice())?;
            m.remove(SNAP_DATA)?;
            tx.open_table(SNAPSHOT)?.remove(SNAP_DATA)?;
        }
        tx.commit()?;
        self.commit_dirty = false;
        Ok(())
    }

    fn db_has_legacy_bytes(&self) -> Result<bool, StoreError> {
        let tx = self.db.begin_read()?;
        let in_meta = tx.open_table(META)?.get(SNAP_DATA)?.is_some();
        Ok(in_meta || tx.open_table(SNAPSHOT)?.get(SNAP_DATA)?.is_some())
    }

    /// Once the file holds them, the old layouts' bytes go.
    fn drop_legacy_bytes(&mut self) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(META)?.remove(SNAP_DATA)?;
        tx.open_table(SNAPSHOT)?.remove(SNAP_DATA)?;
        tx.commit()?;
        Ok(())
    }

    /// True once a configuration has been stored (bootstrapped or joined).
    pub fn is_initialized(&self) -> bool {
        !self.conf_state.voters.is_empty() || self.snap_meta.index > 0
    }

    /// Stores the first configuration of a brand-new cluster, as an empty
    /// snapshot at index 1 (term 1): the log then starts at 2, so a server
    /// that joins later always starts from a snapshot, which carries the
    /// membership, instead of replaying a log that does not.
    pub fn bootstrap(&mut self, voters: Vec<u64>) -> Result<(), StoreError> {
        self.bootstrap_at(voters, 1, Vec::new())
    }

    /// [`RedbStorage::bootstrap`] with a state: a snapshot of `data` at
    /// `index` (term 1), for a cluster restored from a backup.
    pub fn bootstrap_at(
        &mut self,
        voters: Vec<u64>,
        index: u64,
        data: Vec<u8>,
    ) -> Result<(), StoreError> {
        let cs = ConfState {
            voters,
            ..Default::default()
        };
        let snap = Snapshot {
            metadata: protobuf::SingularPtrField::some(SnapshotMetadata {
                index,
                term: 1,
                conf_state: protobuf::SingularPtrField::some(cs),
                ..Default::default()
            }),
            data: data.into(),
            ..Default::default()
        };
        self.apply_snapshot(&snap)
    }

    /// Persists a new conf state.
    pub fn set_conf_state(&mut self, cs: ConfState) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(META)?
            .insert(CONF_STATE, encode(&cs).as_slice())?;
        tx.commit()?;
        self.conf_state = cs;
        Ok(())
    }

    /// Persists new entries (replacing any conflicting suffix) and, if given,
    /// the hard state, in one durable transaction.
    pub fn persist(&mut self, ents: &[Entry], hs: Option<&HardState>) -> Result<(), StoreError> {
        if ents.is_empty() && hs.is_none() {
            return Ok(());
        }
        let hs = match hs {
            Some(h) => {
                let mut h = h.clone();
                h.commit = h.commit.max(self.hard_state.commit);
                Some(h)
            }
            None if self.commit_dirty => Some(self.hard_state.clone()),
            None => None,
        };
        let tx = self.db.begin_write()?;
        {
            let mut log = tx.open_table(LOG)?;
            if let Some(first) = ents.first() {
                let last = self.last_index_inner();
                if first.index <= last {
                    for idx in first.index..=last {
                        log.remove(idx)?;
                    }
                }
                for e in ents {
                    log.insert(e.index, encode(e).as_slice())?;
                }
            }
            if let Some(hs) = &hs {
                tx.open_table(META)?
                    .insert(HARD_STATE, encode(hs).as_slice())?;
            }
        }
        tx.commit()?;
        if let Some(first) = ents.first() {
            let keep = first.index.saturating_sub(self.snap_meta.index + 1) as usize;
            if keep < self.entries.len() {
                self.log_bytes -= data_bytes(&self.entries[keep..]);
                self.entries.truncate(keep);
            }
            self.entries.extend_from_slice(ents);
            self.log_bytes += data_bytes(ents);
        }
        if let Some(hs) = hs {
            self.hard_state = hs;
            self.commit_dirty = false;
        }
        Ok(())
    }

    /// Records a new commit index. It reaches disk with the next write
    /// (entries, hard state or snapshot): a commit index that is lost in a
    /// crash is learned again from the log, and a snapshot always flushes it.
    pub fn set_commit(&mut self, commit: u64) {
        if commit > self.hard_state.commit {
            self.hard_state.commit = commit;
            self.commit_dirty = true;
        }
    }

    /// Replaces the log with a snapshot received from the leader.
    pub fn apply_snapshot(&mut self, snap: &Snapshot) -> Result<(), StoreError> {
        let meta = snap.get_metadata();
        snapfile::write(&self.snap_path, meta, snap.get_data())?;
        let tx = self.db.begin_write()?;
        {
            let mut log = tx.open_table(LOG)?;
            log.retain(|_, _| false)?;
            let mut m = tx.open_table(META)?;
            m.insert(SNAP_META, encode(meta).as_slice())?;
            m.insert(CONF_STATE, encode(meta.get_conf_state()).as_slice())?;
            let mut hs = self.hard_state.clone();
            hs.term = hs.term.max(meta.term);
            hs.commit = meta.index;
            m.insert(HARD_STATE, encode(&hs).as_slice())?;
            self.hard_state = hs;
        }
        tx.commit()?;
        self.commit_dirty = false;
        self.entries.clear();
        self.log_bytes = 0;
        self.snap_meta = meta.clone();
        self.snap_data = snap.get_data().to_vec();
        self.conf_state = meta.get_conf_state().clone();
        Ok(())
    }

    /// Saves a snapshot of the state machine at `index` (already applied)
    /// and drops the log entries it covers. Followers that lag behind it
    /// catch up from the snapshot.
    pub fn create_snapshot(&mut self, index: u64, data: Vec<u8>) -> Result<(), StoreError> {
        let Some(meta) = self.snapshot_meta(index)? else {
            return Ok(());
        };
        snapfile::write(&self.snap_path, &meta, &data)?;
        self.record_snapshot(meta, data)
    }

    /// The metadata of a snapshot of the state at `index` (applied), or
    /// `None` when the stored one is as new.
    pub fn snapshot_meta(&self, index: u64) -> Result<Option<SnapshotMetadata>, StoreError> {
        if index <= self.snap_meta.index {
            return Ok(None);
        }
        let term = raft::Storage::term(self, index).map_err(|e| StoreError::Raft(e.to_string()))?;
        Ok(Some(SnapshotMetadata {
            index,
            term,
            conf_state: protobuf::SingularPtrField::some(self.conf_state.clone()),
            ..Default::default()
        }))
    }

    /// Where a snapshot at `index` is written (on any thread, with
    /// [`snapfile::write_tmp`]) before [`RedbStorage::install_prepared`].
    pub fn prepared_path(&self, index: u64) -> PathBuf {
        snapfile::tmp_path(&self.snap_path, index)
    }

    /// Installs a snapshot file written at [`RedbStorage::prepared_path`]:
    /// a rename and one small transaction on the caller's thread.
    pub fn install_prepared(
        &mut self,
        meta: SnapshotMetadata,
        data: Vec<u8>,
    ) -> Result<(), StoreError> {
        let tmp = self.prepared_path(meta.index);
        if meta.index <= self.snap_meta.index {
            // A snapshot received from the leader meanwhile is newer.
            let _ = std::fs::remove_file(tmp);
            return Ok(());
        }
        snapfile::install(&tmp, &self.snap_path)?;
        self.record_snapshot(meta, data)
    }

    /// Records an installed snapshot file and drops the log it covers, in
    /// one transaction.
    fn record_snapshot(&mut self, meta: SnapshotMetadata, data: Vec<u8>) -> Result<(), StoreError> {
        let index = meta.index;
        self.hard_state.commit = self.hard_state.commit.max(index);
        let tx = self.db.begin_write()?;
        {
            let mut m = tx.open_table(META)?;
            m.insert(SNAP_META, encode(&meta).as_slice())?;
            m.insert(HARD_STATE, encode(&self.hard_state).as_slice())?;
            tx.open_table(LOG)?.retain_in(..=index, |_, _| false)?;
        }
        tx.commit()?;
        self.commit_dirty = false;
        self.entries.retain(|e| e.index > index);
        self.log_bytes = data_bytes(&self.entries);
        self.snap_meta = meta;
        self.snap_data = data;
        self.snapshot_wanted.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Whether raft asked for a snapshot newer than the stored one.
    pub fn snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.load(Ordering::Relaxed)
    }

    /// The stored snapshot's state-machine bytes and index.
    pub fn snapshot_data(&self) -> (&[u8], u64) {
        (&self.snap_data, self.snap_meta.index)
    }

    /// The current hard state.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The current membership.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Bytes of command data in the log after the snapshot.
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    /// Number of log entries held (after the snapshot).
    pub fn log_len(&self) -> usize {
        self.entries.len()
    }

    fn first_index_inner(&self) -> u64 {
        self.snap_meta.index + 1
    }

    fn last_index_inner(&self) -> u64 {
        self.entries
            .last()
            .map(|e| e.index)
            .unwrap_or(self.snap_meta.index)
    }
}

impl raft::Storage for RedbStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index_inner() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index_inner() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let off = self.first_index_inner();
        let mut out = self.entries[(low - off) as usize..(high - off) as usize].to_vec();
        if let Some(max) = max_size.into() {
            let mut size = 0u64;
            let mut n = 0;
            for e in &out {
                size += u64::from(e.compute_size());
                if n > 0 && size > max {
                    break;
                }
                n += 1;
            }
            out.truncate(n);
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.snap_meta.index {
            return Ok(self.snap_meta.term);
        }
        if idx < self.first_index_inner() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index_inner() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.entries[(idx - self.first_index_inner()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first_index_inner())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index_inner())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        // raft refuses a snapshot whose membership lacks the receiver (a
        // server that joined after it was taken): take a newer one.
        let cs = self.snap_meta.get_conf_state();
        let knows_to = cs.voters.contains(&to) || cs.learners.contains(&to);
        if self.snap_meta.index < request_index || self.snap_meta.index == 0 || !knows_to {
            self.snapshot_wanted.store(true, Ordering::Relaxed);
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut s = Snapshot::default();
        s.set_metadata(self.snap_meta.clone());
        s.set_data(self.snap_data.clone().into());
        Ok(s)
    }
}

#[cfg(test)]
mod tests;
