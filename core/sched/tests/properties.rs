//! Property: whatever the workload, committed placements never exceed a
//! node's capacity and never share a host port.

use berth_sched::{Cluster, NodeState, Pipeline, TaskRequest};
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
