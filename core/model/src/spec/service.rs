//! What keeps a service up and runs a job: health and readiness checks,
//! the rolling-update strategy, restart limits, and the job fields
//! (`kind`, `retries`, `deadline`, `schedule`, `concurrency`).
//!
//! ```yaml
//! health: {http: {port: http, path: /}, interval: 10s, timeout: 2s, grace: 30s, failures: 3}
//! ready: {tcp: {port: http}}
//! update: {max_surge: 1, max_unavailable: 0, min_ready_time: 5s, deadline: 5m, auto_rollback: true}
//! restart_limit: {count: 10, window: 10m}
//! ```

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::{FieldError, MAX_ARGS, MAX_INSTANCES, MAX_VALUE_LEN};
use crate::quantity::DurationMs;

/// A port a check or an environment variable refers to: by its name in
/// `ports`, or by number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortRef {
    /// A port number (1..=65535).
    Number(u16),
    /// The `name` of an entry in `ports`.
    Name(String),
}

impl Serialize for PortRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PortRef::Number(n) => s.serialize_u16(*n),
            PortRef::Name(n) => s.serialize_str(n),
        }
    }
}

impl<'de> Deserialize<'de> for PortRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PortRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port name from `ports` or a port number (1-65535)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortRef, E> {
                match u16::try_from(v) {
                    Ok(n) if n > 0 => Ok(PortRef::Number(n)),
                    _ => Err(E::custom(format_args!("{v} is not a port (1-65535)"))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRef, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format_args!("{v} is not a port (1-65535)"))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRef, E> {
                Ok(PortRef::Name(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => f.write_str(n),
        }
    }
}

/// An HTTP check: a GET that answers 2xx or 3xx in time passes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    /// The port, by name or number.
    pub port: PortRef,
    /// The path (default `/`).
    #[serde(default = "root")]
    pub path: String,
}

/// A TCP check: a connection accepted in time passes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpCheck {
    /// The port, by name or number.
    pub port: PortRef,
}

fn root() -> String {
    "/".into()
}

/// A health or readiness check: exactly one of `http`, `tcp` or `exec`,
/// how often, and how many failures in a row make it fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// An HTTP GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    /// A TCP connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpCheck>,
    /// A command run inside the container's namespaces; exit 0 passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
    /// Time between checks (default 10s).
    #[serde(default = "default_interval")]
    pub interval: DurationMs,
    /// How long one check may take (default 2s).
    #[serde(default = "default_timeout")]
    pub timeout: DurationMs,
    /// Failures in the first `grace` after the start do not count (default 30s).
    #[serde(default = "default_grace")]
    pub grace: DurationMs,
    /// Consecutive failures before the check fails (default 3).
    #[serde(default = "default_failures")]
    pub failures: u32,
}

fn default_interval() -> DurationMs {
    DurationMs(10_000)
}
fn default_timeout() -> DurationMs {
    DurationMs(2_000)
}
fn default_grace() -> DurationMs {
    DurationMs(30_000)
}
fn default_failures() -> u32 {
    3
}

impl Check {
    /// The port this check connects to, if it is an HTTP or TCP check.
    pub fn port(&self) -> Option<&PortRef> {
        match (&self.http, &self.tcp) {
            (Some(h), _) => Some(&h.port),
            (None, Some(t)) => Some(&t.port),
            (None, None) => None,
        }
    }
}

/// A count of instances, or a percentage of `instances` (`"25%"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Amount {
    /// So many instances.
    Count(u32),
    /// This percentage of `instances` (0..=100).
    Percent(u32),
}

impl Amount {
    /// The number of instances out of `instances`: a percentage rounds
    /// up for a surge and down for unavailability, as Kubernetes does.
    pub fn of(self, instances: u32, round_up: bool) -> u32 {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => {
                let scaled = u64::from(instances) * u64::from(p);
                let n = if round_up {
                    scaled.div_ceil(100)
                } else {
                    scaled / 100
                };
                n as u32
            }
        }
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Amount::Count(n) => s.serialize_u32(*n),
            Amount::Percent(p) => s.serialize_str(&format!("{p}%")),
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a count of instances or a percentage (\"25%\")")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Amount, E> {
                u32::try_from(v)
                    .ok()
                    .filter(|n| *n <= MAX_INSTANCES)
                    .map(Amount::Count)
                    .ok_or_else(|| E::custom(format_args!("{v} is more than {MAX_INSTANCES}")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Amount, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format_args!("{v} is negative"))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Amount, E> {
                let pct = v
                    .strip_suffix('%')
                    .and_then(|p| p.trim().parse::<u32>().ok())
                    .filter(|p| *p <= 100);
                match pct {
                    Some(p) => Ok(Amount::Percent(p)),
                    None => Err(E::custom(format_args!(
                        "{} is not a count or a percentage from 0% to 100%",
                        super::quoted(v)
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// How a changed spec rolls out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    /// Extra instances above `instances` during a rollout (default 1).
    #[serde(default = "default_surge")]
    pub max_surge: Amount,
    /// Instances below `instances` that may be not ready (default 0).
    #[serde(default = "default_unavailable")]
    pub max_unavailable: Amount,
    /// A new instance counts once it has been ready this long (default 0s).
    #[serde(default)]
    pub min_ready_time: DurationMs,
    /// A rollout not done by then has failed (default 10m).
    #[serde(default = "default_deadline")]
    pub deadline: DurationMs,
    /// A failed rollout rolls back to the last good version (default true).
    #[serde(default = "yes")]
    pub auto_rollback: bool,
}

impl Default for Update {
    fn default() -> Self {
        Update {
            max_surge: default_surge(),
            max_unavailable: default_unavailable(),
            min_ready_time: DurationMs(0),
            deadline: default_deadline(),
            auto_rollback: true,
        }
    }
}

fn default_surge() -> Amount {
    Amount::Count(1)
}
fn default_unavailable() -> Amount {
    Amount::Count(0)
}
fn default_deadline() -> DurationMs {
    DurationMs(600_000)
}
fn yes() -> bool {
    true
}

/// More restarts than `count` within `window`: the task is `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartLimit {
    /// Restarts allowed in the window (default 10).
    #[serde(default = "default_restarts")]
    pub count: u32,
    /// The window (default 10m).
    #[serde(default = "default_window")]
    pub window: DurationMs,
}

impl Default for RestartLimit {
    fn default() -> Self {
        RestartLimit {
            count: default_restarts(),
            window: default_window(),
        }
    }
}

fn default_restarts() -> u32 {
    10
}
fn default_window() -> DurationMs {
    DurationMs(600_000)
}

/// A service (kept running) or a job (run to completion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Kept running; a changed spec rolls out (the default).
    #[default]
    Service,
    /// Runs `instances` tasks to completion, retrying failures.
    Job,
}

/// What a periodic job does when a run is still going at the next time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Concurrency {
    /// Start the next run anyway.
    Allow,
    /// Skip the next run (the default).
    #[default]
    Forbid,
    /// Stop the running one and start the next.
    Replace,
}

/// When a periodic job runs: a 5-field cron expression or `@every D`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Schedule(pub String);

/// The shortest `@every` interval.
pub const MIN_EVERY: DurationMs = DurationMs(1_000);

impl Schedule {
    /// The cron expression, parsed (five fields; no seconds, no year).
    pub fn cron(&self) -> Result<croner::Cron, String> {
        if self.0.split_whitespace().count() != 5 {
            return Err(format!(
                "{} fields, not 5",
                self.0.split_whitespace().count()
            ));
        }
        croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(&self.0)
            .map_err(|e| e.to_string())
    }

    /// The first time after `after_ms` (ms since the Unix epoch, UTC) the
    /// schedule is due; `None` when it does not parse or never comes.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        if let Some(every) = self.every() {
            return after_ms.checked_add(every.ok()?.0);
        }
        let cron = self.cron().ok()?;
        let t = chrono::DateTime::from_timestamp_millis(i64::try_from(after_ms).ok()?)?;
        let next = cron.find_next_occurrence(&t, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok()
    }

    /// `Some(interval)` for `@every D`.
    pub fn every(&self) -> Option<Result<DurationMs, String>> {
        let rest = self.0.trim().strip_prefix("@every")?;
        Some(
            DurationMs::parse(rest.trim())
                .map_err(|e| e.to_string())
                .and_then(|d| {
                    if d < MIN_EVERY {
                        Err(format!("{d} is shorter than {MIN_EVERY}"))
                    } else {
                        Ok(d)
                    }
                }),
        )
    }
}

/// Longest check interval, grace, window, deadline: 24h.
const MAX_SPAN: DurationMs = DurationMs(24 * 3_600_000);

fn span(p: &mut Vec<FieldError>, path: &str, d: DurationMs, min: DurationMs) {
    if d < min {
        p.push(FieldError::new(
            path,
            format!("{d} is shorter than the minimum of {min}"),
        ));
    } else if d > MAX_SPAN {
        p.push(FieldError::new(
            path,
            format!("{d} is longer than the maximum of {MAX_SPAN}"),
        ));
    }
}

/// Checks a health or readiness check at `path`; `port_names` are the
/// names given in `ports`.
pub(super) fn validate_check(p: &mut Vec<FieldError>, path: &str, c: &Check, port_names: &[&str]) {
    let kinds = [c.http.is_some(), c.tcp.is_some(), c.exec.is_some()]
        .iter()
        .filter(|k| **k)
        .count();
    if kinds != 1 {
        p.push(FieldError::new(
            path,
            format!("needs exactly one of http, tcp or exec ({kinds} given)"),
        ));
    }
    let which = if c.http.is_some() { "http" } else { "tcp" };
    if let Some(PortRef::Name(name)) = c.port()
        && !port_names.contains(&name.as_str())
    {
        p.push(FieldError::new(
            format!("{path}.{which}.port"),
            format!(
                "{} names no port (the ports with a name: {})",
                super::quoted(name),
                if port_names.is_empty() {
                    "none".to_string()
                } else {
                    port_names.join(", ")
                }
            ),
        ));
    }
    if let Some(h) = &c.http
        && (!h.path.starts_with('/') || h.path.len() > 1024 || h.path.chars().any(char::is_control))
    {
        p.push(FieldError::new(
            format!("{path}.http.path"),
            "must start with '/' and be at most 1024 characters, with no control characters",
        ));
    }
    if let Some(cmd) = &c.exec {
        if cmd.is_empty() || cmd.len() > MAX_ARGS {
            p.push(FieldError::new(
                format!("{path}.exec"),
                format!("needs 1 to {MAX_ARGS} arguments ({} given)", cmd.len()),
            ));
        }
        for (i, a) in cmd.iter().enumerate() {
            if a.is_empty() || a.len() > MAX_VALUE_LEN || a.contains('\0') {
                p.push(FieldError::new(
                    format!("{path}.exec[{i}]"),
                    format!("must be 1 to {MAX_VALUE_LEN} bytes with no NUL character"),
                ));
            }
        }
    }
    span(p, &format!("{path}.interval"), c.interval, DurationMs(100));
    span(p, &format!("{path}.timeout"), c.timeout, DurationMs(10));
    span(p, &format!("{path}.grace"), c.grace, DurationMs(0));
    if c.timeout > c.interval {
        p.push(FieldError::new(
            format!("{path}.timeout"),
            format!("{} is longer than the interval ({})", c.timeout, c.interval),
        ));
    }
    if c.failures == 0 || c.failures > 100 {
        p.push(FieldError::new(
            format!("{path}.failures"),
            format!("{} is not between 1 and 100", c.failures),
        ));
    }
}

/// Checks the rollout strategy.
pub(super) fn validate_update(p: &mut Vec<FieldError>, u: &Update) {
    let zero = |a: Amount| matches!(a, Amount::Count(0) | Amount::Percent(0));
    if zero(u.max_surge) && zero(u.max_unavailable) {
        p.push(FieldError::new(
            "update",
            "max_surge and max_unavailable are both 0: a rollout could never start",
        ));
    }
    span(p, "update.min_ready_time", u.min_ready_time, DurationMs(0));
    span(p, "update.deadline", u.deadline, DurationMs(1_000));
}

/// Checks a job's schedule: `@every D` (at least 1s) or a 5-field cron
/// expression (minute hour day-of-month month day-of-week).
pub(super) fn validate_schedule(p: &mut Vec<FieldError>, s: &Schedule) {
    if s.0.len() > 256 {
        p.push(FieldError::new("schedule", "longer than 256 characters"));
        return;
    }
    match s.every() {
        Some(Ok(_)) => {}
        Some(Err(why)) => p.push(FieldError::new(
            "schedule",
            format!(
                "{:?}: @every needs a duration of at least {MIN_EVERY}: {why}",
                s.0
            ),
        )),
        None => {
            if let Err(why) = s.cron() {
                p.push(FieldError::new(
                    "schedule",
                    format!(
                        "{:?} is not a 5-field cron expression (minute hour day-of-month month day-of-week) or \"@every <duration>\": {why}",
                        s.0
                    ),
                ));
            }
        }
    }
}

/// Checks the restart limit.
pub(super) fn validate_restart_limit(p: &mut Vec<FieldError>, l: &RestartLimit) {
    if l.count == 0 || l.count > 10_000 {
        p.push(FieldError::new(
            "restart_limit.count",
            format!("{} is not between 1 and 10000", l.count),
        ));
    }
    span(p, "restart_limit.window", l.window, DurationMs(1_000));
}
