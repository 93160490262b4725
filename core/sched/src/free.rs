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
    /// The speeds of the two fastest NICs up and not taken, fastest first,
    /// as Mb/s + 1 (0: no such NIC; a NIC of unknown speed counts 1).
    pub nic_speed: [u32; 2],
    /// The same among NICs with RDMA.
    pub rdma_speed: [u32; 2],
    /// GPUs with nothing used.
    pub gpus_idle: u32,
    /// The most free thousandths on one GPU.
    pub gpu_share: u32,
    /// The most idle GPUs connected by NVLink (from the lowest of them, as
    /// the best-set search counts); [`u32::MAX`] when the node has more
    /// GPUs than that search handles exhaustively (the count is unknown).
    pub nvlink_idle: u32,
    /// MIG instances not taken (of any profile).
    pub mig: u32,
}

/// What a filter requires a node to have free for a task: a node short of
/// it is certainly turned down ([`crate::FilterPlugin::need`]), so a
/// decision need not ask about it (or about its class) at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Need {
    /// The node must be ready.
    pub ready: bool,
    /// Free CPU, millicores.
    pub cpu: u64,
    /// Free memory, bytes.
    pub memory: u64,
    /// Free exclusive cores.
    pub cores: u32,
    /// Free NICs.
    pub nics: u32,
    /// Idle GPUs.
    pub gpus_idle: u32,
    /// Free thousandths on one GPU.
    pub gpu_share: u32,
    /// MIG instances not taken.
    pub mig: u32,
}

impl Need {
    /// What fitting `task` at all takes: ready, its CPU (shared and
    /// exclusive cores), memory, cores and NICs, and its whole GPUs idle,
    /// its share free on one GPU or a MIG instance free.
    pub fn of(task: &crate::TaskRequest) -> Need {
        let mut need = Need {
            ready: true,
            cpu: task.cpu_demand(),
            memory: task.memory,
            cores: task.cores,
            nics: task.nics.as_ref().map_or(0, |n| n.count),
            ..Need::default()
        };
        if let Some(g) = task.gpus.as_ref().filter(|g| g.count > 0) {
            if g.mig_profile.is_some() {
                need.mig = 1;
            } else if g.milli >= GPU_MILLI {
                need.gpus_idle = g.count;
            } else if g.count > 0 {
                need.gpu_share = g.milli;
            }
        }
        need
    }

    /// What meeting both `self` and `other` takes.
    pub fn and(self, other: Need) -> Need {
        Need {
            ready: self.ready || other.ready,
            cpu: self.cpu.max(other.cpu),
            memory: self.memory.max(other.memory),
            cores: self.cores.max(other.cores),
            nics: self.nics.max(other.nics),
            gpus_idle: self.gpus_idle.max(other.gpus_idle),
            gpu_share: self.gpu_share.max(other.gpu_share),
            mig: self.mig.max(other.mig),
        }
    }

    /// Whether a node `ready` (or not) with `free` has it.
    pub fn met(&self, ready: bool, free: &Free) -> bool {
        (ready || !self.ready)
            && free.cpu >= self.cpu
            && free.memory >= self.memory
            && free.cores >= self.cores
            && free.nics >= self.nics
            && free.gpus_idle >= self.gpus_idle
            && free.gpu_share >= self.gpu_share
            && free.mig >= self.mig
    }
}

impl NodeState {
    /// Refreshes what is derived from `gpus`, `cores`, `nics` and the used
    /// CPU and memory ([`NodeState::free`], `gpu_free`, `numa_free`).
    /// [`crate::Cluster::new`] calls it;
    /// whoever changes those fields directly afterwards calls it again.
    pub fn repack(&mut self) {
        self.repack_gpus();
        self.recount_cores();
        self.recount_memory();
        self.recount_nics();
    }

    pub(crate) fn recount_nics(&mut self) {
        let mut count = 0;
        let (mut any, mut rdma) = ([0u32; 2], [0u32; 2]);
        let top2 = |best: &mut [u32; 2], speed: u32| {
            if speed > best[0] {
                *best = [speed, best[0]];
            } else if speed > best[1] {
                best[1] = speed;
            }
        };
        for n in self.nics.iter().filter(|n| n.up && !n.taken) {
            count += 1;
            let speed = n.speed_mbps.saturating_add(1).min(u64::from(u32::MAX)) as u32;
            top2(&mut any, speed);
            if n.rdma {
                top2(&mut rdma, speed);
            }
        }
        self.free.nics = count;
        self.free.nic_speed = any;
        self.free.rdma_speed = rdma;
    }

    /// Whether `count` free NICs of at least `min_speed_mbps` (with RDMA
    /// if `rdma`) exist: `Some` when the kept speeds answer (up to two
    /// NICs), `None` when the NICs must be counted.
    pub fn nics_answer(&self, count: u32, min_speed_mbps: u64, rdma: bool) -> Option<bool> {
        let speeds = if rdma {
            self.free.rdma_speed
        } else {
            self.free.nic_speed
        };
        match count {
            0 => Some(true),
            1 | 2 => Some(u64::from(speeds[count as usize - 1]) > min_speed_mbps),
            _ => None,
        }
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
        self.free.mig = self
            .gpus
            .iter()
            .flat_map(|g| &g.mig)
            .filter(|m| !m.taken)
            .count() as u32;
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
        self.free.cores = self.cores.len() as u32 - taken;
        self.free.numa_cores = self.numa_free.iter().map(|x| x.1).max().unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use berth_model::quantity::MilliCpu;
    use berth_model::task::{Allocation, GpuGrant};

    use super::*;
    use crate::cluster::{CoreState, GpuState, NicState};
    use crate::policy::rng::Rng;

    /// The kept NIC speeds answer as counting the NICs does.
    #[test]
    fn nic_speeds_answer_like_counting() {
        let mut r = Rng::new(5);
        for _ in 0..3000 {
            let mut n = NodeState {
                nics: (0..r.index(5))
                    .map(|i| NicState {
                        name: format!("eth{i}"),
                        speed_mbps: [0, 1_000, 10_000, 25_000, 100_000][r.index(5)],
                        rdma: r.index(2) == 0,
                        up: r.index(5) > 0,
                        taken: r.index(3) == 0,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            n.repack();
            let count = r.index(4) as u32;
            let speed = [0, 1_000, 10_000, 100_000, 200_000][r.index(5)];
            let rdma = r.index(2) == 0;
            let counted = n
                .nics
                .iter()
                .filter(|x| x.up && !x.taken && x.speed_mbps >= speed && (!rdma || x.rdma))
                .count()
                >= count as usize;
            if let Some(answer) = n.nics_answer(count, speed, rdma) {
                assert_eq!(
                    answer, counted,
                    "{count} x {speed} rdma {rdma}: {:?}",
                    n.nics
                );
            } else {
                assert!(count > 2);
            }
        }
    }

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
            nics: vec![NicState {
                name: "eth0".into(),
                speed_mbps: 100_000,
                rdma: true,
                up: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        n.repack();
        let before = n.free;
        assert_eq!((before.nics, before.rdma_speed), (1, [100_001, 0]));
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
            nics: vec!["eth0".into()],
            ..Default::default()
        };
        n.take(&a);
        // GPU 1 is shared now: 0 and 2 are no longer connected.
        assert_eq!(
            (n.free.gpus_idle, n.free.nvlink_idle, n.free.gpu_share),
            (3, 1, 1000)
        );
        assert_eq!((n.free.cores, n.free.numa_cores, n.free.cpu), (3, 2, 6500));
        assert_eq!((n.free.nics, n.free.nic_speed), (0, [0, 0]));
        assert_eq!(n.nics_answer(1, 0, false), Some(false));
        let mut fresh = n.clone();
        fresh.repack();
        assert_eq!(fresh.free, n.free);
        n.release(&a);
        assert_eq!(n.free, before);
    }
}
