//! One scheduling round: the pending tasks that need a decision, decided
//! against a scratch copy of the live view, higher priority first, a gang
//! all or none.

use std::collections::BTreeMap;

use berth_sched::{Cluster, Decision, Pipeline, TaskRequest};
use berth_store::Placement;

use crate::plugins::PluginSet;

/// How many decisions of a round (its last ones) keep per-node detail;
/// the others are made on the pipeline's lean path, which decides the same
/// without building an explanation.
const DETAILED: usize = 32;

/// A pending task, copied out of the state for a round.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Task id.
    pub id: String,
    /// App name.
    pub app: String,
    /// App version.
    pub version: u64,
    /// Instance number.
    pub instance: u32,
    /// The task's committed message (a reason is proposed only if new).
    pub message: String,
    /// What it asks for.
    pub request: TaskRequest,
    /// Its app's priority.
    pub priority: i32,
    /// Whether its app is a gang (all or none).
    pub gang: bool,
    /// Whether a failure must be retried on any change (constraints,
    /// plugins), not only when capacity is freed.
    pub retry_any: bool,
    /// Its app's namespace.
    pub namespace: String,
}

/// The work of one round.
#[derive(Debug, Default)]
pub struct Round {
    /// Tasks to decide.
    pub pending: Vec<Pending>,
    /// The live view's counters when the round was gathered.
    pub freed: u64,
    /// See [`Round::freed`].
    pub changed: u64,
    /// Tasks held back by their namespace's quota, with the reason (only
    /// those whose message is not that reason already).
    pub refused: Vec<(String, String)>,
    /// Apps of namespaces with a quota, and their namespace: other
    /// namespaces' tasks never preempt them.
    pub protected: std::collections::HashMap<String, String>,
}

/// Shadow pipelines (each the enforced chain plus one shadow plugin) and
/// where to record how their decisions compare.
#[derive(Default)]
pub struct Shadows<'a> {
    /// (plugin name, its pipeline).
    pub list: &'a [(String, Pipeline)],
    /// Where comparisons are recorded.
    pub set: Option<&'a PluginSet>,
}

/// What a round decided.
#[derive(Debug, Default)]
pub struct Plan {
    /// Placements to commit.
    pub placements: Vec<Placement>,
    /// New one-line reasons for tasks left pending.
    pub unplaced: Vec<(String, String)>,
    /// Tasks that did not fit, and whether to retry them on any change.
    pub failed: Vec<(String, bool)>,
    /// Decisions with per-node detail, to keep for `berth explain`.
    pub detail: Vec<Decision>,
}

/// Decides `round` against `cluster`, accounting each placement in it so
/// later decisions see it.
pub fn plan(
    round: &Round,
    cluster: &mut Cluster,
    pipeline: &Pipeline,
    shadows: &Shadows<'_>,
) -> Plan {
    let mut out = Plan::default();
    let mut batches: BTreeMap<(&str, u64), Vec<&Pending>> = BTreeMap::new();
    for p in &round.pending {
        batches
            .entry((p.app.as_str(), p.version))
            .or_default()
            .push(p);
    }
    // Higher priority first, so freed resources go to the task that freed them.
    let mut batches: Vec<Vec<&Pending>> = batches.into_values().collect();
    batches.sort_by_key(|b| {
        (
            std::cmp::Reverse(b[0].priority),
            b[0].app.clone(),
            b[0].version,
        )
    });
    let total = round.pending.len();
    let mut seen = 0;
    for mut batch in batches {
        batch.sort_by_key(|t| t.instance);
        let gang = batch[0].gang;
        // A gang is tried on a scratch copy and committed only if all fit.
        let mut scratch = if gang { Some(cluster.clone()) } else { None };
        let mut ok = Vec::new();
        let mut failed: Option<String> = None;
        for t in &batch {
            seen += 1;
            let target = scratch.as_mut().unwrap_or(&mut *cluster);
            if let Some(why) = &failed {
                // The same request against the same cluster: the same answer.
                if t.message != *why {
                    out.unplaced.push((t.id.clone(), why.clone()));
                }
                out.failed.push((t.id.clone(), t.retry_any));
                continue;
            }
            let detailed = seen + DETAILED > total || !shadows.list.is_empty();
            let placement = if detailed {
                let d = decide(pipeline, shadows, target, &t.request);
                let p = d.placement.clone();
                if p.is_none() {
                    failed = Some(d.summary.clone());
                }
                out.detail.push(d);
                p
            } else {
                match pipeline.place(target, &t.request) {
                    Some((i, a)) => Some((target.nodes()[i].name.clone(), a)),
                    None => {
                        // Say why: the full path explains the failure.
                        let d = decide(pipeline, shadows, target, &t.request);
                        failed = Some(d.summary.clone());
                        out.detail.push(d);
                        None
                    }
                }
            };
            match placement {
                Some((node, allocation)) => {
                    target.commit_for(&node, &t.app, &allocation);
                    ok.push(Placement {
                        task: t.id.clone(),
                        node,
                        allocation,
                    });
                }
                None => {
                    if gang {
                        break;
                    }
                    out.failed.push((t.id.clone(), t.retry_any));
                    if let Some(why) = &failed
                        && t.message != *why
                    {
                        out.unplaced.push((t.id.clone(), why.clone()));
                    }
                }
            }
        }
        match (gang, failed) {
            (true, Some(why)) => {
                // All or none: nothing is held; every member says why.
                let msg = format!(
                    "gang of {}: {} of {} fit; {}",
                    batch.len(),
                    ok.len(),
                    batch.len(),
                    why
                );
                for t in &batch {
                    if t.message != msg {
                        out.unplaced.push((t.id.clone(), msg.clone()));
                    }
                    out.failed.push((t.id.clone(), t.retry_any));
                }
            }
            (true, None) => {
                if let Some(s) = scratch {
                    *cluster = s;
                }
                out.placements.extend(ok);
            }
            (false, _) => out.placements.extend(ok),
        }
    }
    out
}

/// The full decision, with each shadow pipeline's on the same cluster.
fn decide(
    pipeline: &Pipeline,
    shadows: &Shadows<'_>,
    cluster: &Cluster,
    req: &TaskRequest,
) -> Decision {
    let d = pipeline.decide(cluster, req);
    if let Some(set) = shadows.set {
        for (name, sp) in shadows.list {
            set.record_shadow(name, &d, &sp.decide(cluster, req));
        }
    }
    d
}
