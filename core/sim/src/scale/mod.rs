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
use std::hash::{Hash, Hasher};
use std::time::Instant;

use berth_model::task::Allocation;
use berth_sched::policy::hash::FxHasher;

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
    /// Make every node a kind of its own (each node's memory differs from
    /// every other's by a MiB or more): the worst case for node classes.
    pub distinct: bool,
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
    /// Node classes over the run.
    pub classes: ClassStats,
    /// A digest of every decision (task, node, allocation): equal digests,
    /// equal decisions.
    pub digest: u64,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

struct Replay {
    outcome: Outcome,
    latencies_ns: Vec<u64>,
    wall_s: f64,
    classes: ClassStats,
    digest: u64,
}

/// Node classes over a run (see `berth_sched::classes`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ClassStats {
    /// Kinds of node (classes while every node is idle).
    pub kinds: usize,
    /// Classes before each decision, on average.
    pub mean: f64,
    /// Most classes at once.
    pub peak: usize,
    /// Classes at the end.
    pub end: usize,
}

/// Feeds one decision into the run's digest: the task's position, the
/// node and what was allocated (two runs with equal digests decided the
/// same, task for task).
fn digest(h: &mut impl Hasher, k: usize, placed: Option<(usize, &Allocation)>) {
    h.write_usize(k);
    if let Some((node, a)) = placed {
        h.write_usize(node);
        (a.cpu.0, a.memory.0, &a.ports, &a.cores, &a.numa_nodes).hash(h);
        for g in &a.gpus {
            (g.index, g.milli, &g.uuid).hash(h);
        }
        (&a.nics, &a.devices).hash(h);
    }
}

fn replay(
    opts: &ScaleOpts,
    nodes: usize,
    tasks: usize,
    sample: Option<usize>,
    remember: Option<usize>,
) -> Result<Replay, SimError> {
    let mut states = stream::cluster(nodes)?;
    let (seed, policy_name, wasm) = (opts.seed, opts.policy.as_str(), &opts.wasm);
    if opts.distinct {
        for (i, n) in states.iter_mut().enumerate() {
            n.mem_capacity -= (i as u64 + 1) << 20;
        }
    }
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
    let mut h = FxHasher::default();
    let mut class_sum = 0usize;
    let start = Instant::now();
    for (k, t) in stream.iter().enumerate() {
        class_sum += cluster.classes().len();
        let t0 = Instant::now();
        let chosen = pipe.place(&cluster, t);
        match &chosen {
            Some((i, a)) => {
                let name = cluster.nodes()[*i].name.clone();
                cluster.commit(&name, a);
                placed += 1;
            }
            None => failed += 1,
        }
        latencies_ns.push(t0.elapsed().as_nanos() as u64);
        digest(&mut h, k, chosen.as_ref().map(|(i, a)| (*i, a)));
    }
    let wall_s = start.elapsed().as_secs_f64();
    let classes = ClassStats {
        kinds: cluster.classes().kinds(),
        mean: class_sum as f64 / stream.len().max(1) as f64,
        peak: cluster.classes().peak(),
        end: cluster.classes().len(),
    };
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
        classes,
        digest: h.finish(),
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
    let main = replay(opts, opts.nodes, opts.tasks, opts.sample, opts.remember)?;
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
            let full = replay(opts, nodes, tasks, None, None)?.outcome;
            let sampled = replay(opts, nodes, tasks, Some(sample), remember)?.outcome;
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
        classes: main.classes,
        digest: main.digest,
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
            "per_node": self.opts.wasm.per_node,
            "distinct": self.opts.distinct,
            "classes": json!({
                "kinds": self.classes.kinds,
                "mean": self.classes.mean.round(),
                "peak": self.classes.peak,
                "end": self.classes.end,
            }),
            "decisions_digest": format!("{:016x}", self.digest),
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
        s.push_str(&format!(
            "node classes: {} kinds, {:.0} on average, {} at most, {} at the end{}\n",
            self.classes.kinds,
            self.classes.mean,
            self.classes.peak,
            self.classes.end,
            if o.wasm.per_node {
                " (decided node by node)"
            } else {
                ""
            },
        ));
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
