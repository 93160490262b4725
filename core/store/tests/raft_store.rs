//! The store through real raft and a real redb file: proposals commit,
//! survive a restart, snapshots compact the log, retries apply once.

use std::sync::Arc;

use berth_model::spec::parse_spec;
use berth_store::{Command, Envelope, NoPeers, Outcome, Store, StoreConfig};

fn spec(name: &str, instances: u32) -> berth_model::spec::AppSpec {
    parse_spec(&format!(
        "name: {name}\nimage: busybox:latest\ninstances: {instances}\n"
    ))
    .unwrap()
}

fn put(name: &str, instances: u32, rid: Option<&str>) -> Envelope {
    Envelope {
        at_ms: 0,
        request_id: rid.map(String::from),
        command: Command::PutApp {
            spec: Box::new(spec(name, instances)),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_survive_restart_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StoreConfig::single(dir.path().to_path_buf());
    cfg.snapshot_every = 5;
    {
        let store = Store::open(cfg.clone(), Arc::new(NoPeers)).unwrap();
        for i in 0..12 {
            let (_, out) = store
                .propose(put(&format!("app{i}"), 2, None))
                .await
                .unwrap();
            assert!(matches!(out, Outcome::App { changed: true, .. }));
        }
        assert_eq!(store.read().apps.len(), 12);
        assert_eq!(store.read().tasks.len(), 24);
        assert!(store.is_leader());
        store.shutdown().await;
    }
    let store = Store::open(cfg, Arc::new(NoPeers)).unwrap();
    // Entries after the last snapshot replay once the node leads again.
    let mut applied = store.applied();
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while store.read().apps.len() < 12 {
            applied.changed().await.unwrap();
        }
    })
    .await
    .expect("state restored");
    assert_eq!(store.read().tasks.len(), 24);
    let (_, out) = store.propose(put("app0", 2, None)).await.unwrap();
    assert!(
        matches!(out, Outcome::App { changed: false, .. }),
        "same spec is a no-op"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_request_applies_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        StoreConfig::single(dir.path().to_path_buf()),
        Arc::new(NoPeers),
    )
    .unwrap();
    let (i1, o1) = store.propose(put("web", 1, Some("req-1"))).await.unwrap();
    // A retry (same id, same request) gets the recorded outcome.
    let (_, o2) = store.propose(put("web", 1, Some("req-1"))).await.unwrap();
    assert_eq!(o1, o2);
    // Same id, a different request: refused, nothing changes.
    let (_, o3) = store.propose(put("web", 3, Some("req-1"))).await.unwrap();
    assert!(
        matches!(o3, Outcome::Rejected(ref why) if why.contains("different request")),
        "{o3:?}"
    );
    assert_eq!(store.read().tasks.len(), 1);
    assert_eq!(
        o1,
        Outcome::App {
            version: i1,
            changed: true
        }
    );
    let (_, o3) = store
        .propose(Envelope {
            at_ms: 0,
            request_id: None,
            command: Command::StopApp {
                name: "nope".into(),
            },
        })
        .await
        .unwrap();
    assert_eq!(o3, Outcome::Rejected("no app named nope".into()));
}
