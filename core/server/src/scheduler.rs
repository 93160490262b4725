//! The scheduling loop: on the leader, whenever state changes, place the
//! pending tasks that need a decision with `berth-sched` and commit the
//! results, many placements per command.
//!
//! It runs on a thread of its own, never on the runtime that answers
//! clients and heartbeats. Under the state's read lock it only brings its
//! [`Live`] view up to date and copies out the work; it decides, and loads
//! plugins, with no lock held.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_model::task::Task;
use berth_sched::policy::{self, PolicyContext};
use berth_sched::{Cluster, Decision, Pipeline, TaskRequest};
use berth_store::{ClusterState, Command, Envelope, Store};

use crate::live::Live;
use crate::plugins::PluginSet;

mod preemption;
mod round;

pub use round::{Pending, Plan, Round, Shadows, plan};

/// How many decisions keep their per-node detail, for pending tasks and
/// for placed ones each: the rest keep the one-line summary (committed as
/// the task's message).
pub const EXPLAIN_BUDGET: usize = 1000;

/// How many node verdicts the kept decisions hold at most, for pending
/// tasks and for placed ones each: on a large cluster fewer decisions keep
/// their detail (100 of each at 5,000 nodes), so the memory they take
/// (about 300 bytes a verdict) does not grow with the cluster.
pub const EXPLAIN_NODES: usize = 500_000;

/// Recent decisions with their per-node explanation, kept in memory by the
/// server that made them (the leader), within [`EXPLAIN_BUDGET`] and
/// [`EXPLAIN_NODES`] for pending tasks and as many for placed ones.
pub struct Explained {
    map: HashMap<String, (Decision, u64)>,
    pending: Kept,
    placed: Kept,
    seq: u64,
    /// Decisions and node verdicts kept at most, of each kind.
    budget: (usize, usize),
}

/// Decisions of one kind, oldest first: (task, seq, node verdicts).
#[derive(Default)]
struct Kept {
    queue: VecDeque<(String, u64, usize)>,
    verdicts: usize,
}

impl Default for Explained {
    fn default() -> Explained {
        Explained::with_budget(EXPLAIN_BUDGET, EXPLAIN_NODES)
    }
}

impl Explained {
    /// Keeps at most `decisions` decisions and `verdicts` node verdicts of
    /// each kind (the newest decision always).
    pub fn with_budget(decisions: usize, verdicts: usize) -> Explained {
        Explained {
            map: HashMap::new(),
            pending: Kept::default(),
            placed: Kept::default(),
            seq: 0,
            budget: (decisions.max(1), verdicts),
        }
    }

    /// Keeps a decision, dropping the oldest of its kind past the budget.
    pub fn insert(&mut self, d: Decision) {
        self.seq += 1;
        let id = d.task.clone();
        let kept = if d.placement.is_some() {
            &mut self.placed
        } else {
            &mut self.pending
        };
        kept.queue.push_back((id.clone(), self.seq, d.nodes.len()));
        kept.verdicts += d.nodes.len();
        self.map.insert(id, (d, self.seq));
        let (most, verdicts) = self.budget;
        while kept.queue.len() > most || (kept.verdicts > verdicts && kept.queue.len() > 1) {
            let Some((old, seq, nodes)) = kept.queue.pop_front() else {
                break;
            };
            kept.verdicts -= nodes;
            // Only the entry this queue slot put there (not a newer one).
            if self.map.get(&old).is_some_and(|(_, s)| *s == seq) {
                self.map.remove(&old);
            }
        }
    }

    /// The kept decision for a task.
    pub fn get(&self, id: &str) -> Option<&Decision> {
        self.map.get(id).map(|(d, _)| d)
    }

    /// How many decisions keep their detail.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none do.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Shared handle to the kept explanations.
pub type Explanations = Arc<Mutex<Explained>>;

/// The pipeline for `policy` with the enforced plugins, and one per shadow
/// plugin, rebuilt only when the workload context or the plugins change.
struct Chain {
    policy: String,
    /// Score at most this many feasible nodes per decision (`None`: every
    /// one, once per node class).
    sample: Option<usize>,
    plugins: Arc<PluginSet>,
    key: Option<(PolicyContext, u64)>,
    pipeline: Pipeline,
    shadows: Vec<(String, Pipeline)>,
}

impl Chain {
    fn base(&self, ctx: &PolicyContext) -> Pipeline {
        match policy::cluster_pipeline(&self.policy, ctx) {
            Ok(p) => self.plugins.extend(p.sample(self.sample)),
            Err(e) => {
                tracing::error!(error = %e, "placement policy");
                self.plugins.extend(Pipeline::default())
            }
        }
    }

    fn refresh(&mut self, ctx: PolicyContext, generation: u64) {
        let key = (ctx, generation);
        if self.key.as_ref() != Some(&key) {
            self.pipeline = self.base(&key.0);
            self.shadows = self.plugins.shadows(|| self.base(&key.0));
            self.key = Some(key);
        }
    }
}

/// Why a task's last decision failed, and what has changed since.
struct Failed {
    freed: u64,
    changed: u64,
    /// Retry on any change (constraints or plugins may depend on where
    /// other tasks are), not only when capacity is freed.
    any: bool,
}

/// The loop's memory between rounds.
struct Loop {
    live: Option<Live>,
    chain: Chain,
    plugin_seen: u64,
    failed: HashMap<String, Failed>,
    templates: HashMap<(String, u64), TaskRequest>,
    explanations: Explanations,
    metrics: Arc<crate::metrics::ServerMetrics>,
}

impl Loop {
    /// Under the read lock: brings the view up to date and copies out the
    /// tasks that need a decision. Returns the plugin records to load when
    /// they changed.
    fn gather(&mut self, store: &Store) -> (Round, Option<ClusterState>) {
        let state = store.read();
        let synced = self.live.as_mut().is_some_and(|l| l.sync(&state));
        if !synced {
            drop(state);
            self.live = Some(Live::new(store));
            self.templates.clear();
            // A new view counts plugin changes from scratch: load them.
            self.plugin_seen = 0;
            return self.gather(store);
        }
        let Some(live) = self.live.as_mut() else {
            unreachable!("set just above")
        };
        let plugins = (live.plugins != self.plugin_seen).then(|| {
            self.plugin_seen = live.plugins;
            // Another filter chain may place what the last one could not.
            self.failed.clear();
            state.plugins_only()
        });
        // Request templates of app versions that are gone.
        if self.templates.len() > state.apps.len() {
            self.templates
                .retain(|(a, v), _| state.apps.get(a).is_some_and(|x| x.spec_of(*v).is_some()));
        }
        let wasm = !state.plugins.is_empty();
        self.failed.retain(|id, _| {
            state
                .tasks
                .get(id)
                .is_some_and(berth_store::tasks::is_pending)
        });
        let mut groups: BTreeMap<(&str, u64), Vec<&Task>> = BTreeMap::new();
        for t in state.tasks.pending() {
            groups
                .entry((t.app.as_str(), t.version))
                .or_default()
                .push(t);
        }
        let mut round = Round::default();
        let quotas = &state.acl.quotas;
        if !quotas.is_empty() {
            round.protected = state
                .apps
                .values()
                .filter(|a| quotas.contains_key(&a.spec.namespace))
                .map(|a| (a.spec.name.clone(), a.spec.namespace.clone()))
                .collect();
        }
        // What each namespace with a quota holds, counted once per round
        // and grown by what this round lets through.
        let mut used: HashMap<String, berth_model::quota::Usage> = HashMap::new();
        for ((app_name, version), tasks) in groups {
            let Some(app) = state.apps.get(app_name) else {
                continue;
            };
            // A task of an older version (replaced mid-rollout) keeps its spec.
            let Some(spec) = app.spec_of(version) else {
                continue;
            };
            let retry = |t: &&Task| {
                self.failed.get(&t.id).is_none_or(|f| {
                    if f.any {
                        f.changed != live.changed
                    } else {
                        f.freed != live.freed
                    }
                })
            };
            // A gang is decided whole: if any member needs a decision, all do.
            let due = if spec.gang {
                if tasks.iter().any(retry) {
                    tasks
                } else {
                    Vec::new()
                }
            } else {
                tasks.into_iter().filter(retry).collect()
            };
            let ns = spec.namespace.as_str();
            let due = match quotas.get(ns) {
                None => due,
                Some(q) => {
                    let used = used
                        .entry(ns.to_string())
                        .or_insert_with(|| state.namespace_usage(ns));
                    let want = berth_model::quota::Usage::of_spec(spec);
                    let mut ok = Vec::new();
                    let mut held = 0;
                    for t in due {
                        match q.refuses(ns, used, &want) {
                            Some(why) => {
                                held += 1;
                                if t.message != why {
                                    round.refused.push((t.id.clone(), why));
                                }
                            }
                            None => {
                                used.add(&want, true);
                                ok.push(t);
                            }
                        }
                    }
                    // A gang goes whole or not at all.
                    if spec.gang && held > 0 {
                        let why = format!("quota: namespace {ns} has no room for the whole gang");
                        for t in &ok {
                            used.add(&want, false);
                            if t.message != why {
                                round.refused.push((t.id.clone(), why.clone()));
                            }
                        }
                        ok.clear();
                    }
                    ok
                }
            };
            if due.is_empty() {
                continue;
            }
            let template = self
                .templates
                .entry((app_name.to_string(), version))
                .or_insert_with(|| TaskRequest::for_spec("", spec));
            let volumes = spec.has_persistent_volumes();
            let any = wasm || volumes || !spec.constraints.is_empty();
            for t in due {
                // An instance whose volume is bound goes back to its node.
                let pinned = volumes
                    .then(|| state.volume_pin(spec, t.instance))
                    .flatten()
                    .map(|(node, volume)| berth_sched::Pinned {
                        node: node.to_string(),
                        volume,
                    });
                round.pending.push(Pending {
                    id: t.id.clone(),
                    app: t.app.clone(),
                    version: t.version,
                    instance: t.instance,
                    message: t.message.clone(),
                    request: TaskRequest {
                        id: t.id.clone(),
                        pinned,
                        ..template.clone()
                    },
                    priority: spec.priority,
                    gang: spec.gang,
                    retry_any: any,
                    namespace: spec.namespace.clone(),
                });
            }
        }
        round.freed = live.freed;
        round.changed = live.changed;
        (round, plugins)
    }

    /// One round: gather, decide, commit. Returns whether a command was
    /// committed (another round follows at once).
    fn round(&mut self, store: &Store, rt: &tokio::runtime::Runtime) -> bool {
        let (round, plugins) = self.gather(store);
        let generation = match plugins {
            Some(mini) => self.chain.plugins.sync(&mini),
            None => self.chain.plugins.sync_generation(),
        };
        let Some(live) = &self.live else {
            return false;
        };
        self.chain.refresh(live.context(), generation);
        if round.pending.is_empty() && round.refused.is_empty() {
            return false;
        }
        let mut scratch: Cluster = live.cluster.clone();
        let shadows = Shadows {
            list: &self.chain.shadows,
            set: Some(&self.chain.plugins),
        };
        let started = std::time::Instant::now();
        let mut plan = plan(&round, &mut scratch, &self.chain.pipeline, &shadows);
        self.metrics
            .round_seconds
            .observe(started.elapsed().as_secs_f64());
        plan.unplaced.extend(round.refused.iter().cloned());
        let preempt = preemption::find(&round, &mut plan, live, &self.chain.pipeline, &scratch);
        for (id, any) in std::mem::take(&mut plan.failed) {
            self.failed.insert(
                id,
                Failed {
                    freed: round.freed,
                    changed: round.changed,
                    any,
                },
            );
        }
        self.keep(std::mem::take(&mut plan.detail));
        let cmd = preempt.or_else(|| {
            (!plan.placements.is_empty() || !plan.unplaced.is_empty()).then_some(
                Command::Schedule {
                    placements: plan.placements,
                    unplaced: plan.unplaced,
                },
            )
        });
        let Some(cmd) = cmd else {
            return false;
        };
        let (placed, unplaced) = match &cmd {
            Command::Schedule {
                placements,
                unplaced,
            } => (placements.len(), unplaced.len()),
            _ => (0, 0),
        };
        let preempting = matches!(cmd, Command::Preempt { .. });
        let r = rt.block_on(store.propose(Envelope {
            at_ms: 0,
            request_id: None,
            command: cmd,
        }));
        match r {
            Ok(_) => {
                tracing::debug!(placed, "placements committed");
                let m = &self.metrics;
                m.placements
                    .get_or_create(&vec![("policy".to_string(), self.chain.policy.clone())])
                    .inc_by(placed as u64);
                m.unplaced.inc_by(unplaced as u64);
                if preempting {
                    m.preemptions.inc();
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "committing placements failed");
                std::thread::sleep(Duration::from_millis(200));
                false
            }
        }
    }

    fn keep(&mut self, decisions: Vec<Decision>) {
        if decisions.is_empty() {
            return;
        }
        let mut ex = self.explanations.lock().unwrap_or_else(|p| p.into_inner());
        for d in decisions {
            ex.insert(d);
        }
    }
}

/// Starts the loop on a thread of its own, placing with the policy named
/// `policy` (see [`policy::cluster_pipeline`]) and the installed plugins,
/// scoring every feasible node or, with `sample`, at most that many
/// ([`Pipeline::sample`]). It runs until the store shuts down.
pub fn start(
    store: Store,
    policy: String,
    sample: Option<usize>,
    plugins: Arc<PluginSet>,
    explanations: Explanations,
    metrics: Arc<crate::metrics::ServerMetrics>,
) {
    // Its own small runtime (for waiting and proposing): the loop neither
    // occupies nor outlives the runtime that serves clients.
    let spawned = std::thread::Builder::new()
        .name("scheduler".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => run(store, (policy, sample), plugins, explanations, metrics, &rt),
                Err(e) => tracing::error!(error = %e, "starting the scheduler's runtime"),
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "starting the scheduler thread");
    }
}

fn run(
    store: Store,
    (policy, sample): (String, Option<usize>),
    plugins: Arc<PluginSet>,
    explanations: Explanations,
    metrics: Arc<crate::metrics::ServerMetrics>,
    rt: &tokio::runtime::Runtime,
) {
    let mut applied = store.applied();
    let mut l = Loop {
        live: None,
        chain: Chain {
            policy,
            sample,
            plugins,
            key: None,
            pipeline: Pipeline::default(),
            shadows: Vec::new(),
        },
        plugin_seen: 0,
        failed: HashMap::new(),
        templates: HashMap::new(),
        explanations,
        metrics,
    };
    loop {
        if store.is_closed() {
            return;
        }
        if store.is_leader() {
            if l.round(&store, rt) {
                continue;
            }
        } else if l.live.is_some() {
            // A follower keeps no view: a new leader starts from the state.
            l.live = None;
            l.failed.clear();
        }
        let woke = rt.block_on(async {
            tokio::select! {
                r = applied.changed() => r.is_ok(),
                _ = tokio::time::sleep(Duration::from_secs(1)) => true,
            }
        });
        if !woke {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use berth_sched::NodeExplain;

    use super::*;

    fn decision(task: &str, placed: bool, nodes: usize) -> Decision {
        Decision {
            task: task.into(),
            placement: placed.then(|| ("n".to_string(), Default::default())),
            summary: String::new(),
            nodes: vec![
                NodeExplain {
                    node: "n".into(),
                    filtered: None,
                    scores: Vec::new(),
                    total: 0.0,
                };
                nodes
            ],
        }
    }

    /// Detail is kept within a count of decisions and of node verdicts,
    /// pending and placed apart; the newest decision always.
    #[test]
    fn detail_is_kept_within_decisions_and_verdicts() {
        let mut ex = Explained::with_budget(3, 25);
        for k in 0..5 {
            ex.insert(decision(&format!("p{k}"), true, 10));
        }
        // 25 verdicts hold two decisions of 10.
        let kept: Vec<bool> = (0..5).map(|k| ex.get(&format!("p{k}")).is_some()).collect();
        assert_eq!(kept, [false, false, false, true, true]);
        for k in 0..5 {
            ex.insert(decision(&format!("w{k}"), false, 1));
        }
        // Three pending at most; the placed ones stay.
        let kept: Vec<bool> = (0..5).map(|k| ex.get(&format!("w{k}")).is_some()).collect();
        assert_eq!(kept, [false, false, true, true, true]);
        assert_eq!(ex.len(), 5);
        // One decision larger than the budget is still kept, alone.
        ex.insert(decision("huge", true, 100));
        assert!(ex.get("huge").is_some() && ex.get("p4").is_none());
        // A task decided again keeps its newest decision.
        ex.insert(decision("w4", false, 1));
        assert_eq!(ex.get("w4").unwrap().nodes.len(), 1);
    }
}
