//! The plugin traits. Native built-ins and Wasm plugins (`berth-wasm`) implement
//! the same traits; the pipeline cannot tell them apart. Calls are batched:
//! one call sees the task and every candidate node.

use std::borrow::Cow;

use berth_model::task::Allocation;

use crate::cluster::{Cluster, NodeState, TaskRequest};

/// Why a filter turned a node down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// A short category shared by nodes failing the same way, used to
    /// summarise (`insufficient memory`).
    pub reason: Cow<'static, str>,
    /// The node-specific detail (`need 64Mi, free 32Mi`).
    pub detail: Cow<'static, str>,
}

impl Rejection {
    /// Builds a rejection. Fixed texts are not copied: a scan that turns
    /// thousands of nodes down allocates nothing for it.
    pub fn new(
        reason: impl Into<Cow<'static, str>>,
        detail: impl Into<Cow<'static, str>>,
    ) -> Rejection {
        Rejection {
            reason: reason.into(),
            detail: detail.into(),
        }
    }
}

/// Decides which nodes can host a task.
pub trait FilterPlugin: Send + Sync {
    /// Plugin name, shown in explanations.
    fn name(&self) -> &str;
    /// For each node, `out[i]` is set to a rejection if it cannot host the task.
    /// `out` has the same length as `nodes` and starts all `None`.
    fn filter(&self, task: &TaskRequest, nodes: &[&NodeState], out: &mut [Option<Rejection>]);
    /// Called once per decision before any other call, with the whole
    /// snapshot (a plugin that keeps a table of nodes refreshes it when
    /// [`Cluster::fingerprint`] changes).
    fn prepare(&self, _cluster: &Cluster) {}
    /// Whether, for `task`, a node's verdict depends only on what the
    /// node's class holds equal (see [`crate::classes`]): not on its
    /// name, its position, its `hostname` label, the host ports it has in
    /// use, the tasks of each group on it, nor on the other nodes passed
    /// with it. Then the pipeline asks about one node of each class and
    /// applies the verdict to all of them; otherwise (the default) it asks
    /// about every node.
    fn class_pure(&self, _task: &TaskRequest) -> bool {
        false
    }
    /// What this filter certainly requires of a node for `task` (a node
    /// short of it is turned down, whatever the other nodes), if it can
    /// say: the pipeline then skips such nodes without asking.
    fn need(&self, _task: &TaskRequest) -> Option<crate::Need> {
        None
    }
    /// Whether, for `task`, [`FilterPlugin::need`] is the whole verdict: a
    /// node that meets it passes. The lean path ([`crate::Pipeline::place`]
    /// by class) then checks the need and does not call the filter.
    fn need_decides(&self, _task: &TaskRequest) -> bool {
        false
    }
}

/// Ranks feasible nodes.
pub trait ScorePlugin: Send + Sync {
    /// Plugin name, shown in explanations.
    fn name(&self) -> &str;
    /// Writes a score in `0.0..=100.0` for each node into `out`.
    fn score(&self, task: &TaskRequest, nodes: &[&NodeState], out: &mut [f64]);
    /// See [`FilterPlugin::prepare`].
    fn prepare(&self, _cluster: &Cluster) {}
    /// As [`FilterPlugin::class_pure`], for scores. A class-pure scorer
    /// may still normalise over the nodes it is given (by their least and
    /// greatest value), as one node of each class carries the same
    /// values; it may not depend on how many nodes share a value.
    fn class_pure(&self, _task: &TaskRequest) -> bool {
        false
    }
    /// What this scorer reads of `task`, as a key, when it is class-pure
    /// for it and a node's score depends on that node alone (not on the
    /// other nodes passed with it): two tasks with one key score alike on
    /// nodes of one class, so the pipeline keeps a class's score for the
    /// class's life ([`crate::memo`]). `None` (the default): scores are
    /// asked for every time.
    fn task_key(&self, _task: &TaskRequest) -> Option<u64> {
        None
    }
    /// After [`ScorePlugin::score`]: `Some` when the scorer failed and its
    /// failure policy says the decision must fail with it (every node is
    /// then turned down with that rejection).
    fn take_failure(&self) -> Option<Rejection> {
        None
    }
}

/// Chooses concrete resources on the chosen node.
pub trait AllocatePlugin: Send + Sync {
    /// Plugin name, shown in explanations.
    fn name(&self) -> &str;
    /// The allocation for `task` on `node`, or why it cannot be made.
    fn allocate(&self, task: &TaskRequest, node: &NodeState) -> Result<Allocation, Rejection>;
    /// See [`FilterPlugin::prepare`].
    fn prepare(&self, _cluster: &Cluster) {}
}
