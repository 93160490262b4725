//! What a node offers and what its tasks hold, by kind: one computation
//! for the metrics, the overview and the node page.

use std::collections::BTreeMap;

use berth_model::node::{Node, NodeStatus};
use berth_store::state::ClusterState;

/// A node's resources, offered and held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NodeUsage {
    /// ready | down | drained
    pub status: &'static str,
    /// CPU offered (millicores).
    pub cpu: u64,
    /// Memory offered (bytes).
    pub memory: u64,
    /// CPU held (millicores; exclusive cores count whole).
    pub cpu_held: u64,
    /// Memory held (bytes).
    pub memory_held: u64,
    /// GPUs by model: (on the node, held; shares rounded up to whole GPUs).
    pub gpus: BTreeMap<String, (u64, u64)>,
}

/// The status word of a node: a drained node is `drained` whether up or
/// down.
pub fn status_of(n: &Node) -> &'static str {
    if n.drained {
        "drained"
    } else if n.status == NodeStatus::Ready {
        "ready"
    } else {
        "down"
    }
}

/// What node `name` offers and holds (costs its tasks).
pub fn of_node(state: &ClusterState, name: &str, n: &Node) -> NodeUsage {
    let gpus = n
        .info
        .inventory
        .as_ref()
        .map(|i| &i.gpus[..])
        .unwrap_or(&[]);
    let mut u = NodeUsage {
        status: status_of(n),
        cpu: n.info.cpu.0,
        memory: n.info.memory.0,
        ..NodeUsage::default()
    };
    for g in gpus {
        u.gpus.entry(g.model.clone()).or_default().0 += 1;
    }
    let mut milli: BTreeMap<&str, u64> = BTreeMap::new();
    for t in state.tasks.on_node(name) {
        if !state.holds_resources(t) {
            continue;
        }
        let Some(a) = &t.allocation else { continue };
        u.cpu_held += a.cpu.0 + a.cores.len() as u64 * 1000;
        u.memory_held += a.memory.0;
        for g in &a.gpus {
            if let Some(gpu) = gpus.iter().find(|x| x.index == g.index) {
                *milli.entry(gpu.model.as_str()).or_default() += u64::from(g.milli);
            }
        }
    }
    for (model, m) in milli {
        u.gpus.entry(model.to_string()).or_default().1 = m.div_ceil(1000);
    }
    u
}
