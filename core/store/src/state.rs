//! The deterministic state machine replicated by raft.
//!
//! Every change to cluster state is a [`Command`] committed to the log and
//! applied here in log order, on every server alike. Apply never looks at a
//! clock, a random source or the network, so every replica ends in the same
//! state.

use std::collections::{BTreeMap, HashMap, VecDeque};

use berth_model::deploy::Phase;
use berth_model::node::{Node, NodeInfo, NodeStatus};
use berth_model::spec::{AppSpec, RestartPolicy};
use berth_model::task::{Allocation, Desired, Task, TaskState, TaskStatus};
use serde::{Deserialize, Serialize};

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

/// One scheduling result: a task goes to a node with these resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Task id.
    pub task: String,
    /// Chosen node.
    pub node: String,
    /// Resources set aside there.
    pub allocation: Allocation,
}

/// A change to the cluster state. The only way state changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Install, upgrade, roll back or remove a plugin.
    Plugin(crate::plugins::PluginCommand),
    /// Create or update an app (already validated by the proposer).
    PutApp {
        /// The spec (boxed: it is much larger than the other commands).
        spec: Box<AppSpec>,
    },
    /// Change an app's instance count without a new version (`berth
    /// scale`): running instances are not touched.
    ScaleApp {
        /// App name.
        name: String,
        /// The new count.
        instances: u32,
    },
    /// Stop every task of an app.
    StopApp {
        /// App name.
        name: String,
    },
    /// Delete an app and, once nodes clean up, its tasks.
    RemoveApp {
        /// App name.
        name: String,
    },
    /// Register or update a node.
    RegisterNode {
        /// What the agent reported.
        info: NodeInfo,
        /// The proposing server's range of node subnets; the first one
        /// committed is the cluster's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subnets: Option<String>,
    },
    /// Mark a node ready or down.
    SetNodeStatus {
        /// Node name.
        name: String,
        /// New status.
        status: NodeStatus,
    },
    /// Scheduler results: placements to commit and reasons for tasks left pending.
    Schedule {
        /// Tasks placed.
        placements: Vec<Placement>,
        /// Tasks that did not fit, with the one-line reason.
        unplaced: Vec<(String, String)>,
    },
    /// Record a server's client address (the raft membership itself
    /// changes through conf-change entries, which also record addresses).
    SetMember {
        /// Raft id.
        id: u64,
        /// `host:port` its clients and peers use.
        address: String,
    },
    /// Drain a node (no new work; its tasks are replaced elsewhere and
    /// stopped there) or undo that.
    DrainNode {
        /// Node name.
        name: String,
        /// True to drain, false to take work again.
        drain: bool,
    },
    /// Evict lower-priority tasks so `task` can take their place on `node`.
    /// Each victim is told why and replaced by a new pending instance.
    Preempt {
        /// The higher-priority task.
        task: String,
        /// Where it will go once the victims are gone.
        node: String,
        /// Victims.
        evict: Vec<String>,
    },
    /// A step of a deployment, pause, resume or rollback.
    Deploy(crate::deploy::DeployCommand),
    /// A job run starts or ends.
    Job(crate::job::JobCommand),
    /// Status reports from a node's agent.
    ReportTasks {
        /// Reporting node.
        node: String,
        /// Reports.
        statuses: Vec<TaskStatus>,
    },
}

/// A command with the client's request id, as stored in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Client-generated id; a retried request with the same id is applied once.
    pub request_id: Option<String>,
    /// The command.
    pub command: Command,
    /// When it was proposed (ms since the Unix epoch, the proposer's
    /// clock; set by [`crate::Store::propose`]). The only way time enters
    /// the state: deadlines and readiness times come from here.
    #[serde(default)]
    pub at_ms: u64,
}

/// The time now in ms since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The result of applying a command, returned to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Applied.
    Ok,
    /// Applied: an app version was committed (or the same spec was already running).
    App {
        /// Version of the app now current.
        version: u64,
        /// False when the spec was identical and nothing changed.
        changed: bool,
    },
    /// Rejected deterministically (for example, no such app).
    Rejected(String),
}

/// What changed, for watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A task was created or changed.
    TaskUpdated(Box<Task>),
    /// A task was deleted (its last record).
    TaskRemoved(Box<Task>),
    /// An app was created, changed or removed.
    AppChanged(String),
    /// A node was registered or changed.
    NodeChanged(String),
    /// A plugin was installed, changed or removed.
    PluginChanged(String),
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
    /// The range node subnets come from (set by the first registration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_subnets: Option<String>,
    /// Node subnets given out (derived).
    #[serde(skip)]
    subnets: std::collections::BTreeSet<u32>,
    /// The log index this state has applied (set by the driver).
    #[serde(skip)]
    applied: u64,
}

/// A digest of a command, stable across servers and builds: a request id
/// reused for a different command is told apart from a retry.
pub fn command_digest(cmd: &Command) -> u64 {
    use sha2::Digest as _;
    let bytes = serde_json::to_vec(cmd).unwrap_or_default();
    let d = sha2::Sha256::digest(&bytes);
    u64::from_le_bytes(d[..8].try_into().unwrap_or([0; 8]))
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
                self.schedule(placements, unplaced, events);
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
            self.tasks.update(&p.task, |task| {
                task.node = Some(p.node);
                task.allocation = Some(p.allocation);
                task.message = "placed; waiting for the node to start it".into();
                events.push(Event::TaskUpdated(Box::new(task.clone())));
            });
        }
        for (id, reason) in unplaced {
            let changed = self
                .tasks
                .get(&id)
                .is_some_and(|t| t.node.is_none() && t.message != reason);
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
