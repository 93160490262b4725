//! The scheduler's live view of the committed state: every node as the
//! scheduler sees it, with what each task holds, and the workload's task
//! shapes, kept up to date from the store's event batches. A change costs
//! the tasks it touches; the view is rebuilt from the whole state only when
//! the state was replaced (a snapshot) or the nodes changed.
//!
//! [`Live::sync`] runs under the state's read lock and drains every batch
//! published so far (batches are published under the write lock), so the
//! view matches that state exactly.

use std::collections::{BTreeMap, HashMap, HashSet};

use berth_model::node::NodeStatus;
use berth_model::task::{Allocation, Desired, Task, TaskState};
use berth_sched::policy::{PodShape, PolicyContext};
use berth_sched::{Cluster, NodeState, TaskRequest};
use berth_store::{ClusterState, Event, Store, Subscription};

/// What a task holds on its node.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    /// The node.
    pub node: String,
    /// The task's app (its group for constraints).
    pub app: String,
    /// What was set aside.
    pub allocation: Allocation,
    /// True when the task is told to stop or go (its resources free soon).
    pub leaving: bool,
    /// Its app's priority when the task was last changed (for preemption).
    pub priority: i32,
}

/// The live view.
pub struct Live {
    sub: Subscription,
    /// Nodes with what is allocated on them.
    pub cluster: Cluster,
    held: HashMap<String, Held>,
    shapes: HashMap<String, PodShape>,
    shape_counts: HashMap<PodShape, u64>,
    /// Each app version's shape (a shape is a function of the spec).
    app_shapes: HashMap<(String, u64), PodShape>,
    capacity: BTreeMap<String, u64>,
    /// Bumped whenever capacity is freed or the nodes change.
    pub freed: u64,
    /// Bumped on every change of what is held or of the nodes.
    pub changed: u64,
    /// Bumped when a plugin was installed, changed or removed.
    pub plugins: u64,
}

/// What a task holds, judged from its current record.
fn holding(state: &ClusterState, t: &Task) -> Option<Held> {
    if !state.holds_resources(t) {
        return None;
    }
    Some(Held {
        node: t.node.clone()?,
        app: t.app.clone(),
        allocation: t.allocation.clone()?,
        leaving: t.desired != Desired::Run,
        priority: state
            .apps
            .get(&t.app)
            .and_then(|a| a.spec_of(t.version))
            .map_or(0, |s| s.priority),
    })
}

/// Whether a task counts in the workload context (it runs or waits).
fn counts(t: &Task) -> bool {
    t.desired == Desired::Run && t.state != TaskState::Stopped
}

/// The shape of the tasks of an app version.
fn app_shape(spec: &berth_model::spec::AppSpec) -> PodShape {
    PodShape::of_task(&TaskRequest::for_spec("", spec))
}

/// The shape a task adds to the workload context, if it counts.
fn shape(state: &ClusterState, t: &Task) -> Option<PodShape> {
    counts(t).then_some(())?;
    Some(app_shape(state.apps.get(&t.app)?.spec_of(t.version)?))
}

/// The scheduler's node table for `state` (nothing allocated yet).
fn nodes(state: &ClusterState) -> Vec<NodeState> {
    state
        .nodes
        .values()
        .map(|n| {
            let mut node = NodeState {
                name: n.info.name.clone(),
                ready: n.status == NodeStatus::Ready && !n.drained,
                cpu_capacity: n.info.cpu.0,
                mem_capacity: n.info.memory.0,
                dynamic_ports: n.info.dynamic_ports,
                ..Default::default()
            };
            if let Some(inv) = &n.info.inventory {
                node = node.with_inventory(inv);
            }
            node.attributes
                .insert("hostname".into(), n.info.name.clone());
            node.attributes.extend(n.info.labels.clone());
            node
        })
        .collect()
}

/// GPU capacity per model (thousandths), for the workload context.
fn gpu_capacity(state: &ClusterState) -> BTreeMap<String, u64> {
    let mut capacity = BTreeMap::new();
    for inv in state
        .nodes
        .values()
        .filter_map(|n| n.info.inventory.as_ref())
    {
        for g in inv.gpus.iter().filter(|g| g.mig.instances.is_empty()) {
            *capacity.entry(g.model.clone()).or_default() += 1000;
        }
    }
    capacity
}

/// The scheduler's snapshot of `state`, built from scratch (what the live
/// view must always equal).
pub fn snapshot(state: &ClusterState) -> Cluster {
    let mut cluster = Cluster::new(nodes(state));
    for t in state.tasks.values() {
        if let Some(h) = holding(state, t) {
            cluster.commit_for(&h.node, &h.app, &h.allocation);
        }
    }
    cluster
}

/// The workload context of `state`, built from scratch.
pub fn workload_context(state: &ClusterState) -> PolicyContext {
    let shapes = state.tasks.values().filter_map(|t| shape(state, t));
    PolicyContext {
        capacity: gpu_capacity(state).into_iter().collect(),
        ..PolicyContext::from_shapes(shapes, 0)
    }
}

impl Live {
    /// A view of the store's current state, kept from now on by
    /// [`Live::sync`].
    pub fn new(store: &Store) -> Live {
        let sub = store.subscribe();
        let mut live = Live {
            sub,
            cluster: Cluster::default(),
            held: HashMap::new(),
            shapes: HashMap::new(),
            shape_counts: HashMap::new(),
            app_shapes: HashMap::new(),
            capacity: BTreeMap::new(),
            freed: 0,
            changed: 0,
            plugins: 0,
        };
        let state = store.read();
        live.rebuild(&state);
        live
    }

    fn rebuild(&mut self, state: &ClusterState) {
        // What is queued is already in `state`.
        while let Ok(Some(_)) = self.sub.try_recv() {}
        self.held.clear();
        self.shapes.clear();
        self.shape_counts.clear();
        self.app_shapes.clear();
        for t in state.tasks.values() {
            self.track(state, t);
        }
        self.rebuild_nodes(state);
        self.plugins += 1;
    }

    fn rebuild_nodes(&mut self, state: &ClusterState) {
        let mut cluster = Cluster::new(nodes(state));
        for h in self.held.values() {
            cluster.commit_for(&h.node, &h.app, &h.allocation);
        }
        self.cluster = cluster;
        self.capacity = gpu_capacity(state);
        self.freed += 1;
        self.changed += 1;
    }

    /// Starts tracking a task (nothing of it tracked yet); does not touch
    /// the cluster.
    fn track(&mut self, state: &ClusterState, t: &Task) {
        if let Some(h) = holding(state, t) {
            self.held.insert(t.id.clone(), h);
        }
        if let Some(s) = self.shape(state, t) {
            *self.shape_counts.entry(s.clone()).or_default() += 1;
            self.shapes.insert(t.id.clone(), s);
        }
    }

    /// Brings the view up to `state`, which the caller holds read-locked.
    /// Returns false when the subscription ended (the view was rebuilt).
    pub fn sync(&mut self, state: &ClusterState) -> bool {
        let mut touched: HashSet<String> = HashSet::new();
        let mut nodes_changed = false;
        loop {
            match self.sub.try_recv() {
                Ok(Some(b)) if b.reset => {
                    self.rebuild(state);
                    return true;
                }
                Ok(Some(b)) => {
                    for e in &b.events {
                        match e {
                            Event::TaskUpdated(t) | Event::TaskRemoved(t) => {
                                touched.insert(t.id.clone());
                            }
                            Event::NodeChanged(_) => nodes_changed = true,
                            Event::PluginChanged(_) => self.plugins += 1,
                            Event::AppChanged(a) => self.app_shapes.retain(|(n, _), _| n != a),
                            Event::Notice(_) => {}
                        }
                    }
                }
                Ok(None) => break,
                Err(()) => {
                    tracing::warn!("scheduler fell behind the event stream; rebuilding");
                    return false;
                }
            }
        }
        for id in &touched {
            self.update_task(state, id, !nodes_changed);
        }
        if nodes_changed {
            self.rebuild_nodes(state);
        }
        true
    }

    /// Re-judges one task from its current record; `apply` also adjusts
    /// the cluster (skipped when the nodes are rebuilt anyway).
    fn update_task(&mut self, state: &ClusterState, id: &str, apply: bool) {
        let cur = state.tasks.get(id);
        let hold = cur.and_then(|t| holding(state, t));
        if self.held.get(id) != hold.as_ref() {
            if let Some(old) = self.held.remove(id) {
                if apply {
                    self.cluster
                        .release_for(&old.node, &old.app, &old.allocation);
                }
                self.freed += 1;
            }
            if let Some(h) = hold {
                if apply {
                    self.cluster.commit_for(&h.node, &h.app, &h.allocation);
                }
                self.held.insert(id.to_string(), h);
            }
            self.changed += 1;
        }
        let s = cur.and_then(|t| self.shape(state, t));
        if self.shapes.get(id) != s.as_ref() {
            if let Some(old) = self.shapes.remove(id)
                && let Some(c) = self.shape_counts.get_mut(&old)
            {
                *c -= 1;
                if *c == 0 {
                    self.shape_counts.remove(&old);
                }
            }
            if let Some(s) = s {
                *self.shape_counts.entry(s.clone()).or_default() += 1;
                self.shapes.insert(id.to_string(), s);
            }
        }
    }

    /// [`shape`], from the cache of app versions' shapes.
    fn shape(&mut self, state: &ClusterState, t: &Task) -> Option<PodShape> {
        counts(t).then_some(())?;
        let spec = state.apps.get(&t.app)?.spec_of(t.version)?;
        let key = (t.app.clone(), t.version);
        Some(
            self.app_shapes
                .entry(key)
                .or_insert_with(|| app_shape(spec))
                .clone(),
        )
    }

    /// What the placement policy may know of the workload and the cluster.
    pub fn context(&self) -> PolicyContext {
        PolicyContext {
            capacity: self.capacity.clone().into_iter().collect(),
            ..PolicyContext::from_counts(self.shape_counts.iter().map(|(s, c)| (s.clone(), *c)), 0)
        }
    }

    /// Every task that holds resources, by id.
    pub fn held(&self) -> impl Iterator<Item = (&String, &Held)> {
        self.held.iter()
    }
}
