//! The raft storage: reloads, damage, snapshots and their installs.
#![allow(clippy::field_reassign_with_default)]

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

fn meta(index: u64, term: u64) -> SnapshotMetadata {
    SnapshotMetadata {
        index,
        term,
        conf_state: protobuf::SingularPtrField::some(ConfState {
            voters: vec![1],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Log entries 2..=10 (term 1) committed up to `commit`.
fn ten(path: &Path, commit: u64) {
    let mut s = RedbStorage::open(path).unwrap();
    s.bootstrap(vec![1]).unwrap();
    let mut hs = HardState::default();
    hs.term = 1;
    hs.commit = commit;
    let ents: Vec<Entry> = (2..=10).map(|i| entry(i, 1)).collect();
    s.persist(&ents, Some(&hs)).unwrap();
}

#[test]
fn a_crash_after_a_snapshot_file_is_renamed_finishes_the_install() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft.redb");
    ten(&path, 10);
    // Our own snapshot at 8: the file is in place, the database not told.
    snapfile::write(&snapfile::path_for(&path), &meta(8, 1), b"state").unwrap();
    for _ in 0..2 {
        let s = RedbStorage::open(&path).unwrap();
        assert_eq!(s.snapshot_data(), (&b"state"[..], 8));
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (9, 10));
        assert_eq!(s.hard_state().commit, 10);
    }
}

#[test]
fn a_crash_installing_a_leaders_snapshot_drops_the_stale_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft.redb");
    ten(&path, 5);
    // The leader's snapshot at 6 from term 2: our entries 7..=10 (term 1)
    // are a suffix it replaced.
    snapfile::write(&snapfile::path_for(&path), &meta(6, 2), b"leader").unwrap();
    for _ in 0..2 {
        let s = RedbStorage::open(&path).unwrap();
        assert_eq!(s.snapshot_data(), (&b"leader"[..], 6));
        assert_eq!(s.last_index().unwrap(), 6);
        assert_eq!((s.hard_state().commit, s.hard_state().term), (6, 2));
    }
}

#[test]
fn a_snapshot_kept_in_the_database_moves_to_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft.redb");
    ten(&path, 10);
    {
        // The layout before the file: metadata and bytes in the database.
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert(SNAP_META, encode(&meta(8, 1)).as_slice())
            .unwrap();
        tx.open_table(SNAPSHOT)
            .unwrap()
            .insert(SNAP_DATA, &b"old layout"[..])
            .unwrap();
        tx.open_table(LOG)
            .unwrap()
            .retain_in(..=8, |_, _| false)
            .unwrap();
        tx.commit().unwrap();
    }
    std::fs::remove_file(snapfile::path_for(&path)).unwrap();
    let s = RedbStorage::open(&path).unwrap();
    assert_eq!(s.snapshot_data(), (&b"old layout"[..], 8));
    assert!(!s.db_has_legacy_bytes().unwrap());
    drop(s);
    let s = RedbStorage::open(&path).unwrap();
    assert_eq!(s.snapshot_data(), (&b"old layout"[..], 8));
    // A file that goes missing afterwards is named.
    drop(s);
    std::fs::remove_file(snapfile::path_for(&path)).unwrap();
    let e = RedbStorage::open(&path).err().unwrap().to_string();
    assert!(e.contains("raft.snap is missing"), "{e}");
}
