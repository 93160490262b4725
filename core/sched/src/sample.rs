//! Memory for bounded sampling: the nodes recently chosen for tasks of the
//! same kind.
//!
//! A sampled scan ([`crate::Pipeline::sample`]) scores only the first
//! feasible nodes from a rotating start, so a packing policy rarely sees
//! the partly used node its best choice would be: a share of a GPU then
//! takes a fresh GPU of a whole NVLink island that a later 8-GPU task
//! needed. The recently chosen nodes for the same kind of task are where
//! such partly used capacity is, so each sampled decision also scores
//! them (when still feasible) beside the rotating sample.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use crate::cluster::{GPU_MILLI, TaskRequest};

/// Recently chosen nodes per kind of task.
#[derive(Debug, Default)]
pub struct HotSet {
    cap: usize,
    rings: Mutex<HashMap<u32, VecDeque<usize>>>,
}

/// The kind of a task, as far as where its leftovers are: CPU only, a
/// share of a GPU, a MIG instance, or whole GPUs by count.
fn kind(task: &TaskRequest) -> u32 {
    match &task.gpus {
        None => u32::from(task.cores > 0) | (u32::from(task.nics.is_some()) << 1),
        Some(g) if g.mig_profile.is_some() => 4,
        Some(g) if g.milli < GPU_MILLI => 5,
        Some(g) => 8 + g.count.min(16),
    }
}

impl HotSet {
    /// Remembers up to `cap` nodes per kind of task (0: none).
    pub fn new(cap: usize) -> HotSet {
        HotSet {
            cap,
            rings: Mutex::new(HashMap::new()),
        }
    }

    /// How many nodes it remembers per kind.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// The nodes recently chosen for tasks like `task`, newest first, that
    /// are below `n`.
    pub fn nodes(&self, task: &TaskRequest, n: usize) -> Vec<usize> {
        let rings = self.rings.lock().unwrap_or_else(PoisonError::into_inner);
        rings
            .get(&kind(task))
            .map(|r| r.iter().copied().filter(|&i| i < n).collect())
            .unwrap_or_default()
    }

    /// Records that `node` was chosen for `task`.
    pub fn record(&self, task: &TaskRequest, node: usize) {
        if self.cap == 0 {
            return;
        }
        let mut rings = self.rings.lock().unwrap_or_else(PoisonError::into_inner);
        let ring = rings.entry(kind(task)).or_default();
        ring.retain(|&i| i != node);
        ring.push_front(node);
        ring.truncate(self.cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::GpuRequest;

    #[test]
    fn newest_first_bounded_and_per_kind() {
        let h = HotSet::new(2);
        let cpu = TaskRequest::default();
        let share = TaskRequest {
            gpus: Some(GpuRequest {
                count: 1,
                milli: 250,
                ..Default::default()
            }),
            ..Default::default()
        };
        for i in [1, 2, 1, 3] {
            h.record(&cpu, i);
        }
        h.record(&share, 9);
        assert_eq!(h.nodes(&cpu, 10), vec![3, 1]);
        assert_eq!(h.nodes(&share, 10), vec![9]);
        assert_eq!(h.nodes(&share, 5), Vec::<usize>::new());
        let off = HotSet::new(0);
        off.record(&cpu, 1);
        assert!(off.nodes(&cpu, 10).is_empty());
    }
}
