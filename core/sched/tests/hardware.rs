//! Hardware-aware placement on the shipped machine fixtures: NVLink sets,
//! NUMA-local cores and NICs, MIG instances, and a property test that
//! nothing is ever allocated twice.

use std::collections::HashSet;

use berth_hostprobe::load_fixture;
use berth_sched::cluster::DeviceState;
use berth_sched::hw::pick;
use berth_sched::{
    Cluster, CoreState, GpuRequest, Interconnect, NicRequest, NodeState, NumaPolicy, Pipeline,
    TaskRequest,
};
use proptest::prelude::*;

fn node(name: &str, fixture: &str) -> NodeState {
    NodeState::from_inventory(name, &load_fixture(fixture).unwrap())
}

fn gpus(count: u32, nvlink: bool) -> Option<GpuRequest> {
    Some(GpuRequest {
        count,
        milli: 1000,
        interconnect: if nvlink {
            Interconnect::NvLink
        } else {
            Interconnect::Any
        },
        ..Default::default()
    })
}

#[test]
fn four_nvlinked_h100s_with_local_cores_and_nic() {
    let c = Cluster::new(vec![node("cpu", "cpu-2s"), node("dgx", "dgx-h100")]);
    let t = TaskRequest {
        id: "t".into(),
        memory: 1 << 30,
        cores: 8,
        gpus: gpus(4, true),
        nics: Some(NicRequest {
            count: 1,
            min_speed_mbps: 400_000,
            rdma: true,
        }),
        numa: NumaPolicy::SingleNumaNode,
        ..Default::default()
    };
    let d = Pipeline::default().decide(&c, &t);
    let (n, a) = d.placement.expect("placed");
    assert_eq!(n, "dgx");
    assert_eq!(a.gpus.len(), 4);
    let dgx = c.node("dgx").unwrap();
    let numa: HashSet<Option<u32>> = a
        .gpus
        .iter()
        .map(|g| dgx.gpus[g.index as usize].numa)
        .collect();
    assert_eq!(numa.len(), 1, "one NUMA node");
    let numa = numa.into_iter().next().unwrap().unwrap();
    assert_eq!(a.numa_nodes, vec![numa]);
    assert_eq!(a.cores.len(), 8);
    assert!(
        a.cores
            .iter()
            .all(|c| dgx.cores.iter().find(|x| x.id == *c).unwrap().numa == numa)
    );
    assert_eq!(a.cpuset.len(), 16, "both SMT threads of each core");
    let nic = dgx.nics.iter().find(|n| n.name == a.nics[0]).unwrap();
    let switches: HashSet<&str> = a
        .gpus
        .iter()
        .filter_map(|g| dgx.gpus[g.index as usize].switch.as_deref())
        .collect();
    assert!(
        switches.contains(nic.switch.as_deref().unwrap()),
        "NIC behind a chosen GPU's PCIe switch"
    );
    let cpu = d.nodes.iter().find(|e| e.node == "cpu").unwrap();
    assert!(cpu.filtered.as_ref().unwrap().1.reason.contains("GPUs"));
}

#[test]
fn nvlink_pairs_bound_multi_gpu_requests() {
    let mut c = Cluster::new(vec![node("a", "a100-pcie-4x")]);
    let p = Pipeline::default();
    let three = TaskRequest {
        id: "3".into(),
        memory: 1,
        gpus: gpus(3, true),
        ..Default::default()
    };
    let d = p.decide(&c, &three);
    assert!(d.placement.is_none());
    assert_eq!(
        d.summary,
        "0/1 nodes: 1 lack 3 free GPUs on one NVLink island"
    );
    let two = TaskRequest {
        id: "2".into(),
        memory: 1,
        gpus: gpus(2, true),
        ..Default::default()
    };
    let (_, a) = p.decide(&c, &two).placement.unwrap();
    let set: Vec<u32> = a.gpus.iter().map(|g| g.index).collect();
    assert_eq!(set, vec![0, 1], "an NVLink-bridged pair");
    c.commit("a", &a);
    let (_, b) = p.decide(&c, &two).placement.unwrap();
    assert_eq!(
        b.gpus.iter().map(|g| g.index).collect::<Vec<_>>(),
        vec![2, 3]
    );
}

#[test]
fn mig_instances_are_granted_by_uuid() {
    let mut c = Cluster::new(vec![node("m", "a100-mig")]);
    let p = Pipeline::default();
    let req = |profile: &str| TaskRequest {
        id: "m".into(),
        memory: 1,
        gpus: Some(GpuRequest {
            count: 1,
            milli: 1000,
            mig_profile: Some(profile.into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut seen = HashSet::new();
    for _ in 0..2 {
        let (_, a) = p.decide(&c, &req("1g.10gb")).placement.unwrap();
        assert!(a.gpus[0].uuid.starts_with("MIG-"));
        assert!(seen.insert(a.gpus[0].uuid.clone()));
        c.commit("m", &a);
    }
    assert!(
        p.decide(&c, &req("1g.10gb")).placement.is_none(),
        "only two 1g.10gb instances"
    );
    // The MIG-enabled GPU is never handed out whole; the other one is.
    let (_, a) = p
        .decide(
            &c,
            &TaskRequest {
                id: "w".into(),
                memory: 1,
                gpus: gpus(1, false),
                ..Default::default()
            },
        )
        .placement
        .unwrap();
    assert_eq!(a.gpus[0].index, 1);
}

/// `node` plus four FPGAs, two on each of NUMA nodes 0 and 1.
fn with_fpgas(mut n: NodeState) -> NodeState {
    n.devices = (0..4)
        .map(|i| DeviceState {
            kind: "example.com/fpga".into(),
            qualified: format!("example.com/fpga=fpga{i}"),
            numa: Some(i / 2),
            taken: false,
        })
        .collect();
    n
}

#[test]
fn devices_are_exclusive_numa_local_and_explained() {
    let mut c = Cluster::new(vec![
        node("cpu", "cpu-2s"),
        with_fpgas(node("dgx", "dgx-h100")),
    ]);
    let fpga = |count: u32, gpu: bool| TaskRequest {
        id: "t".into(),
        memory: 1 << 30,
        gpus: if gpu { gpus(1, false) } else { None },
        devices: vec![("example.com/fpga".into(), count)],
        numa: NumaPolicy::SingleNumaNode,
        ..Default::default()
    };
    let p = Pipeline::default();
    // With a GPU on one NUMA node, the FPGA comes from that node.
    let (n, a) = p.decide(&c, &fpga(1, true)).placement.unwrap();
    assert_eq!(n, "dgx");
    assert_eq!(a.devices, vec!["example.com/fpga=fpga0".to_string()]);
    assert_eq!(a.numa_nodes, vec![0]);
    assert!(c.commit(&n, &a));
    // Two on one NUMA node: NUMA 0 has one left, NUMA 1 has two.
    let (_, b) = p.decide(&c, &fpga(2, false)).placement.unwrap();
    assert_eq!(
        b.devices,
        vec!["example.com/fpga=fpga2", "example.com/fpga=fpga3"]
    );
    assert!(c.commit(&n, &b));
    // One left; two cannot be had, and the reason says so.
    let d = p.decide(&c, &fpga(2, false));
    assert!(d.placement.is_none());
    assert_eq!(
        d.summary, "0/2 nodes: 2 lack 2 free example.com/fpga",
        "{:?}",
        d.nodes
    );
    // Releasing makes them free again.
    c = Cluster::new(vec![{
        let mut n = c.node("dgx").unwrap().clone();
        n.release(&b);
        n
    }]);
    assert!(p.decide(&c, &fpga(2, false)).placement.is_some());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn nothing_is_allocated_twice(
        tasks in proptest::collection::vec((0u32..4, 0u32..9, 0u32..3, any::<bool>(), 0u32..4, 0u32..2, 0u32..3), 1..40)
    ) {
        let mut c = Cluster::new(vec![with_fpgas(node("d1", "dgx-h100")), with_fpgas(node("d2", "dgx-h100")), node("a", "a100-pcie-4x"), node("m", "a100-mig"), node("c", "cpu-2s")]);
        let p = Pipeline::default();
        let mut gpu_milli: std::collections::HashMap<(String, u32), u32> = Default::default();
        let mut cores: HashSet<(String, u32)> = HashSet::new();
        let mut nics: HashSet<(String, String)> = HashSet::new();
        let mut migs: HashSet<String> = HashSet::new();
        let mut devices: HashSet<(String, String)> = HashSet::new();
        for (i, (kind, count, ncores, nvlink, nnics, numa, ndev)) in tasks.into_iter().enumerate() {
            let g = match kind {
                0 => None,
                1 => Some(GpuRequest { count: 1, milli: 250 * (count % 4 + 1), ..Default::default() }),
                2 => gpus(count.max(1), nvlink),
                _ => Some(GpuRequest { count: 1, milli: 1000, mig_profile: Some("1g.10gb".into()), ..Default::default() }),
            };
            let t = TaskRequest {
                id: format!("t{i}"),
                cpu: if ncores == 0 { 500 } else { 0 },
                memory: 1 << 30,
                cores: ncores * 4,
                gpus: g,
                nics: (nnics > 0).then_some(NicRequest { count: nnics, min_speed_mbps: 0, rdma: false }),
                numa: if numa == 1 { NumaPolicy::SingleNumaNode } else { NumaPolicy::None },
                devices: if ndev > 0 { vec![("example.com/fpga".into(), ndev)] } else { Vec::new() },
                ..Default::default()
            };
            let d = p.decide(&c, &t);
            let Some((n, a)) = d.placement else { continue };
            for g in &a.gpus {
                if g.uuid.starts_with("MIG-") {
                    prop_assert!(migs.insert(g.uuid.clone()), "MIG instance twice");
                } else {
                    let used = gpu_milli.entry((n.clone(), g.index)).or_default();
                    *used += g.milli;
                    prop_assert!(*used <= 1000, "GPU over 1000 thousandths");
                }
            }
            for core in &a.cores {
                prop_assert!(cores.insert((n.clone(), *core)), "core twice");
            }
            for nic in &a.nics {
                prop_assert!(nics.insert((n.clone(), nic.clone())), "NIC twice");
            }
            prop_assert_eq!(a.devices.len() as u32, ndev);
            for dev in &a.devices {
                prop_assert!(devices.insert((n.clone(), dev.clone())), "device twice");
            }
            if t.numa == NumaPolicy::SingleNumaNode {
                prop_assert_eq!(a.numa_nodes.len(), 1);
            }
            prop_assert!(c.commit(&n, &a));
        }
    }
}

/// Four NUMA nodes with two cores each.
fn four_numa() -> NodeState {
    NodeState {
        name: "n".into(),
        ready: true,
        cores: (0..8)
            .map(|i| CoreState {
                id: i,
                numa: i / 2,
                pus: vec![i],
                taken: false,
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn restricted_uses_the_fewest_numa_nodes() {
    let mut node = four_numa();
    node.cores[0].taken = true; // NUMA 0 has one free core
    let t = TaskRequest {
        id: "t".into(),
        cores: 3,
        numa: NumaPolicy::Restricted,
        ..Default::default()
    };
    let p = pick(&t, &node).unwrap();
    assert_eq!(p.numa.len(), 2, "{p:?}");
    let t = TaskRequest { cores: 2, ..t };
    assert_eq!(pick(&t, &node).unwrap().numa, vec![1]);
    let single = TaskRequest {
        cores: 3,
        numa: NumaPolicy::SingleNumaNode,
        ..t
    };
    assert_eq!(
        pick(&single, &node).unwrap_err().reason,
        "cannot satisfy single-numa-node"
    );
    let gpu = TaskRequest {
        gpus: Some(GpuRequest {
            count: 1,
            milli: 1000,
            ..Default::default()
        }),
        ..single
    };
    assert!(
        pick(&gpu, &node)
            .unwrap_err()
            .reason
            .starts_with("lack 1 free GPUs")
    );
}

/// Exclusive cores take a whole CPU each from the node's CPU: a node whose
/// CPU shared tasks hold is turned down by the filters (and says so), not
/// picked and then refused by the allocator.
#[test]
fn exclusive_cores_need_the_cpu_they_take() {
    let mut busy = node("a-busy", "cpu-2s");
    busy.cpu_used = busy.cpu_capacity - 1000;
    let c = Cluster::new(vec![busy, node("b-idle", "cpu-2s")]);
    let t = TaskRequest {
        id: "t".into(),
        memory: 1 << 30,
        cores: 2,
        numa: NumaPolicy::SingleNumaNode,
        ..Default::default()
    };
    for p in [
        Pipeline::default(),
        berth_sched::policy::pipeline("default", &Default::default()).unwrap(),
    ] {
        let d = p.decide(&c, &t);
        assert_eq!(d.placement.as_ref().unwrap().0, "b-idle");
        let (plugin, why) = d.nodes[0].filtered.clone().unwrap();
        assert!(
            ["resource-fit", "fast-fit"].contains(&plugin.as_str()),
            "{plugin}: {why:?}"
        );
        assert_eq!(why.reason, "insufficient cpu");
        assert_eq!(p.place(&c, &t).unwrap().0, 1);
    }
}

/// A MIG request skips nodes without a free instance before asking.
#[test]
fn mig_instances_are_a_need() {
    let mut full = node("a-full", "a100-mig");
    for m in full.gpus.iter_mut().flat_map(|g| &mut g.mig) {
        m.taken = true;
    }
    full.repack();
    let free = node("b-free", "a100-mig");
    assert_eq!(full.free.mig, 0);
    assert!(free.free.mig > 0);
    let t = TaskRequest {
        id: "t".into(),
        gpus: Some(GpuRequest {
            count: 1,
            milli: 1000,
            mig_profile: Some("1g.10gb".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let need = berth_sched::Need::of(&t);
    assert!(!need.met(true, &full.free) && need.met(true, &free.free));
    let c = Cluster::new(vec![full, free]);
    let p = berth_sched::policy::pipeline("default", &Default::default()).unwrap();
    assert_eq!(p.place(&c, &t).unwrap().0, 1);
    assert!(p.decide(&c, &t).nodes[0].filtered.is_some());
}

/// `binpack` and `spread` count the CPU a task's exclusive cores take: an
/// 8-core task fills a node of 8 CPUs and a tenth of one of 80.
#[test]
fn packing_scores_count_exclusive_cores() {
    let mut small = node("a-small", "cpu-2s");
    small.cpu_capacity = 8000;
    let mut big = node("b-big", "cpu-2s");
    big.cpu_capacity = 80_000;
    let c = Cluster::new(vec![small, big]);
    let t = TaskRequest {
        id: "t".into(),
        memory: 1 << 30,
        cores: 8,
        ..Default::default()
    };
    let ctx = Default::default();
    for (policy, node) in [("spread", "b-big"), ("binpack", "a-small")] {
        let p = berth_sched::policy::cluster_pipeline(policy, &ctx).unwrap();
        let d = p.decide(&c, &t);
        assert_eq!(d.placement.unwrap().0, node, "{policy}");
    }
}
