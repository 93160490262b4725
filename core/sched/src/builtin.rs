//! Native built-in plugins: node readiness, cpu/memory fit, host ports,
//! bin-packing and spreading scores, and the default allocator.

use berth_model::quantity::{Bytes, MilliCpu};
use berth_model::task::{Allocation, GpuGrant};

use crate::cluster::{NodeState, TaskRequest};
use crate::hw;
use crate::plugin::{AllocatePlugin, FilterPlugin, Rejection, ScorePlugin};

/// Rejects nodes that are down.
pub struct NodeReady;

impl FilterPlugin for NodeReady {
    fn name(&self) -> &str {
        "node-ready"
    }
    fn class_pure(&self, _task: &TaskRequest) -> bool {
        true
    }
    fn need(&self, _task: &TaskRequest) -> Option<crate::Need> {
        Some(crate::Need {
            ready: true,
            ..Default::default()
        })
    }
    fn need_decides(&self, _task: &TaskRequest) -> bool {
        true
    }
    fn filter(&self, _task: &TaskRequest, nodes: &[&NodeState], out: &mut [Option<Rejection>]) {
        for (n, o) in nodes.iter().zip(out.iter_mut()) {
            if !n.ready {
                *o = Some(Rejection::new(
                    "node not ready",
                    "down (missed its heartbeat deadline) or drained",
                ));
            }
        }
    }
}

/// Rejects nodes without enough free CPU (shared millicores plus a whole
/// CPU per exclusive core, as the allocator takes them) or memory.
pub struct ResourceFit;

impl FilterPlugin for ResourceFit {
    fn name(&self) -> &str {
        "resource-fit"
    }
    fn class_pure(&self, _task: &TaskRequest) -> bool {
        true
    }
    fn need(&self, task: &TaskRequest) -> Option<crate::Need> {
        Some(crate::Need {
            cpu: task.cpu_demand(),
            memory: task.memory,
            ..Default::default()
        })
    }
    fn need_decides(&self, _task: &TaskRequest) -> bool {
        true
    }
    fn filter(&self, task: &TaskRequest, nodes: &[&NodeState], out: &mut [Option<Rejection>]) {
        for (n, o) in nodes.iter().zip(out.iter_mut()) {
            if n.cpu_free() < task.cpu_demand() {
                *o = Some(Rejection::new(
                    "insufficient cpu",
                    format!(
                        "need {}, free {}",
                        MilliCpu(task.cpu_demand()),
                        MilliCpu(n.cpu_free())
                    ),
                ));
            } else if n.mem_free() < task.memory {
                *o = Some(Rejection::new(
                    "insufficient memory",
                    format!("need {}, free {}", Bytes(task.memory), Bytes(n.mem_free())),
                ));
            }
        }
    }
}

/// Rejects nodes where a requested host port is taken.
pub struct HostPorts;

impl FilterPlugin for HostPorts {
    fn name(&self) -> &str {
        "host-ports"
    }
    /// Host ports in use are not part of a node's class.
    fn class_pure(&self, task: &TaskRequest) -> bool {
        task.ports.is_empty()
    }
    /// A task without host ports passes everywhere.
    fn need_decides(&self, task: &TaskRequest) -> bool {
        task.ports.is_empty()
    }
    fn filter(&self, task: &TaskRequest, nodes: &[&NodeState], out: &mut [Option<Rejection>]) {
        if task.ports.is_empty() {
            return;
        }
        let dynamic = task.ports.iter().filter(|p| **p == 0).count();
        for (n, o) in nodes.iter().zip(out.iter_mut()) {
            if let Some(p) = task
                .ports
                .iter()
                .find(|p| **p != 0 && n.ports_used.contains(p))
            {
                *o = Some(Rejection::new(
                    format!("port {p} in use"),
                    format!("host port {p} is allocated to another task"),
                ));
            } else if dynamic > 0 && dynamic_ports(task, n).len() < dynamic {
                *o = Some(Rejection::new(
                    "no dynamic port free",
                    "too few host ports of its dynamic range are free",
                ));
            }
        }
    }
}

/// The host ports dynamic ports (`host: 0`) are chosen from, as Nomad's
/// default range.
pub const DYNAMIC_PORTS: std::ops::RangeInclusive<u16> = 20000..=32000;

/// The lowest free host ports of [`DYNAMIC_PORTS`] on `node` for the
/// task's dynamic ports (as many as it asks for, fewer when the range is
/// full), skipping ports the task fixes itself.
pub fn dynamic_ports(task: &TaskRequest, node: &NodeState) -> Vec<u16> {
    let want = task.ports.iter().filter(|p| **p == 0).count();
    if want == 0 {
        return Vec::new();
    }
    let (first, last) = node
        .dynamic_ports
        .unwrap_or((*DYNAMIC_PORTS.start(), *DYNAMIC_PORTS.end()));
    (first..=last)
        .filter(|p| !node.ports_used.contains(p) && !task.ports.contains(p))
        .take(want)
        .collect()
}

/// Fraction of a node's cpu and memory in use after placing `task`, in
/// 0..=1 (its CPU with a whole CPU per exclusive core, as it takes them).
fn utilisation_after(task: &TaskRequest, n: &NodeState) -> f64 {
    let frac = |used: u64, add: u64, cap: u64| {
        if cap == 0 {
            1.0
        } else {
            ((used + add) as f64 / cap as f64).min(1.0)
        }
    };
    (frac(n.cpu_used, task.cpu_demand(), n.cpu_capacity)
        + frac(n.mem_used, task.memory, n.mem_capacity))
        / 2.0
}

/// The task's CPU (cores included) and memory in one key
/// ([`ScorePlugin::task_key`]), when both fit (below 2^24 millicores and
/// 2^40 bytes).
fn cpu_memory_key(task: &TaskRequest) -> Option<u64> {
    let cpu = task.cpu_demand();
    (cpu < 1 << 24 && task.memory < 1 << 40).then_some(cpu << 40 | task.memory)
}

/// Prefers the fullest node that fits (best fit), keeping whole nodes free
/// for large tasks.
pub struct BinPack;

impl ScorePlugin for BinPack {
    fn name(&self) -> &str {
        "binpack"
    }
    fn class_pure(&self, _task: &TaskRequest) -> bool {
        true
    }
    fn task_key(&self, task: &TaskRequest) -> Option<u64> {
        cpu_memory_key(task)
    }
    fn score(&self, task: &TaskRequest, nodes: &[&NodeState], out: &mut [f64]) {
        for (n, o) in nodes.iter().zip(out.iter_mut()) {
            *o = 100.0 * utilisation_after(task, n);
        }
    }
}

/// Prefers the emptiest node.
pub struct Spread;

impl ScorePlugin for Spread {
    fn name(&self) -> &str {
        "spread"
    }
    fn class_pure(&self, _task: &TaskRequest) -> bool {
        true
    }
    fn task_key(&self, task: &TaskRequest) -> Option<u64> {
        cpu_memory_key(task)
    }
    fn score(&self, task: &TaskRequest, nodes: &[&NodeState], out: &mut [f64]) {
        for (n, o) in nodes.iter().zip(out.iter_mut()) {
            *o = 100.0 * (1.0 - utilisation_after(task, n));
        }
    }
}

/// Rejects nodes whose GPUs, cores, NICs or NUMA layout cannot hold the
/// task (see [`crate::hw::pick`]).
pub struct HardwareFit;

impl FilterPlugin for HardwareFit {
    fn name(&self) -> &str {
        "hardware-fit"
    }
    fn class_pure(&self, _task: &TaskRequest) -> bool {
        true
    }
    fn need(&self, task: &TaskRequest) -> Option<crate::Need> {
        if !hw::needs_hardware(task) {
            return None;
        }
        let all = crate::Need::of(task);
        Some(crate::Need {
            cores: all.cores,
            nics: all.nics,
            gpus_idle: all.gpus_idle,
            gpu_share: all.gpu_share,
            ..Default::default()
        })
    }
    /// A task without hardware passes everywhere.
    fn need_decides(&self, task: &TaskRequest) -> bool {
        !hw::needs_hardware(task)
    }
    fn filter(&self, task: &TaskRequest, nodes: &[&NodeState], out: &mut [Option<Rejection>]) {
        if !hw::needs_hardware(task) {
            return;
        }
        for (n, o) in nodes.iter().zip(out.iter_mut()) {
            if let Err(r) = hw::pick(task, n) {
                *o = Some(r);
            }
        }
    }
}

/// Allocates what the task asks for: shared cpu, memory and ports, plus the
/// concrete GPUs, exclusive cores (their PUs become the cpuset), NICs and
/// NUMA nodes chosen by [`crate::hw::pick`].
pub struct DefaultAllocator;

impl AllocatePlugin for DefaultAllocator {
    fn name(&self) -> &str {
        "default-allocator"
    }
    fn allocate(&self, task: &TaskRequest, node: &NodeState) -> Result<Allocation, Rejection> {
        if node.cpu_free() < task.cpu_demand() || node.mem_free() < task.memory {
            return Err(Rejection::new(
                "insufficient resources",
                "changed since filtering",
            ));
        }
        let pick = if hw::needs_hardware(task) {
            hw::pick(task, node)?
        } else {
            hw::HwPick::default()
        };
        Ok(allocation(task, node, pick))
    }
}

/// Turns a hardware pick into the committed allocation.
pub fn allocation(task: &TaskRequest, node: &NodeState, pick: hw::HwPick) -> Allocation {
    let cpuset: Vec<u32> = pick
        .cores
        .iter()
        .filter_map(|c| node.cores.iter().find(|s| s.id == *c))
        .flat_map(|c| c.pus.iter().copied())
        .collect();
    let gpus = pick
        .gpus
        .iter()
        .filter_map(|(i, m)| {
            let g = node.gpus.iter().find(|g| g.index == *i)?;
            // A MIG instance is granted by its own uuid.
            let uuid = pick.mig.clone().unwrap_or_else(|| g.uuid.clone());
            Some(GpuGrant {
                index: *i,
                uuid,
                milli: *m,
            })
        })
        .collect();
    let mut dynamic = dynamic_ports(task, node).into_iter();
    let ports = task
        .ports
        .iter()
        .map(|&p| {
            if p == 0 {
                dynamic.next().unwrap_or(0)
            } else {
                p
            }
        })
        .collect();
    Allocation {
        cpu: MilliCpu(task.cpu),
        memory: Bytes(task.memory),
        ports,
        cores: pick.cores,
        cpuset,
        numa_nodes: pick.numa,
        gpus,
        nics: pick.nics,
        devices: pick.devices,
    }
}
