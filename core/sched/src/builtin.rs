//! Native built-in plugins: node readiness, cpu/memory fit, host ports,
//! bin-packing and spreading scores, and the default allocator.

use berth_model::quantity::{Bytes, MilliCpu};
use berth_model::task::Allocation;

use crate::cluster::{NodeState, TaskRequest};
use crate::plugin::{AllocatePlugin, FilterPlugin, Rejection, ScorePlugin};

/// Rejects nodes that are down.
pub struct NodeReady;

impl FilterPlugin for NodeReady {
    fn name(&self) -> &str {
        "node-ready"
    }
    fn filter(&self, _task: &TaskRequest, nodes: &[&NodeState], out: &mut [Option<Rejection>]) {
        for (n, o) in nodes.iter().zip(out.iter_mut()) {
            if !n.ready {
                *o = Some(Rejection::new("node down", "missed its heartbeat deadline"));
            }
        }
    }
}

/// Rejects nodes without enough free CPU or memory.
pub struct ResourceFit;

impl FilterPlugin for ResourceFit {
    fn name(&self) -> &str {
        "resource-fit"
    }
    fn filter(&self, task: &TaskRequest, nodes: &[&NodeState], out: &mut [Option<Rejection>]) {
        for (n, o) in nodes.iter().zip(out.iter_mut()) {
            if n.cpu_free() < task.cpu {
                *o = Some(Rejection::new(
                    "insufficient cpu",
                    format!(
                        "need {}, free {}",
                        MilliCpu(task.cpu),
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
    fn filter(&self, task: &TaskRequest, nodes: &[&NodeState], out: &mut [Option<Rejection>]) {
        if task.ports.is_empty() {
            return;
        }
        for (n, o) in nodes.iter().zip(out.iter_mut()) {
            if let Some(p) = task.ports.iter().find(|p| n.ports_used.contains(p)) {
                *o = Some(Rejection::new(
                    format!("port {p} in use"),
                    format!("host port {p} is allocated to another task"),
                ));
            }
        }
    }
}

/// Fraction of a node's cpu and memory in use after placing `task`, in 0..=1.
fn utilisation_after(task: &TaskRequest, n: &NodeState) -> f64 {
    let frac = |used: u64, add: u64, cap: u64| {
        if cap == 0 {
            1.0
        } else {
            ((used + add) as f64 / cap as f64).min(1.0)
        }
    };
    (frac(n.cpu_used, task.cpu, n.cpu_capacity) + frac(n.mem_used, task.memory, n.mem_capacity))
        / 2.0
}

/// Prefers the fullest node that fits (best fit), keeping whole nodes free
/// for large tasks.
pub struct BinPack;

impl ScorePlugin for BinPack {
    fn name(&self) -> &str {
        "binpack"
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
    fn score(&self, task: &TaskRequest, nodes: &[&NodeState], out: &mut [f64]) {
        for (n, o) in nodes.iter().zip(out.iter_mut()) {
            *o = 100.0 * (1.0 - utilisation_after(task, n));
        }
    }
}

/// Allocates exactly what the task asks for: shared cpu, memory, ports.
pub struct DefaultAllocator;

impl AllocatePlugin for DefaultAllocator {
    fn name(&self) -> &str {
        "default-allocator"
    }
    fn allocate(&self, task: &TaskRequest, node: &NodeState) -> Result<Allocation, Rejection> {
        if node.cpu_free() < task.cpu || node.mem_free() < task.memory {
            return Err(Rejection::new(
                "insufficient resources",
                "changed since filtering",
            ));
        }
        Ok(Allocation {
            cpu: MilliCpu(task.cpu),
            memory: Bytes(task.memory),
            ports: task.ports.clone(),
        })
    }
}
