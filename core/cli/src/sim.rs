//! `berth sim`: the real scheduler on simulated clusters.

use std::path::PathBuf;

use anyhow::anyhow;
use berth_sim::{
    ExtraPlugin, OpenbOpts, ScaleOpts, WasmPlugins, parse_seeds, run_openb, run_scale,
};

/// Wasm plugins for a simulation.
#[derive(clap::Args)]
pub struct WasmArgs {
    /// A Wasm policy component (score, and allocate if it exports it) in
    /// place of the native policy; it gets the workload as its config.
    #[arg(long)]
    wasm_plugin: Option<PathBuf>,
    /// An extra Wasm plugin, KIND:FILE or KIND:FILE:JSON (kind filter or
    /// score; repeatable), with `:class-pure` at the end when it is (see
    /// `berth plugin install --class-pure`).
    #[arg(long = "extra-plugin")]
    extra: Vec<String>,
    /// The --wasm-plugin policy is class-pure (asked once per node class).
    #[arg(long, requires = "wasm_plugin")]
    wasm_class_pure: bool,
    /// Decide node by node, as before node classes (the same decisions;
    /// for comparing).
    #[arg(long)]
    per_node: bool,
}

impl WasmArgs {
    fn plugins(self) -> anyhow::Result<WasmPlugins> {
        Ok(WasmPlugins {
            policy: self.wasm_plugin,
            extra: self
                .extra
                .iter()
                .map(|x| ExtraPlugin::parse(x))
                .collect::<Result<_, _>>()?,
            policy_class_pure: self.wasm_class_pure,
            per_node: self.per_node,
        })
    }
}

/// `berth sim openb`.
#[derive(clap::Args)]
pub struct OpenbArgs {
    /// Pod list CSV (openb_pod_list_*.csv).
    #[arg(long)]
    trace: PathBuf,
    /// Node list CSV (default: openb_node_list_gpu_node.csv next to the trace).
    #[arg(long)]
    nodes: Option<PathBuf>,
    /// random | bestfit | fgd | default (Berth's own) | ...
    #[arg(long, default_value = "default")]
    policy: String,
    /// Seeds, e.g. 42-51 or 42,43.
    #[arg(long, default_value = "42-51")]
    seeds: String,
    /// Print {"trace","policy","seeds","columns":{...}} (mean over seeds).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    wasm: WasmArgs,
}

impl OpenbArgs {
    /// Runs it.
    pub fn run(self) -> anyhow::Result<()> {
        let seeds = parse_seeds(&self.seeds).map_err(|e| anyhow!("--seeds: {e}"))?;
        let report = run_openb(&OpenbOpts {
            trace: self.trace,
            nodes: self.nodes,
            policy: self.policy,
            seeds,
            wasm: self.wasm.plugins()?,
        })?;
        print_report(self.json, report.json(), || report.table())
    }
}

/// `berth sim scale`.
#[derive(clap::Args)]
pub struct ScaleArgs {
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value = "default")]
    policy: String,
    /// Score at most this many feasible nodes per decision.
    #[arg(long)]
    sample: Option<usize>,
    /// With --sample: also score this many nodes last chosen for the
    /// same kind of task (default: half the sample; 0: plain sampling).
    #[arg(long, requires = "sample")]
    remember: Option<usize>,
    /// Make every node differ from every other (its memory, by a MiB or
    /// more), so no two share a node class: the worst case for classes.
    #[arg(long)]
    distinct_nodes: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    wasm: WasmArgs,
}

impl ScaleArgs {
    /// Runs it.
    pub fn run(self) -> anyhow::Result<()> {
        let report = run_scale(&ScaleOpts {
            nodes: self.nodes,
            tasks: self.tasks,
            seed: self.seed,
            policy: self.policy,
            sample: self.sample,
            remember: self.remember,
            wasm: self.wasm.plugins()?,
            distinct: self.distinct_nodes,
        })?;
        print_report(self.json, report.json(), || report.table())
    }
}

/// Prints a report as JSON or as its table.
fn print_report(
    json: bool,
    value: serde_json::Value,
    table: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if crate::output::structured(json) {
        crate::output::print(&value)?;
    } else {
        print!("{}", table());
    }
    Ok(())
}
