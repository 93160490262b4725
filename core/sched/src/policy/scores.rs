//! Baseline score plugins from the FGD paper's simulator (Random, BestFit,
//! DotProd, GpuPacking) and FGD itself. Every score is truncated to an
//! integer in 0..=100, as kube-scheduler's are, because ties (and the fixed
//! node order that breaks them) are part of each policy's behaviour.

use std::sync::{Arc, Mutex, PoisonError};

use crate::cluster::{GPU_MILLI, NodeState, TaskRequest};
use crate::plugin::ScorePlugin;
use crate::policy::frag::FragModel;
use crate::policy::rng::Rng;

/// CPU of the largest node in the FGD simulator's normalisation, millicores.
pub const MAX_SPEC_CPU: f64 = 128_000.0;
/// GPU of the largest node in the FGD simulator's normalisation, thousandths.
pub const MAX_SPEC_GPU: f64 = 8_000.0;

/// A task's GPU demand in thousandths (`count × milli`).
pub fn gpu_demand(task: &TaskRequest) -> u64 {
    task.gpus
        .as_ref()
        .map_or(0, |g| u64::from(g.count) * u64::from(g.milli))
}

/// Min-max normalisation to 0..=100 in integers (all equal: all 0), as the
/// FGD simulator's `NormalizeScore`. It preserves the order.
pub fn normalise(raw: &[i64], out: &mut [f64]) {
    let hi = raw.iter().copied().max().unwrap_or(0);
    let lo = raw.iter().copied().min().unwrap_or(0);
    for (r, o) in raw.iter().zip(out.iter_mut()) {
        *o = if hi == lo {
            0.0
        } else {
            ((r - lo) * 100 / (hi - lo)) as f64
        };
    }
}

/// Random: one feasible node, drawn uniformly with the plugin's seeded
/// generator, scores 100 and the others 0.
pub struct RandomScore {
    rng: Mutex<Rng>,
}

impl RandomScore {
    /// Draws from a generator seeded with `seed`.
    pub fn new(seed: u64) -> RandomScore {
        RandomScore {
            rng: Mutex::new(Rng::stream(seed, 1)),
        }
    }
}

impl ScorePlugin for RandomScore {
    fn name(&self) -> &str {
        "random"
    }
    /// Picks a position among the nodes it is given: never class-pure.
    fn class_pure(&self, _task: &TaskRequest) -> bool {
        false
    }
    fn score(&self, _task: &TaskRequest, nodes: &[&NodeState], out: &mut [f64]) {
        if nodes.is_empty() {
            return;
        }
        let pick = self
            .rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .index(nodes.len());
        for (i, o) in out.iter_mut().enumerate() {
            *o = if i == pick { 100.0 } else { 0.0 };
        }
    }
}

/// BestFit: `trunc(100·(1 − [½(cpuL−c)/128000 + ½(gL−g)/8000]))`, min-max
/// normalised over the feasible nodes: the node left with the least free
/// CPU and GPU wins.
pub struct BestFitScore;

/// BestFit's raw (unnormalised) integer score.
pub fn best_fit_raw(task: &TaskRequest, node: &NodeState) -> i64 {
    let cpu = node.cpu_free() as f64 - task.cpu_demand() as f64;
    let gpu = f64::from(node.gpu_milli_free()) - gpu_demand(task) as f64;
    let mut s = 0.0;
    s += cpu / MAX_SPEC_CPU * 0.5;
    s += gpu / MAX_SPEC_GPU * 0.5;
    ((1.0 - s) * 100.0) as i64
}

impl ScorePlugin for BestFitScore {
    fn name(&self) -> &str {
        "bestfit"
    }
    fn class_pure(&self, _task: &TaskRequest) -> bool {
        true
    }
    fn score(&self, task: &TaskRequest, nodes: &[&NodeState], out: &mut [f64]) {
        let raw: Vec<i64> = nodes.iter().map(|n| best_fit_raw(task, n)).collect();
        normalise(&raw, out);
    }
}

/// DotProd: `trunc(100·(1 − ½[(cpuL/128000)(c/128000) + (gL/8000)(g/8000)]))`:
/// the node whose free resources align least with the request wins.
pub struct DotProdScore;

impl ScorePlugin for DotProdScore {
    fn name(&self) -> &str {
        "dotprod"
    }
    fn class_pure(&self, _task: &TaskRequest) -> bool {
        true
    }
    fn score(&self, task: &TaskRequest, nodes: &[&NodeState], out: &mut [f64]) {
        let c = task.cpu_demand() as f64 / MAX_SPEC_CPU;
        let g = gpu_demand(task) as f64 / MAX_SPEC_GPU;
        for (n, o) in nodes.iter().zip(out.iter_mut()) {
            let dot = (n.cpu_free() as f64 / MAX_SPEC_CPU) * c
                + (f64::from(n.gpu_milli_free()) / MAX_SPEC_GPU) * g;
            *o = (((1.0 - 0.5 * dot) * 100.0) as i64).clamp(0, 100) as f64;
        }
    }
}

/// GpuPacking: shared GPUs first (fuller ones better), then idle GPUs on
/// used nodes, then idle nodes (small ones first). CPU-only tasks score 0.
pub struct GpuPackingScore;

/// GpuPacking's score for one node.
pub fn gpu_packing(task: &TaskRequest, node: &NodeState) -> i64 {
    let Some(req) = task.gpus.as_ref().filter(|g| g.milli > 0) else {
        return 0;
    };
    let n = node.gpus.len() as i64;
    let idle = node.gpus.iter().filter(|g| g.milli_used == 0).count() as i64;
    if idle == n {
        return (33 - idle).max(idle);
    }
    let mut order: Vec<&crate::cluster::GpuState> = node.gpus.iter().collect();
    order.sort_by_key(|g| g.milli_free());
    let mut need = req.count;
    let (mut idle_used, mut free_pct) = (0, 0i64);
    for g in order {
        if need == 0 {
            break;
        }
        if req.milli <= g.milli_free() {
            need -= 1;
            free_pct += i64::from(g.milli_free()) * 100 / i64::from(GPU_MILLI);
            if g.milli_free() == GPU_MILLI {
                idle_used += 1;
            }
        }
    }
    if need != 0 {
        0
    } else if idle_used > 0 {
        (50 - idle_used).max(33)
    } else {
        (100 - free_pct / 10).max(50)
    }
}

impl ScorePlugin for GpuPackingScore {
    fn name(&self) -> &str {
        "gpupacking"
    }
    fn class_pure(&self, _task: &TaskRequest) -> bool {
        true
    }
    fn score(&self, task: &TaskRequest, nodes: &[&NodeState], out: &mut [f64]) {
        for (n, o) in nodes.iter().zip(out.iter_mut()) {
            *o = gpu_packing(task, n).clamp(0, 100) as f64;
        }
    }
}

/// FGD: `trunc(100·σ((F(n) − F(n′))/1000))`, where `F` is the expected GPU
/// fragmentation against the typical pods (see [`crate::policy::frag`]) and
/// `n′` the node after the placement; shared requests try every GPU.
pub struct FgdScore {
    name: &'static str,
    model: Arc<FragModel>,
}

impl FgdScore {
    /// FGD over `model`.
    pub fn new(model: Arc<FragModel>) -> FgdScore {
        FgdScore { name: "fgd", model }
    }

    /// The same scorer under another name (for policies that change the
    /// fragmentation measure but not how it is scored).
    pub fn named(name: &'static str, model: Arc<FragModel>) -> FgdScore {
        FgdScore { name, model }
    }
}

impl ScorePlugin for FgdScore {
    fn name(&self) -> &str {
        self.name
    }
    fn prepare(&self, cluster: &crate::Cluster) {
        self.model.prepare(cluster);
    }
    fn class_pure(&self, _task: &TaskRequest) -> bool {
        true
    }
    /// A task without GPUs is read for its CPU only (shared and cores).
    fn task_key(&self, task: &TaskRequest) -> Option<u64> {
        task.gpus.is_none().then(|| task.cpu_demand())
    }
    fn score(&self, task: &TaskRequest, nodes: &[&NodeState], out: &mut [f64]) {
        let mut s = self.model.session();
        for (n, o) in nodes.iter().zip(out.iter_mut()) {
            *o = s
                .choose(task, n)
                .map_or(0.0, |c| c.score.clamp(0, 100) as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{GpuRequest, GpuState};

    fn node(cpu_free: u64, used: &[u32]) -> NodeState {
        NodeState {
            name: "n".into(),
            ready: true,
            cpu_capacity: cpu_free,
            mem_capacity: 1 << 30,
            gpus: used
                .iter()
                .enumerate()
                .map(|(i, u)| GpuState {
                    index: i as u32,
                    milli_used: *u,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn share(cpu: u64, milli: u32) -> TaskRequest {
        TaskRequest {
            cpu,
            gpus: Some(GpuRequest {
                count: 1,
                milli,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn best_fit_prefers_the_fuller_node_and_normalises() {
        let t = share(8000, 500);
        let a = node(64000, &[0, 0]);
        let b = node(16000, &[500, 0]);
        assert!(best_fit_raw(&t, &b) > best_fit_raw(&t, &a));
        let mut out = [0.0; 2];
        BestFitScore.score(&t, &[&a, &b], &mut out);
        assert_eq!(out, [0.0, 100.0]);
        BestFitScore.score(&t, &[&a, &a], &mut out);
        assert_eq!(out, [0.0, 0.0]);
        // 128 cores and 8 GPUs left after: 0 before normalisation.
        assert_eq!(
            best_fit_raw(&TaskRequest::default(), &node(128_000, &[0; 8])),
            0
        );
    }

    #[test]
    fn random_scores_one_node() {
        let r = RandomScore::new(5);
        let nodes = [node(1000, &[]), node(1000, &[]), node(1000, &[])];
        let view: Vec<&NodeState> = nodes.iter().collect();
        let mut out = [0.0; 3];
        r.score(&share(1, 1), &view, &mut out);
        assert_eq!(out.iter().filter(|v| **v == 100.0).count(), 1);
        assert_eq!(out.iter().sum::<f64>(), 100.0);
    }

    #[test]
    fn packing_cases() {
        // Idle node with 8 GPUs: max(33 - 8, 8).
        assert_eq!(gpu_packing(&share(1, 500), &node(1000, &[0; 8])), 25);
        // Shared GPU with 400 free: 100 - 40/10.
        assert_eq!(gpu_packing(&share(1, 300), &node(1000, &[600, 0])), 96);
        // Needs an idle GPU on a used node.
        assert_eq!(gpu_packing(&share(1, 500), &node(1000, &[600, 0])), 49);
        assert_eq!(
            gpu_packing(&TaskRequest::default(), &node(1000, &[600, 0])),
            0
        );
    }

    #[test]
    fn dot_product_prefers_the_less_aligned_node() {
        let t = share(64000, 1000);
        let mut out = [0.0; 2];
        DotProdScore.score(
            &t,
            &[&node(128_000, &[0; 8]), &node(64000, &[0; 2])],
            &mut out,
        );
        assert!(out[1] > out[0], "{out:?}");
    }
}
