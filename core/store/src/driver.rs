//! The raft driver: one tokio task owns the `RawNode`, ticks it, feeds it
//! proposals, reads and peer messages, persists each `Ready` to redb,
//! applies committed entries to the [`ClusterState`], and answers callers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType, SnapshotMetadata};
use raft::{RawNode, SnapshotStatus, StateRole};
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;
use crate::events::Batch;
use crate::node::{Msg, RaftStatus, Reply, Shared, Transport};
use crate::snapfile;
use crate::state::{ClusterState, Envelope, Outcome};
use crate::storage::RedbStorage;

fn role_name(r: StateRole) -> &'static str {
    match r {
        StateRole::Leader => "leader",
        StateRole::Follower => "follower",
        StateRole::Candidate => "candidate",
        StateRole::PreCandidate => "pre-candidate",
    }
}

fn boot_nonce() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}

/// A snapshot encoded and written to its file on another thread: its
/// metadata and bytes, or why not.
type Encoding = oneshot::Receiver<Result<(SnapshotMetadata, Vec<u8>), String>>;

pub(crate) struct Driver {
    node: RawNode<RedbStorage>,
    rx: mpsc::Receiver<Msg>,
    shared: Arc<Shared>,
    transport: Arc<dyn Transport>,
    pending: HashMap<u64, Reply>,
    reads: HashMap<u64, oneshot::Sender<Result<u64, StoreError>>>,
    nonce: u64,
    counter: u64,
    snapshot_every: u64,
    last_snapshot: u64,
    /// A snapshot being encoded and written on another thread.
    encoding: Option<Encoding>,
}

impl Driver {
    pub(crate) fn new(
        node: RawNode<RedbStorage>,
        rx: mpsc::Receiver<Msg>,
        shared: Arc<Shared>,
        transport: Arc<dyn Transport>,
        snapshot_every: u64,
        last_snapshot: u64,
    ) -> Driver {
        Driver {
            node,
            rx,
            shared,
            transport,
            pending: HashMap::new(),
            reads: HashMap::new(),
            nonce: boot_nonce(),
            counter: 0,
            snapshot_every,
            last_snapshot,
            encoding: None,
        }
    }

    pub(crate) async fn run(mut self, tick: Duration) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop = None;
        while stop.is_none() {
            tokio::select! {
                _ = ticker.tick() => { self.node.tick(); }
                done = wait_encoded(&mut self.encoding) => {
                    self.encoding = None;
                    self.store_snapshot(done);
                }
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
                let tag = self.next_tag();
                let r = self.node.propose(self.ctx(tag), data);
                self.proposed(tag, r, reply);
                None
            }
            Msg::ConfChange(cc, reply) => {
                let tag = self.next_tag();
                let r = self.node.propose_conf_change(self.ctx(tag), *cc);
                self.proposed(tag, r, reply);
                None
            }
            Msg::ReadIndex(reply) => {
                let tag = self.next_tag();
                self.node.read_index(self.ctx(tag));
                self.reads.insert(tag, reply);
                None
            }
            Msg::Raft(m) => {
                if let Err(e) = self.node.step(*m) {
                    tracing::debug!(error = %e, "raft step failed");
                }
                None
            }
            Msg::Unreachable(id) => {
                self.node.report_unreachable(id);
                None
            }
            Msg::SnapshotStatus(id, ok) => {
                let s = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.node.report_snapshot(id, s);
                None
            }
            Msg::TransferLeader(id) => {
                self.node.transfer_leader(id);
                None
            }
            Msg::Status(reply) => {
                let _ = reply.send(self.status());
                None
            }
            Msg::Shutdown(done) => Some(done),
        }
    }

    /// Keeps the caller of an accepted proposal waiting for its apply, or
    /// answers a refused one.
    fn proposed(&mut self, tag: u64, r: raft::Result<()>, reply: Reply) {
        match r {
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
    }

    fn next_tag(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// A proposal's or read's context: this boot's nonce and a tag.
    fn ctx(&self, tag: u64) -> Vec<u8> {
        let mut ctx = Vec::with_capacity(16);
        ctx.extend_from_slice(&self.nonce.to_le_bytes());
        ctx.extend_from_slice(&tag.to_le_bytes());
        ctx
    }

    /// The tag of a context made by [`Driver::ctx`] in this boot.
    fn tag_of(&self, ctx: &[u8]) -> Option<u64> {
        if ctx.len() != 16 {
            return None;
        }
        let nonce = u64::from_le_bytes(ctx[..8].try_into().ok()?);
        let tag = u64::from_le_bytes(ctx[8..].try_into().ok()?);
        (nonce == self.nonce).then_some(tag)
    }

    fn status(&self) -> RaftStatus {
        let r = &self.node.raft;
        let mut matched = BTreeMap::new();
        if r.state == StateRole::Leader {
            for (id, pr) in r.prs().iter() {
                matched.insert(*id, pr.matched);
            }
        }
        RaftStatus {
            id: r.id,
            role: role_name(r.state),
            leader: r.leader_id,
            term: r.term,
            commit: r.raft_log.committed,
            applied: r.raft_log.applied,
            voters: r.prs().conf().voters().ids().iter().collect(),
            matched,
            snapshot: self.node.store().snapshot_data().1,
            snapshot_bytes: self.node.store().snapshot_data().0.len() as u64,
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
            // Reads in flight may never be answered under the new role.
            for (_, reply) in self.reads.drain() {
                let _ = reply.send(Err(StoreError::NotLeader(ss.leader_id)));
            }
        }
        for rs in rd.take_read_states() {
            if let Some(reply) = self
                .tag_of(&rs.request_ctx)
                .and_then(|t| self.reads.remove(&t))
            {
                let _ = reply.send(Ok(rs.index));
            }
        }
        if !rd.messages().is_empty() {
            self.transport.send(rd.take_messages());
        }
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            self.node.mut_store().apply_snapshot(&snap)?;
            let mut s: ClusterState = if snap.get_data().is_empty() {
                ClusterState::default()
            } else {
                serde_json::from_slice(snap.get_data())
                    .map_err(|e| StoreError::Corrupt(format!("received snapshot: {e}")))?
            };
            s.rebuild_indexes();
            let index = snap.get_metadata().index;
            s.set_applied(index);
            let mut state = self.shared.state.write().unwrap_or_else(|p| p.into_inner());
            *state = s;
            self.shared.events.publish(Batch {
                index,
                reset: true,
                events: Vec::new(),
            });
            drop(state);
            self.last_snapshot = index;
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
                            record_member(&mut state, &cc);
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
            state.set_applied(last);
            // Published before the write lock goes: whoever drains its
            // subscription under the read lock sees exactly this state.
            if !events.is_empty() {
                self.shared.events.publish(Batch {
                    index: last,
                    reset: false,
                    events: std::mem::take(&mut events),
                });
            }
        }
        if last > 0 {
            self.shared.applied.send_replace(last);
        }
        Ok(())
    }

    fn reply(&mut self, ctx: &[u8], index: u64, outcome: Outcome) {
        if let Some(reply) = self.tag_of(ctx).and_then(|t| self.pending.remove(&t)) {
            let _ = reply.send(Ok((index, outcome)));
        }
    }

    /// Starts a snapshot when one is due: the state is copied under the
    /// lock (the driver is its only writer, so this is a consistent view)
    /// and encoded and written to a file on another thread, so applies go
    /// on meanwhile; the driver only renames it into place.
    fn maybe_snapshot(&mut self) -> Result<(), StoreError> {
        if self.encoding.is_some() {
            return Ok(());
        }
        let applied = self.node.raft.raft_log.applied;
        // At least `snapshot_every` entries, and a log as large as the last
        // snapshot: a snapshot costs the size of the state, so the interval
        // grows with it and the cost per entry stays flat as the state
        // grows, while the log stays no larger than one snapshot.
        let store = self.node.store();
        let due = applied >= self.last_snapshot + self.snapshot_every
            && store.log_bytes() >= store.snapshot_data().0.len() as u64;
        if !(due || store.snapshot_wanted()) || applied <= self.last_snapshot {
            return Ok(());
        }
        let Some(meta) = self.node.store().snapshot_meta(applied)? else {
            return Ok(());
        };
        let tmp = self.node.store().prepared_path(applied);
        let copy = self
            .shared
            .state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (tx, rx) = oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                let r = serde_json::to_vec(&copy)
                    .map_err(|e| e.to_string())
                    .and_then(|data| {
                        snapfile::write_tmp(&tmp, &meta, &data)
                            .map(|()| (meta, data))
                            .map_err(|e| e.to_string())
                    });
                let _ = tx.send(r);
            });
        match spawned {
            Ok(_) => self.encoding = Some(rx),
            Err(e) => tracing::warn!(error = %e, "starting the snapshot thread"),
        }
        Ok(())
    }

    /// Stores an encoded snapshot and compacts the log it covers.
    fn store_snapshot(&mut self, done: Result<(SnapshotMetadata, Vec<u8>), String>) {
        let (meta, data) = match done {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "encoding a snapshot");
                return;
            }
        };
        let index = meta.index;
        match self.node.mut_store().install_prepared(meta, data) {
            Ok(()) => {
                self.last_snapshot = self.last_snapshot.max(index);
                tracing::debug!(index, "snapshot taken, log compacted");
            }
            Err(e) => tracing::error!(error = %e, "storing a snapshot"),
        }
    }
}

/// Waits for the snapshot being encoded, if any (forever when none is).
async fn wait_encoded(rx: &mut Option<Encoding>) -> Result<(SnapshotMetadata, Vec<u8>), String> {
    match rx {
        Some(rx) => rx
            .await
            .unwrap_or_else(|_| Err("snapshot thread died".into())),
        None => std::future::pending().await,
    }
}

/// Keeps the state's address book in step with a membership change.
fn record_member(state: &mut ClusterState, cc: &ConfChange) {
    match cc.get_change_type() {
        ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
            if let Ok(addr) = std::str::from_utf8(cc.get_context())
                && !addr.is_empty()
            {
                state.members.insert(cc.node_id, addr.to_string());
            }
        }
        ConfChangeType::RemoveNode => {
            state.members.remove(&cc.node_id);
        }
    }
}
