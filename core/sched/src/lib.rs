//! Berth's placement pipeline: given a snapshot of nodes and a task, it
//! decides, and explains why. No clock, no I/O, no async. A [`Pipeline`]
//! carries state between decisions (the rotating sample start, the
//! hot-node memo, policy RNG streams and caches), so decisions are
//! deterministic given the same sequence of calls on the same pipeline
//! (see the crate README).
//!
//! The pipeline reads top to bottom, like Nomad's `feasible/stack.go`:
//! filters remove nodes that cannot host the task, scorers rank the rest,
//! and the allocator picks concrete resources on the best node.
#![forbid(unsafe_code)]

pub mod builtin;
mod by_class;
pub mod chosen;
pub mod classes;
pub mod cluster;
pub mod constraints;
pub mod free;
pub mod hw;
pub mod memo;
mod node;
mod nvlink;
pub mod pipeline;
pub mod plugin;
pub mod policy;
pub mod preempt;
mod request;
pub mod sample;
mod scan;
pub mod topology;

pub use cluster::{
    Cluster, CoreState, GpuRequest, GpuState, Interconnect, MigSlot, NicRequest, NicState,
    NodeState, NumaPolicy, Pinned, TaskRequest,
};
pub use free::{Free, Need};
pub use pipeline::{Decision, NodeExplain, Pipeline};
pub use plugin::{AllocatePlugin, FilterPlugin, Rejection, ScorePlugin};
