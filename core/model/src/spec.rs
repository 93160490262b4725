//! The app spec: what a person writes to run an app, in YAML or JSON.
//!
//! ```yaml
//! name: hello
//! image: busybox:latest
//! command: ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
//! env: {GREETING: hi}
//! resources: {cpu: 0.25, memory: 64Mi}
//! instances: 1
//! ports: [{host: 8080}]
//! restart: on-failure
//! stop_grace: 5s
//! ```
//!
//! [`parse_spec`] reads text into an [`AppSpec`] and checks it with
//! [`AppSpec::validate`]; every problem names the field it is about
//! (`resources.memory`, `ports[0].host`). The JSON Schema twin of this
//! contract is `docs/app-spec.schema.json`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::hardware::{GpuSpec, NicSpec, NumaPolicy};
use crate::placement::Constraint;
use crate::quantity::{Bytes, DurationMs, MilliCpu};

mod logs;
mod network;
mod parse;
mod security;
mod service;
mod validate;
mod volumes;

pub use logs::Logs;
pub use network::{DEFAULT_NAMESPACE, Network};
pub(crate) use parse::key_segment;
pub use parse::{MAX_YAML_FLOW_OPENERS, parse_spec};
pub use security::Seccomp;
pub use service::{
    Amount, Check, Concurrency, HttpCheck, Kind, MIN_EVERY, PortRef, RestartLimit, Schedule,
    TcpCheck, Update,
};
pub use volumes::{
    MAX_VOLUMES, Volume, VolumeKind, clean_absolute, under as path_under, volume_id,
};

/// Cpu given to an app that does not say: 100m.
pub const DEFAULT_CPU: MilliCpu = MilliCpu(100);
/// Most cpu one instance may ask for: 1024 cores.
pub const MAX_CPU: MilliCpu = MilliCpu(1024 * 1000);
/// Memory given to an app that does not say: 64Mi.
pub const DEFAULT_MEMORY: Bytes = Bytes(64 << 20);
/// Least memory one instance may ask for: 4Mi.
pub const MIN_MEMORY: Bytes = Bytes(4 << 20);
/// Most memory one instance may ask for: 16Ti.
pub const MAX_MEMORY: Bytes = Bytes(16 << 40);
/// Instances when the spec does not say.
pub const DEFAULT_INSTANCES: u32 = 1;
/// Most instances one app may have.
pub const MAX_INSTANCES: u32 = 1000;
/// Grace between SIGTERM and SIGKILL when the spec does not say: 5s.
pub const DEFAULT_STOP_GRACE: DurationMs = DurationMs(5_000);
/// Longest grace between SIGTERM and SIGKILL: 10m.
pub const MAX_STOP_GRACE: DurationMs = DurationMs(600_000);
/// Longest app name, in characters.
pub const MAX_NAME_LEN: usize = 63;
pub use crate::image::MAX_TAG_LEN;
/// Environment variables Berth sets in every container start with this
/// (`BERTH_TASK_ID`, `BERTH_APP`, `BERTH_INSTANCE`, `BERTH_ATTEMPT`,
/// `BERTH_NODE`, `BERTH_PORT_<NAME>`); a spec may not set them.
pub const BERTH_ENV_PREFIX: &str = "BERTH_";

/// The variable that carries the port named `name`: `BERTH_PORT_` and the
/// name in upper case with `-` as `_` (`metrics-v2` → `BERTH_PORT_METRICS_V2`).
pub fn port_env_name(name: &str) -> String {
    format!(
        "{BERTH_ENV_PREFIX}PORT_{}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

/// Most environment variables one app may set.
pub const MAX_ENV: usize = 1024;
/// Most command arguments.
pub const MAX_ARGS: usize = 1024;
/// Longest environment value or command argument, in bytes.
pub const MAX_VALUE_LEN: usize = 32 << 10;

/// A validated-on-parse description of an app: what to run, how many, with
/// which resources and ports, and how to restart and stop it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// The app's name: `[a-z0-9-]`, 1-63 characters, starting and ending
    /// with a letter or digit (see [`valid_name`]).
    pub name: String,
    /// The image to run: `name:tag` from the node's store (e.g.
    /// `busybox:latest`) or `registry[:port]/repo[:tag][@sha256:...]` from a
    /// registry (see [`crate::image`]). The servers pin a registry tag to
    /// its digest when a deployment starts.
    pub image: String,
    /// The command and its arguments; empty means the image's default.
    #[serde(default)]
    pub command: Vec<String>,
    /// Environment variables added to the container.
    #[serde(default, deserialize_with = "unique_env")]
    pub env: BTreeMap<String, String>,
    /// Cpu and memory for each instance.
    #[serde(default)]
    pub resources: Resources,
    /// How many instances to run (0..=1000).
    #[serde(default = "default_instances")]
    pub instances: u32,
    /// Ports each instance listens on.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// `host`, `bridge` (the default when a port has `container`) or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// Volumes each instance mounts: persistent (bound to the instance and
    /// its node), a host directory, or ephemeral.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// How each task's log rotates (default 10Mi, 3 files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<Logs>,
    /// Run as this user (`uid`, `uid:gid`, `name`, `name:group`) instead
    /// of the image's `User`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The container's root filesystem is read-only (volumes stay writable).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only_root: bool,
    /// `default` (Docker's default profile) or `unconfined` (the opt-out).
    #[serde(default, skip_serializing_if = "security::is_default_seccomp")]
    pub seccomp: Seccomp,
    /// The namespace its names live in (`<app>.<namespace>.berth`).
    #[serde(
        default = "network::default_namespace",
        skip_serializing_if = "network::is_default_namespace"
    )]
    pub namespace: String,
    /// When to restart an instance that exits.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Grace between SIGTERM and SIGKILL when stopping (at most 10m).
    #[serde(default = "default_stop_grace")]
    pub stop_grace: DurationMs,
    /// Marathon-style placement constraints.
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    /// Place all instances or none, in one decision.
    #[serde(default)]
    pub gang: bool,
    /// Higher may preempt lower (-1000..=1000; default 0).
    #[serde(default)]
    pub priority: i32,
    /// Labels, for plugins and people (`team: ml-infra`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Liveness: an instance failing it is restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Check>,
    /// Readiness: gates rollouts (default: `health` if given, else running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<Check>,
    /// How a changed spec rolls out (services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<Update>,
    /// More restarts than this in the window: the task is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_limit: Option<RestartLimit>,
    /// `service` (kept running, the default) or `job` (run to completion).
    #[serde(default, skip_serializing_if = "is_service")]
    pub kind: Kind,
    /// Job: times a task that exits non-zero is retried (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Job: a run not finished by then fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DurationMs>,
    /// Job: run periodically (5-field cron or `@every <duration>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// Periodic job: when a run is still going at the next time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
}

fn is_service(k: &Kind) -> bool {
    *k == Kind::Service
}

/// Cpu and memory for one instance of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Cpu, more than 0 and at most 1024 cores; default 100m.
    #[serde(default = "default_cpu")]
    pub cpu: MilliCpu,
    /// Memory, from 4Mi to 16Ti; default 64Mi.
    #[serde(default = "default_memory")]
    pub memory: Bytes,
    /// Exclusive whole cores (a cpuset) instead of shared `cpu`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cores: u32,
    /// GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<GpuSpec>,
    /// NICs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nics: Option<NicSpec>,
    /// NUMA policy for cores, GPUs, NICs and devices.
    #[serde(default, skip_serializing_if = "is_default_numa")]
    pub numa: NumaPolicy,
    /// Other devices, exclusively, by CDI kind and count
    /// (`{"example.com/fpga": 2}`); nodes offer what their CDI specs or
    /// inventory list.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub devices: BTreeMap<String, u32>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn is_default_numa(n: &NumaPolicy) -> bool {
    *n == NumaPolicy::None
}

/// A port an instance listens on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    /// Its name, for checks, DNS SRV records and `BERTH_PORT_<NAME>`
    /// (`[a-z0-9-]`, 1-15 characters, starting with a letter); unique
    /// within a spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The host port, 1..=65535, unique within a spec; or 0 for a dynamic
    /// port, chosen per instance by the scheduler and committed with the
    /// placement. Omitted (bridge networking only): no host port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<u16>,
    /// The port the app listens on in its own network namespace (bridge
    /// networking); mapped from the host port when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<u16>,
}

impl PortSpec {
    /// The port the app itself listens on: the container port, else the
    /// host port.
    pub fn listen(&self) -> u16 {
        self.container.or(self.host).unwrap_or(0)
    }
}

/// Whether `s` can name a port: 1-15 characters of `a-z`, `0-9` and `-`,
/// starting with a letter and not ending with `-` (IANA service names).
pub fn valid_port_name(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=15).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && !s.ends_with('-')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// When to restart an instance whose container exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Restart whatever the exit status (`always`).
    Always,
    /// Restart only after a non-zero exit (`on-failure`, the default).
    #[default]
    OnFailure,
    /// Never restart (`never`).
    Never,
}

/// One problem with a spec, tied to the field it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// Where the problem is: `name`, `resources.memory`, `ports[0].host`,
    /// or `(spec)` for the document as a whole.
    pub path: String,
    /// What is wrong, for a person to read.
    pub message: String,
}

/// Everything wrong with a spec; displayed as one `path: message` line per
/// problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", lines(.problems))]
pub struct SpecError {
    /// The problems, in the order they were found; never empty when returned
    /// by this crate.
    pub problems: Vec<FieldError>,
}

fn lines(problems: &[FieldError]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The path used for problems with the document as a whole.
pub const WHOLE_SPEC: &str = "(spec)";

impl FieldError {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl SpecError {
    /// A spec error with a single problem.
    pub fn single(path: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            problems: vec![FieldError::new(path, message)],
        }
    }
}

impl From<FieldError> for SpecError {
    fn from(problem: FieldError) -> Self {
        SpecError {
            problems: vec![problem],
        }
    }
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu: DEFAULT_CPU,
            memory: DEFAULT_MEMORY,
            cores: 0,
            gpus: None,
            nics: None,
            numa: NumaPolicy::None,
            devices: BTreeMap::new(),
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        })
    }
}

fn default_instances() -> u32 {
    DEFAULT_INSTANCES
}

fn default_stop_grace() -> DurationMs {
    DEFAULT_STOP_GRACE
}

fn default_cpu() -> MilliCpu {
    DEFAULT_CPU
}

fn default_memory() -> Bytes {
    DEFAULT_MEMORY
}

/// Reads `env` as a map of strings, rejecting a variable given twice (JSON
/// would otherwise keep the last one silently).
fn unique_env<'de, D: Deserializer<'de>>(de: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct EnvVisitor;
    impl<'de> Visitor<'de> for EnvVisitor {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of variable names to string values")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut env = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if env.contains_key(&key) {
                    return Err(de::Error::custom(format_args!(
                        "variable {} is given more than once",
                        quoted(&key)
                    )));
                }
                let value = map.next_value::<String>()?;
                env.insert(key, value);
            }
            Ok(env)
        }
    }
    de.deserialize_map(EnvVisitor)
}

/// Quotes user text for a message, shortened when long.
pub(crate) fn quoted(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}...", &s[..cut]),
        None => format!("{s:?}"),
    }
}

/// Whether `s` is a valid app name: 1-63 characters of `a-z`, `0-9` and
/// `-`, starting and ending with a letter or digit.
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            b.len() <= MAX_NAME_LEN
                && alnum(first)
                && alnum(last)
                && b.iter().all(|c| alnum(c) || *c == b'-')
        }
        _ => false,
    }
}

/// Checks the image reference (see [`crate::image`]); returns what is wrong.
fn check_image(image: &str) -> Result<(), String> {
    crate::image::ImageRef::parse(image)
        .map(|_| ())
        .map_err(|e| format!("{} {e}", quoted(image)))
}

/// Whether `s` is a valid environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_env_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && bytes.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

impl AppSpec {
    /// A spec with the given name and image and every other field at its
    /// default. Not validated.
    pub fn new(name: impl Into<String>, image: impl Into<String>) -> Self {
        AppSpec {
            name: name.into(),
            image: image.into(),
            command: Vec::new(),
            env: BTreeMap::new(),
            resources: Resources::default(),
            instances: DEFAULT_INSTANCES,
            ports: Vec::new(),
            network: None,
            volumes: Vec::new(),
            logs: None,
            user: None,
            read_only_root: false,
            seccomp: Seccomp::Default,
            namespace: DEFAULT_NAMESPACE.into(),
            restart: RestartPolicy::default(),
            stop_grace: DEFAULT_STOP_GRACE,
            constraints: Vec::new(),
            gang: false,
            priority: 0,
            labels: BTreeMap::new(),
            health: None,
            ready: None,
            update: None,
            restart_limit: None,
            kind: Kind::Service,
            retries: None,
            deadline: None,
            schedule: None,
            concurrency: None,
        }
    }

    /// The restart limit in force (the default when the spec gives none).
    pub fn restart_limit(&self) -> RestartLimit {
        self.restart_limit.unwrap_or_default()
    }

    /// The rollout strategy in force (the default when the spec gives none).
    pub fn update(&self) -> Update {
        self.pinned_update(self.update.clone().unwrap_or_default())
    }

    /// The readiness check in force: `ready`, else `health`, else none
    /// (ready once running).
    pub fn readiness(&self) -> Option<&Check> {
        self.ready.as_ref().or(self.health.as_ref())
    }
}
