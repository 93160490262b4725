//! Deployments in the state machine: a new spec starts one, the leader's
//! controller (`berth-control`) steps it, and every step is checked again
//! here, against the state it lands on: a step decided on a stale view, or
//! proposed twice across a leader change, starts no instance twice and
//! retires nothing it should not.

use berth_model::deploy::{Deployment, Phase, Trigger};
use berth_model::spec::{AppSpec, Kind};
use berth_model::task::{Desired, Task, task_id};
use serde::{Deserialize, Serialize};

use crate::state::{App, ClusterState, Event, Outcome};

/// How many deployments an app keeps (more while older versions still
/// have tasks).
pub const HISTORY: usize = 10;

/// A change to a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeployCommand {
    /// Start these instances of the deployment's version and retire these
    /// tasks (the controller's decision).
    Step {
        /// App name.
        app: String,
        /// Deployment id; a step for another is void.
        id: u64,
        /// Instance numbers to start.
        start: Vec<u32>,
        /// Task ids to retire.
        retire: Vec<String>,
    },
    /// The deployment succeeded (`failure` none) or failed; a failed
    /// update with `auto_rollback` rolls back to the last good version.
    Finish {
        /// App name.
        app: String,
        /// Deployment id.
        id: u64,
        /// Why it failed.
        failure: Option<String>,
    },
    /// `berth deploy pause|resume`.
    Pause {
        /// App name.
        app: String,
        /// True to pause, false to resume.
        paused: bool,
    },
    /// `berth rollback [--to VERSION]`: roll out an earlier version again.
    Rollback {
        /// App name.
        app: String,
        /// The version; none means the last one that succeeded.
        to: Option<u64>,
    },
}

impl ClusterState {
    pub(crate) fn put_app(
        &mut self,
        index: u64,
        at: u64,
        spec: AppSpec,
        events: &mut Vec<Event>,
    ) -> Outcome {
        let name = spec.name.clone();
        let before = self.apps.get(&name);
        if let Some(app) = before
            && app.spec == spec
            && !app.stopped
        {
            return Outcome::App {
                version: app.version,
                changed: false,
            };
        }
        let fresh = before.is_none_or(|a| a.stopped);
        let history = before.map(|a| a.history.clone()).unwrap_or_default();
        let job = spec.kind == Kind::Job;
        let was_job = before.is_some_and(|a| a.spec.kind == Kind::Job);
        let runs = match before {
            Some(a) if job && was_job && !fresh => a.runs.clone(),
            _ => Vec::new(),
        };
        // A first spec (or one after a stop) has nothing to roll from, and
        // a gang is placed all or none: their instances start at once.
        // Otherwise the controller rolls the new version in. A job's runs
        // start their own tasks.
        if job {
            if fresh || !was_job {
                self.retire_tasks(&name, Desired::Remove, events);
            }
        } else if fresh || spec.gang || was_job {
            self.retire_tasks(&name, Desired::Remove, events);
            for instance in 0..spec.instances {
                self.start_instance(&name, index, index, instance, events);
            }
        }
        self.apps.insert(
            name.clone(),
            App {
                spec: spec.clone(),
                version: index,
                stopped: false,
                history,
                runs,
                next_run_ms: None,
            },
        );
        let trigger = if fresh {
            Trigger::Create
        } else {
            Trigger::Update
        };
        let mut d = Deployment::start(index, index, spec, trigger, at);
        if job {
            d.end(
                Phase::Succeeded,
                "a job: its next run uses this version".into(),
                at,
            );
        }
        self.begin(&name, d);
        if job {
            self.submit_job(index, at, &name, events);
        } else {
            self.index_job(&name);
        }
        events.push(Event::AppChanged(name));
        Outcome::App {
            version: index,
            changed: true,
        }
    }

    /// Makes `d` the app's current deployment: the one before, if still
    /// going, is superseded; the history is trimmed.
    pub(crate) fn begin(&mut self, name: &str, d: Deployment) {
        let keep: std::collections::BTreeSet<u64> =
            self.tasks_of(name).map(|t| t.version).collect();
        let Some(app) = self.apps.get_mut(name) else {
            return;
        };
        if let Some(last) = app.history.last_mut().filter(|l| l.phase.is_active()) {
            last.end(
                Phase::Superseded,
                format!("superseded by deployment {}", d.id),
                d.started_ms,
            );
        }
        let active = d.phase.is_active();
        let m = format!(
            "deployment {} of {name} version {} ({})",
            d.id,
            d.version,
            d.trigger.as_str()
        );
        let action = match d.trigger {
            Trigger::Rollback { .. } => "rolling-back",
            _ => "started",
        };
        app.history.push(d);
        // Drop the oldest entries past the limit, unless tasks still run
        // their version (or it is the current version).
        let mut i = 0;
        while app.history.len() > HISTORY && i < app.history.len() - 1 {
            let v = app.history[i].version;
            if v != app.version && !keep.contains(&v) {
                app.history.remove(i);
            } else {
                i += 1;
            }
        }
        if active {
            self.rolling.insert(name.to_string());
            self.notice("deployment", name, Some(name), action, m);
        }
    }

    /// Adds a pending task for `instance` of `version` (a new id when an
    /// older task of that name is still leaving).
    fn start_instance(
        &mut self,
        app: &str,
        index: u64,
        version: u64,
        instance: u32,
        events: &mut Vec<Event>,
    ) {
        let mut id = task_id(app, version, instance);
        if self.tasks.contains_key(&id) {
            id = format!("{id}-d{index}");
        }
        let task = Task::pending(
            id,
            app,
            instance,
            version,
            "waiting for the scheduler".into(),
        );
        events.push(Event::TaskUpdated(Box::new(task.clone())));
        self.tasks.insert(task);
    }

    pub(crate) fn apply_deploy(
        &mut self,
        index: u64,
        at: u64,
        cmd: DeployCommand,
        events: &mut Vec<Event>,
    ) -> Outcome {
        match cmd {
            DeployCommand::Step {
                app,
                id,
                start,
                retire,
            } => self.step(index, &app, id, &start, &retire, events),
            DeployCommand::Finish { app, id, failure } => {
                self.finish(index, at, &app, id, failure, events)
            }
            DeployCommand::Pause { app, paused } => self.pause(at, &app, paused, events),
            DeployCommand::Rollback { app, to } => self.rollback(index, at, &app, to, events),
        }
    }

    /// The current deployment of `app` if it is `id` and running.
    fn running(&self, app: &str, id: u64) -> Result<&Deployment, Outcome> {
        let d = self
            .apps
            .get(app)
            .and_then(App::deployment)
            .ok_or_else(|| Outcome::Rejected(format!("no deployment of {app}")))?;
        if d.id != id || d.phase != Phase::Running {
            return Err(Outcome::Rejected(format!(
                "deployment {id} of {app} is not running (the current one is {}, {})",
                d.id,
                d.phase.as_str()
            )));
        }
        Ok(d)
    }

    fn step(
        &mut self,
        index: u64,
        app: &str,
        id: u64,
        start: &[u32],
        retire: &[String],
        events: &mut Vec<Event>,
    ) -> Outcome {
        let (version, wanted) = match self.running(app, id) {
            Ok(d) => (d.version, d.spec.instances),
            Err(o) => return o,
        };
        let live: std::collections::BTreeSet<u32> = self
            .tasks_of(app)
            .filter(|t| t.version == version && t.desired == Desired::Run)
            .map(|t| t.instance)
            .collect();
        for &i in start {
            if i < wanted && !live.contains(&i) {
                self.start_instance(app, index, version, i, events);
            }
        }
        for tid in retire {
            let Some(t) = self.tasks.get(tid) else {
                continue;
            };
            let stale = t.version == version && t.instance < wanted;
            if t.app != app || t.desired != Desired::Run || stale {
                continue;
            }
            let why = format!("replaced by version {version} (deployment {id})");
            if t.node.is_none() {
                if let Some(t) = self.tasks.remove(tid) {
                    events.push(Event::TaskRemoved(Box::new(t)));
                }
                continue;
            }
            self.tasks.update(tid, |t| {
                t.desired = Desired::Remove;
                t.message = why;
                events.push(Event::TaskUpdated(Box::new(t.clone())));
            });
        }
        Outcome::Ok
    }

    fn finish(
        &mut self,
        index: u64,
        at: u64,
        app: &str,
        id: u64,
        failure: Option<String>,
        events: &mut Vec<Event>,
    ) -> Outcome {
        let d = match self.running(app, id) {
            Ok(d) => d.clone(),
            Err(o) => return o,
        };
        let Some(why) = failure else {
            self.end_current(app, Phase::Succeeded, String::new(), at);
            events.push(Event::AppChanged(app.to_string()));
            return Outcome::Ok;
        };
        let good = self.last_good(app, d.version);
        let auto = d.spec.update().auto_rollback && d.trigger == Trigger::Update;
        match good.filter(|_| auto) {
            Some(good) => {
                let msg = format!("{why}; rolled back to version {}", good.version);
                self.end_current(app, Phase::RolledBack, msg, at);
                let trigger = Trigger::Rollback { of: id, auto: true };
                self.roll_back_to(index, at, app, good, d.spec.instances, trigger);
            }
            None => self.end_current(app, Phase::Failed, why, at),
        }
        events.push(Event::AppChanged(app.to_string()));
        Outcome::Ok
    }

    fn end_current(&mut self, app: &str, phase: Phase, message: String, at: u64) {
        if let Some(d) = self.apps.get_mut(app).and_then(|a| a.history.last_mut()) {
            let m = match message.is_empty() {
                true => format!("deployment {} of {app} {}", d.id, phase.as_str()),
                false => format!("deployment {} of {app}: {message}", d.id),
            };
            d.end(phase, message, at);
            self.notice("deployment", app, Some(app), phase.as_str(), m);
        }
        self.rolling.remove(app);
    }

    /// The latest deployment that succeeded with a version other than
    /// `not`.
    fn last_good(&self, app: &str, not: u64) -> Option<Deployment> {
        self.apps
            .get(app)?
            .history
            .iter()
            .rev()
            .find(|d| d.phase == Phase::Succeeded && d.version != not)
            .cloned()
    }

    /// Starts a deployment of `to`'s version and spec with `instances`.
    fn roll_back_to(
        &mut self,
        index: u64,
        at: u64,
        app: &str,
        to: Deployment,
        instances: u32,
        trigger: Trigger,
    ) {
        let mut spec = to.spec;
        spec.instances = instances;
        if let Some(a) = self.apps.get_mut(app) {
            a.spec = spec.clone();
            a.version = to.version;
        }
        self.begin(app, Deployment::start(index, to.version, spec, trigger, at));
    }

    fn rollback(
        &mut self,
        index: u64,
        at: u64,
        app: &str,
        to: Option<u64>,
        events: &mut Vec<Event>,
    ) -> Outcome {
        let target = match self.rollback_target(app, to) {
            Ok(t) => t,
            Err(why) => return Outcome::Rejected(why),
        };
        let (current, instances) = match self.apps.get(app) {
            Some(a) => (a.deployment().map_or(0, |d| d.id), a.spec.instances),
            None => return Outcome::Rejected(format!("no app named {app}")),
        };
        let version = target.version;
        let trigger = Trigger::Rollback {
            of: current,
            auto: false,
        };
        self.roll_back_to(index, at, app, target, instances, trigger);
        events.push(Event::AppChanged(app.to_string()));
        Outcome::App {
            version,
            changed: true,
        }
    }

    /// The deployment `berth rollback` would roll out again, or why none.
    pub fn rollback_target(&self, app: &str, to: Option<u64>) -> Result<Deployment, String> {
        let a = self
            .apps
            .get(app)
            .ok_or_else(|| format!("no app named {app}"))?;
        if a.stopped {
            return Err(format!(
                "app {app} is stopped: berth run its spec to start it again"
            ));
        }
        if a.spec.kind == Kind::Job {
            return Err(format!(
                "{app} is a job: it does not roll out; berth run the spec its next run should use"
            ));
        }
        let found = match to {
            Some(v) if v == a.version => return Err(format!("{app} is already at version {v}")),
            Some(v) => a.history.iter().rev().find(|d| d.version == v).cloned(),
            None => self.last_good(app, a.version),
        };
        found.ok_or_else(|| {
            let kept: Vec<String> = a.history.iter().map(|d| d.version.to_string()).collect();
            match to {
                Some(v) => format!(
                    "--to: version {v} is not in the history of {app} (it keeps versions {})",
                    kept.join(", ")
                ),
                None => format!("{app} has no earlier version that succeeded to roll back to"),
            }
        })
    }

    fn pause(&mut self, at: u64, app: &str, paused: bool, events: &mut Vec<Event>) -> Outcome {
        let Some(d) = self.apps.get_mut(app).and_then(|a| a.history.last_mut()) else {
            return Outcome::Rejected(format!("no app named {app}"));
        };
        match (d.phase, paused) {
            (Phase::Running, true) => d.phase = Phase::Paused,
            (Phase::Paused, false) => {
                d.phase = Phase::Running;
                d.deadline_ms = at.saturating_add(d.spec.update().deadline.0);
            }
            (Phase::Running, false) | (Phase::Paused, true) => return Outcome::Ok,
            (p, _) => {
                return Outcome::Rejected(format!(
                    "deployment {} of {app} is not running (it {})",
                    d.id,
                    p.as_str()
                ));
            }
        }
        events.push(Event::AppChanged(app.to_string()));
        Outcome::Ok
    }
}
