//! What is free on a node, kept beside the node's own lists so that the
//! hot path of a decision reads a few packed numbers instead of walking
//! cores, GPUs and NICs: [`Free`] (one cache line), the packed
//! [`NodeState::gpu_free`] and the free cores per NUMA node.
//!
//! [`NodeState::take`] and [`NodeState::release`] keep them;
//! [`NodeState::repack`] recomputes them from the lists (the
//! [`crate::Cluster`] does at construction).

use crate::cluster::{GPU_MILLI, NodeState};
use crate::nvlink::{self, Links};

/// A node's free capacity in one cache line: the lean filter decides most
/// nodes by it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C, align(64))]
pub struct Free {
    /// Free CPU, millicores.
    pub cpu: u64,
    /// Free memory, bytes.
    pub memory: u64,
    /// Free cores.
    pub cores: u32,
    /// The most free cores on one NUMA node.
    pub numa_cores: u32,
    /// NICs up and not taken.
    pub nics: u32,
    /// GPUs with nothing used.
    pub gpus_idle: u32,
    /// The most free thousandths on one GPU.
    pub gpu_share: u32,
    /// The most idle GPUs connected by NVLink (from the lowest of them, as
    /// the best-set search counts); [`u32::MAX`] when the node has more
    /// GPUs than that search handles exhaustively (the count is unknown).
    pub nvlink_idle: u32,
}

impl NodeState {
    /// Refreshes what is derived from `gpus`, `cores`, `nics` and the used
    /// CPU and memory ([`NodeState::free`], `gpu_free`, `numa_free`,
    /// `cores_taken`, `nics_free`). [`crate::Cluster::new`] calls it;
    /// whoever changes those fields directly afterwards calls it again.
    pub fn repack(&mut self) {
        self.repack_gpus();
        self.recount_cores();
        self.recount_memory();
        self.nics_free = self.nics.iter().filter(|n| n.up && !n.taken).count() as u32;
        self.free.nics = self.nics_free;
    }

    pub(crate) fn recount_memory(&mut self) {
        self.free.cpu = self.cpu_free();
        self.free.memory = self.mem_free();
    }

    pub(crate) fn repack_gpus(&mut self) {
        self.gpu_free.clear();
        self.gpu_free
            .extend(self.gpus.iter().map(|g| g.milli_free() as u16));
        let idle: Vec<u32> = self
            .gpus
            .iter()
            .filter(|g| g.milli_used == 0)
            .map(|g| g.index)
            .collect();
        self.free.gpus_idle = idle.len() as u32;
        self.free.gpu_share = self.gpus.iter().map(|g| g.milli_free()).max().unwrap_or(0);
        self.free.nvlink_idle = if idle.len() > nvlink::MAX_POOL {
            u32::MAX
        } else {
            Links::new(self, &idle).most_connected(idle.len()) as u32
        };
        debug_assert!(self.free.gpu_share <= GPU_MILLI);
    }

    pub(crate) fn recount_cores(&mut self) {
        self.numa_free.clear();
        let mut taken = 0;
        for c in &self.cores {
            taken += u32::from(c.taken);
            let i = match self.numa_free.iter().position(|(n, _)| *n == c.numa) {
                Some(i) => i,
                None => {
                    self.numa_free.push((c.numa, 0));
                    self.numa_free.len() - 1
                }
            };
            self.numa_free[i].1 += u32::from(!c.taken);
        }
        self.numa_free.sort_unstable();
        self.cores_taken = taken;
        self.free.cores = self.cores.len() as u32 - taken;
        self.free.numa_cores = self.numa_free.iter().map(|x| x.1).max().unwrap_or(0);
    }

    /// Free cores on NUMA node `numa`.
    pub fn numa_cores_free(&self, numa: u32) -> u32 {
        self.numa_free
            .iter()
            .find(|(n, _)| *n == numa)
            .map_or(0, |(_, f)| *f)
    }
}

#[cfg(test)]
mod tests {
    use berth_model::quantity::MilliCpu;
    use berth_model::task::{Allocation, GpuGrant};

    use super::*;
    use crate::cluster::{CoreState, GpuState};

    #[test]
    fn kept_through_take_and_release() {
        let gpu = |index: u32, peers: &[u32]| GpuState {
            index,
            nvlinks: peers.iter().map(|p| (*p, 2)).collect(),
            ..Default::default()
        };
        let mut n = NodeState {
            cpu_capacity: 8000,
            mem_capacity: 1 << 30,
            // 0-1-2 linked in a chain, 3 alone.
            gpus: vec![gpu(0, &[1]), gpu(1, &[0, 2]), gpu(2, &[1]), gpu(3, &[])],
            cores: (0..4)
                .map(|id| CoreState {
                    id,
                    numa: id / 2,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        n.repack();
        let before = n.free;
        assert_eq!(
            (before.gpus_idle, before.nvlink_idle, before.gpu_share),
            (4, 3, 1000)
        );
        assert_eq!((before.cores, before.numa_cores, before.cpu), (4, 2, 8000));
        let a = Allocation {
            cpu: MilliCpu(500),
            gpus: vec![GpuGrant {
                index: 1,
                uuid: String::new(),
                milli: 250,
            }],
            cores: vec![0],
            ..Default::default()
        };
        n.take(&a);
        // GPU 1 is shared now: 0 and 2 are no longer connected.
        assert_eq!(
            (n.free.gpus_idle, n.free.nvlink_idle, n.free.gpu_share),
            (3, 1, 1000)
        );
        assert_eq!((n.free.cores, n.free.numa_cores, n.free.cpu), (3, 2, 6500));
        let mut fresh = n.clone();
        fresh.repack();
        assert_eq!(fresh.free, n.free);
        n.release(&a);
        assert_eq!(n.free, before);
    }
}
