//! Allocation for the policies: which GPU a shared (fractional) request
//! takes is part of the policy; everything else is the default allocator's.

use std::sync::{Arc, Mutex, PoisonError};

use berth_model::task::Allocation;

use crate::builtin::{DefaultAllocator, allocation};
use crate::cluster::{GPU_MILLI, GpuState, NodeState, NumaPolicy, TaskRequest};
use crate::hw::HwPick;
use crate::plugin::{AllocatePlugin, Rejection};
use crate::policy::frag::FragModel;
use crate::policy::rng::Rng;

/// A custom share-pick rule: the GPU index for a shared request, if any.
pub type PickFn = dyn Fn(&TaskRequest, &NodeState) -> Option<u32> + Send + Sync;

/// How a shared GPU request picks its GPU.
pub enum SharePick {
    /// The GPU with the least free thousandths that fit; lowest index on ties.
    BestFit,
    /// Uniform among the GPUs with enough free thousandths (idle included).
    Random(Mutex<Rng>),
    /// FGD: the first GPU (by index) reaching the best truncated FGD score.
    Fgd(Arc<FragModel>),
    /// A policy-specific rule.
    Custom(Box<PickFn>),
}

/// GPUs of `node` that can take `milli` thousandths of `task`'s request.
fn candidates<'a>(
    task: &'a TaskRequest,
    node: &'a NodeState,
) -> impl Iterator<Item = &'a GpuState> + 'a {
    let req = task.gpus.as_ref();
    node.gpus.iter().filter(move |g| {
        req.is_some_and(|r| {
            g.milli_free() >= r.milli && r.model_ok(&g.model) && g.memory_bytes >= r.min_memory
        })
    })
}

impl SharePick {
    /// The GPU index `task` (a shared request) takes on `node`.
    pub fn pick(&self, task: &TaskRequest, node: &NodeState) -> Option<u32> {
        match self {
            SharePick::BestFit => candidates(task, node)
                .min_by_key(|g| (g.milli_free(), g.index))
                .map(|g| g.index),
            SharePick::Random(rng) => {
                let c: Vec<u32> = candidates(task, node).map(|g| g.index).collect();
                if c.is_empty() {
                    return None;
                }
                let i = rng
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .index(c.len());
                Some(c[i])
            }
            SharePick::Fgd(model) => model.session().choose(task, node).and_then(|c| c.gpu),
            SharePick::Custom(f) => f(task, node),
        }
    }
}

/// Whether the policy decides the GPU: a share of one GPU with no cores,
/// NICs or NUMA policy to coordinate with.
pub fn is_simple_share(task: &TaskRequest) -> bool {
    matches!(&task.gpus, Some(g) if g.milli > 0 && g.milli < GPU_MILLI && g.count > 0 && g.mig_profile.is_none())
        && task.cores == 0
        && task.nics.is_none()
        && task.numa == NumaPolicy::None
}

/// The default allocator, except that shared GPU requests pick their GPU by
/// the policy's rule. Whole GPUs go to the lowest-index idle ones (or the
/// best NVLink set), as [`crate::hw::choose_gpus`] does.
pub struct PolicyAllocator {
    name: String,
    pick: SharePick,
}

impl PolicyAllocator {
    /// An allocator named `name` using `pick` for shared GPUs.
    pub fn new(name: impl Into<String>, pick: SharePick) -> PolicyAllocator {
        PolicyAllocator {
            name: name.into(),
            pick,
        }
    }
}

impl AllocatePlugin for PolicyAllocator {
    fn name(&self) -> &str {
        &self.name
    }
    fn prepare(&self, cluster: &crate::Cluster) {
        if let SharePick::Fgd(model) = &self.pick {
            model.prepare(cluster);
        }
    }
    fn allocate(&self, task: &TaskRequest, node: &NodeState) -> Result<Allocation, Rejection> {
        if !is_simple_share(task) {
            return DefaultAllocator.allocate(task, node);
        }
        if node.cpu_free() < task.cpu || node.mem_free() < task.memory {
            return Err(Rejection::new(
                "insufficient resources",
                "changed since filtering",
            ));
        }
        let (Some(req), Some(index)) = (&task.gpus, self.pick.pick(task, node)) else {
            return Err(Rejection::new(
                "insufficient gpu",
                "no GPU with enough free thousandths",
            ));
        };
        let numa = node
            .gpus
            .iter()
            .find(|g| g.index == index)
            .and_then(|g| g.numa)
            .into_iter()
            .collect();
        let pick = HwPick {
            gpus: vec![(index, req.milli)],
            numa,
            ..Default::default()
        };
        Ok(allocation(task, node, pick))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::GpuRequest;

    fn node(used: &[u32]) -> NodeState {
        NodeState {
            name: "n".into(),
            ready: true,
            cpu_capacity: 8000,
            mem_capacity: 1 << 30,
            gpus: used
                .iter()
                .enumerate()
                .map(|(i, u)| GpuState {
                    index: i as u32,
                    uuid: format!("g{i}"),
                    model: "T4".into(),
                    milli_used: *u,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn task(count: u32, milli: u32) -> TaskRequest {
        TaskRequest {
            id: "t".into(),
            cpu: 1000,
            gpus: Some(GpuRequest {
                count,
                milli,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn best_fit_takes_the_tightest_gpu() {
        let a = PolicyAllocator::new("bf", SharePick::BestFit);
        let got = a
            .allocate(&task(1, 300), &node(&[0, 600, 500, 600]))
            .unwrap();
        assert_eq!(got.gpus.len(), 1);
        assert_eq!(
            (
                got.gpus[0].index,
                got.gpus[0].milli,
                got.gpus[0].uuid.as_str()
            ),
            (1, 300, "g1")
        );
        assert!(a.allocate(&task(1, 900), &node(&[200, 200])).is_err());
    }

    #[test]
    fn whole_gpus_take_the_lowest_idle() {
        let a = PolicyAllocator::new("bf", SharePick::BestFit);
        let got = a.allocate(&task(2, 1000), &node(&[0, 100, 0, 0])).unwrap();
        let idx: Vec<u32> = got.gpus.iter().map(|g| g.index).collect();
        assert_eq!(idx, vec![0, 2]);
    }

    #[test]
    fn random_pick_is_seeded_and_feasible() {
        let pick = |seed| {
            let a = PolicyAllocator::new("r", SharePick::Random(Mutex::new(Rng::new(seed))));
            (0..20)
                .map(|_| {
                    a.allocate(&task(1, 500), &node(&[0, 600, 800, 0]))
                        .unwrap()
                        .gpus[0]
                        .index
                })
                .collect::<Vec<_>>()
        };
        let a = pick(1);
        assert_eq!(a, pick(1));
        assert!(a.iter().all(|i| [0, 3].contains(i)), "{a:?}");
        assert!(a.contains(&0) && a.contains(&3));
    }
}
