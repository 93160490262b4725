//! `berth sim`: the real scheduler on simulated clusters.

use std::path::PathBuf;

use anyhow::anyhow;
use berth_sim::{OpenbOpts, ScaleOpts, parse_seeds, run_openb, run_scale};

/// `berth sim openb`.
pub fn openb(
    trace: PathBuf,
    nodes: Option<PathBuf>,
    policy: String,
    seeds: &str,
    json: bool,
) -> anyhow::Result<()> {
    let seeds = parse_seeds(seeds).map_err(|e| anyhow!("--seeds: {e}"))?;
    let report = run_openb(&OpenbOpts {
        trace,
        nodes,
        policy,
        seeds,
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// `berth sim scale`.
pub fn scale(
    nodes: usize,
    tasks: usize,
    seed: u64,
    policy: String,
    sample: Option<usize>,
    remember: Option<usize>,
    json: bool,
) -> anyhow::Result<()> {
    let report = run_scale(&ScaleOpts {
        nodes,
        tasks,
        seed,
        policy,
        sample,
        remember,
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
