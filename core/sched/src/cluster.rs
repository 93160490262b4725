//! The scheduler's view of the cluster: nodes with their hardware and what
//! is already allocated on them, and what a task asks for.
//!
//! The node types live in `node.rs` and the request types in `request.rs`;
//! they are re-exported here, so `berth_sched::cluster::X` names them all.

use std::collections::HashMap;

use berth_model::task::Allocation;

use crate::classes::Classes;

pub use crate::node::{CoreState, DeviceState, GPU_MILLI, GpuState, MigSlot, NicState, NodeState};
pub use crate::request::{GpuRequest, Interconnect, NicRequest, NumaPolicy, Pinned, TaskRequest};

/// A snapshot of all nodes, ordered by name so decisions are deterministic,
/// and their classes (see [`crate::classes`]), kept as nodes change.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    nodes: Vec<NodeState>,
    by_name: HashMap<String, usize>,
    fingerprint: u64,
    classes: Classes,
}

impl Cluster {
    /// Builds a snapshot; nodes are sorted by name.
    pub fn new(mut nodes: Vec<NodeState>) -> Cluster {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let mut h = crate::policy::hash::FxHasher::default();
        for (i, n) in nodes.iter_mut().enumerate() {
            n.slot = i as u32;
            n.repack();
            n.hash_static(&mut h);
        }
        let by_name = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        Cluster {
            classes: Classes::new(&nodes),
            nodes,
            by_name,
            fingerprint: std::hash::Hasher::finish(&h),
        }
    }

    /// The nodes' classes: nodes alike in every input to a decision but
    /// their name.
    pub fn classes(&self) -> &Classes {
        &self.classes
    }

    /// A hash of what does not change as tasks come and go: the nodes,
    /// their capacity, hardware and attributes. Equal fingerprints mean
    /// the same node table (plugins that keep one refresh it on change).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// All nodes, by name.
    pub fn nodes(&self) -> &[NodeState] {
        &self.nodes
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.by_name.get(name).map(|&i| &self.nodes[i])
    }

    /// [`Cluster::commit`] for a task of `group`, counted for constraints.
    pub fn commit_for(&mut self, node: &str, group: &str, a: &Allocation) -> bool {
        match self.by_name.get(node) {
            Some(&i) => {
                self.nodes[i].take(a);
                *self.nodes[i].groups.entry(group.to_string()).or_default() += 1;
                self.classes.update(&self.nodes, i);
                true
            }
            None => false,
        }
    }

    /// Undoes [`Cluster::commit_for`]: the allocation is free again and the
    /// group counts one task less. Returns false if the node is unknown.
    pub fn release_for(&mut self, node: &str, group: &str, a: &Allocation) -> bool {
        let Some(&i) = self.by_name.get(node) else {
            return false;
        };
        let n = &mut self.nodes[i];
        n.release(a);
        if let Some(c) = n.groups.get_mut(group) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                n.groups.remove(group);
            }
        }
        self.classes.update(&self.nodes, i);
        true
    }

    /// Marks a node as taking new work or not. Returns false if unknown.
    pub fn set_ready(&mut self, node: &str, ready: bool) -> bool {
        match self.by_name.get(node) {
            Some(&i) => {
                if self.nodes[i].ready != ready {
                    self.nodes[i].ready = ready;
                    self.classes.update(&self.nodes, i);
                }
                true
            }
            None => false,
        }
    }

    /// Accounts a placement so the next decision sees it. Returns false if
    /// the node is unknown.
    pub fn commit(&mut self, node: &str, a: &Allocation) -> bool {
        match self.by_name.get(node) {
            Some(&i) => {
                self.nodes[i].take(a);
                self.classes.update(&self.nodes, i);
                true
            }
            None => false,
        }
    }
}
