//! The commands the replicated log carries, their envelope and outcome,
//! and the events watchers get: the vocabulary of [`crate::state`].

use berth_model::node::{NodeInfo, NodeStatus};
use berth_model::spec::AppSpec;
use berth_model::task::{Allocation, Task, TaskStatus};
use serde::{Deserialize, Serialize};

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
    /// A persistent volume's binding is removed.
    Volume(crate::volumes::VolumeCommand),
    /// ACL policies, tokens, quotas and audit entries.
    Acl(crate::acl::AclCommand),
    /// Registry credentials are stored or forgotten.
    Registry(crate::registry::RegistryCommand),
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
    /// Something an operator would want to hear of (a node went down, a
    /// deployment ended, a task was preempted): the event stream's
    /// entries beside task changes.
    Notice(Box<Notice>),
}

/// Something notable an apply did, for `berth events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// node | deployment | preemption | plugin | quota
    pub kind: &'static str,
    /// The node, app, task or plugin.
    pub subject: String,
    /// The app's namespace ("" for cluster-wide things).
    pub namespace: String,
    /// What happened: up, down, drained, started, succeeded, ...
    pub action: String,
    /// One line for people.
    pub message: String,
}

/// A digest of a command, stable across servers and builds: a request id
/// reused for a different command is told apart from a retry.
pub fn command_digest(cmd: &Command) -> u64 {
    use sha2::Digest as _;
    let bytes = serde_json::to_vec(cmd).unwrap_or_default();
    let d = sha2::Sha256::digest(&bytes);
    u64::from_le_bytes(d[..8].try_into().unwrap_or([0; 8]))
}
