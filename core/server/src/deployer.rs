//! Runs the controllers of `berth-control` on the leader: a few times a
//! second, for each app with a running deployment, and each job with a
//! running run or a schedule (indexes kept by the state, so idle apps cost
//! nothing), it reads that app's tasks, decides, and commits the result
//! once the state's lock is released. The state machine re-checks every
//! decision when it applies it.

use std::time::Duration;

use berth_control::job::{self, JobDecision};
use berth_control::{Decision, Progress, decide};
use berth_model::task::Task;
use berth_store::{ClusterState, Command, DeployCommand, Envelope, JobCommand, Store};

/// How often the leader steps running deployments and jobs.
pub const TICK: Duration = Duration::from_millis(200);

/// The progress of `app`'s current deployment at `now_ms`, if it has one.
pub fn progress(state: &ClusterState, app: &str, now_ms: u64) -> Option<Progress> {
    let a = state.apps.get(app)?;
    let d = a.deployment()?;
    let tasks: Vec<&Task> = state.tasks_of(app).collect();
    Some(decide(d, &tasks, now_ms).0)
}

/// What to commit for each running deployment now.
fn decisions(state: &ClusterState, now_ms: u64) -> Vec<Command> {
    let mut out = Vec::new();
    for app in state.rolling() {
        let Some(d) = state.apps.get(app).and_then(|a| a.deployment()) else {
            continue;
        };
        let tasks: Vec<&Task> = state.tasks_of(app).collect();
        let (app, id) = (app.to_string(), d.id);
        let cmd = match decide(d, &tasks, now_ms).1 {
            Decision::Wait => continue,
            Decision::Act { start, retire } => DeployCommand::Step {
                app,
                id,
                start,
                retire,
            },
            Decision::Succeed => DeployCommand::Finish {
                app,
                id,
                failure: None,
            },
            Decision::Fail(why) => DeployCommand::Finish {
                app,
                id,
                failure: Some(why),
            },
        };
        out.push(Command::Deploy(cmd));
    }
    for name in state.jobs() {
        let Some(app) = state.apps.get(name) else {
            continue;
        };
        let tasks: Vec<&Task> = state.tasks_of(name).collect();
        let spec_of = |v| app.spec_of(v);
        for d in job::decide(&app.runs, spec_of, &tasks, app.next_run_ms, now_ms) {
            let app = name.to_string();
            out.push(Command::Job(match d {
                JobDecision::Start { due_ms } => JobCommand::Start {
                    app,
                    due_ms: Some(due_ms),
                },
                JobDecision::Finish { run, failure } => JobCommand::Finish { app, run, failure },
            }));
        }
    }
    out
}

/// Steps running deployments while this server leads, until the store
/// closes.
pub async fn run(store: Store) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if store.is_closed() {
            return;
        }
        if !store.is_leader() {
            continue;
        }
        let cmds = decisions(&store.read(), berth_store::state::now_ms());
        for command in cmds {
            let env = Envelope {
                at_ms: 0,
                request_id: None,
                command,
            };
            if let Err(e) = store.propose(env).await {
                tracing::debug!(error = %e, "deployment step not committed");
                break;
            }
        }
    }
}
