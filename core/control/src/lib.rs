//! Berth's controllers: pure functions from what the replicated state
//! says (and the time, passed in) to what should change. No I/O and no
//! clock of their own, like `berth-sched`: the leader runs them and
//! commits what they decide; the state machine re-checks every decision
//! when it applies it, so one made on a stale view does no harm.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod job;
pub mod rollout;

pub use rollout::{Decision, Limits, Progress, decide};
