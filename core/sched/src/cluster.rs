//! The scheduler's view of the cluster: nodes with capacity and what is
//! already allocated on them.

use std::collections::{BTreeSet, HashMap};

use berth_model::task::Allocation;

/// One node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeState {
    /// Node name (unique).
    pub name: String,
    /// Whether the node takes new work.
    pub ready: bool,
    /// Allocatable CPU, millicores.
    pub cpu_capacity: u64,
    /// Allocatable memory, bytes.
    pub mem_capacity: u64,
    /// CPU already allocated, millicores.
    pub cpu_used: u64,
    /// Memory already allocated, bytes.
    pub mem_used: u64,
    /// Host ports already taken.
    pub ports_used: BTreeSet<u16>,
}

impl NodeState {
    /// Free CPU in millicores.
    pub fn cpu_free(&self) -> u64 {
        self.cpu_capacity.saturating_sub(self.cpu_used)
    }

    /// Free memory in bytes.
    pub fn mem_free(&self) -> u64 {
        self.mem_capacity.saturating_sub(self.mem_used)
    }

    /// Accounts an allocation on this node.
    pub fn take(&mut self, a: &Allocation) {
        self.cpu_used += a.cpu.0;
        self.mem_used += a.memory.0;
        self.ports_used.extend(a.ports.iter().copied());
    }
}

/// What a task asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskRequest {
    /// Task id.
    pub id: String,
    /// CPU, millicores.
    pub cpu: u64,
    /// Memory, bytes.
    pub memory: u64,
    /// Host ports it needs.
    pub ports: Vec<u16>,
}

/// A snapshot of all nodes, ordered by name so decisions are deterministic.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    nodes: Vec<NodeState>,
    by_name: HashMap<String, usize>,
}

impl Cluster {
    /// Builds a snapshot; nodes are sorted by name.
    pub fn new(mut nodes: Vec<NodeState>) -> Cluster {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let by_name = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        Cluster { nodes, by_name }
    }

    /// All nodes, by name.
    pub fn nodes(&self) -> &[NodeState] {
        &self.nodes
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.by_name.get(name).map(|&i| &self.nodes[i])
    }

    /// Accounts a placement so the next decision sees it. Returns false if
    /// the node is unknown.
    pub fn commit(&mut self, node: &str, a: &Allocation) -> bool {
        match self.by_name.get(node) {
            Some(&i) => {
                self.nodes[i].take(a);
                true
            }
            None => false,
        }
    }
}
