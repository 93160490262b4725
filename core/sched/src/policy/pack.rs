//! `fgd-pack`, Berth's GPU placement policy: FGD's fragmentation gradient
//! descent with a fragmentation measure that also sees the two resources
//! FGD's one-pod lookahead misses, CPU and scarce GPU models.
//!
//! # What FGD does and misses
//!
//! FGD (see [`crate::policy::frag`]) scores a node by how much a placement
//! changes `F`, the GPU capacity the *next* task (drawn from the typical
//! shapes) could not use. Two things escape it:
//!
//! 1. **CPU runs out before GPUs do.** Tasks ask for CPU with their GPUs,
//!    and nodes differ a lot in CPU per GPU (in openb, 12 cores per GPU on
//!    the 8-GPU G2 nodes, 52 on the 2-GPU T4 nodes). At the loads that
//!    matter the cluster's CPU is as tight as its GPUs (the default trace
//!    tuned to 130% asks for about 113k of 107k cores). FGD only checks
//!    that the next task still finds enough CPU, so it lets CPU-heavy tasks
//!    and CPU-only tasks drain CPU-poor nodes, and their last GPUs are then
//!    stranded: on the default trace, ~68k thousandths of FGD's final waste
//!    sit on nodes with too little CPU for any task that would fit the
//!    free GPU. `fgd-pack` adds the GPU capacity the node's free CPU cannot
//!    serve at the workload's CPU-per-GPU ratio `r` (from the typical
//!    shapes) to `F`, with weight 1 (a stranded thousandth is as lost as a
//!    fragmented one): `F += max(0, S − cpu_free / r)`. CPU-heavy tasks
//!    and CPU-only tasks then go where CPU is plentiful, CPU-light ones
//!    where it is not. The stranded waste falls to ~15k.
//! 2. **Constrained tasks need particular models.** Tasks restricted to a
//!    few models (`gpu_spec`) compete for those nodes, and anything else
//!    placed there takes capacity they cannot find elsewhere. FGD leans the
//!    right way (a model's free GPUs count as fragment for the shapes that
//!    cannot use it), but by the shapes' popularity alone, blind to how
//!    little capacity a model has: with the CPU term pulling CPU-heavy
//!    tasks to the CPU-rich P100 and T4 nodes, the constrained tasks that
//!    need them failed early, and with half of the GPU tasks constrained
//!    the policy fell below FGD. When the cluster's capacity per model is known
//!    ([`PolicyContext::capacity`]), each model gets a pressure
//!    `ρ_m = (constrained demand on m / capacity of m) / (all demand / all
//!    capacity)`, constrained demand being spread over a shape's allowed
//!    models by capacity, and a free thousandth of model `m` is worth
//!    `½·ρ_m` (subtracted from `F`). Unconstrained tasks drift to abundant
//!    models, and a task allowed on several models to the least contested.
//!    With no constraints in the workload (or no capacity given) this term
//!    is zero and changes nothing.
//!
//! Everything else is FGD's: the score `trunc(100·σ(ΔF/1000))`, ties to the
//! first node in the fixed order (the integer truncation plus a fixed order
//! packs tasks onto few nodes, which is worth about a point by itself), the
//! GPU of a shared request chosen by the same score, whole GPUs lowest
//! index first.
//!
//! # Results (openb, column 130, mean of seeds 42–51)
//!
//! | workload   | FGD   | fgd-pack |
//! |------------|-------|----------|
//! | default    | 95.40 | 95.90    |
//! | gpushare40 | 94.14 | 94.60    |
//! | multigpu30 | 96.42 | 96.82    |
//! | gpuspec20  | 94.76 | 95.78    |
//!
//! The two terms have one weight each, set from first principles (1) or a
//! round value (½) and not searched per trace; the gains hold on seeds
//! 52–71 and on variants with more sharing, more multi-GPU tasks, more
//! constraints and three times the CPU-only tasks (see `core/sim`).

use std::sync::Arc;

use crate::policy::alloc::{PolicyAllocator, SharePick};
use crate::policy::frag::FragModel;
use crate::policy::scores::FgdScore;
use crate::policy::typical::TypicalPod;
use crate::policy::{PolicyContext, PolicyPlugins};

/// The policy's registered name.
pub const NAME: &str = "fgd-pack";

/// Weight of CPU-stranded GPU thousandths in `F`, relative to fragmented
/// ones.
pub const CPU_WEIGHT: f64 = 1.0;

/// Value of a free GPU thousandth per unit of model pressure.
pub const SCARCITY_WEIGHT: f64 = 0.5;

/// CPU millicores per GPU thousandth the typical GPU tasks ask for (0 when
/// there are none).
pub fn cpu_ratio(typical: &[TypicalPod]) -> f64 {
    let (mut cpu, mut gpu) = (0.0, 0.0);
    for t in typical.iter().filter(|t| !t.shape.cpu_only()) {
        cpu += t.weight * t.shape.cpu as f64;
        gpu += t.weight * f64::from(t.shape.milli) * f64::from(t.shape.count);
    }
    if gpu > 0.0 { cpu / gpu } else { 0.0 }
}

/// Each model's pressure from constrained tasks: their demand per unit of
/// the model's capacity relative to all demand per unit of all capacity
/// (0: nobody needs this model in particular). Empty without capacity.
pub fn pressure(ctx: &PolicyContext) -> Vec<(String, f64)> {
    let cap_all: f64 = ctx.capacity.iter().map(|c| c.1 as f64).sum();
    let mut constrained = vec![0.0; ctx.capacity.len()];
    let mut all = 0.0;
    for t in ctx.typical.iter().filter(|t| !t.shape.cpu_only()) {
        let d = t.weight * f64::from(t.shape.milli) * f64::from(t.shape.count);
        all += d;
        if t.shape.spec.is_empty() {
            continue;
        }
        let allowed: f64 = ctx
            .capacity
            .iter()
            .filter(|c| t.shape.model_ok(&c.0))
            .map(|c| c.1 as f64)
            .sum();
        if allowed <= 0.0 {
            continue;
        }
        for (k, c) in ctx.capacity.iter().enumerate() {
            if t.shape.model_ok(&c.0) {
                constrained[k] += d * c.1 as f64 / allowed;
            }
        }
    }
    if cap_all <= 0.0 || all <= 0.0 {
        return Vec::new();
    }
    ctx.capacity
        .iter()
        .zip(constrained)
        .filter(|(c, _)| c.1 > 0)
        .map(|(c, d)| (c.0.clone(), (d / c.1 as f64) / (all / cap_all)))
        .collect()
}

/// The fragmentation measure `fgd-pack` descends.
pub fn model(ctx: &PolicyContext) -> FragModel {
    let values = pressure(ctx)
        .into_iter()
        .map(|(m, p)| (m, SCARCITY_WEIGHT * p))
        .collect();
    FragModel::new(&ctx.typical)
        .with_cpu_term(CPU_WEIGHT, cpu_ratio(&ctx.typical))
        .with_model_values(values)
}

/// The policy's plugins.
pub fn plugins(ctx: &PolicyContext) -> PolicyPlugins {
    let model = Arc::new(model(ctx));
    (
        Box::new(FgdScore::named(NAME, model.clone())),
        Box::new(PolicyAllocator::new(NAME, SharePick::Fgd(model))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{GpuState, NodeState, TaskRequest};
    use crate::plugin::ScorePlugin;
    use crate::policy::typical::{PodShape, typical_pods};

    fn node(model: &str, cpu: u64, gpus: usize) -> NodeState {
        NodeState {
            name: model.into(),
            ready: true,
            cpu_capacity: cpu,
            mem_capacity: 1 << 40,
            gpus: (0..gpus)
                .map(|i| GpuState {
                    index: i as u32,
                    model: model.into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn ctx(shapes: Vec<PodShape>, capacity: Vec<(&str, u64)>) -> PolicyContext {
        PolicyContext {
            typical: typical_pods(shapes, 100.0),
            seed: 0,
            capacity: capacity
                .into_iter()
                .map(|(m, c)| (m.to_string(), c))
                .collect(),
        }
    }

    #[test]
    fn ratio_and_pressure() {
        let c = ctx(
            vec![
                PodShape::new(8000, 1000, 1, ""),
                PodShape::new(4000, 500, 1, "T4"),
                PodShape::new(16000, 0, 0, ""),
            ],
            vec![("T4", 1000), ("G2", 3000)],
        );
        // (8000 + 4000) / (1000 + 500) millicores per thousandth.
        assert!((cpu_ratio(&c.typical) - 8.0).abs() < 1e-9);
        let p = pressure(&c);
        let t4 = p.iter().find(|x| x.0 == "T4").unwrap().1;
        let g2 = p.iter().find(|x| x.0 == "G2").unwrap().1;
        assert_eq!(g2, 0.0);
        // 500 of 1500 demand on 1000 of 4000 capacity: (0.5) / (1500 / 4000).
        assert!((t4 - 0.5 / 0.375).abs() < 1e-9, "{t4}");
        assert!(pressure(&PolicyContext::default()).is_empty());
    }

    #[test]
    fn cpu_heavy_tasks_go_where_cpu_is_plentiful() {
        // Typical tasks: 10 cores per GPU. A 40-core task on the CPU-poor
        // node would strand its GPUs; FGD alone sees no difference.
        let c = ctx(vec![PodShape::new(10_000, 1000, 1, "")], vec![]);
        let poor = node("A", 80_000, 8);
        let rich = node("B", 400_000, 8);
        let task = TaskRequest {
            cpu: 40_000,
            ..Default::default()
        };
        let (score, _) = plugins(&c);
        let mut out = [0.0; 2];
        score.score(&task, &[&poor, &rich], &mut out);
        assert!(out[1] > out[0], "{out:?}");
        let fgd = FgdScore::new(Arc::new(FragModel::new(&c.typical)));
        fgd.score(&task, &[&poor, &rich], &mut out);
        assert_eq!(out[0], out[1]);
    }

    #[test]
    fn unconstrained_tasks_leave_contested_models_alone() {
        // Half the tasks need T4, and there is far less T4 than G2.
        let c = ctx(
            vec![
                PodShape::new(1000, 1000, 1, ""),
                PodShape::new(1000, 1000, 1, "T4"),
            ],
            vec![("T4", 2000), ("G2", 20_000)],
        );
        let task = TaskRequest {
            cpu: 1000,
            gpus: Some(crate::cluster::GpuRequest {
                count: 1,
                milli: 1000,
                ..Default::default()
            }),
            ..Default::default()
        };
        let (score, _) = plugins(&c);
        let mut out = [0.0; 2];
        let (t4, g2) = (node("T4", 8000, 2), node("G2", 8000, 2));
        score.score(&task, &[&t4, &g2], &mut out);
        let gap = out[1] - out[0];
        // FGD leans the same way, by much less.
        let fgd = FgdScore::new(Arc::new(FragModel::new(&c.typical)));
        fgd.score(&task, &[&t4, &g2], &mut out);
        assert!(gap > out[1] - out[0] + 10.0, "{gap} vs {out:?}");
    }
}
