//! Jobs in the state machine: runs start when a job is submitted, when
//! `berth job start` asks, or when the leader says its schedule came
//! round (the concurrency policy is applied here, on the state the start
//! lands on); runs end when the leader's job controller says so.

use berth_model::job::{JobRun, RUNS_KEPT, RunPhase, RunTrigger};
use berth_model::spec::{Concurrency, Kind};
use berth_model::task::{Desired, Task, task_id};
use serde::{Deserialize, Serialize};

use crate::state::{ClusterState, Event, Outcome};

/// A change to a job's runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobCommand {
    /// Start a run: the schedule came round at `due_ms`, or (none)
    /// `berth job start`.
    Start {
        /// App name.
        app: String,
        /// When the schedule was due; none for a manual start.
        due_ms: Option<u64>,
    },
    /// Run `run` ended: succeeded (`failure` none) or failed.
    Finish {
        /// App name.
        app: String,
        /// Run id.
        run: u64,
        /// Why it failed.
        failure: Option<String>,
    },
}

impl ClusterState {
    /// A job was (re)submitted at `index`: periodic jobs wait for their
    /// schedule, others start a run now.
    pub(crate) fn submit_job(&mut self, index: u64, at: u64, name: &str, events: &mut Vec<Event>) {
        let Some(app) = self.apps.get_mut(name) else {
            return;
        };
        match app.spec.schedule.clone() {
            Some(s) => app.next_run_ms = s.next_after(at),
            None => {
                app.next_run_ms = None;
                self.end_active_runs(name, format!("superseded by run {index}"), at, events);
                self.start_run(index, at, name, RunTrigger::Submit, events);
            }
        }
        self.index_job(name);
    }

    pub(crate) fn apply_job(
        &mut self,
        index: u64,
        at: u64,
        cmd: JobCommand,
        events: &mut Vec<Event>,
    ) -> Outcome {
        let (name, outcome) = match cmd {
            JobCommand::Start { app, due_ms } => {
                let o = self.start(index, at, &app, due_ms, events);
                (app, o)
            }
            JobCommand::Finish { app, run, failure } => {
                let o = self.finish_run(&app, run, failure, at, events);
                (app, o)
            }
        };
        if !matches!(outcome, Outcome::Rejected(_)) {
            events.push(Event::AppChanged(name));
        }
        outcome
    }

    /// Why `berth job start` cannot start a run of `name` now, if it cannot.
    pub fn job_start_refusal(&self, name: &str) -> Option<String> {
        let Some(app) = self.apps.get(name) else {
            return Some(format!("no app named {name}"));
        };
        if app.spec.kind != Kind::Job {
            return Some(format!("{name} is a service, not a job"));
        }
        if app.stopped {
            return Some(format!(
                "{name} is stopped: berth run its spec to start it again"
            ));
        }
        let running = app.runs.iter().find(|r| r.phase == RunPhase::Running);
        match (running, app.spec.concurrency.unwrap_or_default()) {
            (Some(r), Concurrency::Forbid) => Some(format!(
                "run {} of {name} is still going and its concurrency is forbid",
                r.id
            )),
            _ => None,
        }
    }

    fn start(
        &mut self,
        index: u64,
        at: u64,
        name: &str,
        due_ms: Option<u64>,
        events: &mut Vec<Event>,
    ) -> Outcome {
        let Some(app) = self.apps.get_mut(name) else {
            return Outcome::Rejected(format!("no app named {name}"));
        };
        let trigger = match due_ms {
            Some(due) => {
                if app.next_run_ms != Some(due) || app.stopped {
                    return Outcome::Rejected(format!("run of {name} due at {due} is not due"));
                }
                // Slots missed while no leader acted are skipped.
                app.next_run_ms = app
                    .spec
                    .schedule
                    .as_ref()
                    .and_then(|s| s.next_after(at.max(due)));
                RunTrigger::Schedule
            }
            None => {
                if let Some(why) = self.job_start_refusal(name) {
                    return Outcome::Rejected(why);
                }
                RunTrigger::Manual
            }
        };
        let Some(app) = self.apps.get_mut(name) else {
            return Outcome::Rejected(format!("no app named {name}"));
        };
        let running = app.runs.iter_mut().find(|r| r.phase == RunPhase::Running);
        match (running, app.spec.concurrency.unwrap_or_default()) {
            (Some(r), Concurrency::Forbid) => {
                r.skipped += 1;
                return Outcome::Ok;
            }
            (Some(_), Concurrency::Replace) => {
                self.end_active_runs(name, format!("replaced by run {index}"), at, events);
            }
            _ => {}
        }
        self.start_run(index, at, name, trigger, events);
        self.index_job(name);
        // The run's id, so a retried request finds the same run.
        Outcome::App {
            version: index,
            changed: true,
        }
    }

    fn start_run(
        &mut self,
        index: u64,
        at: u64,
        name: &str,
        trigger: RunTrigger,
        events: &mut Vec<Event>,
    ) {
        let Some(app) = self.apps.get_mut(name) else {
            return;
        };
        let (version, instances) = (app.version, app.spec.instances);
        app.runs.push(JobRun {
            id: index,
            version,
            trigger,
            phase: RunPhase::Running,
            instances,
            started_ms: at,
            deadline_ms: app.spec.deadline.map(|d| at.saturating_add(d.0)),
            ended_ms: None,
            message: String::new(),
            skipped: 0,
        });
        // Forget the oldest ended runs past the limit, with their tasks.
        let mut dropped = Vec::new();
        while app
            .runs
            .iter()
            .filter(|r| r.phase != RunPhase::Running)
            .count()
            > RUNS_KEPT
        {
            if let Some(i) = app.runs.iter().position(|r| r.phase != RunPhase::Running) {
                dropped.push(app.runs.remove(i).id);
            }
        }
        for run in dropped {
            self.remove_run_tasks(name, run, events);
        }
        for instance in 0..instances {
            let mut task = Task::pending(
                task_id(name, index, instance),
                name,
                instance,
                version,
                format!("run {index}: waiting for the scheduler"),
            );
            task.run = Some(index);
            events.push(Event::TaskUpdated(Box::new(task.clone())));
            self.tasks.insert(task);
        }
    }

    fn remove_run_tasks(&mut self, name: &str, run: u64, events: &mut Vec<Event>) {
        let ids: Vec<(String, bool)> = self
            .tasks_of(name)
            .filter(|t| t.run == Some(run))
            .map(|t| (t.id.clone(), t.node.is_none()))
            .collect();
        for (id, unplaced) in ids {
            if unplaced {
                if let Some(t) = self.tasks.remove(&id) {
                    events.push(Event::TaskRemoved(Box::new(t)));
                }
                continue;
            }
            self.tasks.update(&id, |t| {
                t.desired = Desired::Remove;
                events.push(Event::TaskUpdated(Box::new(t.clone())));
            });
        }
    }

    /// Ends every running run of `name` as failed with `why`, stopping
    /// its tasks.
    pub(crate) fn end_active_runs(
        &mut self,
        name: &str,
        why: String,
        at: u64,
        events: &mut Vec<Event>,
    ) {
        let ids: Vec<u64> = self.apps.get(name).map_or(Vec::new(), |a| {
            a.runs
                .iter()
                .filter(|r| r.phase == RunPhase::Running)
                .map(|r| r.id)
                .collect()
        });
        for run in ids {
            self.finish_run(name, run, Some(why.clone()), at, events);
        }
    }

    fn finish_run(
        &mut self,
        name: &str,
        run: u64,
        failure: Option<String>,
        at: u64,
        events: &mut Vec<Event>,
    ) -> Outcome {
        let Some(r) = self
            .apps
            .get_mut(name)
            .and_then(|a| a.runs.iter_mut().find(|r| r.id == run))
        else {
            return Outcome::Rejected(format!("no run {run} of {name}"));
        };
        if r.phase != RunPhase::Running {
            return Outcome::Rejected(format!("run {run} of {name} already ended"));
        }
        let failed = failure.is_some();
        match failure {
            None => r.end(RunPhase::Succeeded, String::new(), at),
            Some(why) => r.end(RunPhase::Failed, why, at),
        }
        if failed {
            // What still runs or retries is stopped (kept, with its logs).
            let ids: Vec<String> = self
                .tasks_of(name)
                .filter(|t| t.run == Some(run) && t.desired == Desired::Run)
                .map(|t| t.id.clone())
                .collect();
            for id in ids {
                self.tasks.update(&id, |t| {
                    t.desired = Desired::Stop;
                    if t.node.is_none() {
                        t.state = berth_model::task::TaskState::Stopped;
                        t.message = "stopped before it was placed".into();
                    }
                    events.push(Event::TaskUpdated(Box::new(t.clone())));
                });
            }
        }
        self.index_job(name);
        Outcome::Ok
    }

    /// Keeps the index of jobs the controller watches: those with a
    /// running run or a schedule.
    pub(crate) fn index_job(&mut self, name: &str) {
        let watched = self.apps.get(name).is_some_and(|a| {
            a.spec.kind == Kind::Job
                && !a.stopped
                && (a.next_run_ms.is_some() || a.runs.iter().any(|r| r.phase == RunPhase::Running))
        });
        if watched {
            self.jobs.insert(name.to_string());
        } else {
            self.jobs.remove(name);
        }
    }
}
