//! The openb GPU-fragmentation benchmark (see
//! `shared/benchmarks/openb/METHOD.md`): Alibaba's production GPU cluster
//! (1213 nodes, 6212 GPUs) and task traces, replayed through Berth's
//! pipeline with a placement policy, measured as the GPU allocation ratio
//! against arrived demand, averaged over seeds.

pub mod csv;
pub mod metric;
mod report;
pub mod workload;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use berth_sched::policy::{self, PolicyContext, TypicalPod};
use berth_sched::{Cluster, TaskRequest};

use crate::SimError;
use csv::{OpenbNode, OpenbPod};
use metric::Event;

pub use report::{OpenbReport, SeedRun};

/// The node list used when [`OpenbOpts::nodes`] is not given, looked up next
/// to the trace.
pub const NODE_FILE: &str = "openb_node_list_gpu_node.csv";

/// Demand is tuned to this multiple of GPU capacity ("tune 1.3").
pub const TUNE_RATIO: f64 = 1.3;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenbOpts {
    /// Pod list CSV (`openb_pod_list_*.csv`).
    pub trace: PathBuf,
    /// Node list CSV; default: [`NODE_FILE`] next to the trace.
    pub nodes: Option<PathBuf>,
    /// Policy name (see [`berth_sched::policy::POLICIES`]).
    pub policy: String,
    /// Seeds; results are averaged over them.
    pub seeds: Vec<u64>,
    /// Wasm plugins in place of or beside the native policy.
    pub wasm: crate::WasmPlugins,
}

/// Parses `42-51`, `42,43` or a mix (`1-3,7`) into seeds.
pub fn parse_seeds(s: &str) -> Result<Vec<u64>, SimError> {
    let bad = |msg: String| SimError::Seeds {
        input: s.to_string(),
        msg,
    };
    let num = |t: &str| {
        t.trim().parse::<u64>().map_err(|_| {
            bad(format!(
                "{:?} is not a seed (a non-negative integer)",
                t.trim()
            ))
        })
    };
    let mut seeds = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(bad("empty item".into()));
        }
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(bad(format!("range {a}-{b} runs backwards")));
                }
                if b - a >= 100_000 {
                    return Err(bad(format!("range {a}-{b} has more than 100000 seeds")));
                }
                seeds.extend(a..=b);
            }
            None => seeds.push(num(part)?),
        }
    }
    Ok(seeds)
}

/// The workload's short name: `openb_pod_list_default.csv` → `default`.
pub fn workload_name(trace: &Path) -> String {
    let stem = trace
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    stem.strip_prefix("openb_pod_list_")
        .map(str::to_string)
        .unwrap_or(stem)
}

/// A loaded benchmark: nodes, pods and what every seed shares.
pub struct Bench {
    nodes: Vec<OpenbNode>,
    sorted: Vec<OpenbPod>,
    tasks: Vec<TaskRequest>,
    typical: Vec<TypicalPod>,
    capacity: Vec<(String, u64)>,
}

impl Bench {
    /// From parsed nodes and pods (pods in file order: typical pods come
    /// from the original trace).
    pub fn new(nodes: Vec<OpenbNode>, pods: Vec<OpenbPod>) -> Result<Bench, SimError> {
        if workload::capacity_milli(&nodes) == 0 {
            return Err(SimError::Invalid("the node list has no GPUs".into()));
        }
        if pods.is_empty() {
            return Err(SimError::Invalid("the trace has no pods".into()));
        }
        let typical = PolicyContext::from_shapes(pods.iter().map(OpenbPod::shape), 0).typical;
        let sorted = workload::sort_by_name(&pods);
        let tasks = sorted.iter().map(OpenbPod::task).collect();
        let mut per_model: std::collections::BTreeMap<String, u64> =
            std::collections::BTreeMap::new();
        for n in &nodes {
            *per_model.entry(n.model.clone()).or_default() += u64::from(n.gpu) * 1000;
        }
        let capacity = per_model.into_iter().filter(|c| c.1 > 0).collect();
        Ok(Bench {
            capacity,
            nodes,
            sorted,
            tasks,
            typical,
        })
    }

    /// The typical pods (FGD's distribution) of the original trace.
    pub fn typical(&self) -> &[TypicalPod] {
        &self.typical
    }

    /// Replays one seed with `policy_name`; returns the run.
    pub fn run_seed(
        &self,
        policy_name: &str,
        wasm: &crate::WasmPlugins,
        seed: u64,
    ) -> Result<SeedRun, SimError> {
        let start = Instant::now();
        let w = workload::build(&self.sorted, &self.nodes, seed, TUNE_RATIO);
        let width = self.nodes.len().saturating_sub(1).to_string().len().max(4);
        let states = self
            .nodes
            .iter()
            .zip(&w.node_rank)
            .map(|(n, r)| n.state(format!("{r:0width$}-{}", n.sn)))
            .collect();
        let mut cluster = Cluster::new(states);
        let ctx = PolicyContext {
            typical: self.typical.clone(),
            seed,
            capacity: self.capacity.clone(),
        };
        let pipe = crate::wasm::pipeline(policy_name, wasm, &ctx)?;
        let (mut arrived, mut used, mut placed, mut failed) = (0u64, 0u64, 0usize, 0usize);
        let mut events = Vec::with_capacity(w.arrivals.len());
        for &i in &w.arrivals {
            arrived += self.sorted[i].gpu_demand();
            match pipe.place(&cluster, &self.tasks[i]) {
                Some((node, a)) => {
                    used += a.gpus.iter().map(|g| u64::from(g.milli)).sum::<u64>();
                    let name = cluster.nodes()[node].name.clone();
                    cluster.commit(&name, &a);
                    placed += 1;
                }
                None => failed += 1,
            }
            events.push(Event { arrived, used });
        }
        let gpus = workload::capacity_milli(&self.nodes) / 1000;
        Ok(SeedRun {
            seed,
            curve: metric::curve(&events, gpus),
            pods: w.arrivals.len(),
            placed,
            failed,
            wall_s: start.elapsed().as_secs_f64(),
        })
    }

    /// Runs every seed, in parallel threads (one per core at most).
    pub fn run(
        &self,
        policy_name: &str,
        wasm: &crate::WasmPlugins,
        seeds: &[u64],
    ) -> Result<Vec<SeedRun>, SimError> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(seeds.len())
            .max(1);
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<SeedRun, SimError>>>> =
            Mutex::new((0..seeds.len()).map(|_| None).collect());
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&seed) = seeds.get(k) else { break };
                        let r = self.run_seed(policy_name, wasm, seed);
                        results
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)[k] = Some(r);
                    }
                });
            }
        });
        results
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(SimError::Invalid("a seed's thread stopped".into()))))
            .collect()
    }
}

/// Loads the trace and node list, replays every seed with the policy, and
/// averages the curves.
pub fn run_openb(opts: &OpenbOpts) -> Result<OpenbReport, SimError> {
    let start = Instant::now();
    if opts.seeds.is_empty() {
        return Err(SimError::Invalid("no seeds given".into()));
    }
    // Fail fast on a bad policy name, before loading anything.
    policy::policy(&opts.policy, &PolicyContext::default())?;
    let nodes_path = match &opts.nodes {
        Some(p) => p.clone(),
        None => opts
            .trace
            .parent()
            .unwrap_or(Path::new("."))
            .join(NODE_FILE),
    };
    let nodes = csv::load_nodes(&nodes_path)?;
    let pods = csv::load_pods(&opts.trace)?;
    let bench = Bench::new(nodes, pods)?;
    let runs = bench.run(&opts.policy, &opts.wasm, &opts.seeds)?;
    Ok(OpenbReport::new(
        opts.trace.display().to_string(),
        workload_name(&opts.trace),
        opts.policy.clone(),
        runs,
        start.elapsed().as_secs_f64(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse() {
        assert_eq!(parse_seeds("42-45").unwrap(), vec![42, 43, 44, 45]);
        assert_eq!(parse_seeds("42,43").unwrap(), vec![42, 43]);
        assert_eq!(parse_seeds(" 1-2, 7 ").unwrap(), vec![1, 2, 7]);
        for bad in ["", "a", "5-3", "1,,2", "-1", "1-"] {
            assert!(parse_seeds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn workload_names() {
        assert_eq!(
            workload_name(Path::new("/d/openb_pod_list_gpushare40.csv")),
            "gpushare40"
        );
        assert_eq!(workload_name(Path::new("x.csv")), "x");
    }
}
