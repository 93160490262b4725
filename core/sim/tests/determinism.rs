//! The same seed gives the same curve; another seed a different workload.

mod common;

use berth_sim::openb::Bench;
use berth_sim::openb::csv::{load_nodes, load_pods};

#[test]
fn same_seed_same_curve() {
    let data = common::openb_data();
    // A tenth of the cluster and of the trace keeps the debug build quick.
    let nodes = load_nodes(&data.join("openb_node_list_gpu_node.csv")).unwrap();
    let pods = load_pods(&data.join("openb_pod_list_gpuspec20.csv")).unwrap();
    let nodes: Vec<_> = nodes.into_iter().step_by(10).collect();
    let pods: Vec<_> = pods.into_iter().step_by(10).collect();
    let bench = Bench::new(nodes, pods).unwrap();
    for policy in ["fgd", "random", "default"] {
        let a = bench.run_seed(policy, &Default::default(), 42).unwrap();
        let b = bench.run_seed(policy, &Default::default(), 42).unwrap();
        assert_eq!(a.curve, b.curve, "{policy}");
        assert_eq!((a.placed, a.failed), (b.placed, b.failed));
        let c = bench.run_seed(policy, &Default::default(), 43).unwrap();
        assert!(
            a.curve != c.curve || a.pods != c.pods,
            "{policy}: seeds 42 and 43 agree"
        );
    }
    // Parallel runs give the per-seed results of serial ones.
    let par = bench.run("fgd", &Default::default(), &[42, 43]).unwrap();
    assert_eq!(
        par[0].curve,
        bench
            .run_seed("fgd", &Default::default(), 42)
            .unwrap()
            .curve
    );
    assert_eq!(par[1].seed, 43);
}
