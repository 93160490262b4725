//! Property: under every policy, committed placements never overfill a GPU
//! (shares sum to at most 1000 thousandths), never give a whole-GPU task a
//! used GPU, and never exceed a node's CPU or memory; `place` and `decide`
//! agree.

use berth_sched::policy::{self, POLICIES, PodShape, PolicyContext};
use berth_sched::{Cluster, GpuRequest, GpuState, NodeState, TaskRequest};
use proptest::prelude::*;

fn node(i: usize, gpus: usize, model: &str) -> NodeState {
    NodeState {
        name: format!("n{i:02}"),
        ready: true,
        cpu_capacity: 16_000,
        mem_capacity: 64 << 30,
        gpus: (0..gpus)
            .map(|g| GpuState {
                index: g as u32,
                uuid: format!("n{i}-{g}"),
                model: model.into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn policies_respect_capacity(
        shape in proptest::collection::vec((1usize..9, 0usize..2), 1..6),
        tasks in proptest::collection::vec((1u64..8, 0u32..4, 0u32..1000, 0u32..3), 1..80),
        seed in 0u64..1000,
    ) {
        let models = ["T4", "G2"];
        let nodes: Vec<NodeState> = shape.iter().enumerate().map(|(i, (g, m))| node(i, *g, models[*m])).collect();
        let reqs: Vec<TaskRequest> = tasks.iter().enumerate().map(|(i, (cpu, kind, milli, spec))| {
            let models = match spec { 0 => vec![], 1 => vec!["T4".to_string()], _ => vec!["G2".to_string()] };
            let gpus = match kind {
                0 => None,
                1 => Some(GpuRequest { count: 1, milli: 1 + milli % 999, models, ..Default::default() }),
                _ => Some(GpuRequest { count: kind - 1, milli: 1000, models, ..Default::default() }),
            };
            TaskRequest { id: format!("t{i}"), cpu: cpu * 1000, memory: 1 << 30, gpus, ..Default::default() }
        }).collect();
        let ctx = PolicyContext {
            capacity: vec![("T4".into(), 4000), ("G2".into(), 8000)],
            ..PolicyContext::from_shapes(reqs.iter().map(PodShape::of_task), seed)
        };
        for name in POLICIES {
            let pipe = policy::pipeline(name, &ctx).unwrap();
            let twin = policy::pipeline(name, &ctx).unwrap();
            let mut cluster = Cluster::new(nodes.clone());
            for t in &reqs {
                let fast = pipe.place(&cluster, t);
                let slow = twin.decide(&cluster, t).placement;
                prop_assert_eq!(fast.as_ref().map(|(i, a)| (cluster.nodes()[*i].name.clone(), a.clone())), slow, "{}", name);
                if let Some((i, a)) = fast {
                    let n = &cluster.nodes()[i];
                    prop_assert!(n.cpu_free() >= t.cpu && n.mem_free() >= t.memory);
                    for g in &a.gpus {
                        let s = n.gpus.iter().find(|s| s.index == g.index).unwrap();
                        prop_assert!(s.milli_free() >= g.milli, "{} overfills GPU {}", name, g.index);
                        if let Some(r) = &t.gpus {
                            prop_assert!(r.model_ok(&s.model));
                        }
                    }
                    let name = n.name.clone();
                    prop_assert!(cluster.commit(&name, &a));
                }
            }
        }
    }
}
