//! The raft driver: one tokio task owns the `RawNode`, ticks it, feeds it
//! proposals and peer messages, persists each `Ready` to redb, applies
//! committed entries to the [`ClusterState`], and answers proposers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType, Message};
use raft::{Config, RawNode, StateRole};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::StoreError;
use crate::state::{ClusterState, Envelope, Event, Outcome};
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
    /// Take a snapshot and compact the log every this many applied entries.
    pub snapshot_every: u64,
    /// Raft tick interval.
    pub tick: Duration,
}

impl StoreConfig {
    /// A single-voter store in `data_dir`, as `berth dev` runs it.
    pub fn single(data_dir: PathBuf) -> StoreConfig {
        StoreConfig {
            id: 1,
            data_dir,
            bootstrap_voters: vec![1],
            snapshot_every: 10_000,
            tick: Duration::from_millis(100),
        }
    }
}

type Reply = oneshot::Sender<Result<(u64, Outcome), StoreError>>;

enum Msg {
    Propose(Box<Envelope>, Reply),
    Raft(Box<Message>),
    Shutdown(oneshot::Sender<()>),
}

struct Shared {
    state: RwLock<ClusterState>,
    events: broadcast::Sender<Event>,
    applied: watch::Sender<u64>,
    role: watch::Sender<(StateRole, u64)>,
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
            storage.bootstrap(cfg.bootstrap_voters.clone())?;
        }
        let (snap, snap_index) = storage.snapshot_data();
        let state = if snap.is_empty() {
            ClusterState::default()
        } else {
            let mut s: ClusterState = serde_json::from_slice(snap)
                .map_err(|e| StoreError::Corrupt(format!("snapshot at index {snap_index}: {e}")))?;
            s.rebuild_indexes();
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
        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            state: RwLock::new(state),
            events,
            applied: watch::channel(snap_index).0,
            role: watch::channel((StateRole::Follower, 0)).0,
        });
        let (tx, rx) = mpsc::channel(4096);
        let driver = Driver {
            node,
            rx,
            shared: shared.clone(),
            transport,
            pending: HashMap::new(),
            nonce: boot_nonce(),
            counter: 0,
            snapshot_every: cfg.snapshot_every,
            last_snapshot: snap_index,
        };
        tokio::spawn(driver.run(cfg.tick));
        Ok(Store {
            tx,
            shared,
            id: cfg.id,
        })
    }

    /// Proposes a command and waits until it is committed and applied.
    /// Returns the log index it was applied at and its outcome.
    pub async fn propose(&self, env: Envelope) -> Result<(u64, Outcome), StoreError> {
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

    /// Subscribes to applied changes.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// Watches the applied index; changes whenever something was applied.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.shared.applied.subscribe()
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

    /// Stops the driver after flushing what it holds.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

fn boot_nonce() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}

struct Driver {
    node: RawNode<RedbStorage>,
    rx: mpsc::Receiver<Msg>,
    shared: Arc<Shared>,
    transport: Arc<dyn Transport>,
    pending: HashMap<u64, Reply>,
    nonce: u64,
    counter: u64,
    snapshot_every: u64,
    last_snapshot: u64,
}

impl Driver {
    async fn run(mut self, tick: Duration) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop = None;
        while stop.is_none() {
            tokio::select! {
                _ = ticker.tick() => { self.node.tick(); }
                msg = self.rx.recv() => {
                    let Some(msg) = msg else { break };
                    stop = self.handle(msg);
                    // Drain whatever else is queued so one Ready (one fsync) covers it.
                    while stop.is_none() {
                        let Ok(msg) = self.rx.try_recv() else { break };
                        stop = self.handle(msg);
                    }
                }
            }
            self.on_ready();
        }
        // Close the database before telling the caller we are done.
        drop(self);
        if let Some(done) = stop {
            let _ = done.send(());
        }
        tracing::info!("raft driver stopped");
    }

    fn handle(&mut self, msg: Msg) -> Option<oneshot::Sender<()>> {
        match msg {
            Msg::Propose(env, reply) => {
                let data = match serde_json::to_vec(&*env) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = reply.send(Err(StoreError::Encode(e.to_string())));
                        return None;
                    }
                };
                self.counter += 1;
                let tag = self.counter;
                let mut ctx = Vec::with_capacity(16);
                ctx.extend_from_slice(&self.nonce.to_le_bytes());
                ctx.extend_from_slice(&tag.to_le_bytes());
                match self.node.propose(ctx, data) {
                    Ok(()) => {
                        self.pending.insert(tag, reply);
                    }
                    Err(raft::Error::ProposalDropped) => {
                        let leader = self.node.raft.leader_id;
                        let _ = reply.send(Err(StoreError::NotLeader(leader)));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(StoreError::Raft(e.to_string())));
                    }
                }
                None
            }
            Msg::Raft(m) => {
                if let Err(e) = self.node.step(*m) {
                    tracing::debug!(error = %e, "raft step failed");
                }
                None
            }
            Msg::Shutdown(done) => Some(done),
        }
    }

    fn on_ready(&mut self) {
        if let Err(e) = self.try_ready() {
            // Storage failed: raft cannot continue safely. Fail every waiter;
            // the server keeps running read-only so operators can look.
            tracing::error!(error = %e, "raft storage failure");
            for (_, reply) in self.pending.drain() {
                let _ = reply.send(Err(StoreError::Raft(e.to_string())));
            }
        }
    }

    fn try_ready(&mut self) -> Result<(), StoreError> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut rd = self.node.ready();
        if let Some(ss) = rd.ss() {
            self.shared.role.send_replace((ss.raft_state, ss.leader_id));
            if ss.raft_state != StateRole::Leader {
                // Proposals from this term may never commit here; let clients retry.
                for (_, reply) in self.pending.drain() {
                    let _ = reply.send(Err(StoreError::NotLeader(ss.leader_id)));
                }
            }
        }
        if !rd.messages().is_empty() {
            self.transport.send(rd.take_messages());
        }
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            self.node.mut_store().apply_snapshot(&snap)?;
            let mut s: ClusterState = serde_json::from_slice(snap.get_data())
                .map_err(|e| StoreError::Corrupt(format!("received snapshot: {e}")))?;
            s.rebuild_indexes();
            *self.shared.state.write().unwrap_or_else(|p| p.into_inner()) = s;
            self.last_snapshot = snap.get_metadata().index;
            self.shared.applied.send_replace(self.last_snapshot);
        }
        let committed = rd.take_committed_entries();
        self.apply(committed)?;
        let hs = rd.hs().cloned();
        self.node.mut_store().persist(rd.entries(), hs.as_ref())?;
        if !rd.persisted_messages().is_empty() {
            self.transport.send(rd.take_persisted_messages());
        }
        let mut light = self.node.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().set_commit(commit);
        }
        self.transport.send(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply(committed)?;
        self.node.advance_apply();
        self.maybe_snapshot()?;
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut events = Vec::new();
        let mut last = 0;
        {
            let shared = self.shared.clone();
            let mut state = shared.state.write().unwrap_or_else(|p| p.into_inner());
            for e in entries {
                last = e.index;
                match e.get_entry_type() {
                    EntryType::EntryNormal => {
                        if e.data.is_empty() {
                            continue;
                        }
                        let outcome = match serde_json::from_slice::<Envelope>(&e.data) {
                            Ok(env) => state.apply(e.index, env, &mut events),
                            Err(err) => {
                                tracing::error!(index = e.index, error = %err, "undecodable log entry skipped");
                                Outcome::Rejected(format!("undecodable command: {err}"))
                            }
                        };
                        self.reply(&e.context, e.index, outcome);
                    }
                    EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                        let cs = if e.get_entry_type() == EntryType::EntryConfChange {
                            let cc = ConfChange::parse_from_bytes(&e.data)
                                .map_err(|err| StoreError::Corrupt(err.to_string()))?;
                            self.node.apply_conf_change(&cc)
                        } else {
                            let cc = ConfChangeV2::parse_from_bytes(&e.data)
                                .map_err(|err| StoreError::Corrupt(err.to_string()))?;
                            self.node.apply_conf_change(&cc)
                        }
                        .map_err(|err| StoreError::Raft(err.to_string()))?;
                        self.node.mut_store().set_conf_state(cs)?;
                        self.reply(&e.context, e.index, Outcome::Ok);
                    }
                }
            }
        }
        for ev in events {
            let _ = self.shared.events.send(ev);
        }
        if last > 0 {
            self.shared.applied.send_replace(last);
        }
        Ok(())
    }

    fn reply(&mut self, ctx: &[u8], index: u64, outcome: Outcome) {
        if ctx.len() != 16 {
            return;
        }
        let nonce = u64::from_le_bytes(ctx[..8].try_into().unwrap_or_default());
        let tag = u64::from_le_bytes(ctx[8..].try_into().unwrap_or_default());
        if nonce != self.nonce {
            return;
        }
        if let Some(reply) = self.pending.remove(&tag) {
            let _ = reply.send(Ok((index, outcome)));
        }
    }

    fn maybe_snapshot(&mut self) -> Result<(), StoreError> {
        let applied = self.node.raft.raft_log.applied;
        let due = applied >= self.last_snapshot + self.snapshot_every;
        if !(due || self.node.store().snapshot_wanted()) || applied <= self.last_snapshot {
            return Ok(());
        }
        let data = {
            let state = self.shared.state.read().unwrap_or_else(|p| p.into_inner());
            serde_json::to_vec(&*state).map_err(|e| StoreError::Encode(e.to_string()))?
        };
        self.node.mut_store().create_snapshot(applied, data)?;
        self.last_snapshot = applied;
        tracing::debug!(index = applied, "snapshot taken, log compacted");
        Ok(())
    }
}
