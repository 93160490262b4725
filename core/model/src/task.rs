//! Tasks: one running instance of an app, its placement and its observed state.

use serde::{Deserialize, Serialize};

use crate::quantity::{Bytes, MilliCpu};

/// The observed state of a task, as the CLI and API report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Not yet placed on a node, or placed but not yet started.
    #[default]
    Pending,
    /// Its container is running.
    Running,
    /// Its container exited on its own (see the exit code).
    Exited,
    /// Its container could not be started (bad image, runtime error).
    Failed,
    /// Stopped on request.
    Stopped,
}

impl TaskState {
    /// The lowercase name used in the API and CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Running => "running",
            TaskState::Exited => "exited",
            TaskState::Failed => "failed",
            TaskState::Stopped => "stopped",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<TaskState> {
        Some(match s {
            "pending" => TaskState::Pending,
            "running" => TaskState::Running,
            "exited" => TaskState::Exited,
            "failed" => TaskState::Failed,
            "stopped" => TaskState::Stopped,
            _ => return None,
        })
    }
}

/// What the control plane wants a task to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    /// Keep it running (subject to its restart policy).
    #[default]
    Run,
    /// Stop its container, keep its record and logs.
    Stop,
    /// Stop its container and delete everything of it.
    Remove,
}

impl Desired {
    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Run => "run",
            Desired::Stop => "stop",
            Desired::Remove => "remove",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Desired> {
        Some(match s {
            "run" => Desired::Run,
            "stop" => Desired::Stop,
            "remove" => Desired::Remove,
            _ => return None,
        })
    }
}

/// The resources the scheduler set aside for a task on its node: decided
/// once by the leader and committed, so the node applies them as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Allocation {
    /// Shared CPU, in millicores (0 when the task has exclusive cores).
    pub cpu: MilliCpu,
    /// Memory limit.
    pub memory: Bytes,
    /// Host ports reserved for the task.
    pub ports: Vec<u16>,
    /// Exclusive physical cores (inventory core ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cores: Vec<u32>,
    /// The PUs of those cores: the container's `cpuset.cpus`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpuset: Vec<u32>,
    /// NUMA nodes whose memory the task may use: `cpuset.mems`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub numa_nodes: Vec<u32>,
    /// GPUs (or shares of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuGrant>,
    /// NICs, by interface name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<String>,
    /// Other devices, by qualified CDI name (`example.com/fpga=fpga0`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
}

/// A GPU, or a share of one, granted to a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuGrant {
    /// Index on the node.
    pub index: u32,
    /// GPU uuid (what CDI and the driver name it by).
    pub uuid: String,
    /// Thousandths of the GPU: 1000 for a whole GPU.
    pub milli: u32,
}

/// A task record in the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Unique id: `<app>-<version>-<instance>`.
    pub id: String,
    /// The app it belongs to.
    pub app: String,
    /// Instance number within the app, from 0.
    pub instance: u32,
    /// The app version (log index of the spec) the task runs.
    pub version: u64,
    /// The node it was placed on, once scheduled.
    pub node: Option<String>,
    /// What was allocated to it on that node.
    pub allocation: Option<Allocation>,
    /// What the control plane wants.
    pub desired: Desired,
    /// What the node last reported.
    pub state: TaskState,
    /// Exit code of the last exit, if any.
    pub exit_code: Option<i32>,
    /// How many times the node restarted it.
    pub restarts: u32,
    /// A human-readable note: why it is pending, why it failed.
    pub message: String,
    /// The node stopped restarting it: over its restart limit (a crash
    /// loop). It holds nothing and is not started again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub given_up: bool,
    /// What its liveness check says (`unknown` without one).
    #[serde(default, skip_serializing_if = "Health::is_unknown")]
    pub health: Health,
    /// Whether it is ready: its readiness check passes (or, without one,
    /// it runs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ready: bool,
    /// Since when it has been ready (ms since the epoch, the clock of the
    /// server that committed the report); `None` while not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_since: Option<u64>,
    /// The job run it belongs to (jobs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<u64>,
    /// Its address on its node's bridge (bridge networking; empty else).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip: String,
}

/// What a task's liveness check says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No check, or none counted yet.
    #[default]
    Unknown,
    /// The last check passed.
    Healthy,
    /// Failed `failures` times in a row.
    Unhealthy,
}

impl Health {
    /// Whether nothing is known.
    pub fn is_unknown(&self) -> bool {
        *self == Health::Unknown
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

impl Task {
    /// A new task waiting for the scheduler.
    pub fn pending(id: String, app: &str, instance: u32, version: u64, message: String) -> Task {
        Task {
            id,
            app: app.to_string(),
            instance,
            version,
            node: None,
            allocation: None,
            desired: Desired::Run,
            state: TaskState::Pending,
            exit_code: None,
            restarts: 0,
            message,
            given_up: false,
            health: Health::Unknown,
            ready: false,
            ready_since: None,
            run: None,
            ip: String::new(),
        }
    }
}

/// A status report from a node about one of its tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// The task id.
    pub id: String,
    /// Observed state.
    pub state: TaskState,
    /// Exit code of the last exit, if any.
    pub exit_code: Option<i32>,
    /// Restarts so far.
    pub restarts: u32,
    /// Human-readable note.
    pub message: String,
    /// True once the node deleted every trace of a task whose desired state is `remove`.
    pub gone: bool,
    /// True when the node gave up restarting it (over its restart limit).
    #[serde(default)]
    pub given_up: bool,
    /// Its liveness check's verdict.
    #[serde(default)]
    pub health: Health,
    /// Whether it is ready.
    #[serde(default)]
    pub ready: bool,
    /// Its address on the node's bridge (bridge networking; empty else).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip: String,
}

/// Builds the task id for an app version and instance.
pub fn task_id(app: &str, version: u64, instance: u32) -> String {
    format!("{app}-{version}-{instance}")
}
