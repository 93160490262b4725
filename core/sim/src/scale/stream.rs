//! The synthetic cluster and task stream of the scale benchmark.

use berth_hostprobe::load_fixture;
use berth_sched::cluster::{
    GpuRequest, Interconnect, NicRequest, NodeState, NumaPolicy, TaskRequest,
};
use berth_sched::policy::Rng;

use crate::SimError;

/// Node kinds and their share of the cluster, in tenths: one DGX H100,
/// two 4×A100 PCIe, one A100 with MIG, six dual-socket CPU servers.
pub const MIX: [(&str, usize); 4] = [
    ("dgx-h100", 1),
    ("a100-pcie-4x", 2),
    ("a100-mig", 1),
    ("cpu-2s", 6),
];

/// `n` nodes built from the hostprobe fixtures in [`MIX`] proportions,
/// interleaved, named `node-00000`...; capacity is one CPU per PU and the
/// inventory's memory.
pub fn cluster(n: usize) -> Result<Vec<NodeState>, SimError> {
    let mut templates = Vec::new();
    for (name, share) in MIX {
        let inv = load_fixture(name).map_err(|e| SimError::Fixture(e.to_string()))?;
        let node = NodeState::from_inventory("", &inv);
        templates.extend(std::iter::repeat_n(node, share));
    }
    let width = n.saturating_sub(1).to_string().len().max(5);
    Ok((0..n)
        .map(|i| {
            let mut node = templates[i % templates.len()].clone();
            node.name = format!("node-{i:0width$}");
            node
        })
        .collect())
}

const GIB: u64 = 1 << 30;

/// A deterministic mixed stream of `n` tasks for `seed`: shared-CPU tasks
/// (45%), exclusive cores on one NUMA node (15%), a NIC of 10 Gb/s or more
/// (5%), a share of one GPU (17%), MIG instances (2%), whole GPUs (3.5%:
/// 1, 2, 4 or 8, NVLink for more than one), 8 NVLinked GPUs with 2 RDMA
/// NICs (0.3%), and two cores on one NUMA node with a NIC (12.2%). Ten
/// tasks per node ask for about 95% of the GPUs, so the cluster fills
/// towards the end of the stream and multi-GPU tasks start failing.
pub fn tasks(n: usize, seed: u64) -> Vec<TaskRequest> {
    let mut r = Rng::stream(seed, 3);
    (0..n)
        .map(|i| {
            let mut t = TaskRequest {
                id: format!("t{i}"),
                ..Default::default()
            };
            let roll = r.index(1000);
            match roll {
                0..450 => {
                    t.cpu = 250 * (1 + r.below(16));
                    t.memory = GIB / 4 * (1 + r.below(32));
                }
                450..600 => {
                    t.cores = [1, 2, 4, 8][r.index(4)];
                    t.memory = GIB * (1 + r.below(16));
                    t.numa = NumaPolicy::SingleNumaNode;
                }
                600..650 => {
                    t.cpu = 1000;
                    t.memory = GIB;
                    t.nics = Some(NicRequest {
                        count: 1,
                        min_speed_mbps: 10_000,
                        rdma: false,
                    });
                }
                650..820 => {
                    t.cpu = 1000 * (1 + r.below(4));
                    t.memory = GIB * (1 + r.below(8));
                    t.gpus = Some(GpuRequest {
                        count: 1,
                        milli: [100, 250, 500][r.index(3)],
                        ..Default::default()
                    });
                }
                820..840 => {
                    t.cpu = 2000;
                    t.memory = 4 * GIB;
                    let profile = ["1g.10gb", "2g.20gb", "3g.40gb"][r.index(3)];
                    t.gpus = Some(GpuRequest {
                        count: 1,
                        milli: 1000,
                        mig_profile: Some(profile.into()),
                        ..Default::default()
                    });
                }
                840..875 => {
                    let count = [1, 1, 1, 1, 1, 2, 2, 4, 4, 8][r.index(10)];
                    t.cpu = 4000 * u64::from(count);
                    t.memory = 16 * GIB * u64::from(count);
                    t.gpus = Some(GpuRequest {
                        count,
                        milli: 1000,
                        interconnect: if count > 1 {
                            Interconnect::NvLink
                        } else {
                            Interconnect::Any
                        },
                        ..Default::default()
                    });
                }
                875..878 => {
                    t.cpu = 32_000;
                    t.memory = 256 * GIB;
                    t.gpus = Some(GpuRequest {
                        count: 8,
                        milli: 1000,
                        interconnect: Interconnect::NvLink,
                        ..Default::default()
                    });
                    t.nics = Some(NicRequest {
                        count: 2,
                        min_speed_mbps: 100_000,
                        rdma: true,
                    });
                }
                _ => {
                    t.cores = 2;
                    t.memory = 2 * GIB;
                    t.numa = NumaPolicy::SingleNumaNode;
                    t.nics = Some(NicRequest {
                        count: 1,
                        min_speed_mbps: 10_000,
                        rdma: false,
                    });
                }
            }
            t
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_follows_the_mix() {
        let c = cluster(20).unwrap();
        assert_eq!(c.len(), 20);
        assert_eq!(c[0].name, "node-00000");
        assert_eq!(c.iter().filter(|n| n.gpus.len() == 8).count(), 2);
        assert_eq!(c.iter().filter(|n| n.gpus.is_empty()).count(), 12);
        assert!(
            c.iter()
                .all(|n| n.cpu_capacity > 0 && n.mem_capacity > 0 && !n.cores.is_empty())
        );
    }

    #[test]
    fn stream_is_deterministic() {
        assert_eq!(tasks(500, 1), tasks(500, 1));
        assert_ne!(tasks(500, 1), tasks(500, 2));
        assert!(
            tasks(500, 1)
                .iter()
                .any(|t| t.gpus.as_ref().is_some_and(|g| g.mig_profile.is_some()))
        );
    }
}
