//! `berth deploy status|history|pause|resume`, `berth rollback`, and the
//! wait `berth run` does for its deployment (a live bar on a terminal,
//! plain lines otherwise).

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::bail;
use berth_model::deploy::Phase;
use berth_proto as pb;
use berth_proto::typed;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::{ctl, request_id};
use crate::output::table;

/// `berth deploy ...`.
#[derive(Subcommand)]
pub enum DeployCmd {
    /// The app's current deployment: version, phase, counts.
    Status {
        /// App name.
        app: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The app's kept deployments, newest first.
    History {
        /// App name.
        app: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Hold the running deployment: nothing is started or retired.
    Pause {
        /// App name.
        app: String,
    },
    /// Carry a paused deployment on (its deadline starts again).
    Resume {
        /// App name.
        app: String,
    },
}

/// How often a waiting `berth run` asks.
const POLL: Duration = Duration::from_millis(300);

fn phase(d: &pb::Deployment) -> anyhow::Result<Phase> {
    typed::phase_from_wire(d.phase).map_err(anyhow::Error::msg)
}

/// A deployment as `--json` prints it.
pub fn deployment_json(d: &pb::Deployment) -> Value {
    let ms = |v: u64| if v == 0 { Value::Null } else { json!(v) };
    json!({
        "app": d.app,
        "id": d.id,
        "version": d.version,
        "trigger": d.trigger,
        "rollback_of": ms(d.rollback_of),
        "automatic": d.automatic,
        "phase": phase(d).map(Phase::as_str).unwrap_or("unknown"),
        "message": d.message,
        "image": d.image,
        "started_ms": d.started_ms,
        "ended_ms": ms(d.ended_ms),
        "deadline_ms": d.deadline_ms,
        "wanted": d.wanted,
        "current": d.current,
        "new": {"total": d.new_total, "ready": d.new_ready},
        "old": {"total": d.old_total, "ready": d.old_ready},
        "rollback": d.rollback.as_deref().map(deployment_json),
    })
}

/// One line of progress: `3/4 new ready, 1 old left`.
fn counts(d: &pb::Deployment) -> String {
    format!(
        "{}/{} new ready, {} old left",
        d.new_ready, d.wanted, d.old_total
    )
}

fn ago(ms: u64) -> String {
    let now = berth_store::state::now_ms();
    format!("{}s", now.saturating_sub(ms) / 1000)
}

/// Runs a `berth deploy` command.
pub async fn run(addr: &str, cmd: DeployCmd) -> anyhow::Result<()> {
    match cmd {
        DeployCmd::Status { app, json } => {
            let d = status(addr, &app).await?;
            if crate::output::structured(json) {
                crate::output::print(&deployment_json(&d))?;
                return Ok(());
            }
            let p = phase(&d)?;
            println!(
                "app {}  deployment {}  version {} ({})  {}",
                d.app,
                d.id,
                d.version,
                d.trigger,
                p.as_str()
            );
            println!("image    {}", d.image);
            if d.current {
                println!("progress {}", counts(&d));
            }
            println!("started  {} ago", ago(d.started_ms));
            if !d.message.is_empty() {
                println!("message  {}", d.message);
            }
            if let Some(r) = &d.rollback {
                println!(
                    "rollback deployment {} to version {}: {}; {}",
                    r.id,
                    r.version,
                    phase(r)?.as_str(),
                    counts(r)
                );
            }
            Ok(())
        }
        DeployCmd::History { app, json } => {
            let h = ctl!(
                addr,
                deploy_history,
                pb::AppRequest {
                    name: app,
                    request_id: String::new(),
                }
            )?
            .into_inner();
            if crate::output::structured(json) {
                let v: Vec<Value> = h.deployments.iter().map(deployment_json).collect();
                crate::output::print(&v)?;
                return Ok(());
            }
            let rows = h
                .deployments
                .iter()
                .map(|d| {
                    vec![
                        d.id.to_string(),
                        d.version.to_string(),
                        d.trigger.clone(),
                        phase(d).map(Phase::as_str).unwrap_or("unknown").into(),
                        d.wanted.to_string(),
                        format!("{} ago", ago(d.started_ms)),
                        d.image.clone(),
                        d.message.clone(),
                    ]
                })
                .collect();
            let headers = [
                "ID", "VERSION", "TRIGGER", "PHASE", "WANTED", "STARTED", "IMAGE", "MESSAGE",
            ];
            table(&headers, rows);
            Ok(())
        }
        DeployCmd::Pause { app } => pause(addr, &app, true).await,
        DeployCmd::Resume { app } => pause(addr, &app, false).await,
    }
}

async fn status(addr: &str, app: &str) -> anyhow::Result<pb::Deployment> {
    Ok(ctl!(
        addr,
        deploy_status,
        pb::AppRequest {
            name: app.into(),
            request_id: String::new(),
        }
    )?
    .into_inner())
}

async fn pause(addr: &str, app: &str, paused: bool) -> anyhow::Result<()> {
    let d = ctl!(
        addr,
        pause_deploy,
        pb::PauseDeployRequest {
            name: app.into(),
            paused,
            request_id: request_id(),
        }
    )?
    .into_inner();
    println!(
        "app {app}: deployment {} (version {}) {}; {}",
        d.id,
        d.version,
        phase(&d)?.as_str(),
        counts(&d)
    );
    Ok(())
}

/// `berth rollback APP [--to VERSION] [--detach]`.
pub async fn rollback(addr: &str, app: &str, to: Option<u64>, detach: bool) -> anyhow::Result<()> {
    let r = ctl!(
        addr,
        rollback,
        pb::RollbackRequest {
            name: app.into(),
            to: to.unwrap_or(0),
            request_id: request_id(),
        }
    )?
    .into_inner();
    println!(
        "app {app}: rolling back to version {} (deployment {})",
        r.version, r.deployment
    );
    if detach {
        return Ok(());
    }
    wait(addr, app, r.deployment).await
}

/// The deployment `id` of `app` as the history has it.
async fn find(addr: &str, app: &str, id: u64) -> anyhow::Result<(pb::Deployment, pb::Deployment)> {
    let h = ctl!(
        addr,
        deploy_history,
        pb::AppRequest {
            name: app.into(),
            request_id: String::new(),
        }
    )?
    .into_inner();
    let Some(current) = h.deployments.first().cloned() else {
        bail!("{app} has no deployment");
    };
    let Some(mine) = h.deployments.into_iter().find(|d| d.id == id) else {
        bail!("deployment {id} of {app} is no longer kept");
    };
    Ok((mine, current))
}

/// Waits for deployment `id` of `app` to end, showing its progress; an
/// automatic rollback is followed to its end. Ok only if it succeeded.
pub async fn wait(addr: &str, app: &str, id: u64) -> anyhow::Result<()> {
    let tty = std::io::stderr().is_terminal();
    let bar = tty.then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} deployment {prefix} [{bar:30}] {pos}/{len} new ready  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b.enable_steady_tick(Duration::from_millis(120));
        b
    });
    let mut last = String::new();
    let mut watched = id;
    let outcome = loop {
        let (mine, current) = find(addr, app, watched).await?;
        let p = phase(&mine)?;
        // Progress is counted on the current deployment.
        let shown = if current.id == mine.id {
            &mine
        } else {
            &current
        };
        let line = format!(
            "deployment {} (version {}): {}",
            shown.id,
            shown.version,
            counts(shown)
        );
        match &bar {
            Some(b) => {
                b.set_prefix(shown.id.to_string());
                b.set_length(u64::from(shown.wanted));
                b.set_position(u64::from(shown.new_ready));
                b.set_message(format!("{} old left", shown.old_total));
            }
            None if line != last => eprintln!("{line}"),
            None => {}
        }
        last = line;
        match p {
            Phase::Running | Phase::Paused => {}
            Phase::RolledBack if current.id != mine.id && phase(&current)?.is_active() => {
                if watched == id {
                    eprintln!("deployment {id} failed: {}", mine.message);
                    eprintln!("rolling back (deployment {})", current.id);
                }
                watched = current.id;
                continue;
            }
            _ => break (mine, p),
        }
        tokio::time::sleep(POLL).await;
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let (d, p) = outcome;
    if watched != id {
        // We followed an automatic rollback to its end.
        let (first, _) = find(addr, app, id).await?;
        bail!(
            "deployment {id} {}: {} (the rollback, deployment {}, {})",
            phase(&first)?.as_str(),
            first.message,
            d.id,
            p.as_str()
        );
    }
    match p {
        Phase::Succeeded => {
            println!(
                "deployment {} of {app} succeeded: version {}, {} instances ready",
                d.id, d.version, d.wanted
            );
            Ok(())
        }
        _ => bail!("deployment {} of {app} {}: {}", d.id, p.as_str(), d.message),
    }
}
