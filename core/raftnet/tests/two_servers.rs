//! Two in-process stores talking raft over real tonic connections on
//! loopback: a second server joins, catches up from a snapshot (the
//! first's log is compacted by then), and follows new writes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_raftnet::{Peers, RaftService};
use berth_store::{Command, Envelope, Store, StoreConfig};
use raft::eraftpb::{ConfChange, ConfChangeType};

async fn serve(store: Store) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RaftService::server(store))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

fn open(id: u64, dir: &std::path::Path, bootstrap: bool, peers: &Peers) -> Store {
    let cfg = StoreConfig {
        id,
        data_dir: dir.to_path_buf(),
        bootstrap_voters: if bootstrap { vec![id] } else { Vec::new() },
        snapshot_every: 10,
        tick: Duration::from_millis(20),
        restore: None,
    };
    let store = Store::open(cfg, Arc::new(peers.clone())).unwrap();
    peers.attach(store.clone());
    store
}

async fn put(store: &Store, id: u64, address: &str) {
    let env = Envelope {
        at_ms: 0,
        request_id: None,
        command: Command::SetMember {
            id,
            address: address.into(),
        },
    };
    store.propose(env).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_server_catches_up_by_snapshot_and_follows() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let p1 = Peers::new(1, None);
    let s1 = open(1, d1.path(), true, &p1);
    let a1 = serve(s1.clone()).await;
    let mut role = s1.role();
    role.wait_for(|(_, leader)| *leader == 1).await.unwrap();
    put(&s1, 1, &a1).await;
    // Enough writes to compact the log past its start.
    for i in 0..30 {
        put(&s1, 100 + i, "127.0.0.1:1").await;
    }
    assert!(s1.status().await.unwrap().snapshot >= 10);

    let p2 = Peers::new(2, None);
    let s2 = open(2, d2.path(), false, &p2);
    let a2 = serve(s2.clone()).await;
    p2.seed(&BTreeMap::from([(1, a1.clone())]));
    let mut cc = ConfChange::default();
    cc.set_change_type(ConfChangeType::AddNode);
    cc.node_id = 2;
    cc.context = a2.clone().into_bytes().into();
    s1.change_membership(cc).await.unwrap();
    assert_eq!(s1.read().members.get(&2), Some(&a2));

    // A new write reaches the new server.
    put(&s1, 999, "127.0.0.1:9").await;
    let target = s1.status().await.unwrap().commit;
    let mut applied = s2.applied();
    tokio::time::timeout(Duration::from_secs(10), applied.wait_for(|a| *a >= target))
        .await
        .expect("the new server caught up")
        .unwrap();
    assert_eq!(s2.read().members, s1.read().members);
    let st2 = s2.status().await.unwrap();
    assert!(st2.snapshot >= 10, "caught up without a snapshot: {st2:?}");
    assert_eq!(st2.voters, vec![1, 2]);
    // Reads on the follower are linearizable through the leader.
    s2.read_barrier().await.unwrap();
    assert_eq!(p2.addresses().get(&1), Some(&a1));
}
