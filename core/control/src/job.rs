//! The job controller: when a job's run has ended (every task exited 0,
//! one failed after its retries, or its deadline passed), and when a
//! periodic job's schedule has come round. Retries themselves are the
//! agent's: a job's task restarts on failure, with backoff, at most
//! `retries` times, and is then given up.

use berth_model::job::{JobRun, RunPhase};
use berth_model::spec::{AppSpec, RestartPolicy};
use berth_model::task::{Task, TaskState};

/// What the leader should commit for a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobDecision {
    /// The schedule came round at `due_ms`: start a run (the state machine
    /// applies the concurrency policy).
    Start {
        /// When it was due.
        due_ms: u64,
    },
    /// Run `run` ended: succeeded (`failure` none) or failed.
    Finish {
        /// Run id.
        run: u64,
        /// Why it failed.
        failure: Option<String>,
    },
}

/// Whether a job's task has ended for good, and how: `Some(Ok)` exited 0,
/// `Some(Err(why))` failed with no retry left, `None` still going.
fn outcome(t: &Task, restart: RestartPolicy, retries: u32) -> Option<Result<(), String>> {
    match (t.state, t.exit_code) {
        (TaskState::Exited, Some(0)) => Some(Ok(())),
        _ if t.given_up => Some(Err(format!(
            "instance {} ({}) failed after {retries} retries: {}",
            t.instance, t.id, t.message
        ))),
        (TaskState::Exited | TaskState::Failed, _) if restart == RestartPolicy::Never => Some(Err(
            format!("instance {} ({}) failed: {}", t.instance, t.id, t.message),
        )),
        _ => None,
    }
}

/// Decides for one job: `runs` are its runs, `spec_of` gives a version's
/// spec, `tasks` are its tasks, `next_due` when its schedule is next due.
pub fn decide<'a>(
    runs: &[JobRun],
    spec_of: impl Fn(u64) -> Option<&'a AppSpec>,
    tasks: &[&Task],
    next_due: Option<u64>,
    now_ms: u64,
) -> Vec<JobDecision> {
    let mut out = Vec::new();
    for run in runs.iter().filter(|r| r.phase == RunPhase::Running) {
        let Some(spec) = spec_of(run.version) else {
            continue;
        };
        let retries = spec.retries.unwrap_or(berth_model::job::DEFAULT_RETRIES);
        let mine: Vec<&&Task> = tasks.iter().filter(|t| t.run == Some(run.id)).collect();
        let mut done = 0;
        let mut failure = None;
        for t in &mine {
            match outcome(t, spec.restart, retries) {
                Some(Ok(())) => done += 1,
                Some(Err(why)) => {
                    failure.get_or_insert(why);
                }
                None => {}
            }
        }
        let failure = failure.or_else(|| {
            let late = run.deadline_ms.is_some_and(|d| now_ms >= d);
            late.then(|| {
                format!(
                    "deadline of {} passed with {done}/{} instances done",
                    spec.deadline.unwrap_or_default(),
                    run.instances
                )
            })
        });
        if failure.is_some() || done >= run.instances as usize {
            out.push(JobDecision::Finish {
                run: run.id,
                failure,
            });
        }
    }
    if let Some(due_ms) = next_due.filter(|d| *d <= now_ms) {
        out.push(JobDecision::Start { due_ms });
    }
    out
}

#[cfg(test)]
mod tests {
    use berth_model::job::RunTrigger;
    use berth_model::spec::parse_spec;

    use super::*;

    fn run(id: u64, instances: u32, deadline_ms: Option<u64>) -> JobRun {
        JobRun {
            id,
            version: 1,
            trigger: RunTrigger::Submit,
            phase: RunPhase::Running,
            instances,
            started_ms: 0,
            deadline_ms,
            ended_ms: None,
            message: String::new(),
            skipped: 0,
        }
    }

    fn task(run: u64, i: u32, state: TaskState, code: Option<i32>, given_up: bool) -> Task {
        let mut t = Task::pending(format!("j-{run}-{i}"), "j", i, 1, String::new());
        t.run = Some(run);
        t.state = state;
        t.exit_code = code;
        t.given_up = given_up;
        t.message = "exited with code 1".into();
        t
    }

    #[test]
    fn runs_end_as_their_tasks_do() {
        let spec =
            parse_spec("name: j\nimage: busybox:latest\nkind: job\nretries: 2\ndeadline: 1m\n")
                .unwrap();
        let never =
            parse_spec("name: j\nimage: busybox:latest\nkind: job\nrestart: never\n").unwrap();
        let ok = |i| task(5, i, TaskState::Exited, Some(0), false);
        let running = |i| task(5, i, TaskState::Running, None, false);
        let retrying = |i| task(5, i, TaskState::Exited, Some(1), false);
        let gave_up = |i| task(5, i, TaskState::Failed, Some(1), true);
        let fin = |failure: Option<&str>| {
            vec![JobDecision::Finish {
                run: 5,
                failure: failure.map(String::from),
            }]
        };
        type Case<'a> = (
            &'a str,
            &'a AppSpec,
            Vec<Task>,
            Option<u64>,
            Vec<JobDecision>,
        );
        let cases: Vec<Case> = vec![
            ("all exited 0", &spec, vec![ok(0), ok(1)], None, fin(None)),
            (
                "one still running",
                &spec,
                vec![ok(0), running(1)],
                None,
                vec![],
            ),
            (
                "one retrying",
                &spec,
                vec![ok(0), retrying(1)],
                None,
                vec![],
            ),
            (
                "one given up",
                &spec,
                vec![ok(0), gave_up(1)],
                None,
                fin(Some(
                    "instance 1 (j-5-1) failed after 2 retries: exited with code 1",
                )),
            ),
            (
                "restart never: a failure ends it",
                &never,
                vec![retrying(0), ok(1)],
                None,
                fin(Some("instance 0 (j-5-0) failed: exited with code 1")),
            ),
            (
                "past the deadline",
                &spec,
                vec![ok(0), running(1)],
                Some(1_000),
                fin(Some("deadline of 1m passed with 1/2 instances done")),
            ),
        ];
        for (name, s, tasks, deadline, want) in cases {
            let refs: Vec<&Task> = tasks.iter().collect();
            let got = decide(&[run(5, 2, deadline)], |_| Some(s), &refs, None, 2_000);
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn a_schedule_that_came_round_starts_a_run() {
        let got = decide(&[], |_| None, &[], Some(5_000), 5_000);
        assert_eq!(got, vec![JobDecision::Start { due_ms: 5_000 }]);
        assert!(decide(&[], |_| None, &[], Some(5_001), 5_000).is_empty());
    }
}
