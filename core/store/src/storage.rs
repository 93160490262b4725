//! The durable raft log: entries, hard state, conf state and the latest
//! snapshot, kept in `redb` and mirrored in memory for raft's reads.
//!
//! Writes go to redb first (one transaction per `Ready`), then to the
//! in-memory mirror, so what raft sees is always what is on disk.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use redb::{Database, ReadableDatabase, TableDefinition};

use crate::StoreError;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
/// The snapshot's state-machine bytes, in a table of their own: the hard
/// state in `META` is rewritten by every commit, and a copy-on-write B-tree
/// rewrites the pages it touches, so a multi-megabyte value beside it was
/// written again with every acknowledged write.
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");

const HARD_STATE: &str = "hard_state";
const CONF_STATE: &str = "conf_state";
const SNAP_META: &str = "snapshot_meta";
const SNAP_DATA: &str = "snapshot_data";

/// Raft storage over redb.
pub struct RedbStorage {
    db: Database,
    entries: Vec<Entry>,
    hard_state: HardState,
    conf_state: ConfState,
    snap_meta: SnapshotMetadata,
    snap_data: Vec<u8>,
    snapshot_wanted: AtomicBool,
    commit_dirty: bool,
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
        {
            let tx = db.begin_write()?;
            tx.open_table(LOG)?;
            let mut meta = tx.open_table(META)?;
            let mut snap = tx.open_table(SNAPSHOT)?;
            // Data directories from before the split: move the bytes over.
            let old = meta.remove(SNAP_DATA)?.map(|v| v.value().to_vec());
            if let Some(old) = old {
                snap.insert(SNAP_DATA, old.as_slice())?;
            }
            drop((meta, snap));
            tx.commit()?;
        }
        let tx = db.begin_read()?;
        let meta = tx.open_table(META)?;
        let get = |key: &str| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(meta.get(key)?.map(|v| v.value().to_vec()))
        };
        let hard_state = match get(HARD_STATE)? {
            Some(b) => decode(&b, "hard state")?,
            None => HardState::default(),
        };
        let conf_state = match get(CONF_STATE)? {
            Some(b) => decode(&b, "conf state")?,
            None => ConfState::default(),
        };
        let snap_meta: SnapshotMetadata = match get(SNAP_META)? {
            Some(b) => decode(&b, "snapshot metadata")?,
            None => SnapshotMetadata::default(),
        };
        let snap_data = tx
            .open_table(SNAPSHOT)?
            .get(SNAP_DATA)?
            .map(|v| v.value().to_vec())
            .unwrap_or_default();
        let log = tx.open_table(LOG)?;
        let mut entries = Vec::new();
        let mut last_term = snap_meta.term;
        for (expect, row) in (snap_meta.index + 1..).zip(log.range(snap_meta.index + 1..)?) {
            let (k, v) = row?;
            let e: Entry = decode(v.value(), "log entry")?;
            if k.value() != expect || e.index != expect || e.term < last_term {
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
        drop(meta);
        drop(tx);
        let last = entries.last().map_or(snap_meta.index, |e| e.index);
        if hard_state.commit > last {
            return Err(StoreError::Corrupt(format!(
                "the log ends at index {last} but index {} was committed: its tail is missing",
                hard_state.commit
            )));
        }
        Ok(RedbStorage {
            db,
            entries,
            hard_state,
            conf_state,
            snap_meta,
            snap_data,
            snapshot_wanted: AtomicBool::new(false),
            commit_dirty: false,
        })
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
        let cs = ConfState {
            voters,
            ..Default::default()
        };
        let snap = Snapshot {
            metadata: protobuf::SingularPtrField::some(SnapshotMetadata {
                index: 1,
                term: 1,
                conf_state: protobuf::SingularPtrField::some(cs),
                ..Default::default()
            }),
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
            self.entries.truncate(keep);
            self.entries.extend_from_slice(ents);
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
        let tx = self.db.begin_write()?;
        {
            let mut log = tx.open_table(LOG)?;
            log.retain(|_, _| false)?;
            let mut m = tx.open_table(META)?;
            m.insert(SNAP_META, encode(meta).as_slice())?;
            tx.open_table(SNAPSHOT)?
                .insert(SNAP_DATA, snap.get_data())?;
            m.insert(CONF_STATE, encode(meta.get_conf_state()).as_slice())?;
            let mut hs = self.hard_state.clone();
            hs.term = hs.term.max(meta.term);
            hs.commit = meta.index;
            m.insert(HARD_STATE, encode(&hs).as_slice())?;
            self.hard_state = hs;
        }
        tx.commit()?;
        self.entries.clear();
        self.snap_meta = meta.clone();
        self.snap_data = snap.get_data().to_vec();
        self.conf_state = meta.get_conf_state().clone();
        Ok(())
    }

    /// Saves a snapshot of the state machine at `index` (already applied)
    /// and drops the log entries it covers. Followers that lag behind it
    /// catch up from the snapshot.
    pub fn create_snapshot(&mut self, index: u64, data: Vec<u8>) -> Result<(), StoreError> {
        if index <= self.snap_meta.index {
            return Ok(());
        }
        let term = raft::Storage::term(self, index).map_err(|e| StoreError::Raft(e.to_string()))?;
        let meta = SnapshotMetadata {
            index,
            term,
            conf_state: protobuf::SingularPtrField::some(self.conf_state.clone()),
            ..Default::default()
        };
        self.hard_state.commit = self.hard_state.commit.max(index);
        let tx = self.db.begin_write()?;
        {
            let mut m = tx.open_table(META)?;
            m.insert(SNAP_META, encode(&meta).as_slice())?;
            tx.open_table(SNAPSHOT)?
                .insert(SNAP_DATA, data.as_slice())?;
            m.insert(HARD_STATE, encode(&self.hard_state).as_slice())?;
        }
        self.commit_dirty = false;
        tx.commit()?;
        self.snap_meta = meta;
        self.snap_data = data;
        self.snapshot_wanted.store(false, Ordering::Relaxed);
        self.compact(index)
    }

    /// Drops entries up to and including `to`, which the snapshot covers.
    fn compact(&mut self, to: u64) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(LOG)?.retain_in(..=to, |_, _| false)?;
        tx.commit()?;
        self.entries.retain(|e| e.index > to);
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
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e.data = format!("e{index}").into_bytes().into();
        e
    }

    #[test]
    fn persists_and_reloads_entries_and_hard_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        {
            let mut s = RedbStorage::open(&path).unwrap();
            s.bootstrap(vec![1]).unwrap();
            let mut hs = HardState::default();
            hs.term = 2;
            hs.commit = 2;
            // The bootstrap snapshot holds index 1; the log starts at 2.
            assert_eq!(s.first_index().unwrap(), 2);
            s.persist(&[entry(2, 1), entry(3, 2), entry(4, 2)], Some(&hs))
                .unwrap();
            // A conflicting suffix replaces the old one.
            s.persist(&[entry(4, 3)], None).unwrap();
        }
        let s = RedbStorage::open(&path).unwrap();
        assert!(s.is_initialized());
        assert_eq!(s.last_index().unwrap(), 4);
        assert_eq!(s.term(4).unwrap(), 3);
        assert_eq!(s.hard_state().commit, 2);
        assert_eq!(s.initial_state().unwrap().conf_state.voters, vec![1]);
    }

    /// Writes raw bytes as log entry `index`, as a damaged disk might.
    fn poke(path: &Path, index: u64, bytes: Option<&[u8]>) {
        let db = Database::create(path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut log = tx.open_table(LOG).unwrap();
            match bytes {
                Some(b) => {
                    log.insert(index, b).unwrap();
                }
                None => {
                    log.remove(index).unwrap();
                }
            }
        }
        tx.commit().unwrap();
    }

    #[test]
    fn a_damaged_log_is_refused_naming_the_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        let write = |commit: u64| {
            let mut s = RedbStorage::open(&path).unwrap();
            let mut hs = HardState::default();
            hs.term = 1;
            hs.commit = commit;
            let ents: Vec<Entry> = (2..=6).map(|i| entry(i, 1)).collect();
            s.bootstrap(vec![1]).unwrap();
            s.persist(&ents, Some(&hs)).unwrap();
        };
        write(6);
        // Garbage in an entry.
        poke(&path, 4, Some(b"\xff\xff garbage"));
        let e = RedbStorage::open(&path).err().unwrap().to_string();
        assert!(e.contains("log entry"), "{e}");
        // A hole in the log.
        poke(&path, 4, None);
        let e = RedbStorage::open(&path).err().unwrap().to_string();
        assert!(e.contains("damaged at index 5"), "{e}");
        // A lost tail below the commit index.
        std::fs::remove_file(&path).unwrap();
        write(6);
        poke(&path, 6, None);
        poke(&path, 5, None);
        let e = RedbStorage::open(&path).err().unwrap().to_string();
        assert!(e.contains("tail is missing"), "{e}");
    }

    #[test]
    fn snapshot_compacts_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        {
            let mut s = RedbStorage::open(&path).unwrap();
            s.bootstrap(vec![1]).unwrap();
            let ents: Vec<Entry> = (2..=10).map(|i| entry(i, 1)).collect();
            s.persist(&ents, None).unwrap();
            s.create_snapshot(8, b"state".to_vec()).unwrap();
            assert_eq!(s.first_index().unwrap(), 9);
            assert_eq!(s.term(8).unwrap(), 1);
            assert!(matches!(
                s.entries(5, 6, None, GetEntriesContext::empty(false)),
                Err(raft::Error::Store(StorageError::Compacted))
            ));
        }
        let s = RedbStorage::open(&path).unwrap();
        assert_eq!(s.snapshot_data(), (&b"state"[..], 8));
        assert_eq!(s.last_index().unwrap(), 10);
        assert_eq!(
            s.entries(9, 11, None, GetEntriesContext::empty(false))
                .unwrap()
                .len(),
            2
        );
        let snap = s.snapshot(8, 1).unwrap();
        assert_eq!(snap.get_metadata().index, 8);
        // A server the snapshot's membership lacks needs a newer one.
        assert!(matches!(
            s.snapshot(8, 2),
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable
            ))
        ));
        assert!(s.snapshot_wanted());
    }
}
