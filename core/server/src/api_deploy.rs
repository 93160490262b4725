//! The deployment half of the `Control` API: status, history, pause and
//! resume, rollback.

use berth_model::deploy::{Deployment, Trigger};
use berth_proto as pb;
use berth_proto::typed;
use berth_store::{ClusterState, Command, DeployCommand};
use tonic::{Request, Response, Status};

use crate::api::{Api, check_app_name, request_id};

/// App `name` of `state`, or NOT_FOUND naming it.
fn app_in<'a>(state: &'a ClusterState, name: &str) -> Result<&'a berth_store::App, Status> {
    state
        .apps
        .get(name)
        .ok_or_else(|| Status::not_found(format!("no app named {name}")))
}

/// A deployment as the API shows it, with its progress when it is the
/// app's current one.
pub fn deployment(state: &ClusterState, app: &str, d: &Deployment, now_ms: u64) -> pb::Deployment {
    let current = state
        .apps
        .get(app)
        .and_then(|a| a.deployment())
        .is_some_and(|c| c.id == d.id);
    let p = if current {
        crate::deployer::progress(state, app, now_ms).unwrap_or_default()
    } else {
        Default::default()
    };
    let (rollback_of, automatic) = match d.trigger {
        Trigger::Rollback { of, auto } => (of, auto),
        _ => (0, false),
    };
    pb::Deployment {
        app: app.to_string(),
        id: d.id,
        version: d.version,
        trigger: d.trigger.as_str().to_string(),
        rollback_of,
        automatic,
        phase: typed::phase_to_wire(d.phase) as i32,
        message: d.message.clone(),
        started_ms: d.started_ms,
        ended_ms: d.ended_ms.unwrap_or(0),
        deadline_ms: d.deadline_ms,
        image: d.spec.image.clone(),
        wanted: d.spec.instances,
        new_total: p.new_total,
        new_ready: p.new_ready,
        old_total: p.old_total,
        old_ready: p.old_ready,
        current,
        rollback: None,
    }
}

impl Api {
    /// `berth deploy status`: the app's current deployment.
    pub(crate) async fn deploy_status_of(
        &self,
        req: Request<pb::AppRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        self.barrier(&req).await?;
        self.scope_app(&req, &req.get_ref().name)?;
        let name = req.into_inner().name;
        check_app_name(&name)?;
        self.current_deployment(&name).map(Response::new)
    }

    fn current_deployment(&self, name: &str) -> Result<pb::Deployment, Status> {
        let state = self.store.read();
        let app = app_in(&state, name)?;
        let d = app
            .deployment()
            .ok_or_else(|| Status::not_found(format!("{name} has no deployment")))?;
        let now = berth_store::state::now_ms();
        // An automatic rollback is shown under the deployment it undid:
        // that is the one the user started and asks about.
        if let Trigger::Rollback { of, auto: true } = d.trigger
            && let Some(undone) = app.history.iter().find(|h| h.id == of)
        {
            let mut w = deployment(&state, name, undone, now);
            w.rollback = Some(Box::new(deployment(&state, name, d, now)));
            return Ok(w);
        }
        Ok(deployment(&state, name, d, now))
    }

    /// `berth deploy history`: the kept deployments, newest first.
    pub(crate) async fn deploy_history_of(
        &self,
        req: Request<pb::AppRequest>,
    ) -> Result<Response<pb::DeployHistoryResponse>, Status> {
        self.barrier(&req).await?;
        self.scope_app(&req, &req.get_ref().name)?;
        let name = req.into_inner().name;
        check_app_name(&name)?;
        let state = self.store.read();
        let app = app_in(&state, &name)?;
        let now = berth_store::state::now_ms();
        let deployments = app
            .history
            .iter()
            .rev()
            .map(|d| deployment(&state, &name, d, now))
            .collect();
        Ok(Response::new(pb::DeployHistoryResponse { deployments }))
    }

    /// `berth deploy pause|resume`.
    pub(crate) async fn pause_deploy_of(
        &self,
        req: Request<pb::PauseDeployRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        self.scope_app(&req, &req.get_ref().name)?;
        let req = req.into_inner();
        check_app_name(&req.name)?;
        let rid = request_id(req.request_id)?;
        self.known_app(&req.name, rid.as_deref()).await?;
        let cmd = DeployCommand::Pause {
            app: req.name.clone(),
            paused: req.paused,
        };
        self.commit(rid, Command::Deploy(cmd)).await?;
        self.current_deployment(&req.name).map(Response::new)
    }

    /// `berth rollback [--to VERSION]`.
    pub(crate) async fn rollback_of(
        &self,
        req: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::RunAppResponse>, Status> {
        self.scope_app(&req, &req.get_ref().name)?;
        let req = req.into_inner();
        check_app_name(&req.name)?;
        let rid = request_id(req.request_id)?;
        let (name, to) = (req.name, (req.to != 0).then_some(req.to));
        self.refuse_early(rid.as_deref(), |s| s.rollback_target(&name, to).err())
            .await?;
        let cmd = DeployCommand::Rollback {
            app: name.clone(),
            to,
        };
        let (_, outcome) = self.commit(rid, Command::Deploy(cmd)).await?;
        Ok(Response::new(self.app_response(name, outcome)))
    }
}

/// A job run as the API shows it.
fn job_run(state: &ClusterState, app: &str, r: &berth_model::job::JobRun) -> pb::JobRun {
    let mine: Vec<&berth_model::task::Task> = state
        .tasks_of(app)
        .filter(|t| t.run == Some(r.id))
        .collect();
    let done = mine
        .iter()
        .filter(|t| t.state == berth_model::task::TaskState::Exited && t.exit_code == Some(0))
        .count() as u32;
    pb::JobRun {
        app: app.to_string(),
        id: r.id,
        version: r.version,
        trigger: r.trigger.as_str().into(),
        phase: r.phase.as_str().into(),
        instances: r.instances,
        done,
        started_ms: r.started_ms,
        ended_ms: r.ended_ms.unwrap_or(0),
        deadline_ms: r.deadline_ms.unwrap_or(0),
        message: r.message.clone(),
        skipped: r.skipped,
        tasks: mine.iter().map(|t| t.id.clone()).collect(),
    }
}

impl Api {
    /// `berth job runs`.
    pub(crate) async fn job_runs_of(
        &self,
        req: Request<pb::AppRequest>,
    ) -> Result<Response<pb::JobRunsResponse>, Status> {
        self.barrier(&req).await?;
        self.scope_app(&req, &req.get_ref().name)?;
        let name = req.into_inner().name;
        check_app_name(&name)?;
        let state = self.store.read();
        let app = app_in(&state, &name)?;
        if app.spec.kind != berth_model::spec::Kind::Job {
            return Err(Status::failed_precondition(format!(
                "{name} is a service, not a job"
            )));
        }
        let runs = app
            .runs
            .iter()
            .rev()
            .map(|r| job_run(&state, &name, r))
            .collect();
        Ok(Response::new(pb::JobRunsResponse {
            runs,
            next_run_ms: app.next_run_ms.unwrap_or(0),
        }))
    }

    /// `berth job start`.
    pub(crate) async fn start_job_of(
        &self,
        req: Request<pb::AppRequest>,
    ) -> Result<Response<pb::JobRun>, Status> {
        self.scope_app(&req, &req.get_ref().name)?;
        let req = req.into_inner();
        check_app_name(&req.name)?;
        let rid = request_id(req.request_id)?;
        let name = req.name;
        self.refuse_early(rid.as_deref(), |s| s.job_start_refusal(&name))
            .await?;
        let cmd = berth_store::JobCommand::Start {
            app: name.clone(),
            due_ms: None,
        };
        let index = match self.commit(rid, Command::Job(cmd)).await? {
            (_, berth_store::Outcome::App { version, .. }) => version,
            (index, _) => index,
        };
        let state = self.store.read();
        let run = state
            .apps
            .get(&name)
            .and_then(|a| a.runs.iter().find(|r| r.id == index))
            .ok_or_else(|| Status::internal(format!("run {index} of {name} is not recorded")))?;
        Ok(Response::new(job_run(&state, &name, run)))
    }
}
