//! One supervisor per task on this node: starts its container, waits for
//! it, applies the restart policy with exponential backoff, stops it on
//! request (SIGTERM, then SIGKILL after the grace period), and reports every
//! change of state.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_model::spec::{RestartLimit, RestartPolicy};
use berth_model::task::{Desired, Health, TaskState, TaskStatus};
use berth_runtime::{ExitRecord, LaunchSpec, Runtime, Shim};
use tokio::sync::{mpsc, watch};

use crate::health::{self, CheckEvent, CheckPlan, Verdict, Which};
use crate::pull::Puller;
use berth_image::registry::PullProgress;

/// How often a pulling task's progress is reported.
const PULL_PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Backoff before the first restart; doubles per consecutive failure.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Upper bound of the restart backoff.
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A container that ran this long resets the backoff.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

/// Everything a supervisor needs to run one task.
#[derive(Debug, Clone)]
pub struct TaskPlan {
    /// Task id.
    pub id: String,
    /// What to run.
    pub launch: LaunchSpec,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// More restarts than this in its window: give up (a crash loop).
    pub restart_limit: RestartLimit,
    /// A job's task: over the limit means out of retries.
    pub job: bool,
    /// Liveness: failing it restarts the container.
    pub health: Option<CheckPlan>,
    /// Readiness: only reported (none: ready once running).
    pub ready: Option<CheckPlan>,
    /// Grace between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
}

/// Where a supervisor starts from.
pub enum Start {
    /// Start the container (attempt number given).
    Fresh(u32),
    /// A live shim found after an agent restart.
    Adopt(Shim, u32),
    /// The container ended while nobody watched.
    Ended(ExitRecord, u32),
}

/// Delay before restart number `failures` (1-based).
pub fn backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(10);
    (BACKOFF_BASE * factor).min(BACKOFF_CAP)
}

/// Whether one more restart at `now` stays within `limit`, given the
/// times of the earlier ones (recorded if so; those past the window go).
pub fn within_limit(times: &mut VecDeque<Instant>, limit: RestartLimit, now: Instant) -> bool {
    let window = limit.window.as_duration();
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t) > window)
    {
        times.pop_front();
    }
    if times.len() >= limit.count as usize {
        return false;
    }
    times.push_back(now);
    true
}

/// Whether a container that ended like `exit` is restarted under `policy`.
pub fn should_restart(policy: RestartPolicy, exit: &ExitRecord) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => exit.code != 0,
        RestartPolicy::Never => false,
    }
}

struct Sup {
    plan: TaskPlan,
    rt: Arc<Runtime>,
    puller: Arc<Puller>,
    desired: watch::Receiver<Desired>,
    report: mpsc::UnboundedSender<TaskStatus>,
    attempt: u32,
    /// When it was restarted within the restart limit's window.
    restarted_at: VecDeque<Instant>,
    /// The liveness verdict of the running container.
    health: Health,
    /// Whether the running container is ready.
    ready: bool,
    /// Its address on the node's bridge, once its network is set up.
    ip: Option<std::net::Ipv4Addr>,
}

/// How a running container's watch ended.
enum Ended {
    Exit(ExitRecord),
    NotRun,
    Unhealthy(String),
}

/// Runs a task's supervisor until the task is stopped or removed.
pub async fn supervise(
    plan: TaskPlan,
    rt: Arc<Runtime>,
    puller: Arc<Puller>,
    start: Start,
    desired: watch::Receiver<Desired>,
    report: mpsc::UnboundedSender<TaskStatus>,
) {
    let attempt = match &start {
        Start::Fresh(a) | Start::Adopt(_, a) | Start::Ended(_, a) => *a,
    };
    let mut s = Sup {
        plan,
        rt,
        puller,
        desired,
        report,
        attempt,
        restarted_at: VecDeque::new(),
        health: Health::Unknown,
        ready: false,
        ip: None,
    };
    s.run(start).await;
}

impl Sup {
    fn status(&self, state: TaskState, exit_code: Option<i32>, message: String) -> TaskStatus {
        let running = state == TaskState::Running;
        TaskStatus {
            id: self.plan.id.clone(),
            state,
            exit_code,
            restarts: self.attempt,
            message,
            gone: false,
            given_up: false,
            health: if running {
                self.health
            } else {
                Health::Unknown
            },
            ready: running && self.ready,
            ip: self.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        }
    }

    fn send(&self, state: TaskState, exit_code: Option<i32>, message: impl Into<String>) {
        let _ = self
            .report
            .send(self.status(state, exit_code, message.into()));
    }

    /// Starts the container's checks (readiness runs apart only when it
    /// differs from liveness).
    fn start_checks(
        &self,
        pid: u32,
        started: Instant,
        tx: &mpsc::UnboundedSender<CheckEvent>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut out = Vec::new();
        if let Some(h) = &self.plan.health {
            out.push(health::spawn(
                Which::Liveness,
                h.at(self.ip),
                pid,
                started,
                tx.clone(),
            ));
        }
        if let Some(r) = &self.plan.ready
            && self.plan.health.as_ref() != Some(r)
        {
            out.push(health::spawn(
                Which::Readiness,
                r.at(self.ip),
                pid,
                started,
                tx.clone(),
            ));
        }
        out
    }

    /// Takes a check's new verdict; `Some(why)` when the container must be
    /// restarted for failing its liveness check.
    fn on_check(&mut self, ev: CheckEvent, running: &str) -> Option<String> {
        let passing = ev.verdict == Verdict::Passing;
        if ev.verdict != Verdict::Unknown {
            let which = match ev.which {
                Which::Liveness => "liveness",
                Which::Readiness => "readiness",
            };
            crate::metrics::METRICS.check(which, passing);
        }
        let same = self.plan.health.is_some() && self.plan.health == self.plan.ready;
        match ev.which {
            Which::Liveness => {
                self.health = match ev.verdict {
                    Verdict::Passing => Health::Healthy,
                    Verdict::Failing => Health::Unhealthy,
                    Verdict::Unknown => Health::Unknown,
                };
                if same {
                    self.ready = passing;
                }
                if ev.verdict == Verdict::Failing
                    && let Some(h) = &self.plan.health
                {
                    return Some(format!(
                        "health check failed: {} ({}; {} in a row)",
                        h.probe, ev.why, h.failures
                    ));
                }
            }
            Which::Readiness => self.ready = passing,
        }
        self.send(TaskState::Running, None, running);
        None
    }

    fn within_limit(&mut self, now: Instant) -> bool {
        within_limit(&mut self.restarted_at, self.plan.restart_limit, now)
    }

    fn wanted(&self) -> Desired {
        *self.desired.borrow()
    }

    async fn run(&mut self, start: Start) {
        let mut failures = 0u32;
        let mut next = start;
        loop {
            let (shim, started_at) = match std::mem::replace(&mut next, Start::Fresh(self.attempt))
            {
                Start::Adopt(shim, _) => {
                    self.ip = self.rt.task_ip(&self.plan.id);
                    (Some(shim), Instant::now())
                }
                Start::Ended(exit, _) => {
                    if !self.after_exit(exit, &mut failures, Duration::ZERO).await {
                        return;
                    }
                    continue;
                }
                Start::Fresh(_) => {
                    if self.wanted() != Desired::Run || !self.pull_image().await {
                        return self.finish(None).await;
                    }
                    // BERTH_ATTEMPT: 0, 1, ... across restarts and retries.
                    let mut launch = self.plan.launch.clone();
                    launch
                        .env
                        .insert("BERTH_ATTEMPT".into(), self.attempt.to_string());
                    let t0 = Instant::now();
                    let started = self.rt.start(&self.plan.id, self.attempt, &launch).await;
                    self.ip = self.rt.task_ip(&self.plan.id);
                    let m = &crate::metrics::METRICS;
                    match started {
                        Ok(shim) => {
                            m.started.inc();
                            m.start_seconds.observe(t0.elapsed().as_secs_f64());
                            (Some(shim), Instant::now())
                        }
                        Err(e) => {
                            m.failed.inc();
                            tracing::warn!(task = %self.plan.id, error = %e, "start failed");
                            let exit = ExitRecord {
                                code: -1,
                                signal: None,
                                error: Some(e.to_string()),
                            };
                            if !self.after_exit(exit, &mut failures, Duration::ZERO).await {
                                return;
                            }
                            continue;
                        }
                    }
                }
            };
            let Some(mut shim) = shim else { continue };
            let running = format!("running (pid {})", shim.init_pid);
            self.health = Health::Unknown;
            self.ready = self.plan.ready.is_none();
            self.send(TaskState::Running, None, running.clone());
            let (tx, mut checks_rx) = mpsc::unbounded_channel();
            let checks = self.start_checks(shim.init_pid.unsigned_abs(), started_at, &tx);
            let (rt, id, mut desired) =
                (self.rt.clone(), self.plan.id.clone(), self.desired.clone());
            let ended = {
                let wait = rt.wait(&id, &mut shim);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        exit = &mut wait => break Ended::Exit(exit),
                        _ = wait_not_run(&mut desired) => break Ended::NotRun,
                        Some(ev) = checks_rx.recv() => {
                            if let Some(why) = self.on_check(ev, &running) {
                                break Ended::Unhealthy(why);
                            }
                        }
                    }
                }
            };
            for c in checks {
                c.abort();
            }
            let (exit, reason) = match ended {
                Ended::Exit(exit) => (exit, None),
                Ended::NotRun => {
                    let exit = self.stop(&mut shim).await;
                    return self.finish(Some(exit.code)).await;
                }
                Ended::Unhealthy(why) => {
                    tracing::info!(task = %self.plan.id, %why, "restarting an unhealthy container");
                    (self.stop(&mut shim).await, Some(why))
                }
            };
            if !self
                .after_exit_for(exit, &mut failures, started_at.elapsed(), reason)
                .await
            {
                return;
            }
        }
    }

    /// Brings the task's image from its registry, reporting progress
    /// (`pulling 3/5 layers, ...`) and retrying a failed pull with backoff
    /// (the reason in the task's message); pull failures do not count as
    /// restarts. Returns false if the task stopped being wanted meanwhile.
    async fn pull_image(&mut self) -> bool {
        let mut failures = 0;
        loop {
            let progress = PullProgress::default();
            let image = self.plan.launch.image.clone();
            let result = {
                let pull = self.puller.ensure(&image, &progress);
                tokio::pin!(pull);
                let mut tick = tokio::time::interval(PULL_PROGRESS_EVERY);
                tick.tick().await;
                let mut last = String::new();
                loop {
                    tokio::select! {
                        r = &mut pull => break r,
                        _ = tick.tick() => {
                            let line = progress.line();
                            if line != last {
                                self.send(TaskState::Pending, None, line.clone());
                                last = line;
                            }
                        }
                        _ = wait_not_run(&mut self.desired) => return false,
                    }
                }
            };
            let Err(e) = result else { return true };
            failures += 1;
            let delay = crate::pull::pull_backoff(failures);
            tracing::warn!(task = %self.plan.id, error = %e, "image pull failed");
            self.send(
                TaskState::Pending,
                None,
                format!("image pull failed: {e}; retrying in {} s", delay.as_secs()),
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = wait_not_run(&mut self.desired) => return false,
            }
        }
    }

    /// Reports an exit and waits out the backoff. Returns true to restart.
    async fn after_exit(&mut self, exit: ExitRecord, failures: &mut u32, ran: Duration) -> bool {
        self.after_exit_for(exit, failures, ran, None).await
    }

    /// [`Sup::after_exit`], for a container stopped for `unhealthy` (the
    /// reason): restarted unless the policy is `never`.
    async fn after_exit_for(
        &mut self,
        exit: ExitRecord,
        failures: &mut u32,
        ran: Duration,
        unhealthy: Option<String>,
    ) -> bool {
        let failed_to_start = exit.error.is_some() || unhealthy.is_some();
        let (state, msg) = match (&unhealthy, &exit.error) {
            (Some(why), _) => (TaskState::Failed, why.clone()),
            (None, Some(e)) => (TaskState::Failed, e.clone()),
            (None, None) => (
                TaskState::Exited,
                match exit.signal {
                    Some(sig) => format!("killed by signal {sig}"),
                    None => format!("exited with code {}", exit.code),
                },
            ),
        };
        let code = (exit.error.is_none()).then_some(exit.code);
        if self.wanted() != Desired::Run {
            self.finish(code).await;
            return false;
        }
        let restart = should_restart(self.plan.restart, &exit)
            || (failed_to_start && self.plan.restart != RestartPolicy::Never);
        if !restart {
            self.send(state, code, msg);
            // Stay until told to stop or remove.
            wait_not_run(&mut self.desired).await;
            self.finish(code).await;
            return false;
        }
        if !self.within_limit(Instant::now()) {
            let l = self.plan.restart_limit;
            let mut status = self.status(
                TaskState::Failed,
                code,
                if self.plan.job {
                    format!("out of retries ({}); last: {msg}", l.count)
                } else {
                    format!(
                        "crash loop: {} restarts within {}, over the restart limit; last: {msg}",
                        l.count, l.window
                    )
                },
            );
            status.given_up = true;
            let _ = self.report.send(status);
            wait_not_run(&mut self.desired).await;
            self.finish(code).await;
            return false;
        }
        if ran >= BACKOFF_RESET_AFTER {
            *failures = 0;
        }
        *failures += 1;
        let delay = backoff(*failures);
        self.send(
            state,
            code,
            format!("{msg}; restarting in {} ms", delay.as_millis()),
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = wait_not_run(&mut self.desired) => {
                self.finish(code).await;
                return false;
            }
        }
        self.attempt += 1;
        true
    }

    async fn stop(&mut self, shim: &mut Shim) -> ExitRecord {
        let id = self.plan.id.clone();
        self.rt.signal(&id, libc::SIGTERM);
        let grace = self.plan.stop_grace;
        match tokio::time::timeout(grace, self.rt.wait(&id, shim)).await {
            Ok(exit) => exit,
            Err(_) => {
                tracing::info!(task = %id, "grace period over; sending SIGKILL");
                self.rt.signal(&id, libc::SIGKILL);
                self.rt.wait(&id, shim).await
            }
        }
    }

    /// Final report once the task is no longer wanted running. Its
    /// network goes first: a stopped task holds no address or port.
    async fn finish(&mut self, code: Option<i32>) {
        if let Err(e) = self.rt.release_network(&self.plan.id).await {
            tracing::warn!(task = %self.plan.id, error = %e, "releasing the task's network");
        }
        self.ip = None;
        match self.wanted() {
            Desired::Remove => {
                let gone = match self.rt.remove(&self.plan.id) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(task = %self.plan.id, error = %e, "removing task files");
                        false
                    }
                };
                let mut status = self.status(TaskState::Stopped, code, "removed".into());
                status.gone = gone;
                let _ = self.report.send(status);
            }
            _ => self.send(TaskState::Stopped, code, "stopped on request"),
        }
    }
}

async fn wait_not_run(desired: &mut watch::Receiver<Desired>) {
    let _ = desired.wait_for(|d| *d != Desired::Run).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_over_the_limit_in_the_window_give_up() {
        use berth_model::quantity::DurationMs;
        let limit = RestartLimit {
            count: 3,
            window: DurationMs(60_000),
        };
        let t0 = Instant::now();
        let mut times = VecDeque::new();
        for s in 0..3 {
            assert!(within_limit(&mut times, limit, t0 + Duration::from_secs(s)));
        }
        assert!(!within_limit(
            &mut times,
            limit,
            t0 + Duration::from_secs(10)
        ));
        // Once the first ones leave the window, restarts are allowed again.
        assert!(within_limit(
            &mut times,
            limit,
            t0 + Duration::from_secs(61)
        ));
        assert!(!within_limit(
            &mut times,
            limit,
            t0 + Duration::from_secs(61)
        ));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(30), BACKOFF_CAP);
    }

    #[test]
    fn restart_policies() {
        let ok = ExitRecord {
            code: 0,
            signal: None,
            error: None,
        };
        let bad = ExitRecord {
            code: 3,
            signal: None,
            error: None,
        };
        assert!(should_restart(RestartPolicy::Always, &ok));
        assert!(!should_restart(RestartPolicy::OnFailure, &ok));
        assert!(should_restart(RestartPolicy::OnFailure, &bad));
        assert!(!should_restart(RestartPolicy::Never, &bad));
    }
}
