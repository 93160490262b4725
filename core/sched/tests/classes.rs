//! Deciding once per node class decides exactly as deciding node by node:
//! over random clusters (fixture machines, some resized, relabelled or
//! down) and random workloads (CPU, exclusive cores, NICs, GPU shares,
//! whole GPUs over NVLink, MIG, host ports, every kind of constraint,
//! volumes pinned to a node), with placements committed and released, for
//! every policy: the same node and allocation from `place`, the same
//! explanation of every node from `decide`.

use berth_hostprobe::load_fixture;
use berth_model::placement::{Constraint, Operator};
use berth_model::task::Allocation;
use berth_sched::policy::{
    self, CLUSTER_POLICIES, POLICIES, PodShape, PolicyContext, Rng, cluster_pipeline,
};
use berth_sched::{
    Cluster, GpuRequest, Interconnect, NicRequest, NodeState, NumaPolicy, Pinned, Pipeline,
    TaskRequest,
};
use proptest::prelude::*;

const FIXTURES: [&str; 4] = ["dgx-h100", "a100-pcie-4x", "a100-mig", "cpu-2s"];

/// `n` nodes of a few kinds, so that classes form, with random names.
fn cluster(r: &mut Rng, n: usize) -> Vec<NodeState> {
    let templates: Vec<NodeState> = FIXTURES
        .iter()
        .map(|f| NodeState::from_inventory("", &load_fixture(f).unwrap()))
        .collect();
    (0..n)
        .map(|i| {
            let mut node = templates[r.index(templates.len())].clone();
            node.name = format!("n{:03}-{}", r.index(1000), i);
            node.attributes.insert("hostname".into(), node.name.clone());
            node.attributes
                .insert("rack".into(), format!("r{}", r.index(3)));
            if r.index(4) == 0 {
                node.cpu_capacity /= 2;
            }
            node.ready = r.index(10) != 0;
            if r.index(6) == 0 {
                node.dynamic_ports = Some((20000, 20002));
            }
            node
        })
        .collect()
}

fn constraint(r: &mut Rng) -> Constraint {
    let (field, op, value) = match r.index(7) {
        0 => ("rack", Operator::Like, Some("r[01]")),
        1 => ("rack", Operator::Unlike, Some("r2")),
        2 => ("hostname", Operator::Unique, None),
        3 => ("rack", Operator::MaxPer, Some("2")),
        4 => ("rack", Operator::GroupBy, None),
        5 => ("rack", Operator::Cluster, None),
        _ => ("hostname", Operator::Like, Some("n[0-4].*")),
    };
    Constraint {
        field: field.into(),
        op,
        value: value.map(String::from),
    }
}

fn task(r: &mut Rng, k: usize, names: &[String]) -> TaskRequest {
    let mut t = TaskRequest {
        id: format!("t{k}"),
        group: format!("app{}", r.index(4)),
        cpu: 250 * (1 + r.below(16)),
        memory: (1 + r.below(16)) << 29,
        ..Default::default()
    };
    match r.index(8) {
        0 => {
            t.cpu = 0;
            t.cores = [1, 2, 4][r.index(3)];
            t.numa = [NumaPolicy::SingleNumaNode, NumaPolicy::BestEffort][r.index(2)];
        }
        1 => {
            t.nics = Some(NicRequest {
                count: 1,
                min_speed_mbps: 10_000,
                rdma: r.index(2) == 0,
            })
        }
        2 => {
            t.gpus = Some(GpuRequest {
                count: 1,
                milli: 250 * (1 + r.below(3)) as u32,
                ..Default::default()
            })
        }
        3 => {
            let count = [1, 2, 4, 8][r.index(4)];
            t.gpus = Some(GpuRequest {
                count,
                milli: 1000,
                interconnect: if count > 1 {
                    Interconnect::NvLink
                } else {
                    Interconnect::Any
                },
                models: if r.index(3) == 0 {
                    vec!["H100".into()]
                } else {
                    Vec::new()
                },
                ..Default::default()
            })
        }
        4 => {
            t.gpus = Some(GpuRequest {
                count: 1,
                milli: 1000,
                mig_profile: Some("1g.10gb".into()),
                ..Default::default()
            })
        }
        _ => {}
    }
    if r.index(6) == 0 {
        t.ports = vec![[0, 8080, 8081][r.index(3)]];
        if r.index(2) == 0 {
            // Only a port: the node's class stays, its ports in use do not.
            (t.cpu, t.memory, t.cores, t.gpus, t.nics) = (0, 0, 0, None, None);
        }
    }
    if r.index(4) == 0 {
        t.constraints.push(constraint(r));
    }
    if r.index(25) == 0 {
        t.pinned = Some(Pinned {
            node: names[r.index(names.len())].clone(),
            volume: "data".into(),
        });
    }
    t
}

/// The same pipeline twice: once per class, once per node.
fn pipelines(name: &str, ctx: &PolicyContext, lean: bool) -> (Pipeline, Pipeline) {
    let build = || {
        if lean {
            policy::pipeline(name, ctx).unwrap()
        } else {
            cluster_pipeline(name, ctx).unwrap()
        }
    };
    (build().by_class(true), build().by_class(false))
}

/// Runs `tasks` decisions of one policy both ways on one cluster,
/// releasing some placements as it goes; panics at the first difference.
fn same_decisions(seed: u64, policy_name: &str, lean: bool) {
    let mut r = Rng::new(seed);
    let n = 6 + r.index(40);
    let nodes = cluster(&mut r, n);
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let tasks: Vec<TaskRequest> = (0..80).map(|k| task(&mut r, k, &names)).collect();
    let ctx = PolicyContext {
        seed,
        ..PolicyContext::from_shapes(tasks.iter().map(PodShape::of_task), seed)
    };
    let (classed, plain) = pipelines(policy_name, &ctx, lean);
    let mut c = Cluster::new(nodes);
    let mut held: Vec<(String, String, Allocation)> = Vec::new();
    for t in &tasks {
        let a = classed.place(&c, t);
        let b = plain.place(&c, t);
        assert_eq!(a, b, "{policy_name} seed {seed}: place {}", t.id);
        let da = classed.decide(&c, t);
        let db = plain.decide(&c, t);
        assert_eq!(da, db, "{policy_name} seed {seed}: decide {}", t.id);
        if let Some((i, alloc)) = a {
            let name = c.nodes()[i].name.clone();
            assert!(c.commit_for(&name, &t.group, &alloc));
            held.push((name, t.group.clone(), alloc));
        }
        if !held.is_empty() && r.index(4) == 0 {
            let (node, group, alloc) = held.swap_remove(r.index(held.len()));
            assert!(c.release_for(&node, &group, &alloc));
        }
        if r.index(20) == 0 {
            let name = names[r.index(names.len())].clone();
            let ready = !c.node(&name).unwrap().ready;
            assert!(c.set_ready(&name, ready));
        }
    }
    // The classes kept through all of it are the classes found afresh.
    let fresh = Cluster::new(c.nodes().to_vec());
    assert_eq!(c.classes().len(), fresh.classes().len(), "seed {seed}");
    for i in 0..c.nodes().len() {
        let kept: Vec<usize> = c.classes().of(i).members().collect();
        let found: Vec<usize> = fresh.classes().of(i).members().collect();
        assert_eq!(kept, found, "seed {seed}: node {i}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn servers_chains_decide_the_same_by_class(seed in any::<u64>()) {
        for name in CLUSTER_POLICIES {
            same_decisions(seed, name, false);
        }
    }

    #[test]
    fn simulation_chains_decide_the_same_by_class(seed in any::<u64>()) {
        for name in POLICIES {
            same_decisions(seed, name, true);
        }
    }
}

#[test]
fn idle_nodes_of_one_kind_are_one_class() {
    let mut r = Rng::new(7);
    let mut nodes = cluster(&mut r, 60);
    for n in &mut nodes {
        n.ready = true;
        n.dynamic_ports = None;
        n.cpu_capacity =
            NodeState::from_inventory("", &load_fixture("cpu-2s").unwrap()).cpu_capacity;
        n.attributes.remove("rack");
    }
    let c = Cluster::new(nodes);
    // Four fixtures, told apart by hardware alone (hostname is not a kind).
    let kinds = c.classes().kinds();
    assert!(kinds <= FIXTURES.len(), "{kinds}");
    assert_eq!(c.classes().len(), kinds);
    let total: usize = c.classes().live().map(|k| k.len()).sum();
    assert_eq!(total, 60);
}
