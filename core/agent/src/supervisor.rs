//! One supervisor per task on this node: starts its container, waits for
//! it, applies the restart policy with exponential backoff, stops it on
//! request (SIGTERM, then SIGKILL after the grace period), and reports every
//! change of state.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_model::spec::{RestartLimit, RestartPolicy};
use berth_model::task::{Desired, TaskState, TaskStatus};
use berth_runtime::{ExitRecord, LaunchSpec, Runtime, Shim};
use tokio::sync::{mpsc, watch};

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
    desired: watch::Receiver<Desired>,
    report: mpsc::UnboundedSender<TaskStatus>,
    attempt: u32,
    /// When it was restarted within the restart limit's window.
    restarted_at: VecDeque<Instant>,
}

/// Runs a task's supervisor until the task is stopped or removed.
pub async fn supervise(
    plan: TaskPlan,
    rt: Arc<Runtime>,
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
        desired,
        report,
        attempt,
        restarted_at: VecDeque::new(),
    };
    s.run(start).await;
}

impl Sup {
    fn send(&self, state: TaskState, exit_code: Option<i32>, message: impl Into<String>) {
        let _ = self.report.send(TaskStatus {
            id: self.plan.id.clone(),
            state,
            exit_code,
            restarts: self.attempt,
            message: message.into(),
            gone: false,
            given_up: false,
        });
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
                Start::Adopt(shim, _) => (Some(shim), Instant::now()),
                Start::Ended(exit, _) => {
                    if !self.after_exit(exit, &mut failures, Duration::ZERO).await {
                        return;
                    }
                    continue;
                }
                Start::Fresh(_) => {
                    if self.wanted() != Desired::Run {
                        return self.finish(None).await;
                    }
                    // BERTH_ATTEMPT: 0, 1, ... across restarts and retries.
                    let mut launch = self.plan.launch.clone();
                    launch
                        .env
                        .insert("BERTH_ATTEMPT".into(), self.attempt.to_string());
                    match self.rt.start(&self.plan.id, self.attempt, &launch).await {
                        Ok(shim) => (Some(shim), Instant::now()),
                        Err(e) => {
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
            self.send(
                TaskState::Running,
                None,
                format!("running (pid {})", shim.init_pid),
            );
            let exit = tokio::select! {
                exit = self.rt.wait(&self.plan.id, &mut shim) => exit,
                _ = wait_not_run(&mut self.desired) => {
                    let exit = self.stop(&mut shim).await;
                    return self.finish(Some(exit.code)).await;
                }
            };
            if !self
                .after_exit(exit, &mut failures, started_at.elapsed())
                .await
            {
                return;
            }
        }
    }

    /// Reports an exit and waits out the backoff. Returns true to restart.
    async fn after_exit(&mut self, exit: ExitRecord, failures: &mut u32, ran: Duration) -> bool {
        let failed_to_start = exit.error.is_some();
        let (state, msg) = match &exit.error {
            Some(e) => (TaskState::Failed, e.clone()),
            None => (
                TaskState::Exited,
                match exit.signal {
                    Some(sig) => format!("killed by signal {sig}"),
                    None => format!("exited with code {}", exit.code),
                },
            ),
        };
        let code = (!failed_to_start).then_some(exit.code);
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
            let _ = self.report.send(TaskStatus {
                id: self.plan.id.clone(),
                state: TaskState::Failed,
                exit_code: code,
                restarts: self.attempt,
                message: format!(
                    "crash loop: {} restarts within {}, over the restart limit; last: {msg}",
                    l.count, l.window
                ),
                gone: false,
                given_up: true,
            });
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

    /// Final report once the task is no longer wanted running.
    async fn finish(&mut self, code: Option<i32>) {
        match self.wanted() {
            Desired::Remove => {
                let gone = match self.rt.remove(&self.plan.id) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(task = %self.plan.id, error = %e, "removing task files");
                        false
                    }
                };
                let _ = self.report.send(TaskStatus {
                    id: self.plan.id.clone(),
                    state: TaskState::Stopped,
                    exit_code: code,
                    restarts: self.attempt,
                    message: "removed".into(),
                    gone,
                    given_up: false,
                });
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
