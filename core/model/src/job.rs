//! Job runs: a job (`kind: job`) runs `instances` tasks to completion,
//! once when submitted, or each time its `schedule` comes round. Each run
//! is kept with its outcome (the last [`RUNS_KEPT`]).

use serde::{Deserialize, Serialize};

/// How many ended runs a job keeps (with their tasks and logs).
pub const RUNS_KEPT: usize = 10;

/// The default number of retries of a job's task.
pub const DEFAULT_RETRIES: u32 = 3;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunPhase {
    /// Its tasks are running (or retrying).
    Running,
    /// Every task exited 0.
    Succeeded,
    /// A task failed after its retries, the deadline passed, or it was
    /// stopped or replaced.
    Failed,
}

impl RunPhase {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunPhase::Running => "running",
            RunPhase::Succeeded => "succeeded",
            RunPhase::Failed => "failed",
        }
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunTrigger {
    /// `berth run` of the job.
    Submit,
    /// Its schedule came round.
    Schedule,
    /// `berth job start`.
    Manual,
}

impl RunTrigger {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunTrigger::Submit => "submit",
            RunTrigger::Schedule => "schedule",
            RunTrigger::Manual => "manual",
        }
    }
}

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRun {
    /// Its id: the log index that started it (its tasks carry it).
    pub id: u64,
    /// The job's version it runs.
    pub version: u64,
    /// What started it.
    pub trigger: RunTrigger,
    /// Where it is.
    pub phase: RunPhase,
    /// Tasks it runs.
    pub instances: u32,
    /// When it started (ms since the epoch, the proposer's clock).
    pub started_ms: u64,
    /// When it fails if not done, if the job has a deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    /// Why it ended as it did.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Scheduled runs skipped while it ran (`concurrency: forbid`).
    #[serde(default)]
    pub skipped: u32,
}

impl JobRun {
    /// Ends it.
    pub fn end(&mut self, phase: RunPhase, message: String, now_ms: u64) {
        self.phase = phase;
        self.message = message;
        self.ended_ms = Some(now_ms);
    }
}
