//! The raft driver: one tokio task owns the `RawNode`, ticks it, feeds it
//! proposals and peer messages, persists each `Ready` to redb, applies
//! committed entries to the [`ClusterState`], and answers proposers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use raft::eraftpb::{ConfChange, Message};
use raft::{Config, RawNode, StateRole};
use tokio::sync::{mpsc, oneshot, watch};

use crate::StoreError;
use crate::driver::Driver;
use crate::events::{Hub, Subscription};
use crate::state::{ClusterState, Envelope, Outcome};
use crate::storage::RedbStorage;

/// Sends raft messages to peers. A single-server cluster sends none.
pub trait Transport: Send + Sync + 'static {
    /// Queues messages for their destinations; must not block.
    fn send(&self, msgs: Vec<Message>);
}

/// The transport of a single-server cluster.
pub struct NoPeers;

impl Transport for NoPeers {
    fn send(&self, msgs: Vec<Message>) {
        if !msgs.is_empty() {
            tracing::warn!(
                count = msgs.len(),
                "dropping raft messages: no peers configured"
            );
        }
    }
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// This server's raft id (non-zero).
    pub id: u64,
    /// Directory holding `raft.redb`.
    pub data_dir: PathBuf,
    /// Voters of a brand-new cluster (ignored once initialized).
    pub bootstrap_voters: Vec<u64>,
    /// Take a snapshot and compact the log after at least this many applied
    /// entries, once the log since the last snapshot is as large as it.
    pub snapshot_every: u64,
    /// Raft tick interval.
    pub tick: Duration,
    /// A new cluster starts from this state (at this log index) instead
    /// of an empty one (`berth server --restore`; ignored once
    /// initialized).
    pub restore: Option<(u64, ClusterState)>,
}

impl StoreConfig {
    /// A single-voter store in `data_dir`, as `berth dev` runs it.
    pub fn single(data_dir: PathBuf) -> StoreConfig {
        StoreConfig {
            id: 1,
            data_dir,
            bootstrap_voters: vec![1],
            snapshot_every: 50_000,
            tick: Duration::from_millis(100),
            restore: None,
        }
    }
}

pub(crate) type Reply = oneshot::Sender<Result<(u64, Outcome), StoreError>>;

pub(crate) enum Msg {
    Propose(Box<Envelope>, Reply),
    ConfChange(Box<ConfChange>, Reply),
    ReadIndex(oneshot::Sender<Result<u64, StoreError>>),
    Raft(Box<Message>),
    Unreachable(u64),
    SnapshotStatus(u64, bool),
    TransferLeader(u64),
    Status(oneshot::Sender<RaftStatus>),
    Shutdown(oneshot::Sender<()>),
}

/// Where this server's raft stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RaftStatus {
    /// This server's id.
    pub id: u64,
    /// `leader`, `follower`, `candidate` or `pre-candidate`.
    pub role: &'static str,
    /// The leader it knows (0: none).
    pub leader: u64,
    /// Current term.
    pub term: u64,
    /// Highest committed index it knows.
    pub commit: u64,
    /// Highest applied index.
    pub applied: u64,
    /// Voters.
    pub voters: Vec<u64>,
    /// On the leader: the highest index known replicated on each voter.
    pub matched: BTreeMap<u64, u64>,
    /// Index of the latest snapshot (the log starts after it).
    pub snapshot: u64,
    /// Size of the latest snapshot's state-machine bytes.
    pub snapshot_bytes: u64,
}

pub(crate) struct Shared {
    pub(crate) state: RwLock<ClusterState>,
    pub(crate) events: Hub,
    pub(crate) applied: watch::Sender<u64>,
    pub(crate) role: watch::Sender<(StateRole, u64)>,
}

/// Handle to the replicated store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    id: u64,
}

/// A read guard over the applied cluster state.
pub type StateGuard<'a> = RwLockReadGuard<'a, ClusterState>;

impl Store {
    /// Opens the store, restores the last snapshot, and starts the raft driver.
    pub fn open(cfg: StoreConfig, transport: Arc<dyn Transport>) -> Result<Store, StoreError> {
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| StoreError::Io(format!("{}: {e}", cfg.data_dir.display())))?;
        let mut storage = RedbStorage::open(&cfg.data_dir.join("raft.redb"))?;
        if !storage.is_initialized() && !cfg.bootstrap_voters.is_empty() {
            match &cfg.restore {
                Some((index, state)) => {
                    let data = serde_json::to_vec(state)
                        .map_err(|e| StoreError::Corrupt(format!("restored state: {e}")))?;
                    storage.bootstrap_at(cfg.bootstrap_voters.clone(), (*index).max(1), data)?;
                }
                None => storage.bootstrap(cfg.bootstrap_voters.clone())?,
            }
        }
        let (snap, snap_index) = storage.snapshot_data();
        let state = if snap.is_empty() {
            ClusterState::default()
        } else {
            let mut s: ClusterState = serde_json::from_slice(snap)
                .map_err(|e| StoreError::Corrupt(format!("snapshot at index {snap_index}: {e}")))?;
            s.rebuild_indexes();
            s.set_applied(snap_index);
            s
        };
        let raft_cfg = Config {
            id: cfg.id,
            election_tick: 10,
            heartbeat_tick: 2,
            applied: snap_index,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        raft_cfg
            .validate()
            .map_err(|e| StoreError::Raft(e.to_string()))?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let single = storage.conf_state().voters == vec![cfg.id];
        let mut node = RawNode::new(&raft_cfg, storage, &logger)
            .map_err(|e| StoreError::Raft(e.to_string()))?;
        if single {
            node.campaign()
                .map_err(|e| StoreError::Raft(e.to_string()))?;
        }
        let shared = Arc::new(Shared {
            state: RwLock::new(state),
            events: Hub::default(),
            applied: watch::channel(snap_index).0,
            role: watch::channel((StateRole::Follower, 0)).0,
        });
        let (tx, rx) = mpsc::channel(4096);
        let driver = Driver::new(
            node,
            rx,
            shared.clone(),
            transport,
            cfg.snapshot_every,
            snap_index,
        );
        // The driver gets a thread of its own: each `Ready` ends in an
        // fsync, which must not stall the runtime that serves clients.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| StoreError::Io(format!("starting the raft thread: {e}")))?;
        std::thread::Builder::new()
            .name(format!("raft-{}", cfg.id))
            .spawn(move || rt.block_on(driver.run(cfg.tick)))
            .map_err(|e| StoreError::Io(format!("starting the raft thread: {e}")))?;
        Ok(Store {
            tx,
            shared,
            id: cfg.id,
        })
    }

    /// Proposes a command and waits until it is committed and applied.
    /// Returns the log index it was applied at and its outcome.
    pub async fn propose(&self, mut env: Envelope) -> Result<(u64, Outcome), StoreError> {
        if env.at_ms == 0 {
            env.at_ms = crate::state::now_ms();
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Propose(Box::new(env), reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(StoreError::Closed),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// Proposes a membership change (its `context` is the new server's
    /// address, for additions) and waits until it is applied.
    pub async fn change_membership(&self, cc: ConfChange) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::ConfChange(Box::new(cc), reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(r)) => r.map(|(index, _)| index),
            Ok(Err(_)) => Err(StoreError::Closed),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// A linearizable read barrier (raft's ReadIndex): returns once this
    /// server has applied everything committed before the call, as
    /// confirmed by a quorum. Fails on a server cut off from the majority.
    pub async fn read_barrier(&self) -> Result<u64, StoreError> {
        // A leader answers only once it has committed in its term, and a
        // request can be lost with a leader change: ask again until 3 s.
        let start = std::time::Instant::now();
        let index = loop {
            let (reply, rx) = oneshot::channel();
            self.tx
                .send(Msg::ReadIndex(reply))
                .await
                .map_err(|_| StoreError::Closed)?;
            match tokio::time::timeout(Duration::from_millis(300), rx).await {
                Ok(Ok(Ok(index))) => break index,
                _ if start.elapsed() < Duration::from_secs(3) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => return Err(StoreError::NotLeader(self.leader())),
            }
        };
        let mut applied = self.applied();
        let wait = applied.wait_for(|a| *a >= index);
        match tokio::time::timeout(Duration::from_secs(3), wait).await {
            Ok(Ok(_)) => Ok(index),
            Ok(Err(_)) => Err(StoreError::Closed),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// Tells raft a peer could not be reached (the transport calls this).
    pub fn report_unreachable(&self, id: u64) {
        let _ = self.tx.try_send(Msg::Unreachable(id));
    }

    /// Tells raft how sending a snapshot to a peer ended.
    pub fn report_snapshot(&self, id: u64, ok: bool) {
        let _ = self.tx.try_send(Msg::SnapshotStatus(id, ok));
    }

    /// Asks the leader to hand leadership to `id`.
    pub async fn transfer_leader(&self, id: u64) -> Result<(), StoreError> {
        self.tx
            .send(Msg::TransferLeader(id))
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Where raft stands on this server.
    pub async fn status(&self) -> Result<RaftStatus, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Status(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// The leader this server knows (0: none).
    pub fn leader(&self) -> u64 {
        self.shared.role.borrow().1
    }

    /// Delivers a raft message from a peer.
    pub async fn step(&self, msg: Message) -> Result<(), StoreError> {
        self.tx
            .send(Msg::Raft(Box::new(msg)))
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Reads the applied state.
    pub fn read(&self) -> StateGuard<'_> {
        self.shared
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A backup of the applied state ([`crate::backup`]): copied under
    /// the read lock, encoded outside it.
    pub fn backup(&self) -> Result<Vec<u8>, StoreError> {
        let (copy, index) = {
            let s = self.read();
            (s.clone(), s.applied_index())
        };
        crate::backup::encode(&copy, index, crate::command::now_ms()).map_err(StoreError::Corrupt)
    }

    /// Subscribes to applied changes, one batch per apply, in order.
    pub fn subscribe(&self) -> Subscription {
        self.shared.events.subscribe()
    }

    /// Watches the applied index; changes whenever something was applied.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.shared.applied.subscribe()
    }

    /// Whether the driver has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Whether this server currently leads.
    pub fn is_leader(&self) -> bool {
        self.shared.role.borrow().0 == StateRole::Leader
    }

    /// Watches (role, leader id).
    pub fn role(&self) -> watch::Receiver<(StateRole, u64)> {
        self.shared.role.subscribe()
    }

    /// This server's raft id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Stops the driver after flushing what it holds. A leader with
    /// followers first hands leadership to the most up-to-date one (for up
    /// to 2 s), so the cluster does not wait out an election timeout.
    pub async fn shutdown(&self) {
        if self.is_leader()
            && let Ok(st) = self.status().await
            && let Some((&to, _)) = st
                .matched
                .iter()
                .filter(|(id, _)| **id != self.id)
                .max_by_key(|(_, m)| **m)
        {
            tracing::info!(to, "handing leadership over before stopping");
            if self.transfer_leader(to).await.is_ok() {
                let mut role = self.role();
                let moved = role.wait_for(|(r, _)| *r != StateRole::Leader);
                let _ = tokio::time::timeout(Duration::from_secs(2), moved).await;
            }
        }
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}
