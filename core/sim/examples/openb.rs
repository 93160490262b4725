//! Runs the openb benchmark: `cargo run --release -p berth-sim --example openb -- TRACE POLICY SEEDS`.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let trace = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "../shared/benchmarks/openb/data/openb_pod_list_default.csv".into());
    let policy = args.get(2).cloned().unwrap_or_else(|| "fgd".into());
    let seeds = args.get(3).cloned().unwrap_or_else(|| "42-51".into());
    let opts = berth_sim::OpenbOpts {
        trace: trace.into(),
        nodes: None,
        policy,
        seeds: match berth_sim::parse_seeds(&seeds) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        },
    };
    match berth_sim::run_openb(&opts) {
        Ok(r) => println!("{}\n{}", r.table(), r.json()),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
