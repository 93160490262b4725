//! A lean feasibility filter for simulations and large clusters.

use crate::cluster::{GPU_MILLI, Interconnect, NodeState, NumaPolicy, TaskRequest};
use crate::hw;
use crate::plugin::{FilterPlugin, Rejection};

/// Node readiness, cpu/memory fit, host ports and hardware fit in one pass,
/// with the same verdicts as the default chain (`node-ready`,
/// `resource-fit`, `host-ports`, `hardware-fit`) but without formatting a
/// detailed reason for every rejected node. Cheap necessary conditions
/// (enough eligible GPUs, free cores, matching NICs) reject first; tasks
/// for which they are also sufficient (GPUs without NVLink or MIG, cores
/// without devices) are decided by them; the rest go through [`hw::pick`].
pub struct FastFit;

/// Whether `task` fits `node` by the default chain's rules.
pub fn fits(task: &TaskRequest, node: &NodeState) -> Result<(), Rejection> {
    if !node.ready {
        return Err(Rejection::new("node not ready", ""));
    }
    if node.cpu_free() < task.cpu {
        return Err(Rejection::new("insufficient cpu", ""));
    }
    if node.mem_free() < task.memory {
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
        let want = task.cores as usize;
        if node.cores.iter().filter(|c| !c.taken).take(want).count() < want {
            return Err(Rejection::new("insufficient cores", ""));
        }
    }
    if let Some(req) = &task.gpus {
        let mut eligible = node
            .gpus
            .iter()
            .filter(|g| req.model_ok(&g.model) && g.memory_bytes >= req.min_memory);
        let ok = if let Some(p) = &req.mig_profile {
            eligible.any(|g| g.mig.iter().any(|m| !m.taken && &m.profile == p))
        } else if req.milli < GPU_MILLI {
            eligible.any(|g| g.milli_free() >= req.milli)
        } else {
            eligible.filter(|g| g.milli_used == 0).count() >= req.count as usize
        };
        if !ok {
            return Err(Rejection::new("insufficient gpu", ""));
        }
    }
    if let Some(n) = &task.nics {
        let matching = node
            .nics
            .iter()
            .filter(|x| !x.taken && x.up && x.speed_mbps >= n.min_speed_mbps && (!n.rdma || x.rdma))
            .count();
        if matching < n.count as usize {
            return Err(Rejection::new("insufficient nics", ""));
        }
    }
    if !task.devices.is_empty() {
        return hw::pick(task, node).map(|_| ());
    }
    // Where the necessary conditions are also sufficient, stop here.
    let gpus_simple = task.gpus.as_ref().is_none_or(|r| {
        r.mig_profile.is_none()
            && (r.milli < GPU_MILLI || r.count <= 1 || r.interconnect == Interconnect::Any)
    });
    if gpus_simple && task.nics.is_none() && task.cores == 0 && task.numa == NumaPolicy::None {
        return Ok(());
    }
    if task.gpus.is_none() {
        // Cores and NICs only: machine-wide they fit (checked above); on one
        // NUMA node, some node must hold both.
        if task.numa != NumaPolicy::SingleNumaNode {
            return Ok(());
        }
        return if one_numa_node_holds(task, node) {
            Ok(())
        } else {
            Err(Rejection::new("cannot satisfy single-numa-node", ""))
        };
    }
    hw::pick(task, node).map(|_| ())
}

/// Whether one NUMA node (of those with cores) has the free cores and the
/// matching NICs of a task without GPUs.
fn one_numa_node_holds(task: &TaskRequest, node: &NodeState) -> bool {
    let want = task.cores as usize;
    let mut seen: Vec<u32> = Vec::with_capacity(4);
    for c in &node.cores {
        if seen.contains(&c.numa) {
            continue;
        }
        seen.push(c.numa);
        let n = c.numa;
        let cores_ok = node
            .cores
            .iter()
            .filter(|c| !c.taken && c.numa == n)
            .take(want)
            .count()
            >= want;
        let nics_ok = task.nics.as_ref().is_none_or(|r| {
            node.nics
                .iter()
                .filter(|x| {
                    !x.taken
                        && x.up
                        && x.speed_mbps >= r.min_speed_mbps
                        && (!r.rdma || x.rdma)
                        && x.numa == Some(n)
                })
                .count()
                >= r.count as usize
        });
        if cores_ok && nics_ok {
            return true;
        }
    }
    false
}

impl FilterPlugin for FastFit {
    fn name(&self) -> &str {
        "fast-fit"
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
    use crate::cluster::{GpuRequest, GpuState, NicRequest};
    use crate::policy::rng::Rng;

    fn default_fits(task: &TaskRequest, node: &NodeState) -> bool {
        let filters: [&dyn FilterPlugin; 4] = [&NodeReady, &ResourceFit, &HostPorts, &HardwareFit];
        filters.iter().all(|f| {
            let mut out = [None];
            f.filter(task, &[node], &mut out);
            out[0].is_none()
        })
    }

    #[test]
    fn agrees_with_the_default_chain_on_simple_tasks() {
        let mut r = Rng::new(3);
        let models = ["T4", "V100M16", "G2"];
        for _ in 0..5000 {
            let ngpu = r.index(5);
            let node = NodeState {
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
            let gpus = match r.index(4) {
                0 => None,
                1 => Some(GpuRequest {
                    count: 1,
                    milli: [250, 500, 750][r.index(3)],
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
            let task = TaskRequest {
                cpu: r.below(5) * 1000,
                memory: r.below(5) << 30,
                gpus,
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
