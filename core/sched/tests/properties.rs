//! Properties: whatever the workload, committed placements never exceed a
//! node's capacity and never share a host port; the shortcuts of the lean
//! filter decide as the full search does.

use berth_sched::builtin::DefaultAllocator;
use berth_sched::hw::{choose_gpus, gpus_available};
use berth_sched::policy::FastFit;
use berth_sched::{Cluster, GpuRequest, GpuState, Interconnect, NodeState, Pipeline, TaskRequest};
use proptest::prelude::*;

proptest! {
    #[test]
    fn never_overcommits(
        nodes in proptest::collection::vec((100u64..8000, 1u64..64), 1..8),
        tasks in proptest::collection::vec((1u64..4000, 1u64..16, proptest::option::of(8000u16..8004)), 1..60),
    ) {
        let states: Vec<NodeState> = nodes.iter().enumerate().map(|(i, (cpu, gib))| NodeState {
            name: format!("n{i}"), ready: true, cpu_capacity: *cpu, mem_capacity: gib << 30, ..Default::default()
        }).collect();
        let mut cluster = Cluster::new(states.clone());
        let p = Pipeline::default();
        let mut placed: Vec<(String, u64, u64, Vec<u16>)> = Vec::new();
        for (i, (cpu, gib, port)) in tasks.iter().enumerate() {
            let t = TaskRequest { id: format!("t{i}"), cpu: *cpu, memory: gib << 28, ports: port.iter().copied().collect(), ..Default::default() };
            let d = p.decide(&cluster, &t);
            if let Some((node, a)) = d.placement {
                prop_assert!(cluster.commit(&node, &a));
                placed.push((node, a.cpu.0, a.memory.0, a.ports));
            } else {
                prop_assert!(d.summary.starts_with("0/"));
            }
        }
        for n in &states {
            let mine: Vec<_> = placed.iter().filter(|p| p.0 == n.name).collect();
            prop_assert!(mine.iter().map(|p| p.1).sum::<u64>() <= n.cpu_capacity);
            prop_assert!(mine.iter().map(|p| p.2).sum::<u64>() <= n.mem_capacity);
            let mut ports: Vec<u16> = mine.iter().flat_map(|p| p.3.clone()).collect();
            let len = ports.len();
            ports.sort();
            ports.dedup();
            prop_assert_eq!(ports.len(), len);
        }
    }
}

/// A node with `links[i]`: the GPUs GPU `i` lists NVLinks to, and
/// `used[i]`: its used thousandths.
fn linked(links: &[Vec<u32>], used: &[u32]) -> NodeState {
    let n = links.len() as u32;
    let mut node = NodeState {
        name: "n".into(),
        ready: true,
        cpu_capacity: 64_000,
        mem_capacity: 1 << 40,
        gpus: links
            .iter()
            .zip(used)
            .enumerate()
            .map(|(i, (peers, used))| GpuState {
                index: i as u32,
                milli_used: *used,
                nvlinks: peers
                    .iter()
                    .map(|p| p % n)
                    .filter(|p| *p != i as u32)
                    .map(|p| (p, 1 + p % 3))
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    node.repack();
    node
}

proptest! {
    /// The feasibility shortcut for NVLink sets says yes exactly when the
    /// best-set search finds a set, and the lean filter agrees with the
    /// default chain on such nodes.
    #[test]
    fn gpu_sets_are_found_exactly_when_they_exist(
        graph in proptest::collection::vec(
            (proptest::collection::vec(0u32..16, 0..4), prop_oneof![Just(0u32), Just(0), Just(500), Just(1000)]),
            1..14,
        ),
        count in 1u32..9,
        nvlink in any::<bool>(),
    ) {
        let (links, used): (Vec<Vec<u32>>, Vec<u32>) = graph.into_iter().unzip();
        let node = linked(&links, &used);
        let req = GpuRequest {
            count,
            milli: 1000,
            interconnect: if nvlink { Interconnect::NvLink } else { Interconnect::Any },
            ..Default::default()
        };
        prop_assert_eq!(gpus_available(&req, &node), choose_gpus(&req, &node, None).is_some());
        let task = TaskRequest { id: "t".into(), cpu: 1000, memory: 1 << 30, gpus: Some(req), ..Default::default() };
        let cluster = Cluster::new(vec![node]);
        let lean = Pipeline::new(Box::new(DefaultAllocator)).filter(Box::new(FastFit));
        prop_assert_eq!(
            lean.place(&cluster, &task).is_some(),
            Pipeline::default().decide(&cluster, &task).placement.is_some()
        );
    }
}
