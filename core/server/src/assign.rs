//! Assignment streams: each node hears only about its own tasks, and only
//! when they change.
//!
//! One router per server reads the store's event batches and hands each
//! stream the events of its node (shared, not copied). A stream sends its
//! node's full set once, then deltas: the current records of the tasks
//! that changed, the ids of those gone, and the launch specs of app
//! versions it has not sent before. Cost per apply: the events it holds,
//! plus the nodes they touch; nodes untouched do nothing.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use berth_proto as pb;
use berth_store::{Batch, ClusterState, Event, Store};
use tokio::sync::mpsc;

use crate::convert;

/// What the router hands a stream.
pub enum Routed {
    /// These events of this batch touch the stream's node.
    Events(Arc<Batch>, Vec<u32>),
    /// The router lost track (a snapshot replaced the state, or it fell
    /// behind): send a full set again.
    Resync,
}

type Streams = HashMap<String, Vec<mpsc::UnboundedSender<Routed>>>;

/// Routes event batches to the streams of the nodes they touch.
#[derive(Clone, Default)]
pub struct Router {
    streams: Arc<Mutex<Streams>>,
}

/// The node a task event is about.
fn node_of(e: &Event) -> Option<&str> {
    match e {
        Event::TaskUpdated(t) | Event::TaskRemoved(t) => t.node.as_deref(),
        _ => None,
    }
}

impl Router {
    /// Registers a stream for `node`; register before reading the full set,
    /// so nothing applied after the read is missed.
    pub(crate) fn register(&self, node: &str) -> mpsc::UnboundedReceiver<Routed> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().entry(node.to_string()).or_default().push(tx);
        rx
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Streams> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands one batch to the streams of the nodes it touches.
    pub(crate) fn route(&self, batch: Arc<Batch>) {
        let mut streams = self.lock();
        if batch.reset {
            return Self::resync_all(&mut streams);
        }
        let mut per_node: HashMap<&str, Vec<u32>> = HashMap::new();
        for (i, e) in batch.events.iter().enumerate() {
            if let Some(n) = node_of(e)
                && streams.contains_key(n)
            {
                per_node.entry(n).or_default().push(i as u32);
            }
        }
        for (node, idx) in per_node {
            if let Some(list) = streams.get_mut(node) {
                list.retain(|tx| tx.send(Routed::Events(batch.clone(), idx.clone())).is_ok());
                if list.is_empty() {
                    streams.remove(node);
                }
            }
        }
    }

    fn resync_all(streams: &mut Streams) {
        for list in streams.values_mut() {
            list.retain(|tx| tx.send(Routed::Resync).is_ok());
        }
        streams.retain(|_, l| !l.is_empty());
    }

    /// Runs until the store stops: reads its batches and routes them.
    pub async fn run(self, store: Store) {
        loop {
            let mut sub = store.subscribe();
            // Anything applied before this subscription is in the full sets
            // the streams read after registering; a resubscription (after
            // falling behind) makes every stream resynchronize.
            Self::resync_all(&mut self.lock());
            while let Some(b) = sub.recv().await {
                self.route(b);
            }
            if store.is_closed() {
                return;
            }
            tracing::warn!("assignment router fell behind; streams resynchronize");
        }
    }
}

/// One node's stream: what it has sent so far.
pub struct Stream {
    node: String,
    version: u64,
    launches: HashSet<(String, u64)>,
}

impl Stream {
    pub fn new(node: String) -> Stream {
        Stream {
            node,
            version: 0,
            launches: HashSet::new(),
        }
    }

    /// The node's full set, as of `state`.
    pub fn full(&mut self, state: &ClusterState) -> pb::AssignmentUpdate {
        self.launches.clear();
        let tasks: Vec<pb::Task> = state.tasks.on_node(&self.node).map(convert::task).collect();
        let mut u = pb::AssignmentUpdate {
            version: state.applied_index(),
            since: self.version,
            full: true,
            ..Default::default()
        };
        u.launches = self.new_launches(state, &tasks);
        u.tasks = tasks;
        self.version = u.version;
        u
    }

    /// A delta with the current records of `touched` tasks (or their
    /// removal), as of `state`. `None` when nothing needs saying.
    pub fn delta(
        &mut self,
        state: &ClusterState,
        touched: &BTreeSet<String>,
    ) -> Option<pb::AssignmentUpdate> {
        if touched.is_empty() {
            return None;
        }
        let mut tasks = Vec::new();
        let mut removed = Vec::new();
        for id in touched {
            match state.tasks.get(id) {
                Some(t) if t.node.as_deref() == Some(self.node.as_str()) => {
                    tasks.push(convert::task(t));
                }
                _ => removed.push(id.clone()),
            }
        }
        let launches = self.new_launches(state, &tasks);
        let u = pb::AssignmentUpdate {
            version: state.applied_index().max(self.version),
            since: self.version,
            full: false,
            tasks,
            removed,
            launches,
        };
        self.version = u.version;
        Some(u)
    }

    /// Launch specs of the app versions of `tasks` not yet sent.
    fn new_launches(&mut self, state: &ClusterState, tasks: &[pb::Task]) -> Vec<pb::Launch> {
        let mut out = Vec::new();
        for t in tasks {
            let key = (t.app.clone(), t.version);
            if self.launches.contains(&key) {
                continue;
            }
            if let Some(spec) = state.apps.get(&t.app).and_then(|a| a.spec_of(t.version)) {
                out.push(convert::launch(spec, t.version));
                self.launches.insert(key);
            }
        }
        out
    }
}

/// The ids a routed message touches (`None`: resynchronize).
pub fn touched(r: &Routed, into: &mut BTreeSet<String>) -> bool {
    match r {
        Routed::Resync => false,
        Routed::Events(b, idx) => {
            for &i in idx {
                match &b.events[i as usize] {
                    Event::TaskUpdated(t) | Event::TaskRemoved(t) => {
                        into.insert(t.id.clone());
                    }
                    _ => {}
                }
            }
            true
        }
    }
}
