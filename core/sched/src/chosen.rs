//! Allocation around GPUs chosen by someone else (an allocate plugin): the
//! choice is checked against the node and the request, then cores, NICs,
//! devices and NUMA nodes are picked around it by the usual rules.

use std::collections::BTreeSet;

use crate::cluster::{GPU_MILLI, Interconnect, NodeState, NumaPolicy, TaskRequest};
use crate::hw::{self, GpuPick, HwPick, Scope};
use crate::plugin::Rejection;

fn invalid(detail: String) -> Rejection {
    Rejection::new("invalid GPU choice", detail)
}

/// Checks that `gpus` (indices on `node`) are a valid answer to `task`'s
/// GPU request: as many as asked, distinct, eligible, free enough and, for
/// NVLink requests, connected. Returns them as a pick.
pub fn check_gpus(
    task: &TaskRequest,
    node: &NodeState,
    gpus: &[u32],
) -> Result<GpuPick, Rejection> {
    let Some(req) = &task.gpus else {
        return if gpus.is_empty() {
            Ok(Vec::new())
        } else {
            Err(invalid(format!(
                "{} GPUs for a task that asks for none",
                gpus.len()
            )))
        };
    };
    let want = if req.milli < GPU_MILLI {
        1
    } else {
        req.count as usize
    };
    if gpus.len() != want {
        return Err(invalid(format!(
            "{} GPUs chosen, {want} asked for",
            gpus.len()
        )));
    }
    let distinct: BTreeSet<u32> = gpus.iter().copied().collect();
    if distinct.len() != gpus.len() {
        return Err(invalid(format!("GPU chosen twice in {gpus:?}")));
    }
    for &i in gpus {
        let ok = hw::eligible(req, node)
            .find(|g| g.index == i)
            .is_some_and(|g| g.milli_free() >= req.milli.min(GPU_MILLI) && g.mig.is_empty());
        if !ok {
            return Err(invalid(format!(
                "GPU {i} is not on the node, not eligible or not free enough"
            )));
        }
    }
    if req.interconnect == Interconnect::NvLink && gpus.len() > 1 && !hw::connected(node, gpus) {
        return Err(invalid(format!(
            "GPUs {gpus:?} are not on one NVLink island"
        )));
    }
    Ok(gpus
        .iter()
        .map(|&i| (i, req.milli.min(GPU_MILLI)))
        .collect())
}

/// The whole hardware pick for `task` on `node` with the GPUs `gpus`, under
/// the task's NUMA policy: the GPUs' NUMA nodes bound the rest when the
/// policy asks for locality.
pub fn pick_with_gpus(
    task: &TaskRequest,
    node: &NodeState,
    gpus: &[u32],
) -> Result<HwPick, Rejection> {
    let fixed = check_gpus(task, node, gpus)?;
    let numas: Vec<u32> = fixed
        .iter()
        .filter_map(|(i, _)| node.gpus.iter().find(|g| g.index == *i)?.numa)
        .collect::<BTreeSet<u32>>()
        .into_iter()
        .collect();
    let local = || hw::pick_within(task, node, Scope::Only(&numas), Some(&fixed));
    let anywhere = || hw::pick_within(task, node, Scope::Any, Some(&fixed));
    let pick = match task.numa {
        NumaPolicy::SingleNumaNode if numas.len() != 1 => None,
        NumaPolicy::SingleNumaNode => local(),
        NumaPolicy::Restricted | NumaPolicy::BestEffort => local().or_else(anywhere),
        NumaPolicy::None => anywhere(),
    };
    pick.ok_or_else(|| {
        Rejection::new(
            "hardware does not fit the chosen GPUs",
            format!(
                "no cores, NICs or devices fit around GPUs {gpus:?} under {:?}",
                task.numa
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{CoreState, GpuRequest, GpuState};

    fn node() -> NodeState {
        NodeState {
            name: "n".into(),
            ready: true,
            cpu_capacity: 8000,
            mem_capacity: 1 << 34,
            gpus: (0..4)
                .map(|i| GpuState {
                    index: i,
                    numa: Some(i / 2),
                    nvlinks: vec![(i ^ 1, 4)],
                    milli_used: if i == 3 { 500 } else { 0 },
                    ..Default::default()
                })
                .collect(),
            cores: (0..4)
                .map(|i| CoreState {
                    id: i,
                    numa: i / 2,
                    pus: vec![i],
                    taken: false,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn task(count: u32, milli: u32, numa: NumaPolicy) -> TaskRequest {
        TaskRequest {
            cores: 1,
            gpus: Some(GpuRequest {
                count,
                milli,
                interconnect: Interconnect::NvLink,
                ..Default::default()
            }),
            numa,
            ..Default::default()
        }
    }

    #[test]
    fn the_choice_is_checked_and_the_rest_follows_it() {
        let n = node();
        let p = pick_with_gpus(&task(2, 1000, NumaPolicy::SingleNumaNode), &n, &[0, 1]).unwrap();
        assert_eq!(p.gpus, vec![(0, 1000), (1, 1000)]);
        assert_eq!(p.numa, vec![0]);
        assert!(p.cores.iter().all(|c| *c < 2), "{p:?}");
        // Not linked, not on one NUMA node.
        let e = pick_with_gpus(&task(2, 1000, NumaPolicy::None), &n, &[0, 2]).unwrap_err();
        assert!(e.detail.contains("NVLink"), "{e:?}");
        for (gpus, why) in [
            (vec![0], "1 GPUs chosen, 2 asked for"),
            (vec![0, 0], "chosen twice"),
            (vec![0, 9], "GPU 9"),
            (vec![2, 3], "GPU 3"),
        ] {
            let e = pick_with_gpus(&task(2, 1000, NumaPolicy::None), &n, &gpus).unwrap_err();
            assert!(e.detail.contains(why), "{gpus:?}: {e:?}");
        }
        // A share fits the half-used GPU.
        let p = pick_with_gpus(&task(1, 500, NumaPolicy::None), &n, &[3]).unwrap();
        assert_eq!(p.gpus, vec![(3, 500)]);
    }
}
