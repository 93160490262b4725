//! Loader errors name the file, line and column; bad options are errors,
//! never panics.

use std::path::{Path, PathBuf};

use berth_sim::openb::csv::{load_nodes, parse_nodes, parse_pods};
use berth_sim::{OpenbOpts, SimError, run_openb};

const NODES: &str = "sn,cpu_milli,memory_mib,gpu,model\nn1,8000,16384,2,T4\n";
const PODS: &str = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\np1,1000,1024,1,500,\n";

fn csv_err(e: SimError) -> (PathBuf, usize, String, String) {
    match e {
        SimError::Csv {
            file,
            line,
            column,
            msg,
        } => (file, line, column, msg),
        other => panic!("expected a CSV error, got {other}"),
    }
}

#[test]
fn bad_integer_names_file_line_and_column() {
    let text =
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np1,1000,1024,1,500\np2,1000,lots,0,0\n";
    let e = parse_pods(Path::new("pods.csv"), text).unwrap_err();
    let msg = e.to_string();
    assert_eq!(
        msg,
        "pods.csv:3: column 3 (memory_mib): \"lots\" is not a non-negative integer"
    );
    let (file, line, column, _) = csv_err(e);
    assert_eq!(
        (file, line, column.as_str()),
        (PathBuf::from("pods.csv"), 3, "3 (memory_mib)")
    );
}

#[test]
fn out_of_range_and_negative_values_are_rejected() {
    let e = parse_pods(
        Path::new("p.csv"),
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,1,1,1,1500\n",
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("p.csv:2: column 5 (gpu_milli): 1500 is more than 1000"),
        "{e}"
    );
    let e = parse_nodes(
        Path::new("n.csv"),
        "sn,cpu_milli,memory_mib,gpu,model\nn,-5,1,1,T4\n",
    )
    .unwrap_err();
    assert!(
        e.to_string().starts_with("n.csv:2: column 2 (cpu_milli)"),
        "{e}"
    );
    let e = parse_nodes(
        Path::new("n.csv"),
        "sn,cpu_milli,memory_mib,gpu,model\nn,5,1,1,\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("column 5 (model)"), "{e}");
}

#[test]
fn wrong_field_count_and_missing_columns() {
    let e = parse_nodes(
        Path::new("n.csv"),
        "sn,cpu_milli,memory_mib,gpu,model\nn1,1,2\n",
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "n.csv:2: column 4: expected 5 fields, found 3"
    );
    let e = parse_nodes(Path::new("n.csv"), "sn,cpu,memory_mib,gpu,model\n").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("n.csv:1: column cpu_milli: missing column"),
        "{e}"
    );
    let e = parse_pods(Path::new("e.csv"), "").unwrap_err();
    assert!(e.to_string().contains("e.csv:1"), "{e}");
}

#[test]
fn missing_files_and_bad_options() {
    let e = load_nodes(Path::new("/nonexistent/nodes.csv")).unwrap_err();
    assert!(matches!(e, SimError::Io { .. }));
    assert!(e.to_string().starts_with("/nonexistent/nodes.csv: "), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("openb_pod_list_tiny.csv");
    std::fs::write(&trace, PODS).unwrap();
    let opts = |policy: &str, seeds: Vec<u64>| OpenbOpts {
        trace: trace.clone(),
        nodes: None,
        policy: policy.into(),
        seeds,
        wasm: Default::default(),
    };
    // No node list next to the trace.
    let e = run_openb(&opts("fgd", vec![1])).unwrap_err();
    assert!(
        e.to_string().contains("openb_node_list_gpu_node.csv"),
        "{e}"
    );
    std::fs::write(dir.path().join("openb_node_list_gpu_node.csv"), NODES).unwrap();
    assert!(matches!(
        run_openb(&opts("nope", vec![1])).unwrap_err(),
        SimError::Policy(_)
    ));
    assert!(matches!(
        run_openb(&opts("fgd", vec![])).unwrap_err(),
        SimError::Invalid(_)
    ));
    let r = run_openb(&opts("fgd", vec![1, 2])).unwrap();
    assert_eq!(r.seeds(), vec![1, 2]);
    // A bad row deep in the trace.
    std::fs::write(&trace, format!("{PODS}p2,1,1,x,0,\n")).unwrap();
    let e = run_openb(&opts("fgd", vec![1])).unwrap_err();
    assert!(
        e.to_string().ends_with(
            "openb_pod_list_tiny.csv:3: column 4 (num_gpu): \"x\" is not a non-negative integer"
        ),
        "{e}"
    );
}
