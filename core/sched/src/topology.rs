//! Topology-aware scores: keep a task's devices on one NUMA node, and put
//! multi-GPU tasks on GPUs with the most NVLink links while keeping large
//! NVLink islands whole for the tasks that need them.

use crate::cluster::{NodeState, TaskRequest};
use crate::hw;
use crate::plugin::ScorePlugin;

/// Prefers nodes where the task's cores, GPUs and NICs share one NUMA node:
/// 100 for one node, 100/k for k. Tasks without hardware score 100 everywhere.
pub struct NumaAlign;

impl ScorePlugin for NumaAlign {
    fn name(&self) -> &str {
        "numa-align"
    }
    fn class_pure(&self, _task: &TaskRequest) -> bool {
        true
    }
    /// Tasks without hardware score 100 everywhere: one key.
    fn task_key(&self, task: &TaskRequest) -> Option<u64> {
        (!hw::needs_hardware(task)).then_some(0)
    }
    fn score(&self, task: &TaskRequest, nodes: &[&NodeState], out: &mut [f64]) {
        if !hw::needs_hardware(task) {
            out.fill(100.0);
            return;
        }
        for (n, o) in nodes.iter().zip(out.iter_mut()) {
            *o = match hw::pick(task, n) {
                Ok(p) => 100.0 / p.numa.len().max(1) as f64,
                Err(_) => 0.0,
            };
        }
    }
}

/// For GPU tasks: half the score is how well the chosen GPUs are linked
/// (links among them over the best possible on that node's fabric), half is
/// a best fit on NVLink islands: the fewer idle GPUs left in the largest
/// idle island after the placement, the better, so a 2-GPU task goes to a
/// partly used node rather than breaking up the last whole 8-GPU island.
/// Tasks without GPUs score 100.
pub struct GpuTopology;

/// Size of the largest set of idle GPUs connected by NVLink.
fn largest_idle_island(node: &NodeState, taken: &[u32]) -> usize {
    let idle: Vec<u32> = node
        .gpus
        .iter()
        .filter(|g| g.milli_used == 0 && !taken.contains(&g.index))
        .map(|g| g.index)
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut best = 0;
    for &start in &idle {
        if !seen.insert(start) {
            continue;
        }
        let mut size = 1;
        let mut stack = vec![start];
        while let Some(i) = stack.pop() {
            let Some(g) = node.gpus.iter().find(|g| g.index == i) else {
                continue;
            };
            for (p, _) in &g.nvlinks {
                if idle.contains(p) && seen.insert(*p) {
                    size += 1;
                    stack.push(*p);
                }
            }
        }
        best = best.max(size);
    }
    best
}

impl ScorePlugin for GpuTopology {
    fn name(&self) -> &str {
        "gpu-topology"
    }
    fn class_pure(&self, _task: &TaskRequest) -> bool {
        true
    }
    /// Tasks without GPUs score 100 everywhere: one key.
    fn task_key(&self, task: &TaskRequest) -> Option<u64> {
        task.gpus.is_none().then_some(0)
    }
    fn score(&self, task: &TaskRequest, nodes: &[&NodeState], out: &mut [f64]) {
        let Some(req) = &task.gpus else {
            out.fill(100.0);
            return;
        };
        for (n, o) in nodes.iter().zip(out.iter_mut()) {
            let Ok(p) = hw::pick(task, n) else {
                *o = 0.0;
                continue;
            };
            let set: Vec<u32> = p.gpus.iter().map(|(i, _)| *i).collect();
            let linked = if set.len() < 2 {
                1.0
            } else {
                // The best any k GPUs of this node could have: k*(k-1)/2 pairs
                // at the node's widest link.
                let widest = n
                    .gpus
                    .iter()
                    .flat_map(|g| g.nvlinks.iter().map(|(_, l)| *l))
                    .max()
                    .unwrap_or(0);
                let k = set.len() as u32;
                let best = widest * k * (k - 1) / 2;
                if best == 0 {
                    0.0
                } else {
                    f64::from(hw::links_within(n, &set)) / f64::from(best)
                }
            };
            let whole = if req.milli >= 1000 { set.len() } else { 0 };
            let left = largest_idle_island(n, &[]).saturating_sub(whole);
            let fit = 1.0 - left as f64 / n.gpus.len().max(1) as f64;
            *o = (50.0 * linked + 50.0 * fit).clamp(0.0, 100.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{GpuRequest, Interconnect, NumaPolicy};
    use berth_hostprobe::load_fixture;

    fn dgx(name: &str) -> NodeState {
        let inv = load_fixture("dgx-h100").unwrap();
        NodeState {
            name: name.into(),
            ready: true,
            cpu_capacity: 224_000,
            mem_capacity: 1 << 40,
            ..Default::default()
        }
        .with_inventory(&inv)
    }

    #[test]
    fn numa_align_prefers_one_numa_node() {
        let mut split = dgx("split");
        // Take three GPUs on NUMA 0 and three on NUMA 1: 4 GPUs need both.
        for i in [0, 1, 2, 4, 5, 6] {
            split.gpus[i].milli_used = 1000;
        }
        let whole = dgx("whole");
        let t = TaskRequest {
            id: "t".into(),
            memory: 1,
            gpus: Some(GpuRequest {
                count: 2,
                milli: 1000,
                ..Default::default()
            }),
            numa: NumaPolicy::BestEffort,
            ..Default::default()
        };
        let mut out = [0.0; 2];
        NumaAlign.score(&t, &[&split, &whole], &mut out);
        assert_eq!(out, [50.0, 100.0]);
    }

    #[test]
    fn gpu_topology_keeps_the_big_island_on_the_fresh_node() {
        let mut used = dgx("used");
        used.gpus[0].milli_used = 1000;
        let fresh = dgx("fresh");
        let t = TaskRequest {
            id: "t".into(),
            memory: 1,
            gpus: Some(GpuRequest {
                count: 2,
                milli: 1000,
                interconnect: Interconnect::NvLink,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut out = [0.0; 2];
        GpuTopology.score(&t, &[&used, &fresh], &mut out);
        assert!(out[0] > out[1], "{out:?}");
    }
}
