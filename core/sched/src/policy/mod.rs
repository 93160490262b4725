//! Placement policies for GPU clusters, as native plugins on the existing
//! traits: a [`ScorePlugin`] that ranks nodes and an [`AllocatePlugin`] that
//! picks the GPU of a shared (fractional) request on the chosen node.
//!
//! `random`, `bestfit`, `dotprod`, `gpupacking` and `fgd` follow the FGD
//! paper's simulator (Weng et al., "Beware of Fragmentation", USENIX
//! ATC'23) number for number; `fgd-pack` is Berth's own (see [`pack`]) and
//! the `default`.

pub mod alloc;
pub mod fit;
pub mod frag;
pub mod hash;
pub mod pack;
pub mod rng;
pub mod scores;
pub mod typical;

use std::sync::{Arc, Mutex};

use crate::pipeline::Pipeline;
use crate::plugin::{AllocatePlugin, ScorePlugin};

pub use alloc::{PolicyAllocator, SharePick};
pub use fit::FastFit;
pub use frag::{FgdChoice, FragModel};
pub use rng::Rng;
pub use typical::{PodShape, TypicalPod, typical_pods};

/// What a policy may know besides the cluster: the typical task shapes of
/// the workload (FGD's input) and a seed for randomised choices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyContext {
    /// Typical shapes with weights summing to 1 (see [`typical_pods`]).
    pub typical: Vec<TypicalPod>,
    /// Seed for policies that draw random numbers.
    pub seed: u64,
    /// The cluster's GPU capacity in thousandths per model label, when
    /// known (empty otherwise): lets a policy tell scarce models apart.
    pub capacity: Vec<(String, u64)>,
}

impl PolicyContext {
    /// A context from a workload's task shapes, keeping the shapes that
    /// cover 95% of the tasks, as the FGD paper does.
    pub fn from_shapes<I: IntoIterator<Item = PodShape>>(shapes: I, seed: u64) -> PolicyContext {
        PolicyContext {
            typical: typical_pods(shapes, 95.0),
            seed,
            capacity: Vec::new(),
        }
    }

    /// [`PolicyContext::from_shapes`] from shapes already counted.
    pub fn from_counts<I: IntoIterator<Item = (PodShape, u64)>>(
        counts: I,
        seed: u64,
    ) -> PolicyContext {
        PolicyContext {
            typical: typical::typical_from_counts(counts, 95.0),
            seed,
            capacity: Vec::new(),
        }
    }
}

/// A policy name that [`policy`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown policy {name:?} (known: {})", known.join(", "))]
pub struct UnknownPolicy {
    /// The name asked for.
    pub name: String,
    /// The names that would have been accepted.
    pub known: &'static [&'static str],
}

/// The policy names [`policy`] accepts.
pub const POLICIES: &[&str] = &[
    "random",
    "bestfit",
    "dotprod",
    "gpupacking",
    "fgd",
    pack::NAME,
    "default",
];

/// A policy's plugins.
pub type PolicyPlugins = (Box<dyn ScorePlugin>, Box<dyn AllocatePlugin>);

/// The score and allocate plugins of the policy called `name`
/// (case-insensitive; `default` is [`pack::NAME`]).
pub fn policy(name: &str, ctx: &PolicyContext) -> Result<PolicyPlugins, UnknownPolicy> {
    let lower = name.to_ascii_lowercase();
    let key = if lower == "default" {
        pack::NAME
    } else {
        lower.as_str()
    };
    let best_fit =
        |n: &str| Box::new(PolicyAllocator::new(n, SharePick::BestFit)) as Box<dyn AllocatePlugin>;
    Ok(match key {
        "random" => (
            Box::new(scores::RandomScore::new(ctx.seed)),
            Box::new(PolicyAllocator::new(
                "random",
                SharePick::Random(Mutex::new(Rng::stream(ctx.seed, 2))),
            )),
        ),
        "bestfit" => (Box::new(scores::BestFitScore), best_fit("bestfit")),
        "dotprod" => (Box::new(scores::DotProdScore), best_fit("dotprod")),
        "gpupacking" => (Box::new(scores::GpuPackingScore), best_fit("gpupacking")),
        "fgd" => {
            let model = Arc::new(FragModel::new(&ctx.typical));
            (
                Box::new(scores::FgdScore::new(model.clone())),
                Box::new(PolicyAllocator::new("fgd", SharePick::Fgd(model))),
            )
        }
        k if k == pack::NAME => pack::plugins(ctx),
        _ => {
            return Err(UnknownPolicy {
                name: name.to_string(),
                known: POLICIES,
            });
        }
    })
}

/// Policies a cluster's servers accept (`berth server --policy`): the
/// [`POLICIES`] plus the plain `binpack` and `spread` chains.
pub const CLUSTER_POLICIES: &[&str] = &[
    "binpack",
    "spread",
    "random",
    "bestfit",
    "dotprod",
    "gpupacking",
    "fgd",
    pack::NAME,
    "default",
];

/// The full chain a cluster's servers run for the policy `name`: every
/// built-in filter (constraints, node-ready, resource-fit, host-ports,
/// hardware-fit), the policy's scorer beside `numa-align` and
/// `gpu-topology`, and the policy's allocator. `binpack` and `spread` use
/// the built-in scorers of those names and the default allocator.
pub fn cluster_pipeline(name: &str, ctx: &PolicyContext) -> Result<Pipeline, UnknownPolicy> {
    use crate::builtin::{BinPack, DefaultAllocator, Spread};
    let (score, alloc): PolicyPlugins = match name.to_ascii_lowercase().as_str() {
        "binpack" => (Box::new(BinPack), Box::new(DefaultAllocator)),
        "spread" => (Box::new(Spread), Box::new(DefaultAllocator)),
        _ => policy(name, ctx).map_err(|e| UnknownPolicy {
            known: CLUSTER_POLICIES,
            ..e
        })?,
    };
    Ok(Pipeline::filters_only(alloc)
        .score(score, 1.0)
        .numa_and_topology())
}

/// A pipeline for the policy `name`: [`FastFit`] as the only filter, the
/// policy's scorer (weight 1) and its allocator.
pub fn pipeline(name: &str, ctx: &PolicyContext) -> Result<Pipeline, UnknownPolicy> {
    let (score, alloc) = policy(name, ctx)?;
    Ok(Pipeline::new(alloc)
        .filter(Box::new(FastFit))
        .score(score, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_policy_builds() {
        let ctx = PolicyContext::from_shapes(vec![PodShape::new(1000, 500, 1, "")], 1);
        for name in POLICIES {
            let (s, a) = policy(name, &ctx).unwrap();
            assert!(!s.name().is_empty() && !a.name().is_empty());
        }
        assert!(policy("FGD", &ctx).is_ok());
        let e = policy("nope", &ctx).err().unwrap();
        assert!(e.to_string().contains("unknown policy \"nope\""), "{e}");
        assert!(pipeline("default", &ctx).is_ok());
        for name in CLUSTER_POLICIES {
            assert!(cluster_pipeline(name, &ctx).is_ok(), "{name}");
        }
        let e = cluster_pipeline("pack", &ctx).err().unwrap().to_string();
        assert!(e.contains("binpack, spread, random"), "{e}");
    }
}
