//! Building one seed's workload (METHOD.md §2, "tune 1.3"): the arrival
//! order of pods and the node priority order.

use berth_sched::policy::Rng;

use crate::openb::csv::{OpenbNode, OpenbPod};

/// One seed's arrivals and node order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Arrivals, as indexes into the name-sorted pod list (clones repeat
    /// an index).
    pub arrivals: Vec<usize>,
    /// `node_rank[i]`: the priority of node `i` (CSV order); nodes are
    /// named `%04d-<sn>` with it, so name order is a random order per seed.
    pub node_rank: Vec<usize>,
}

/// Pods sorted by name (the FGD simulator's base order); stable.
pub fn sort_by_name(pods: &[OpenbPod]) -> Vec<OpenbPod> {
    let mut sorted = pods.to_vec();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted
}

/// Total GPU capacity of `nodes` in thousandths.
pub fn capacity_milli(nodes: &[OpenbNode]) -> u64 {
    nodes.iter().map(|n| u64::from(n.gpu) * 1000).sum()
}

/// The workload for `seed`: shuffle the name-sorted pods, then tune the
/// total GPU demand to `ratio` × capacity:
/// - below it, append uniform draws (with replacement) from the sorted
///   list, stopping at the first draw whose *per-GPU* thousandths would
///   overshoot (the simulator's quirk) while adding `num × milli`;
/// - above it, delete uniformly random pods until the total fits.
///
/// Finally draw the node permutation.
pub fn build(sorted: &[OpenbPod], nodes: &[OpenbNode], seed: u64, ratio: f64) -> Workload {
    let mut rng = Rng::new(seed);
    let mut arrivals: Vec<usize> = (0..sorted.len()).collect();
    rng.shuffle(&mut arrivals);
    let target = ratio * capacity_milli(nodes) as f64;
    let mut total: u64 = sorted.iter().map(OpenbPod::gpu_demand).sum();
    if !sorted.is_empty() && (total as f64) < target {
        loop {
            let i = rng.index(sorted.len());
            let p = &sorted[i];
            if (total + u64::from(p.gpu_milli)) as f64 > target {
                break;
            }
            total += p.gpu_demand();
            arrivals.push(i);
            if arrivals.len() > 100 * sorted.len() + 1_000_000 {
                break; // only pods without GPU demand: the target is never reached
            }
        }
    } else {
        while (total as f64) > target && !arrivals.is_empty() {
            let k = rng.index(arrivals.len());
            total -= sorted[arrivals.remove(k)].gpu_demand();
        }
    }
    let node_rank = rng.perm(nodes.len());
    Workload {
        arrivals,
        node_rank,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, num: u32, milli: u32) -> OpenbPod {
        OpenbPod {
            name: name.into(),
            cpu_milli: 1000,
            memory_mib: 1,
            num_gpu: num,
            gpu_milli: milli,
            gpu_spec: String::new(),
        }
    }

    fn nodes(gpus: u32) -> Vec<OpenbNode> {
        vec![OpenbNode {
            sn: "n".into(),
            cpu_milli: 1000,
            memory_mib: 1,
            gpu: gpus,
            model: "T4".into(),
        }]
    }

    #[test]
    fn tunes_up_with_clones_after_the_originals() {
        let sorted = sort_by_name(&[pod("b", 1, 500), pod("a", 1, 1000), pod("c", 0, 0)]);
        let w = build(&sorted, &nodes(10), 42, 1.3);
        assert!(w.arrivals.len() > 3);
        let mut head = w.arrivals[..3].to_vec();
        head.sort();
        assert_eq!(head, vec![0, 1, 2]);
        let total: u64 = w.arrivals.iter().map(|&i| sorted[i].gpu_demand()).sum();
        assert!(total <= 13_000 && total > 11_000, "{total}");
        assert_eq!(w, build(&sorted, &nodes(10), 42, 1.3));
    }

    #[test]
    fn tunes_down_by_deleting() {
        let pods: Vec<OpenbPod> = (0..50).map(|i| pod(&format!("p{i:02}"), 8, 1000)).collect();
        let sorted = sort_by_name(&pods);
        let w = build(&sorted, &nodes(100), 7, 1.3);
        let total: u64 = w.arrivals.iter().map(|&i| sorted[i].gpu_demand()).sum();
        assert_eq!(total, 128_000);
        assert_eq!(w.arrivals.len(), 16);
        assert_eq!(w.node_rank, vec![0]);
    }
}
