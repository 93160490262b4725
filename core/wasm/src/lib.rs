//! Berth's WebAssembly plugin host.
//!
//! Plugins are components of the `sdk/wit` contract (`berth:plugin`):
//! admission, filter, score and allocate. One process-wide wasmtime
//! [`Host`] compiles them (cached on disk by content hash) and runs each in
//! its own sandbox: no imports but `log`, a memory cap, and a time budget
//! per call enforced by epoch interruption. A call that traps, runs out of
//! time or memory, or returns invalid output is a [`Failure`]; the store is
//! then discarded and the plugin's failure policy ([`OnError`]) decides
//! what the decision sees. [`adapt`] turns plugins into the scheduler's
//! plugin traits, so the pipeline treats native and Wasm plugins alike.

pub mod adapt;
pub mod bindings;
pub mod convert;
pub mod engine;
pub mod metrics;
pub mod plugin;
pub mod state;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use adapt::{AdmissionVerdict, WasmAdmission, WasmAllocate, WasmFilter, WasmScore};
pub use engine::{Host, Loaded, digest};
pub use metrics::MetricsSnapshot;
pub use plugin::Plugin;

/// What a plugin does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Validates or mutates specs.
    Admission,
    /// Removes nodes that cannot host a task.
    Filter,
    /// Ranks feasible nodes.
    Score,
    /// Chooses GPUs on the chosen node.
    Allocate,
}

impl Kind {
    /// All kinds.
    pub const ALL: [Kind; 4] = [Kind::Admission, Kind::Filter, Kind::Score, Kind::Allocate];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Admission => "admission",
            Kind::Filter => "filter",
            Kind::Score => "score",
            Kind::Allocate => "allocate",
        }
    }

    /// Parses a lowercase name.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What a failure of the plugin means for the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Carry on as if the plugin were not there (and report it).
    #[default]
    Ignore,
    /// Fail what it was asked: the spec is refused, the nodes are turned
    /// down, the decision fails.
    Fail,
}

impl OnError {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Ignore => "ignore",
            OnError::Fail => "fail",
        }
    }

    /// Parses a lowercase name.
    pub fn parse(s: &str) -> Option<OnError> {
        match s {
            "ignore" => Some(OnError::Ignore),
            "fail" => Some(OnError::Fail),
            _ => None,
        }
    }
}

/// Default time budget of one call.
pub const DEFAULT_BUDGET: Duration = Duration::from_millis(50);
/// Default linear memory cap.
pub const DEFAULT_MEMORY: usize = 64 << 20;

/// How a plugin is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSpec {
    /// Name, shown in explanations and logs.
    pub name: String,
    /// What it does.
    pub kind: Kind,
    /// JSON configuration handed to `init`.
    pub config: String,
    /// Failure policy.
    pub on_error: OnError,
    /// Time budget per call (`init` and `set-nodes` get 20 times as much).
    pub budget: Duration,
    /// Linear memory cap, bytes.
    pub memory: usize,
    /// Declared at install: for every task, the plugin's answer for a node
    /// depends only on what it is given about that node other than its
    /// position, its name and its `hostname` label (and, for a score, on
    /// the least and greatest of the other nodes' values at most). The
    /// scheduler then asks it about one node per node class (see
    /// `berth_sched::classes`) instead of every node.
    pub class_pure: bool,
}

impl PluginSpec {
    /// A spec with the default budget and memory, `{}` as configuration
    /// and the `ignore` policy.
    pub fn new(name: &str, kind: Kind) -> PluginSpec {
        PluginSpec {
            name: name.to_string(),
            kind,
            config: "{}".into(),
            on_error: OnError::Ignore,
            budget: DEFAULT_BUDGET,
            memory: DEFAULT_MEMORY,
            class_pure: false,
        }
    }
}

/// A plugin could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// The engine could not start.
    #[error("the Wasm engine: {0}")]
    Engine(String),
    /// The bytes are not a valid component.
    #[error("not a valid Wasm component: {reason}")]
    Component {
        /// Why.
        reason: String,
    },
    /// The component is not a plugin of the kind asked for.
    #[error("the component is not a {kind} plugin: {reason}")]
    World {
        /// The kind asked for.
        kind: &'static str,
        /// What is missing or wrong.
        reason: String,
    },
    /// Its configuration is not JSON.
    #[error("config: {0}")]
    Config(String),
    /// Its first instance failed (init refused the configuration, or it trapped).
    #[error("the plugin's init: {0}")]
    Init(String),
    /// The limits asked for are out of range.
    #[error("{0}")]
    Limits(String),
}

/// Why one call of a plugin failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// It ran past its time budget.
    #[error("ran past its {0:?} budget")]
    Timeout(Duration),
    /// It wanted more memory than its cap.
    #[error("exceeded its memory cap of {0} MiB")]
    Memory(usize),
    /// It trapped.
    #[error("trapped: {0}")]
    Trap(String),
    /// Its answer breaks the contract.
    #[error("invalid output: {0}")]
    InvalidOutput(String),
    /// A new instance's `init` failed.
    #[error("init failed: {0}")]
    Init(String),
}

impl Failure {
    /// Cause names, in the order of [`Failure::cause_index`].
    pub const CAUSES: [&'static str; 5] = ["timeout", "memory", "trap", "invalid-output", "init"];

    /// The cause's position in [`Failure::CAUSES`].
    pub fn cause_index(&self) -> usize {
        match self {
            Failure::Timeout(_) => 0,
            Failure::Memory(_) => 1,
            Failure::Trap(_) => 2,
            Failure::InvalidOutput(_) => 3,
            Failure::Init(_) => 4,
        }
    }

    /// The cause's name.
    pub fn cause(&self) -> &'static str {
        Failure::CAUSES[self.cause_index()]
    }
}
