//! Preemption in a round that placed nothing: for the highest-priority task
//! that failed, the smallest set of lower-priority tasks to evict (one
//! preemption per round, so victims are never counted twice). Tasks already
//! being removed count as free; while they stop, the task waits with a
//! message saying so.

use berth_sched::preempt::{self, Victim};
use berth_sched::{Cluster, Pipeline};
use berth_store::Command;

use super::round::{Plan, Round};
use crate::live::Live;

/// The preemption to commit, if any; updates `plan`'s messages for tasks
/// that wait on victims already leaving.
pub(super) fn find(
    round: &Round,
    plan: &mut Plan,
    live: &Live,
    pipeline: &Pipeline,
    cluster: &Cluster,
) -> Option<Command> {
    if !plan.placements.is_empty() || plan.failed.is_empty() {
        return None;
    }
    let top = round
        .pending
        .iter()
        .filter(|p| !p.gang)
        .map(|p| p.priority)
        .max()?;
    let victims: Vec<Victim> = live
        .held()
        .filter(|(_, h)| h.priority < top)
        .map(|(id, h)| Victim {
            id: id.clone(),
            node: h.node.clone(),
            group: h.app.clone(),
            priority: h.priority,
            allocation: h.allocation.clone(),
            leaving: h.leaving,
        })
        .collect();
    let lowest = victims
        .iter()
        .filter(|v| !v.leaving)
        .map(|v| v.priority)
        .min()?;
    let failed: std::collections::HashSet<&str> =
        plan.failed.iter().map(|(id, _)| id.as_str()).collect();
    let mut waiting: Vec<_> = round
        .pending
        .iter()
        .filter(|p| !p.gang && p.priority > lowest && failed.contains(p.id.as_str()))
        .collect();
    waiting.sort_by_key(|p| (std::cmp::Reverse(p.priority), p.id.clone()));
    for t in waiting {
        // Tasks of a namespace with a quota are preempted only by their
        // own namespace's: within its quota, a namespace keeps what it has.
        let allowed: Vec<Victim>;
        let victims = if round.protected.is_empty() {
            &victims
        } else {
            allowed = victims
                .iter()
                .filter(|v| {
                    round
                        .protected
                        .get(&v.group)
                        .is_none_or(|ns| *ns == t.namespace)
                })
                .cloned()
                .collect();
            &allowed
        };
        let Some(found) = preempt::find(pipeline, cluster, &t.request, victims) else {
            continue;
        };
        if found.evict.is_empty() {
            let msg = format!(
                "waiting for {} preempted task(s) to stop on {}",
                found.waiting_on.len(),
                found.node
            );
            // Never propose a message the task already has (that would loop).
            plan.unplaced.retain(|(id, _)| *id != t.id);
            if t.message != msg {
                plan.unplaced.push((t.id.clone(), msg));
            }
            continue;
        }
        tracing::info!(task = %t.id, node = %found.node, victims = ?found.evict, "preempting");
        return Some(Command::Preempt {
            task: t.id.clone(),
            node: found.node,
            evict: found.evict,
        });
    }
    None
}
