//! The scheduling loop: on the leader, whenever state changes, place the
//! pending tasks with `berth-sched` and commit the results.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use berth_model::node::NodeStatus;
use berth_model::spec::RestartPolicy;
use berth_model::task::{Desired, Task, TaskState};
use berth_sched::policy::{self, PodShape, PolicyContext};
use berth_sched::preempt::{self, Victim};
use berth_sched::{Cluster, Decision, NodeState, Pipeline, TaskRequest};
use berth_store::{ClusterState, Command, Envelope, Placement, Store};

use crate::plugins::PluginSet;

/// Whether a task still holds its node's resources.
pub fn holds_resources(state: &ClusterState, t: &Task) -> bool {
    if t.node.is_none() {
        return false;
    }
    match t.state {
        TaskState::Pending | TaskState::Running => true,
        TaskState::Stopped => false,
        TaskState::Exited | TaskState::Failed => {
            if t.desired != Desired::Run {
                return false;
            }
            // Ended for good unless its restart policy brings it back.
            match state.apps.get(&t.app).map(|a| a.spec.restart) {
                Some(RestartPolicy::Always) => true,
                Some(RestartPolicy::OnFailure) => t.exit_code != Some(0),
                _ => false,
            }
        }
    }
}

/// The scheduler's snapshot of the committed state.
pub fn snapshot(state: &ClusterState) -> Cluster {
    let mut nodes: HashMap<&str, NodeState> = state
        .nodes
        .values()
        .map(|n| {
            let mut node = NodeState {
                name: n.info.name.clone(),
                ready: n.status == NodeStatus::Ready && !n.drained,
                cpu_capacity: n.info.cpu.0,
                mem_capacity: n.info.memory.0,
                ..Default::default()
            };
            if let Some(inv) = &n.info.inventory {
                node = node.with_inventory(inv);
            }
            node.attributes
                .insert("hostname".into(), n.info.name.clone());
            node.attributes.extend(n.info.labels.clone());
            (n.info.name.as_str(), node)
        })
        .collect();
    for t in state.tasks.values() {
        if !holds_resources(state, t) {
            continue;
        }
        if let (Some(node), Some(a)) = (t.node.as_deref(), t.allocation.as_ref())
            && let Some(n) = nodes.get_mut(node)
        {
            n.take(a);
            *n.groups.entry(t.app.clone()).or_default() += 1;
        }
    }
    Cluster::new(nodes.into_values().collect())
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

/// Decides placements for every pending task against one snapshot; each
/// shadow pipeline decides the same tasks on the same snapshot, changing
/// nothing. Returns `None` when there is nothing new to commit.
pub fn plan(
    state: &ClusterState,
    pipeline: &Pipeline,
    shadows: &Shadows<'_>,
) -> (Option<Command>, Vec<Decision>) {
    let mut cluster = snapshot(state);
    let mut decisions = Vec::new();
    let mut placements = Vec::new();
    let mut unplaced = Vec::new();
    // Pending tasks by app version (instances in order); a gang is decided whole.
    let mut batches: std::collections::BTreeMap<(&str, u64), Vec<&Task>> = Default::default();
    for t in state.unplaced() {
        batches
            .entry((t.app.as_str(), t.version))
            .or_default()
            .push(t);
    }
    // Higher priority first, so freed resources go to the task that freed them.
    let mut batches: Vec<Vec<&Task>> = batches.into_values().collect();
    batches.sort_by_key(|b| {
        let prio = state
            .apps
            .get(&b[0].app)
            .map(|a| a.spec.priority)
            .unwrap_or(0);
        (std::cmp::Reverse(prio), b[0].app.clone(), b[0].version)
    });
    for mut batch in batches {
        batch.sort_by_key(|t| t.instance);
        let Some(app) = state.apps.get(&batch[0].app) else {
            continue;
        };
        let gang = app.spec.gang;
        // A gang is tried on a scratch copy and committed only if all fit.
        let mut scratch = if gang { Some(cluster.clone()) } else { None };
        let mut ok = Vec::new();
        let mut failed: Option<String> = None;
        for t in &batch {
            let req = TaskRequest::for_spec(&t.id, &app.spec);
            let target = scratch.as_mut().unwrap_or(&mut cluster);
            let d = pipeline.decide(target, &req);
            if let Some(set) = shadows.set {
                for (name, sp) in shadows.list {
                    set.record_shadow(name, &d, &sp.decide(target, &req));
                }
            }
            match &d.placement {
                Some((node, allocation)) => {
                    target.commit_for(node, &t.app, allocation);
                    ok.push(Placement {
                        task: t.id.clone(),
                        node: node.clone(),
                        allocation: allocation.clone(),
                    });
                }
                None => {
                    failed.get_or_insert_with(|| d.summary.clone());
                    if !gang && t.message != d.summary {
                        unplaced.push((t.id.clone(), d.summary.clone()));
                    }
                }
            }
            decisions.push(d);
            if gang && failed.is_some() {
                break;
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
                        unplaced.push((t.id.clone(), msg.clone()));
                    }
                }
            }
            (true, None) => {
                if let Some(s) = scratch {
                    cluster = s;
                }
                placements.extend(ok);
            }
            (false, _) => placements.extend(ok),
        }
    }
    if placements.is_empty()
        && let Some(cmd) = preemption(state, pipeline, &cluster, &mut unplaced)
    {
        return (Some(cmd), decisions);
    }
    let cmd = (!placements.is_empty() || !unplaced.is_empty()).then_some(Command::Schedule {
        placements,
        unplaced,
    });
    (cmd, decisions)
}

/// For the highest-priority task that fits nowhere, the smallest set of
/// lower-priority tasks to evict (one preemption per round, so victims are
/// never counted twice). Tasks already being removed count as free; while
/// they stop, the task waits with a message saying so.
fn preemption(
    state: &ClusterState,
    pipeline: &Pipeline,
    cluster: &Cluster,
    unplaced: &mut Vec<(String, String)>,
) -> Option<Command> {
    let prio = |app: &str| state.apps.get(app).map(|a| a.spec.priority).unwrap_or(0);
    let victims: Vec<Victim> = state
        .tasks
        .values()
        .filter(|t| holds_resources(state, t))
        .filter_map(|t| {
            Some(Victim {
                id: t.id.clone(),
                node: t.node.clone()?,
                group: t.app.clone(),
                priority: prio(&t.app),
                allocation: t.allocation.clone()?,
                leaving: t.desired != Desired::Run,
            })
        })
        .collect();
    let lowest = victims
        .iter()
        .filter(|v| !v.leaving)
        .map(|v| v.priority)
        .min()?;
    let mut waiting: Vec<&Task> = state
        .unplaced()
        .filter(|t| {
            state
                .apps
                .get(&t.app)
                .is_some_and(|a| !a.spec.gang && a.spec.priority > lowest)
        })
        .collect();
    waiting.sort_by_key(|t| (std::cmp::Reverse(prio(&t.app)), t.id.clone()));
    for t in waiting {
        let app = state.apps.get(&t.app)?;
        let Some(plan) = preempt::find(
            pipeline,
            cluster,
            &TaskRequest::for_spec(&t.id, &app.spec),
            &victims,
        ) else {
            continue;
        };
        if plan.evict.is_empty() {
            let msg = format!(
                "waiting for {} preempted task(s) to stop on {}",
                plan.waiting_on.len(),
                plan.node
            );
            // Never propose a message the task already has (that would loop).
            unplaced.retain(|(id, _)| *id != t.id);
            if t.message != msg {
                unplaced.push((t.id.clone(), msg));
            }
            continue;
        }
        tracing::info!(task = %t.id, node = %plan.node, victims = ?plan.evict, "preempting");
        return Some(Command::Preempt {
            task: t.id.clone(),
            node: plan.node,
            evict: plan.evict,
        });
    }
    None
}

/// The latest decision for each task, with its per-node explanation, kept
/// in memory by the server that made it (the leader). The one-line summary
/// is also committed (as the task's message); the per-node detail is not,
/// since it grows with the cluster.
pub type Explanations = Arc<Mutex<HashMap<String, Decision>>>;

/// What the placement policy may know of the workload and the cluster
/// (FGD's typical task shapes, GPU capacity per model): the shapes of every
/// task that runs or waits, and the GPUs of every node. Deterministic, so
/// every server derives the same context from the same state.
pub fn workload_context(state: &ClusterState) -> PolicyContext {
    let shapes = state
        .tasks
        .values()
        .filter(|t| t.desired == Desired::Run && t.state != TaskState::Stopped)
        .filter_map(|t| Some(TaskRequest::for_spec(&t.id, &state.apps.get(&t.app)?.spec)))
        .map(|r| PodShape::of_task(&r));
    let mut capacity: BTreeMap<String, u64> = BTreeMap::new();
    for inv in state
        .nodes
        .values()
        .filter_map(|n| n.info.inventory.as_ref())
    {
        for g in inv.gpus.iter().filter(|g| g.mig.instances.is_empty()) {
            *capacity.entry(g.model.clone()).or_default() += 1000;
        }
    }
    PolicyContext {
        capacity: capacity.into_iter().collect(),
        ..PolicyContext::from_shapes(shapes, 0)
    }
}

/// The pipeline for `policy` with the enforced plugins, and one per shadow
/// plugin, rebuilt only when the workload context or the plugins change.
struct Chain {
    policy: String,
    plugins: Arc<PluginSet>,
    key: Option<(PolicyContext, u64)>,
    pipeline: Pipeline,
    shadows: Vec<(String, Pipeline)>,
}

impl Chain {
    fn base(&self, ctx: &PolicyContext) -> Pipeline {
        match policy::cluster_pipeline(&self.policy, ctx) {
            Ok(p) => self.plugins.extend(p),
            Err(e) => {
                tracing::error!(error = %e, "placement policy");
                self.plugins.extend(Pipeline::default())
            }
        }
    }

    fn for_state(&mut self, state: &ClusterState) {
        let generation = self.plugins.sync(state);
        let key = (workload_context(state), generation);
        if self.key.as_ref() != Some(&key) {
            self.pipeline = self.base(&key.0);
            self.shadows = self.plugins.shadows(|| self.base(&key.0));
            self.key = Some(key);
        }
    }
}

/// Runs until the store shuts down, placing with the policy named `policy`
/// (see [`policy::cluster_pipeline`]) and the installed plugins.
pub async fn run(
    store: Store,
    policy: String,
    plugins: Arc<PluginSet>,
    explanations: Explanations,
) {
    let mut applied = store.applied();
    let mut chain = Chain {
        policy,
        plugins,
        key: None,
        pipeline: Pipeline::default(),
        shadows: Vec::new(),
    };
    loop {
        if store.is_leader() {
            let cmd = {
                let state = store.read();
                chain.for_state(&state);
                let shadows = Shadows {
                    list: &chain.shadows,
                    set: Some(&chain.plugins),
                };
                let (cmd, decisions) = plan(&state, &chain.pipeline, &shadows);
                let mut ex = explanations.lock().unwrap_or_else(|p| p.into_inner());
                ex.retain(|id, _| state.tasks.contains_key(id));
                for d in decisions {
                    ex.insert(d.task.clone(), d);
                }
                cmd
            };
            if let Some(cmd) = cmd {
                if let Err(e) = store
                    .propose(Envelope {
                        request_id: None,
                        command: cmd,
                    })
                    .await
                {
                    tracing::warn!(error = %e, "committing placements failed");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                continue;
            }
        }
        tokio::select! {
            r = applied.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}
