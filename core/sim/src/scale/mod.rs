//! The scale benchmark: placements per second and decision latency of the
//! real pipeline on a large synthetic cluster (hostprobe fixtures: DGX
//! H100, 4×A100 PCIe, A100 with MIG, dual-socket CPU servers) with a mixed
//! task stream (shared CPU, exclusive cores on one NUMA node, NICs, GPU
//! shares, MIG, whole GPUs over NVLink). Tasks never depart; when the
//! cluster fills, failures are counted and the stream goes on.
//!
//! With [`ScaleOpts::sample`], the pipeline stops filtering once that many
//! feasible nodes are found (kube-scheduler's `percentageOfNodesToScore`),
//! and the report says what it costs: the same stream replayed on a tenth
//! of the cluster with and without sampling.

pub mod stream;

use std::collections::BTreeMap;
use std::time::Instant;

use berth_sched::Cluster;
use berth_sched::policy::{self, PodShape, PolicyContext, typical_pods};
use serde_json::{Value, json};

use crate::SimError;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleOpts {
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Tasks in the stream.
    pub tasks: usize,
    /// Seed of the task stream.
    pub seed: u64,
    /// Policy name (see [`berth_sched::policy::POLICIES`]).
    pub policy: String,
    /// Score only the first this many feasible nodes (`None`: all).
    pub sample: Option<usize>,
    /// While sampling, also score this many nodes last chosen for the same
    /// kind of task (`None`: half the sample; see `berth_sched::sample`).
    pub remember: Option<usize>,
    /// Wasm plugins in place of or beside the native policy.
    pub wasm: crate::WasmPlugins,
}

/// How full a replay left the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Tasks placed.
    pub placed: usize,
    /// Tasks that fit nowhere.
    pub failed: usize,
    /// Allocated thousandths over all non-MIG GPUs, %.
    pub gpu_alloc_pct: f64,
    /// Allocated CPU over all CPU, %.
    pub cpu_alloc_pct: f64,
}

impl Outcome {
    fn json(&self) -> Value {
        json!({
            "placed": self.placed,
            "failed": self.failed,
            "gpu_alloc_pct": round2(self.gpu_alloc_pct),
            "cpu_alloc_pct": round2(self.cpu_alloc_pct),
        })
    }
}

/// What sampling costs in placement quality: the same kind of stream on a
/// tenth of the cluster (same tasks per node), replayed with every node
/// scored and with the same fraction of nodes sampled.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingQuality {
    /// Nodes of the smaller cluster.
    pub nodes: usize,
    /// Tasks of its stream.
    pub tasks: usize,
    /// The sample size there (the same fraction of nodes).
    pub sample: usize,
    /// Every feasible node scored.
    pub full: Outcome,
    /// Sampled.
    pub sampled: Outcome,
}

/// The result of [`run_scale`].
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleReport {
    /// The options run.
    pub opts: ScaleOpts,
    /// Decisions (placed or failed) per second.
    pub placements_per_sec: f64,
    /// Median decision latency (filter, score, allocate, commit), µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Slowest decision, µs.
    pub max_us: f64,
    /// Tasks placed.
    pub placed: usize,
    /// Tasks that fit nowhere.
    pub failed: usize,
    /// The cluster at the end.
    pub outcome: Outcome,
    /// Seconds spent deciding.
    pub wall_s: f64,
    /// With sampling: its cost in quality.
    pub quality: Option<SamplingQuality>,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

struct Replay {
    outcome: Outcome,
    latencies_ns: Vec<u64>,
    wall_s: f64,
}

fn replay(
    nodes: usize,
    tasks: usize,
    seed: u64,
    policy_name: &str,
    sample: Option<usize>,
    remember: Option<usize>,
    wasm: &crate::WasmPlugins,
) -> Result<Replay, SimError> {
    let states = stream::cluster(nodes)?;
    let stream = stream::tasks(tasks, seed);
    let mut capacity: BTreeMap<String, u64> = BTreeMap::new();
    for g in states
        .iter()
        .flat_map(|n| &n.gpus)
        .filter(|g| g.mig.is_empty())
    {
        *capacity.entry(g.model.clone()).or_default() += 1000;
    }
    let ctx = PolicyContext {
        typical: typical_pods(stream.iter().map(PodShape::of_task), 95.0),
        seed,
        capacity: capacity.into_iter().collect(),
    };
    let mut pipe = crate::wasm::pipeline(policy_name, wasm, &ctx)?.sample(sample);
    if let Some(k) = remember {
        pipe = pipe.remember(k);
    }
    let mut cluster = Cluster::new(states);
    let (mut placed, mut failed) = (0, 0);
    let mut latencies_ns = Vec::with_capacity(tasks);
    let start = Instant::now();
    for t in &stream {
        let t0 = Instant::now();
        match pipe.place(&cluster, t) {
            Some((i, a)) => {
                let name = cluster.nodes()[i].name.clone();
                cluster.commit(&name, &a);
                placed += 1;
            }
            None => failed += 1,
        }
        latencies_ns.push(t0.elapsed().as_nanos() as u64);
    }
    let wall_s = start.elapsed().as_secs_f64();
    let gpus = cluster
        .nodes()
        .iter()
        .flat_map(|n| &n.gpus)
        .filter(|g| g.mig.is_empty());
    let (gpu_used, gpu_cap) = gpus.fold((0u64, 0u64), |(u, c), g| {
        (u + u64::from(g.milli_used), c + 1000)
    });
    let (cpu_used, cpu_cap) = cluster.nodes().iter().fold((0u64, 0u64), |(u, c), n| {
        (u + n.cpu_used, c + n.cpu_capacity)
    });
    let pct = |a: u64, b: u64| {
        if b == 0 {
            0.0
        } else {
            100.0 * a as f64 / b as f64
        }
    };
    Ok(Replay {
        outcome: Outcome {
            placed,
            failed,
            gpu_alloc_pct: pct(gpu_used, gpu_cap),
            cpu_alloc_pct: pct(cpu_used, cpu_cap),
        },
        latencies_ns,
        wall_s,
    })
}

/// Builds the cluster and stream, places every task one by one, and
/// measures; with sampling, also measures its cost in quality on a tenth of
/// the cluster (see [`SamplingQuality`]).
pub fn run_scale(opts: &ScaleOpts) -> Result<ScaleReport, SimError> {
    if opts.nodes == 0 || opts.tasks == 0 {
        return Err(SimError::Invalid(
            "the scale benchmark needs nodes and tasks".into(),
        ));
    }
    policy::policy(&opts.policy, &PolicyContext::default())?;
    let main = replay(
        opts.nodes,
        opts.tasks,
        opts.seed,
        &opts.policy,
        opts.sample,
        opts.remember,
        &opts.wasm,
    )?;
    let mut lat = main.latencies_ns.clone();
    lat.sort_unstable();
    let at = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)] as f64 / 1000.0;
    let quality = match opts.sample {
        Some(s) if s > 0 => {
            // A tenth of the cluster and stream, sampling the same fraction.
            let nodes = (opts.nodes / 10).max(opts.nodes.min(100));
            let tasks = (opts.tasks * nodes / opts.nodes).max(1);
            let sample = (s * nodes / opts.nodes).max(1);
            let remember = opts.remember.map(|k| k * nodes / opts.nodes);
            let full = replay(
                nodes,
                tasks,
                opts.seed,
                &opts.policy,
                None,
                None,
                &opts.wasm,
            )?
            .outcome;
            let sampled = replay(
                nodes,
                tasks,
                opts.seed,
                &opts.policy,
                Some(sample),
                remember,
                &opts.wasm,
            )?
            .outcome;
            Some(SamplingQuality {
                nodes,
                tasks,
                sample,
                full,
                sampled,
            })
        }
        _ => None,
    };
    Ok(ScaleReport {
        opts: opts.clone(),
        placements_per_sec: opts.tasks as f64 / main.wall_s.max(1e-9),
        p50_us: at(0.50),
        p99_us: at(0.99),
        max_us: at(1.0),
        placed: main.outcome.placed,
        failed: main.outcome.failed,
        outcome: main.outcome,
        wall_s: main.wall_s,
        quality,
    })
}

impl ScaleReport {
    /// The numbers as JSON.
    pub fn json(&self) -> Value {
        json!({
            "nodes": self.opts.nodes,
            "tasks": self.opts.tasks,
            "seed": self.opts.seed,
            "policy": self.opts.policy,
            "wasm_policy": self.opts.wasm.policy.as_ref().map(|p| p.display().to_string()),
            "extra_plugins": self.opts.wasm.extra.len(),
            "sample": self.opts.sample,
            "remember": self.opts.sample.map(|s| self.opts.remember.unwrap_or(s / 2)),
            "placements_per_sec": self.placements_per_sec.round(),
            "p50_us": round2(self.p50_us),
            "p99_us": round2(self.p99_us),
            "max_us": round2(self.max_us),
            "placed": self.placed,
            "failed": self.failed,
            "gpu_alloc_pct": round2(self.outcome.gpu_alloc_pct),
            "cpu_alloc_pct": round2(self.outcome.cpu_alloc_pct),
            "wall_s": round2(self.wall_s),
            "sampling_quality": self.quality.as_ref().map(|q| json!({
                "nodes": q.nodes,
                "tasks": q.tasks,
                "sample": q.sample,
                "all_nodes": q.full.json(),
                "sampled": q.sampled.json(),
            })),
        })
    }

    /// A human-readable summary.
    pub fn table(&self) -> String {
        let o = &self.opts;
        let sample = o.sample.map_or_else(
            || "all nodes".to_string(),
            |s| format!("sample {s}, remember {}", o.remember.unwrap_or(s / 2)),
        );
        let mut s = format!(
            "scale: {} nodes, {} tasks (seed {}), policy {}, {sample}\n\
             {:>12} {:>9} {:>9} {:>9} {:>8} {:>8} {:>7} {:>7}\n\
             {:>12.0} {:>9.1} {:>9.1} {:>9.1} {:>8} {:>8} {:>7.2} {:>7.2}\n",
            o.nodes,
            o.tasks,
            o.seed,
            o.policy,
            "placements/s",
            "p50 µs",
            "p99 µs",
            "max µs",
            "placed",
            "failed",
            "GPU %",
            "CPU %",
            self.placements_per_sec,
            self.p50_us,
            self.p99_us,
            self.max_us,
            self.placed,
            self.failed,
            self.outcome.gpu_alloc_pct,
            self.outcome.cpu_alloc_pct,
        );
        if let Some(q) = &self.quality {
            s.push_str(&format!(
                "sampling cost on {} nodes, {} tasks:\n{:>12} {:>8} {:>8} {:>7} {:>7}\n",
                q.nodes, q.tasks, "", "placed", "failed", "GPU %", "CPU %"
            ));
            for (name, r) in [
                ("all nodes", &q.full),
                (format!("sample {}", q.sample).as_str(), &q.sampled),
            ] {
                s.push_str(&format!(
                    "{name:>12} {:>8} {:>8} {:>7.2} {:>7.2}\n",
                    r.placed, r.failed, r.gpu_alloc_pct, r.cpu_alloc_pct
                ));
            }
        }
        s
    }
}
