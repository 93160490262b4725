//! The real default trace, one seed: FGD lands where the paper's table says
//! (95.39 at column 130 over ten seeds), and the scale benchmark runs.

mod common;

use berth_sim::{OpenbOpts, ScaleOpts, run_openb, run_scale};

#[test]
fn fgd_on_the_default_trace() {
    let data = common::openb_data();
    let r = run_openb(&OpenbOpts {
        trace: data.join("openb_pod_list_default.csv"),
        nodes: None,
        policy: "fgd".into(),
        seeds: vec![42],
        wasm: Default::default(),
    })
    .unwrap();
    let c130 = r.column(130).unwrap();
    assert!(c130 > 93.0 && c130 < 97.0, "column 130: {c130}");
    let c90 = r.column(90).unwrap();
    assert!((88.0..=91.0).contains(&c90), "column 90: {c90}");
    assert_eq!(r.workload, "default");
    assert_eq!(r.runs[0].pods, r.runs[0].placed + r.runs[0].failed);
}

#[test]
fn scale_benchmark_runs_and_reports() {
    let opts = ScaleOpts {
        nodes: 200,
        tasks: 2000,
        seed: 1,
        policy: "default".into(),
        sample: Some(20),
        remember: None,
        wasm: Default::default(),
        distinct: false,
    };
    let r = run_scale(&opts).unwrap();
    assert_eq!(r.placed + r.failed, 2000);
    assert!(r.placements_per_sec > 0.0 && r.p50_us <= r.p99_us && r.p99_us <= r.max_us);
    let q = r.quality.as_ref().unwrap();
    assert_eq!((q.nodes, q.sample), (100, 10));
    let j = r.json();
    for k in [
        "placements_per_sec",
        "p50_us",
        "p99_us",
        "placed",
        "failed",
        "sampling_quality",
    ] {
        assert!(j.get(k).is_some(), "{k}");
    }
    assert!(r.table().contains("placements/s"));
    assert!(
        run_scale(&ScaleOpts {
            nodes: 0,
            ..opts.clone()
        })
        .is_err()
    );
    assert!(
        run_scale(&ScaleOpts {
            policy: "nope".into(),
            ..opts
        })
        .is_err()
    );
}

/// Every node scored, once per class and once per node: the same
/// decisions, task for task (the digest covers node and allocation of
/// each), on a cluster of four kinds and on one where every node differs.
#[test]
fn scale_decides_the_same_by_class_and_node_by_node() {
    for distinct in [false, true] {
        let opts = ScaleOpts {
            nodes: 300,
            tasks: 3000,
            seed: 3,
            policy: "default".into(),
            sample: None,
            remember: None,
            wasm: Default::default(),
            distinct,
        };
        let classed = run_scale(&opts).unwrap();
        let mut per_node = opts.clone();
        per_node.wasm.per_node = true;
        let plain = run_scale(&per_node).unwrap();
        assert_eq!(classed.digest, plain.digest, "distinct {distinct}");
        assert_eq!(classed.outcome, plain.outcome);
        let c = classed.classes;
        if distinct {
            assert_eq!(c.kinds, 300);
        } else {
            assert_eq!(c.kinds, 4);
            assert!(c.mean < 300.0 && c.peak <= 300, "{c:?}");
        }
        assert!(classed.json()["classes"]["peak"].as_u64().is_some());
    }
}
