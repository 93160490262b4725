//! The allocation curve: Python rounding, 1% bins, the [c−1, c+1] fallback,
//! and a tiny hand-made trace replayed end to end.

use std::path::Path;

use berth_sim::openb::csv::{parse_nodes, parse_pods};
use berth_sim::openb::metric::{Event, curve, mean_curve, py_round2};
use berth_sim::openb::{Bench, OpenbReport};

#[test]
fn bins_round_like_python() {
    // 10 GPUs: 1% of capacity is 100 thousandths.
    let ev = |arrived, used| Event { arrived, used };
    let events = [
        ev(50, 50),    // 0.5% -> bin 0 (ties to even), alloc 0.5
        ev(150, 100),  // 1.5% -> bin 2 (ties to even), alloc 1.0
        ev(249, 200),  // 2.49% -> bin 2, alloc 2.0
        ev(251, 250),  // 2.51% -> bin 3, alloc 2.5
        ev(1000, 812), // 10% -> bin 10, alloc 8.12
        ev(1001, 813), // 10.01% -> bin 10, alloc 8.13
    ];
    let c = curve(&events, 10);
    assert_eq!(c[0], Some(0.5));
    assert_eq!(c[2], Some(1.5)); // mean(1.0, 2.0)
    assert_eq!(c[3], Some(2.5));
    // Bin 1 is empty: mean over bins 0..=2.
    assert_eq!(c[1], Some(py_round2((0.5 + 1.0 + 2.0) / 3.0)));
    // mean(8.12, 8.13) = 8.125 (as a double slightly below) -> 8.12.
    assert_eq!(c[10], Some(py_round2((8.12 + 8.13) / 2.0)));
    assert_eq!(c[10], Some(8.12));
    // Bins 5..=8 and their neighbours are empty.
    assert_eq!(c[6], None);
    assert_eq!(c[9], Some(8.12));
    assert_eq!(c.len(), 131);
    let m = mean_curve(&[c.clone(), vec![Some(1.0); 131]]);
    assert_eq!(m[3], Some(1.75));
    assert_eq!(m[6], Some(1.0));
}

#[test]
fn tiny_trace_end_to_end() {
    // One node with 2 GPUs (tuned demand: 1.3 x 2000 = 2600 thousandths)
    // and identical half-GPU pods, so every seed gives the same events:
    // 2 originals, 3 clones (a 6th would pass 2600), the 5th fails.
    let nodes = parse_nodes(
        Path::new("n.csv"),
        "sn,cpu_milli,memory_mib,gpu,model\nn,8000,8192,2,T4\n",
    )
    .unwrap();
    let pods = parse_pods(
        Path::new("p.csv"),
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,1000,1024,1,500\nb,1000,1024,1,500\n",
    )
    .unwrap();
    let bench = Bench::new(nodes, pods).unwrap();
    let run = bench.run_seed("bestfit", &Default::default(), 3).unwrap();
    assert_eq!((run.pods, run.placed, run.failed), (5, 4, 1));
    // Arrived 25, 50, 75, 100, 125 %; allocated 25, 50, 75, 100, 100 %.
    let c = &run.curve;
    assert_eq!(
        (c[25], c[50], c[75], c[100], c[125]),
        (Some(25.0), Some(50.0), Some(75.0), Some(100.0), Some(100.0))
    );
    // Empty bins next to a value take it; farther ones stay empty.
    assert_eq!(
        (c[24], c[26], c[124]),
        (Some(25.0), Some(25.0), Some(100.0))
    );
    assert_eq!((c[0], c[27], c[130]), (None, None, None));
    let report = OpenbReport::new(
        "p.csv".into(),
        "tiny".into(),
        "bestfit".into(),
        vec![run],
        0.1,
    );
    assert!(
        report.table().contains("|tiny|bestfit|-|100.00|-|-|"),
        "{}",
        report.table()
    );
    let j = report.json();
    assert_eq!(j["trace"], "tiny");
    assert_eq!(j["seeds"], serde_json::json!([3]));
    assert_eq!(j["columns"]["100"], 100.0);
    assert!(j["columns"]["130"].is_null());
}
