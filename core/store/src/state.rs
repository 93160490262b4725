//! The deterministic state machine replicated by raft.
//!
//! Every change to cluster state is a [`Command`] committed to the log and
//! applied here in log order, on every server alike. Apply never looks at a
//! clock, a random source or the network, so every replica ends in the same
//! state.

use std::collections::{BTreeMap, HashMap, VecDeque};

use berth_model::deploy::Phase;
use berth_model::node::{Node, NodeStatus};
use berth_model::spec::{AppSpec, RestartPolicy};
use berth_model::task::{Desired, Task, TaskState, TaskStatus};
use serde::{Deserialize, Serialize};

pub use crate::command::{
    Command, Envelope, Event, Notice, Outcome, Placement, command_digest, now_ms,
};
use crate::tasks::TaskTable;

/// How many client request ids the state machine remembers for deduplication.
const REQUEST_MEMORY: usize = 10_000;

/// The longest client request id accepted (bytes).
pub const MAX_REQUEST_ID: usize = 128;

/// A committed app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    /// The validated spec.
    pub spec: AppSpec,
    /// Log index at which this spec was committed; tasks carry it.
    pub version: u64,
    /// Whether `berth stop` was applied to this version.
    pub stopped: bool,
    /// Its deployments, oldest first: the last is the current one. Kept
    /// to [`crate::deploy::HISTORY`] entries, and always those whose
    /// version still has tasks (their spec launches them).
    #[serde(default)]
    pub history: Vec<berth_model::deploy::Deployment>,
    /// A job's runs, oldest first: the running ones and the last
    /// [`berth_model::job::RUNS_KEPT`] ended ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<berth_model::job::JobRun>,
    /// When a periodic job's schedule is next due (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_ms: Option<u64>,
}

impl App {
    /// The spec of `version`: the current one, or one kept in the history.
    pub fn spec_of(&self, version: u64) -> Option<&AppSpec> {
        if version == self.version {
            return Some(&self.spec);
        }
        self.history
            .iter()
            .rev()
            .find(|d| d.version == version)
            .map(|d| &d.spec)
    }

    /// The current deployment, if any.
    pub fn deployment(&self) -> Option<&berth_model::deploy::Deployment> {
        self.history.last()
    }
}

/// The whole replicated cluster state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Plugins by name.
    #[serde(default)]
    pub plugins: BTreeMap<String, crate::plugins::PluginRecord>,
    /// Plugin components by sha256.
    #[serde(default)]
    pub blobs: crate::plugins::Blobs,
    /// Apps by name.
    pub apps: BTreeMap<String, App>,
    /// Tasks by id, with indexes by node, by app and of pending tasks.
    pub tasks: TaskTable,
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// Control-plane servers: raft id -> client address.
    #[serde(default)]
    pub members: BTreeMap<u64, String>,
    /// Recent request ids, a digest of their command, and their outcomes,
    /// oldest first. (Named anew when the digest was added: a snapshot
    /// from before loads with an empty memory instead of failing.)
    #[serde(default, rename = "request_log")]
    requests: VecDeque<(String, u64, Outcome)>,
    #[serde(skip)]
    request_index: HashMap<String, (u64, Outcome)>,
    /// Apps with a running or paused deployment (derived).
    #[serde(skip)]
    pub(crate) rolling: std::collections::BTreeSet<String>,
    /// Jobs with a running run or a schedule (derived).
    #[serde(skip)]
    pub(crate) jobs: std::collections::BTreeSet<String>,
    /// Persistent volumes' bindings by id (`<app>-<instance>-<name>`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, crate::volumes::VolumeBinding>,
    /// Registry credentials by `host[:port]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub registries: BTreeMap<String, crate::registry::RegistryLogin>,
    /// Policies, tokens, quotas and the audit log.
    #[serde(default)]
    pub acl: crate::acl::AclState,
    /// The range node subnets come from (set by the first registration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_subnets: Option<String>,
    /// Node subnets given out (derived).
    #[serde(skip)]
    subnets: std::collections::BTreeSet<u32>,
    /// The log index this state has applied (set by the driver).
    #[serde(skip)]
    applied: u64,
    /// Notices of the apply in progress (moved into its events at its end).
    #[serde(skip)]
    notices: Vec<Notice>,
}

impl ClusterState {
    /// Rebuilds derived indexes after deserializing a snapshot.
    pub fn rebuild_indexes(&mut self) {
        self.request_index = self
            .requests
            .iter()
            .map(|(id, d, o)| (id.clone(), (*d, o.clone())))
            .collect();
        self.rolling = self
            .apps
            .iter()
            .filter(|(_, a)| a.deployment().is_some_and(|d| d.phase.is_active()))
            .map(|(n, _)| n.clone())
            .collect();
        self.subnets = self.nodes.values().filter_map(|n| n.subnet).collect();
        self.acl.rebuild();
        let names: Vec<String> = self.apps.keys().cloned().collect();
        for n in names {
            self.index_job(&n);
        }
    }

    /// Jobs with a running run or a schedule: what the job controller
    /// looks at.
    pub fn jobs(&self) -> impl Iterator<Item = &str> {
        self.jobs.iter().map(String::as_str)
    }

    /// Apps with a running or paused deployment: what the deployment
    /// controller looks at.
    pub fn rolling(&self) -> impl Iterator<Item = &str> {
        self.rolling.iter().map(String::as_str)
    }

    /// A copy of the plugin records and components alone, to load plugins
    /// from without holding the state's lock.
    pub fn plugins_only(&self) -> ClusterState {
        ClusterState {
            plugins: self.plugins.clone(),
            blobs: self.blobs.clone(),
            ..ClusterState::default()
        }
    }

    /// The log index this state has applied up to.
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// Records the log index applied (the driver calls this).
    pub(crate) fn set_applied(&mut self, index: u64) {
        self.applied = self.applied.max(index);
    }

    /// The outcome already recorded for a request id, if it was applied.
    pub fn outcome_of(&self, request_id: &str) -> Option<&Outcome> {
        self.request_index.get(request_id).map(|(_, o)| o)
    }

    /// Whether `request_id` was already used for a command other than
    /// `cmd` (a caller's mistake, refused before proposing).
    pub fn request_reused(&self, request_id: &str, cmd: &Command) -> bool {
        self.request_index
            .get(request_id)
            .is_some_and(|(d, _)| *d != command_digest(cmd))
    }

    /// The lowest node subnet no node has (none when all are given out):
    /// past the lowest run of used ones, found in the index.
    fn free_subnet(&self) -> Option<u32> {
        // No gap (the usual case): the one after the last.
        let range = self.subnet_range();
        let total = berth_model::node::parse_subnets(range).map_or(0, |(_, c)| c);
        let n = self.subnets.len() as u32;
        if self.subnets.last().is_none_or(|&l| l + 1 == n) {
            return (n < total).then_some(n);
        }
        let mut next = 0;
        for &i in &self.subnets {
            if i != next {
                break;
            }
            next += 1;
        }
        (next < total).then_some(next)
    }

    /// The cluster's range of node subnets.
    pub fn subnet_range(&self) -> &str {
        self.node_subnets
            .as_deref()
            .unwrap_or(berth_model::node::NODE_SUBNETS)
    }

    /// Node `name`'s bridge subnet (`10.128.3.0/24`), once it has one.
    pub fn subnet_of(&self, name: &str) -> Option<String> {
        let i = self.nodes.get(name)?.subnet?;
        berth_model::node::node_subnet_in(self.subnet_range(), i)
    }

    /// Tasks of an app, ordered by id.
    pub fn tasks_of<'a>(&'a self, app: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks.of_app(app)
    }

    /// Applies one committed envelope at log `index`. Deterministic.
    pub fn apply(&mut self, index: u64, env: Envelope, events: &mut Vec<Event>) -> Outcome {
        let outcome = self.apply_once(index, env, events);
        events.extend(self.notices.drain(..).map(|n| Event::Notice(Box::new(n))));
        outcome
    }

    /// Records a notice about `subject` (in app `app`'s namespace, when
    /// given) for the event stream.
    pub(crate) fn notice(
        &mut self,
        kind: &'static str,
        subject: &str,
        app: Option<&str>,
        action: &str,
        message: String,
    ) {
        let namespace = app
            .and_then(|a| self.apps.get(a))
            .map(|a| a.spec.namespace.clone())
            .unwrap_or_default();
        self.notices.push(Notice {
            kind,
            subject: subject.to_string(),
            namespace,
            action: action.to_string(),
            message,
        });
    }

    fn apply_once(&mut self, index: u64, env: Envelope, events: &mut Vec<Event>) -> Outcome {
        let at = env.at_ms;
        let Some(id) = env.request_id else {
            return self.apply_command(index, at, env.command, events);
        };
        if id.len() > MAX_REQUEST_ID {
            return Outcome::Rejected(format!(
                "request_id: {} bytes, more than {MAX_REQUEST_ID}",
                id.len()
            ));
        }
        let digest = command_digest(&env.command);
        if let Some((d, prev)) = self.request_index.get(&id) {
            return if *d == digest {
                prev.clone()
            } else {
                Outcome::Rejected(format!(
                    "request_id: {id:?} was already used for a different request"
                ))
            };
        }
        let outcome = self.apply_command(index, at, env.command, events);
        self.requests
            .push_back((id.clone(), digest, outcome.clone()));
        self.request_index.insert(id, (digest, outcome.clone()));
        while self.requests.len() > REQUEST_MEMORY {
            if let Some((old, _, _)) = self.requests.pop_front() {
                self.request_index.remove(&old);
            }
        }
        outcome
    }

    /// What the instances of namespace `ns` hold, as quotas count it.
    /// Costs the namespace's apps and tasks (and a pass over app names).
    pub fn namespace_usage(&self, ns: &str) -> berth_model::quota::Usage {
        let mut used = berth_model::quota::Usage::default();
        for app in self.apps.values().filter(|a| a.spec.namespace == ns) {
            for t in self.tasks_of(&app.spec.name) {
                if self.holds_resources(t)
                    && let Some(spec) = app.spec_of(t.version)
                {
                    used.add(&berth_model::quota::Usage::of_spec(spec), true);
                }
            }
        }
        used
    }

    /// Whether a task still holds its node's resources: placed, and
    /// pending, running, or ended but brought back by its restart policy.
    pub fn holds_resources(&self, t: &Task) -> bool {
        if t.node.is_none() {
            return false;
        }
        match t.state {
            TaskState::Pending | TaskState::Running => true,
            TaskState::Stopped => false,
            TaskState::Exited | TaskState::Failed => {
                if t.desired != Desired::Run || t.given_up {
                    return false;
                }
                // The policy of the task's own version: a newer spec
                // rolling in does not change what the old tasks hold.
                let spec = self.apps.get(&t.app).and_then(|a| a.spec_of(t.version));
                match spec.map(|s| s.restart) {
                    Some(RestartPolicy::Always) => true,
                    Some(RestartPolicy::OnFailure) => t.exit_code != Some(0),
                    _ => false,
                }
            }
        }
    }

    fn apply_command(
        &mut self,
        index: u64,
        at: u64,
        cmd: Command,
        events: &mut Vec<Event>,
    ) -> Outcome {
        match cmd {
            Command::Plugin(p) => self.apply_plugin(index, p, events),
            Command::PutApp { spec } => self.put_app(index, at, *spec, events),
            Command::StopApp { name } => self.stop_app(&name, at, events),
            Command::ScaleApp { name, instances } => {
                self.scale_app(index, at, &name, instances, events)
            }
            Command::Deploy(d) => self.apply_deploy(index, at, d, events),
            Command::Job(j) => self.apply_job(index, at, j, events),
            Command::Registry(r) => self.apply_registry(r),
            Command::Acl(a) => self.apply_acl(at, a),
            Command::Volume(v) => self.apply_volume(index, v, events),
            Command::RemoveApp { name } => self.remove_app(&name, events),
            Command::RegisterNode { info, subnets } => {
                if self.node_subnets.is_none()
                    && let Some(r) = subnets.filter(|r| berth_model::node::parse_subnets(r).is_ok())
                {
                    self.node_subnets = Some(r);
                }
                let name = info.name.clone();
                let before = self.nodes.get(&name);
                let node = Node {
                    info,
                    status: NodeStatus::Ready,
                    drained: before.is_some_and(|n| n.drained),
                    subnet: before.and_then(|n| n.subnet).or_else(|| self.free_subnet()),
                };
                if let Some(i) = node.subnet {
                    self.subnets.insert(i);
                }
                if self.nodes.get(&name) != Some(&node) {
                    if before.is_none() {
                        let m = format!("node {name} registered");
                        self.notice("node", &name, None, "registered", m);
                    }
                    self.nodes.insert(name.clone(), node);
                    events.push(Event::NodeChanged(name));
                }
                Outcome::Ok
            }
            Command::SetNodeStatus { name, status } => {
                self.set_node_status(index, &name, status, events)
            }
            Command::DrainNode { name, drain } => self.drain_node(index, &name, drain, events),
            Command::SetMember { id, address } => {
                self.members.insert(id, address);
                Outcome::Ok
            }
            Command::Schedule {
                placements,
                unplaced,
            } => {
                self.schedule(index, placements, unplaced, events);
                Outcome::Ok
            }
            Command::Preempt { task, node, evict } => {
                self.preempt(index, &task, &node, &evict, events);
                Outcome::Ok
            }
            Command::ReportTasks { node, statuses } => {
                self.report(&node, at, statuses, events);
                Outcome::Ok
            }
        }
    }

    fn stop_app(&mut self, name: &str, at: u64, events: &mut Vec<Event>) -> Outcome {
        let Some(app) = self.apps.get_mut(name) else {
            return Outcome::Rejected(format!("no app named {name}"));
        };
        app.stopped = true;
        if let Some(d) = app.history.last_mut().filter(|d| d.phase.is_active()) {
            d.end(Phase::Superseded, "the app was stopped".into(), at);
        }
        self.rolling.remove(name);
        self.end_active_runs(name, "the app was stopped".into(), at, events);
        if let Some(app) = self.apps.get_mut(name) {
            app.next_run_ms = None;
        }
        self.index_job(name);
        self.retire_tasks(name, Desired::Stop, events);
        events.push(Event::AppChanged(name.to_string()));
        Outcome::Ok
    }

    fn remove_app(&mut self, name: &str, events: &mut Vec<Event>) -> Outcome {
        if self.apps.remove(name).is_none() {
            return Outcome::Rejected(format!("no app named {name}"));
        }
        self.rolling.remove(name);
        self.jobs.remove(name);
        self.retire_tasks(name, Desired::Remove, events);
        events.push(Event::AppChanged(name.to_string()));
        Outcome::Ok
    }

    /// Moves every task of `app` towards `desired`. Tasks that never reached a
    /// node need no node to act: they stop or vanish at once.
    pub(crate) fn retire_tasks(&mut self, app: &str, desired: Desired, events: &mut Vec<Event>) {
        let ids: Vec<String> = self
            .tasks_of(app)
            .filter(|t| t.desired != Desired::Remove)
            .map(|t| t.id.clone())
            .collect();
        for id in ids {
            let unplaced = self.tasks.get(&id).is_some_and(|t| t.node.is_none());
            if unplaced && desired == Desired::Remove {
                if let Some(t) = self.tasks.remove(&id) {
                    events.push(Event::TaskRemoved(Box::new(t)));
                }
                continue;
            }
            self.tasks.update(&id, |task| {
                task.desired = desired;
                if unplaced {
                    task.state = TaskState::Stopped;
                    task.message = "stopped before it was placed".into();
                }
                events.push(Event::TaskUpdated(Box::new(task.clone())));
            });
        }
    }

    fn schedule(
        &mut self,
        index: u64,
        placements: Vec<Placement>,
        unplaced: Vec<(String, String)>,
        events: &mut Vec<Event>,
    ) {
        for p in placements {
            let node_ok = self
                .nodes
                .get(&p.node)
                .is_some_and(|n| n.status == NodeStatus::Ready && !n.drained);
            // A placement made on an older snapshot is void if the task moved on.
            let open = self
                .tasks
                .get(&p.task)
                .is_some_and(|t| t.node.is_none() && t.desired == Desired::Run);
            if !open || !node_ok {
                continue;
            }
            let node = p.node.clone();
            let placed = self.tasks.update(&p.task, |task| {
                task.node = Some(p.node);
                task.allocation = Some(p.allocation);
                task.message = "placed; waiting for the node to start it".into();
                events.push(Event::TaskUpdated(Box::new(task.clone())));
                task.clone()
            });
            if let Some(t) = placed {
                self.bind_volumes(index, &t, &node);
            }
        }
        for (id, reason) in unplaced {
            let changed = self
                .tasks
                .get(&id)
                .is_some_and(|t| t.node.is_none() && t.message != reason);
            if changed && reason.starts_with("quota:") {
                let app = self.tasks.get(&id).map(|t| t.app.clone());
                self.notice("quota", &id, app.as_deref(), "refused", reason.clone());
            }
            if changed {
                self.tasks.update(&id, |task| {
                    task.message = reason;
                    events.push(Event::TaskUpdated(Box::new(task.clone())));
                });
            }
        }
    }

    fn preempt(
        &mut self,
        index: u64,
        task: &str,
        node: &str,
        evict: &[String],
        events: &mut Vec<Event>,
    ) {
        let prio = |s: &ClusterState, id: &str| -> i32 {
            s.tasks
                .get(id)
                .and_then(|t| s.apps.get(&t.app))
                .map(|a| a.spec.priority)
                .unwrap_or(0)
        };
        let mine = prio(self, task);
        let mut evicted = Vec::new();
        for id in evict {
            let theirs = prio(self, id);
            let Some(v) = self.tasks.get(id) else {
                continue;
            };
            // Decided on an older snapshot: only still-valid victims go.
            if v.desired != Desired::Run || v.node.as_deref() != Some(node) || theirs >= mine {
                continue;
            }
            evicted.push((
                id.clone(),
                format!("preempted by {task} (priority {mine} > {theirs})"),
            ));
        }
        for (id, why) in evicted {
            let app = self.tasks.get(&id).map(|t| t.app.clone());
            let m = format!("{id} on {node} {why}");
            self.notice("preemption", &id, app.as_deref(), "preempted", m);
            self.replace_task(index, &id, why, events);
        }
    }

    fn report(&mut self, node: &str, at: u64, statuses: Vec<TaskStatus>, events: &mut Vec<Event>) {
        for s in statuses {
            let Some(task) = self.tasks.get(&s.id) else {
                continue;
            };
            if task.node.as_deref() != Some(node) {
                continue;
            }
            if s.gone {
                if task.desired == Desired::Remove
                    && let Some(t) = self.tasks.remove(&s.id)
                {
                    events.push(Event::TaskRemoved(Box::new(t)));
                }
                continue;
            }
            let changed = task.state != s.state
                || task.exit_code != s.exit_code
                || task.restarts != s.restarts
                || task.message != s.message
                || task.given_up != s.given_up
                || task.health != s.health
                || task.ready != s.ready
                || task.ip != s.ip;
            if changed {
                self.tasks.update(&s.id, |task| {
                    task.state = s.state;
                    task.exit_code = s.exit_code;
                    task.restarts = s.restarts;
                    task.message = s.message;
                    task.given_up = s.given_up;
                    task.health = s.health;
                    if s.ready != task.ready {
                        task.ready_since = s.ready.then_some(at);
                    }
                    task.ready = s.ready;
                    task.ip = s.ip;
                    events.push(Event::TaskUpdated(Box::new(task.clone())));
                });
            }
        }
    }

    /// Tasks assigned to `node` that it must act on (run, stop or clean up).
    pub fn assignments_for<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks.on_node(node)
    }

    /// Tasks waiting for a placement.
    pub fn unplaced(&self) -> impl Iterator<Item = &Task> {
        self.tasks.pending()
    }
}
