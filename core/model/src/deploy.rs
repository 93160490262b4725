//! Deployments: every spec change and every `berth scale` is one, with an
//! id, the version it rolls out, and its phase. The record lives in the
//! replicated state, so a new leader carries a rollout on where the old
//! one stopped.

use serde::{Deserialize, Serialize};

use crate::spec::AppSpec;

/// Where a deployment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Rolling out.
    Running,
    /// Held by `berth deploy pause`; nothing is started or retired.
    Paused,
    /// Every wanted instance of the version is ready, no other is left.
    Succeeded,
    /// Not done by its deadline, or its new instances crash-looped.
    Failed,
    /// Failed, and rolled back to the last good version by itself.
    RolledBack,
    /// A newer deployment replaced it before it ended.
    Superseded,
}

impl Phase {
    /// The name used by the CLI and API (`rolled-back`).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Paused => "paused",
            Phase::Succeeded => "succeeded",
            Phase::Failed => "failed",
            Phase::RolledBack => "rolled-back",
            Phase::Superseded => "superseded",
        }
    }

    /// Every phase.
    pub const ALL: [Phase; 6] = [
        Phase::Running,
        Phase::Paused,
        Phase::Succeeded,
        Phase::Failed,
        Phase::RolledBack,
        Phase::Superseded,
    ];

    /// Parses [`Phase::as_str`].
    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Whether the deployment still acts (running or paused).
    pub fn is_active(self) -> bool {
        matches!(self, Phase::Running | Phase::Paused)
    }
}

/// What started a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Trigger {
    /// The app's first spec (or the first after `berth stop`).
    Create,
    /// A changed spec.
    Update,
    /// `berth scale` from one count to another; the version stays.
    Scale {
        /// Instances before.
        from: u32,
    },
    /// A rollback of deployment `of` (by itself when `auto`, else `berth
    /// rollback`).
    Rollback {
        /// The deployment rolled back.
        of: u64,
        /// Whether it was automatic.
        auto: bool,
    },
}

impl Trigger {
    /// A short name: `create`, `update`, `scale`, `rollback`.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Create => "create",
            Trigger::Update => "update",
            Trigger::Scale { .. } => "scale",
            Trigger::Rollback { .. } => "rollback",
        }
    }
}

/// One deployment of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// Its id: the log index of the command that started it (increasing).
    pub id: u64,
    /// The app version it rolls out (the log index its spec was first
    /// committed at; a rollback rolls out an older version again).
    pub version: u64,
    /// That version's spec, with the instance count wanted.
    pub spec: AppSpec,
    /// What started it.
    pub trigger: Trigger,
    /// Where it is.
    pub phase: Phase,
    /// When it started (ms since the Unix epoch, the proposer's clock).
    pub started_ms: u64,
    /// When it fails if not done (ms since the epoch); reset on resume.
    pub deadline_ms: u64,
    /// When it ended, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    /// Why it ended as it did (empty while running).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl Deployment {
    /// A running deployment of `spec` at `version`, started at `now_ms`.
    pub fn start(id: u64, version: u64, spec: AppSpec, trigger: Trigger, now_ms: u64) -> Self {
        let deadline = spec.update().deadline.0;
        Deployment {
            id,
            version,
            spec,
            trigger,
            phase: Phase::Running,
            started_ms: now_ms,
            deadline_ms: now_ms.saturating_add(deadline),
            ended_ms: None,
            message: String::new(),
        }
    }

    /// Ends it in `phase` with `message` at `now_ms`.
    pub fn end(&mut self, phase: Phase, message: String, now_ms: u64) {
        self.phase = phase;
        self.message = message;
        self.ended_ms = Some(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_round_trip_by_name() {
        for p in Phase::ALL {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
        }
        assert_eq!(Phase::RolledBack.as_str(), "rolled-back");
        assert!(Phase::parse("done").is_none());
    }

    #[test]
    fn the_deadline_comes_from_the_spec() {
        let mut spec = AppSpec::new("web", "busybox:latest");
        spec.update = Some(crate::spec::Update {
            deadline: crate::DurationMs(5_000),
            ..Default::default()
        });
        let d = Deployment::start(7, 7, spec, Trigger::Create, 1_000);
        assert_eq!((d.deadline_ms, d.phase), (6_000, Phase::Running));
    }
}
