//! A lean feasibility filter for simulations and large clusters.

use crate::cluster::{NicRequest, NodeState, NumaPolicy, TaskRequest};
use crate::hw;
use crate::plugin::{FilterPlugin, Rejection};

/// Node readiness, cpu/memory fit, host ports and hardware fit in one pass,
/// with the same verdicts as the default chain (`node-ready`,
/// `resource-fit`, `host-ports`, `hardware-fit`) but without formatting a
/// detailed reason for every rejected node. Machine-wide checks (free
/// cores, matching NICs, and [`hw::gpus_available`] for GPUs and NVLink
/// sets, mostly from the node's kept [`crate::Free`]) reject first and
/// decide every task but single-NUMA-node tasks with GPUs and tasks with
/// devices, which go through [`hw::pick`].
pub struct FastFit;

/// Whether `task` fits `node` by the default chain's rules. Reads the
/// counters a [`crate::Cluster`] keeps (see [`NodeState::repack`]).
pub fn fits(task: &TaskRequest, node: &NodeState) -> Result<(), Rejection> {
    if !node.ready {
        return Err(Rejection::new("node not ready", ""));
    }
    let free = &node.free;
    debug_assert!(
        free.cpu == node.cpu_free()
            && free.memory == node.mem_free()
            && node.gpu_free.len() == node.gpus.len(),
        "node {} changed without NodeState::repack",
        node.name
    );
    if free.cpu < task.cpu_demand() {
        return Err(Rejection::new("insufficient cpu", ""));
    }
    if free.memory < task.memory {
        return Err(Rejection::new("insufficient memory", ""));
    }
    if let Some(p) = task.ports.iter().find(|p| node.ports_used.contains(p)) {
        return Err(Rejection::new(format!("port {p} in use"), ""));
    }
    if !hw::needs_hardware(task) {
        return Ok(());
    }
    if task.cores > 0 {
        if node.cores.is_empty() {
            return Err(Rejection::new("no core inventory", ""));
        }
        if free.cores < task.cores {
            return Err(Rejection::new("insufficient cores", ""));
        }
    }
    // Machine-wide, exactly; a necessary condition for one NUMA node.
    if let Some(req) = &task.gpus
        && !hw::gpus_available(req, node)
    {
        return Err(Rejection::new("insufficient gpu", ""));
    }
    if let Some(n) = &task.nics
        && (free.nics < n.count
            || !node
                .nics_answer(n.count, n.min_speed_mbps, n.rdma)
                .unwrap_or_else(|| matching_nics(n, node, None) >= n.count as usize))
    {
        return Err(Rejection::new("insufficient nics", ""));
    }
    if !task.devices.is_empty() {
        return hw::pick(task, node).map(|_| ());
    }
    match task.numa {
        // One NUMA node must hold everything: the full pick decides.
        NumaPolicy::SingleNumaNode if task.gpus.is_some() => hw::pick(task, node).map(|_| ()),
        NumaPolicy::SingleNumaNode => {
            if !node.numa_free.is_empty()
                && free.numa_cores >= task.cores
                && (task.nics.is_none() || one_numa_node_holds(task, node))
            {
                Ok(())
            } else {
                Err(Rejection::new("cannot satisfy single-numa-node", ""))
            }
        }
        // The other policies fall back to the whole machine, where the
        // GPUs, cores and NICs fit (checked above).
        _ => Ok(()),
    }
}

/// Free NICs of `node` that meet `req` (on NUMA node `numa`, if given).
fn matching_nics(req: &NicRequest, node: &NodeState, numa: Option<u32>) -> usize {
    node.nics
        .iter()
        .filter(|x| {
            !x.taken
                && x.up
                && x.speed_mbps >= req.min_speed_mbps
                && (!req.rdma || x.rdma)
                && (numa.is_none() || x.numa == numa)
        })
        .count()
}

/// Whether one NUMA node (of those with cores) has the free cores and the
/// matching NICs of a task without GPUs.
fn one_numa_node_holds(task: &TaskRequest, node: &NodeState) -> bool {
    node.numa_free.iter().any(|&(n, free)| {
        free >= task.cores
            && task
                .nics
                .as_ref()
                .is_none_or(|r| matching_nics(r, node, Some(n)) >= r.count as usize)
    })
}

impl FilterPlugin for FastFit {
    fn name(&self) -> &str {
        "fast-fit"
    }
    /// Host ports in use are not part of a node's class: a task with a
    /// fixed host port is filtered node by node.
    fn class_pure(&self, task: &TaskRequest) -> bool {
        task.ports.iter().all(|&p| p == 0)
    }
    fn need(&self, task: &TaskRequest) -> Option<crate::Need> {
        Some(crate::Need::of(task))
    }
    /// Without host ports or hardware, [`fits`] checks readiness, CPU and
    /// memory only: the need.
    fn need_decides(&self, task: &TaskRequest) -> bool {
        task.ports.is_empty() && !hw::needs_hardware(task)
    }
    fn filter(&self, task: &TaskRequest, nodes: &[&NodeState], out: &mut [Option<Rejection>]) {
        for (n, o) in nodes.iter().zip(out.iter_mut()) {
            if let Err(r) = fits(task, n) {
                *o = Some(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::{HardwareFit, HostPorts, NodeReady, ResourceFit};
    use crate::cluster::{GpuRequest, GpuState, Interconnect, NicRequest};
    use crate::policy::rng::Rng;

    fn default_fits(task: &TaskRequest, node: &NodeState) -> bool {
        let filters: [&dyn FilterPlugin; 4] = [&NodeReady, &ResourceFit, &HostPorts, &HardwareFit];
        filters.iter().all(|f| {
            let mut out = [None];
            f.filter(task, &[node], &mut out);
            out[0].is_none()
        })
    }

    /// A node changed behind the kept counters' back is caught in debug
    /// builds, not silently misjudged.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "changed without NodeState::repack")]
    fn a_node_changed_without_repack_is_caught() {
        let mut node = NodeState {
            name: "n".into(),
            ready: true,
            cpu_capacity: 4000,
            ..Default::default()
        };
        node.repack();
        node.cpu_used = 1000;
        let _ = fits(&TaskRequest::default(), &node);
    }

    #[test]
    fn agrees_with_the_default_chain_on_simple_tasks() {
        let mut r = Rng::new(3);
        let models = ["T4", "V100M16", "G2"];
        for _ in 0..5000 {
            let ngpu = r.index(5);
            let mut node = NodeState {
                name: "n".into(),
                ready: r.index(10) > 0,
                cpu_capacity: 8000,
                cpu_used: r.below(9) * 1000,
                mem_capacity: 8 << 30,
                mem_used: r.below(9) << 30,
                gpus: (0..ngpu)
                    .map(|i| GpuState {
                        index: i as u32,
                        model: models[r.index(3)].into(),
                        milli_used: [0, 0, 250, 500, 1000][r.index(5)],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            node.repack();
            let gpus = match r.index(4) {
                0 => None,
                1 => Some(GpuRequest {
                    count: 1,
                    milli: [0, 250, 500, 750][r.index(4)],
                    ..Default::default()
                }),
                2 => Some(GpuRequest {
                    count: 1 + r.index(3) as u32,
                    milli: 1000,
                    ..Default::default()
                }),
                _ => Some(GpuRequest {
                    count: 1,
                    milli: 500,
                    models: vec![models[r.index(3)].into()],
                    ..Default::default()
                }),
            };
            // These nodes have no core inventory: one NUMA node cannot hold
            // anything.
            let numa = [NumaPolicy::None, NumaPolicy::SingleNumaNode][r.index(2)];
            let task = TaskRequest {
                cpu: r.below(5) * 1000,
                memory: r.below(5) << 30,
                gpus,
                numa,
                ..Default::default()
            };
            assert_eq!(
                fits(&task, &node).is_ok(),
                default_fits(&task, &node),
                "{task:?} on {node:?}"
            );
        }
    }

    #[test]
    fn agrees_with_the_default_chain_on_hardware_tasks() {
        let fixtures = ["dgx-h100", "a100-pcie-4x", "a100-mig", "cpu-2s"];
        let mut r = Rng::new(11);
        for _ in 0..1500 {
            let inv = berth_hostprobe::load_fixture(fixtures[r.index(4)]).unwrap();
            let mut node = NodeState::from_inventory("n", &inv);
            // Random wear: taken cores, NICs, MIG slots, used GPUs.
            for c in &mut node.cores {
                c.taken = r.index(3) == 0;
            }
            for n in &mut node.nics {
                n.taken = r.index(3) == 0;
            }
            for g in &mut node.gpus {
                if g.mig.is_empty() {
                    g.milli_used = [0, 0, 0, 500, 1000][r.index(5)];
                }
                for m in &mut g.mig {
                    m.taken = r.index(2) == 0;
                }
            }
            node.repack();
            let gpus = match r.index(5) {
                0 | 1 => None,
                2 => Some(GpuRequest {
                    count: 1,
                    milli: 500,
                    ..Default::default()
                }),
                3 => Some(GpuRequest {
                    count: [1, 2, 4, 8][r.index(4)],
                    milli: 1000,
                    interconnect: if r.index(2) == 0 {
                        Interconnect::NvLink
                    } else {
                        Interconnect::Any
                    },
                    ..Default::default()
                }),
                _ => Some(GpuRequest {
                    count: 1,
                    milli: 1000,
                    mig_profile: Some(["1g.10gb", "3g.40gb"][r.index(2)].into()),
                    ..Default::default()
                }),
            };
            let nics = (r.index(3) == 0).then(|| NicRequest {
                count: 1 + r.index(2) as u32,
                min_speed_mbps: [10_000, 100_000][r.index(2)],
                rdma: r.index(2) == 0,
            });
            let numa = [
                NumaPolicy::None,
                NumaPolicy::SingleNumaNode,
                NumaPolicy::BestEffort,
                NumaPolicy::Restricted,
            ][r.index(4)];
            let task = TaskRequest {
                cpu: r.below(3) * 1000,
                memory: 1 << 30,
                cores: [0, 0, 4, 16, 40][r.index(5)],
                gpus,
                nics,
                numa,
                ..Default::default()
            };
            assert_eq!(
                fits(&task, &node).is_ok(),
                default_fits(&task, &node),
                "{task:?}"
            );
        }
    }
}
