//! `berth job runs|start`.

use berth_proto as pb;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::{ctl, request_id};
use crate::output::table;

/// `berth job ...`.
#[derive(Subcommand)]
pub enum JobCmd {
    /// A job's runs, newest first, with their outcome.
    Runs {
        /// App name.
        app: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start a run of a job now (a periodic one too, as its concurrency
    /// policy allows).
    Start {
        /// App name.
        app: String,
    },
}

fn ms(v: u64) -> Value {
    if v == 0 { Value::Null } else { json!(v) }
}

/// A run as `--json` prints it.
pub fn run_json(r: &pb::JobRun) -> Value {
    json!({
        "app": r.app,
        "id": r.id,
        "version": r.version,
        "trigger": r.trigger,
        "phase": r.phase,
        "instances": r.instances,
        "done": r.done,
        "started_ms": r.started_ms,
        "ended_ms": ms(r.ended_ms),
        "deadline_ms": ms(r.deadline_ms),
        "message": r.message,
        "skipped": r.skipped,
        "tasks": r.tasks,
    })
}

/// Runs a `berth job` command.
pub async fn run(addr: &str, cmd: JobCmd) -> anyhow::Result<()> {
    match cmd {
        JobCmd::Runs { app, json } => {
            let r = ctl!(
                addr,
                job_runs,
                pb::AppRequest {
                    name: app,
                    request_id: String::new(),
                }
            )?
            .into_inner();
            if crate::output::structured(json) {
                let v = json!({
                    "runs": r.runs.iter().map(run_json).collect::<Vec<_>>(),
                    "next_run_ms": ms(r.next_run_ms),
                });
                crate::output::print(&v)?;
                return Ok(());
            }
            let now = berth_store::state::now_ms();
            let rows = r
                .runs
                .iter()
                .map(|x| {
                    let took = match x.ended_ms {
                        0 => format!("{}s so far", now.saturating_sub(x.started_ms) / 1000),
                        e => format!("{}s", e.saturating_sub(x.started_ms) / 1000),
                    };
                    vec![
                        x.id.to_string(),
                        x.trigger.clone(),
                        x.phase.clone(),
                        format!("{}/{}", x.done, x.instances),
                        format!("{}s ago", now.saturating_sub(x.started_ms) / 1000),
                        took,
                        x.message.clone(),
                    ]
                })
                .collect();
            table(
                &[
                    "RUN", "TRIGGER", "PHASE", "DONE", "STARTED", "TOOK", "MESSAGE",
                ],
                rows,
            );
            if r.next_run_ms != 0 {
                let secs = r.next_run_ms.saturating_sub(now) / 1000;
                println!("next run in {secs}s");
            }
            Ok(())
        }
        JobCmd::Start { app } => {
            let r = ctl!(
                addr,
                start_job,
                pb::AppRequest {
                    name: app.clone(),
                    request_id: request_id(),
                }
            )?
            .into_inner();
            println!(
                "job {app}: run {} started: {} task(s): {}",
                r.id,
                r.instances,
                r.tasks.join(" ")
            );
            Ok(())
        }
    }
}
