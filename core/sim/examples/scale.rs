//! Runs the scale benchmark:
//! `cargo run --release -p berth-sim --example scale -- NODES TASKS [SAMPLE] [POLICY]`.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let num = |i: usize, d: usize| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let opts = berth_sim::ScaleOpts {
        nodes: num(1, 10_000),
        tasks: num(2, 100_000),
        seed: 42,
        policy: args.get(4).cloned().unwrap_or_else(|| "default".into()),
        sample: Some(num(3, 0)).filter(|s| *s > 0),
    };
    match berth_sim::run_scale(&opts) {
        Ok(r) => println!("{}\n{}", r.table(), r.json()),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
