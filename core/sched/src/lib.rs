//! Berth's placement pipeline. Pure and deterministic: given a snapshot of
//! nodes and a task, it decides, and explains why. No clock, no I/O, no
//! async; the same inputs always give the same decision.
//!
//! The pipeline reads top to bottom, like Nomad's `feasible/stack.go`:
//! filters remove nodes that cannot host the task, scorers rank the rest,
//! and the allocator picks concrete resources on the best node.

pub mod builtin;
pub mod chosen;
pub mod cluster;
pub mod constraints;
pub mod free;
pub mod hw;
mod nvlink;
pub mod pipeline;
pub mod plugin;
pub mod policy;
pub mod preempt;
pub mod sample;
mod scan;
pub mod topology;

pub use cluster::{
    Cluster, CoreState, GpuRequest, GpuState, Interconnect, MigSlot, NicRequest, NicState,
    NodeState, NumaPolicy, TaskRequest,
};
pub use free::Free;
pub use pipeline::{Decision, NodeExplain, Pipeline};
pub use plugin::{AllocatePlugin, FilterPlugin, Rejection, ScorePlugin};
