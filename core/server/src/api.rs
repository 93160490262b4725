//! `Control`, the service the CLI uses (`NodeApi`, for agents, is in
//! `api_node.rs`; plugins in `api_plugins.rs`).

use std::pin::Pin;
use std::sync::Arc;

use berth_model::spec::valid_name;
use berth_proto as pb;
use berth_proto::control_server::Control;
use berth_store::{Command, Envelope, MAX_REQUEST_ID, Outcome, Store};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::assign;
use crate::liveness::Liveness;

/// Shared server state behind both services.
#[derive(Clone)]
pub struct Api {
    pub(crate) store: Store,
    /// Heartbeats received and the pacing handed out.
    pub(crate) liveness: Arc<Liveness>,
    /// Recent scheduling decisions, with per-node detail.
    pub(crate) explanations: crate::scheduler::Explanations,
    /// The plugins this server runs.
    pub(crate) plugins: Arc<crate::plugins::PluginSet>,
    /// Routes changes to the nodes' assignment streams.
    pub(crate) router: assign::Router,
    /// The range node bridge subnets come from (proposed with the first
    /// registration).
    pub(crate) node_subnets: String,
    /// Pins image tags to digests.
    pub(crate) registry: Arc<berth_image::registry::Registry>,
    /// Where host-path volumes may come from (none: nowhere).
    pub(crate) host_volume_root: Option<String>,
    /// Seals secrets before they are proposed.
    pub(crate) secrets: Option<Arc<crate::secrets::SecretBox>>,
    /// TLS for dialing agents (logs, exec, images) and other servers.
    pub(crate) agent_tls: Option<tonic::transport::ClientTlsConfig>,
    /// The CA that signs joining agents' certificates.
    pub(crate) join_ca: Option<Arc<crate::api_acl::JoinCa>>,
    /// Where denials and writes go.
    pub(crate) auditor: crate::audit::Auditor,
    /// The event stream's history and live feed.
    pub(crate) events: Arc<crate::events::EventLog>,
    /// This server's Prometheus metrics.
    pub(crate) metrics: Arc<crate::metrics::ServerMetrics>,
}

/// The most status reports one request may carry.
pub const MAX_STATUSES: usize = 100_000;
/// The longest task message a node may report (bytes).
pub const MAX_TASK_MESSAGE: usize = 4096;
/// The most CPU a node may register: 100,000 cores.
pub const MAX_NODE_CPU_MILLIS: u64 = 100_000_000;
/// The most memory a node may register: 64 PiB.
pub const MAX_NODE_MEMORY: u64 = 64 << 50;
/// The most labels a node may register.
pub const MAX_LABELS: usize = 256;

pub(crate) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// A client's request id: empty means none; longer than
/// [`MAX_REQUEST_ID`] is refused.
pub(crate) fn request_id(id: String) -> Result<Option<String>, Status> {
    if id.len() > MAX_REQUEST_ID {
        return Err(Status::invalid_argument(format!(
            "request_id: {} bytes, more than {MAX_REQUEST_ID}",
            id.len()
        )));
    }
    Ok((!id.is_empty()).then_some(id))
}

impl Api {
    pub(crate) async fn commit(
        &self,
        request_id: Option<String>,
        command: Command,
    ) -> Result<(u64, Outcome), Status> {
        if let Some(id) = &request_id
            && self.store.read().request_reused(id, &command)
        {
            return Err(Status::already_exists(format!(
                "request_id: {id:?} was already used for a different request"
            )));
        }
        let t0 = std::time::Instant::now();
        let (index, outcome) = self
            .store
            .propose(Envelope {
                at_ms: 0,
                request_id,
                command,
            })
            .await
            .map_err(|e| self.store_status(e))?;
        self.metrics
            .commit_seconds
            .observe(t0.elapsed().as_secs_f64());
        if let Outcome::Rejected(why) = &outcome {
            return Err(Status::failed_precondition(why.clone()));
        }
        Ok((index, outcome))
    }
}

impl Api {
    /// Refuses, before proposing, a change to an app that does not exist
    /// (unless it is a retry of a request that already went through).
    /// Judged on the leader only, after a read barrier (a follower, or a
    /// leader that has not applied all it committed, could lag), so a
    /// follower still redirects the client.
    pub(crate) async fn known_app(&self, name: &str, rid: Option<&str>) -> Result<(), Status> {
        self.refuse_early(rid, |s| {
            (!s.apps.contains_key(name)).then(|| format!("no app named {name}"))
        })
        .await
    }

    /// Refuses, before proposing, a command the state machine would
    /// refuse (`why` says why, judged on the current state), unless it is
    /// a retry of a request that already went through. Judged on the
    /// leader only, after a read barrier; without one (a follower, or no
    /// quorum) the proposal decides, and a follower redirects.
    pub(crate) async fn refuse_early(
        &self,
        rid: Option<&str>,
        why: impl Fn(&berth_store::ClusterState) -> Option<String>,
    ) -> Result<(), Status> {
        let refusal = |api: &Api| {
            let state = api.store.read();
            if rid.is_some_and(|id| state.outcome_of(id).is_some()) {
                return None;
            }
            why(&state)
        };
        if !self.store.is_leader() || refusal(self).is_none() {
            return Ok(());
        }
        if self.store.read_barrier().await.is_err() {
            // No barrier: let the proposal decide (and redirect).
            return Ok(());
        }
        match refusal(self) {
            Some(why) => Err(Status::failed_precondition(why)),
            None => Ok(()),
        }
    }
}

impl Api {
    /// The answer to a change of app `name`: its version and the tasks of
    /// that version meant to run.
    pub(crate) fn app_response(&self, name: String, outcome: Outcome) -> pb::RunAppResponse {
        let (version, changed) = match outcome {
            Outcome::App { version, changed } => (version, changed),
            _ => (0, false),
        };
        let state = self.store.read();
        let tasks = state
            .tasks_of(&name)
            .filter(|t| t.version == version && t.desired == berth_model::task::Desired::Run)
            .map(|t| t.id.clone())
            .collect();
        let deployment = state
            .apps
            .get(&name)
            .and_then(|a| a.deployment())
            .map_or(0, |d| d.id);
        pb::RunAppResponse {
            name,
            version,
            changed,
            tasks,
            deployment,
        }
    }
}

pub(crate) fn check_app_name(name: &str) -> Result<(), Status> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "name: {name:?} is not a valid app name"
        )))
    }
}

#[tonic::async_trait]
impl Control for Api {
    type LogsStream = BoxStream<pb::LogChunk>;

    async fn logs(
        &self,
        req: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        self.logs_of(req).await
    }

    type ExecStream = BoxStream<pb::ExecOutput>;

    async fn exec(
        &self,
        req: Request<tonic::Streaming<pb::ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        self.exec_of(req).await
    }

    async fn import_image(
        &self,
        req: Request<tonic::Streaming<pb::ImageUpload>>,
    ) -> Result<Response<pb::ImageSummary>, Status> {
        self.import_image_of(req).await
    }

    async fn list_images(
        &self,
        req: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        self.list_images_of(req).await
    }

    async fn acl_bootstrap(
        &self,
        req: Request<pb::AclBootstrapRequest>,
    ) -> Result<Response<pb::AclTokenSecret>, Status> {
        self.acl_bootstrap_of(req).await
    }

    async fn acl_policy_apply(
        &self,
        req: Request<pb::AclPolicyRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.acl_policy_apply_of(req).await
    }

    async fn acl_policy_delete(
        &self,
        req: Request<pb::AclNameRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.acl_policy_delete_of(req).await
    }

    async fn acl_policy_list(
        &self,
        req: Request<pb::AclListRequest>,
    ) -> Result<Response<pb::AclPolicies>, Status> {
        self.acl_policy_list_of(req).await
    }

    async fn acl_token_create(
        &self,
        req: Request<pb::AclTokenRequest>,
    ) -> Result<Response<pb::AclTokenSecret>, Status> {
        self.acl_token_create_of(req).await
    }

    async fn acl_token_list(
        &self,
        req: Request<pb::AclListRequest>,
    ) -> Result<Response<pb::AclTokens>, Status> {
        self.acl_token_list_of(req).await
    }

    async fn acl_token_revoke(
        &self,
        req: Request<pb::AclNameRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.acl_token_revoke_of(req).await
    }

    async fn audit(
        &self,
        req: Request<pb::AuditRequest>,
    ) -> Result<Response<pb::AuditLog>, Status> {
        self.audit_of(req).await
    }

    async fn quota_set(&self, req: Request<pb::QuotaRequest>) -> Result<Response<pb::Ack>, Status> {
        self.quota_set_of(req).await
    }

    async fn quota_list(
        &self,
        req: Request<pb::AclListRequest>,
    ) -> Result<Response<pb::Quotas>, Status> {
        self.quota_list_of(req).await
    }

    async fn node_token_create(
        &self,
        req: Request<pb::NodeTokenRequest>,
    ) -> Result<Response<pb::AclTokenSecret>, Status> {
        self.node_token_create_of(req).await
    }

    async fn overview(
        &self,
        req: Request<pb::OverviewRequest>,
    ) -> Result<Response<pb::ClusterOverview>, Status> {
        self.overview_of(req).await
    }

    async fn list_namespaces(
        &self,
        req: Request<pb::ListNamespacesRequest>,
    ) -> Result<Response<pb::ListNamespacesResponse>, Status> {
        self.list_namespaces_of(req).await
    }

    type SnapshotSaveStream = BoxStream<pb::BackupChunk>;

    async fn snapshot_save(
        &self,
        req: Request<pb::SnapshotSaveRequest>,
    ) -> Result<Response<Self::SnapshotSaveStream>, Status> {
        self.snapshot_save_of(req).await
    }

    type WatchEventsStream = BoxStream<pb::ClusterEvent>;

    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        self.watch_events_of(req).await
    }

    async fn server_members(
        &self,
        req: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        <Api as berth_proto::membership_server::Membership>::members(self, req).await
    }

    async fn server_join(
        &self,
        req: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        <Api as berth_proto::membership_server::Membership>::join(self, req).await
    }

    async fn server_leave(
        &self,
        req: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        <Api as berth_proto::membership_server::Membership>::leave(self, req).await
    }

    async fn server_transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        <Api as berth_proto::membership_server::Membership>::transfer_leader(self, req).await
    }

    async fn deploy_status(
        &self,
        req: Request<pb::AppRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        self.deploy_status_of(req).await
    }

    async fn deploy_history(
        &self,
        req: Request<pb::AppRequest>,
    ) -> Result<Response<pb::DeployHistoryResponse>, Status> {
        self.deploy_history_of(req).await
    }

    async fn pause_deploy(
        &self,
        req: Request<pb::PauseDeployRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        self.pause_deploy_of(req).await
    }

    async fn rollback(
        &self,
        req: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::RunAppResponse>, Status> {
        self.rollback_of(req).await
    }

    async fn job_runs(
        &self,
        req: Request<pb::AppRequest>,
    ) -> Result<Response<pb::JobRunsResponse>, Status> {
        self.job_runs_of(req).await
    }

    async fn start_job(
        &self,
        req: Request<pb::AppRequest>,
    ) -> Result<Response<pb::JobRun>, Status> {
        self.start_job_of(req).await
    }

    async fn registry_login(
        &self,
        req: Request<pb::RegistryLoginRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.registry_login_of(req).await
    }

    async fn registry_logout(
        &self,
        req: Request<pb::RegistryRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.registry_logout_of(req).await
    }

    async fn list_registries(
        &self,
        req: Request<pb::ListRegistriesRequest>,
    ) -> Result<Response<pb::ListRegistriesResponse>, Status> {
        self.list_registries_of(req).await
    }

    async fn list_volumes(
        &self,
        req: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, Status> {
        self.list_volumes_of(req).await
    }

    async fn remove_volume(
        &self,
        req: Request<pb::VolumeRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.remove_volume_of(req).await
    }

    async fn endpoints(
        &self,
        req: Request<pb::EndpointsRequest>,
    ) -> Result<Response<pb::EndpointsResponse>, Status> {
        self.endpoints_of(req).await
    }

    type WatchEndpointsStream = BoxStream<pb::EndpointEvent>;

    async fn watch_endpoints(
        &self,
        req: Request<pb::EndpointsRequest>,
    ) -> Result<Response<Self::WatchEndpointsStream>, Status> {
        self.watch_endpoints_of(req).await
    }

    async fn install_plugin(
        &self,
        req: Request<pb::PutPluginRequest>,
    ) -> Result<Response<pb::PluginInfo>, Status> {
        self.put_plugin(req, false).await
    }

    async fn upgrade_plugin(
        &self,
        req: Request<pb::PutPluginRequest>,
    ) -> Result<Response<pb::PluginInfo>, Status> {
        self.put_plugin(req, true).await
    }

    async fn rollback_plugin(
        &self,
        req: Request<pb::PluginRequest>,
    ) -> Result<Response<pb::PluginInfo>, Status> {
        let name = self.plugin_change(req, false).await?;
        self.plugin_info(&name)
    }

    async fn remove_plugin(
        &self,
        req: Request<pb::PluginRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.plugin_change(req, true).await?;
        Ok(Response::new(pb::Ack {}))
    }

    async fn list_plugins(
        &self,
        req: Request<pb::ListPluginsRequest>,
    ) -> Result<Response<pb::ListPluginsResponse>, Status> {
        self.barrier(&req).await?;
        Ok(Response::new(self.plugin_list()))
    }

    async fn get_plugin(
        &self,
        req: Request<pb::PluginRequest>,
    ) -> Result<Response<pb::PluginInfo>, Status> {
        self.barrier(&req).await?;
        self.plugin_info(&req.into_inner().name)
    }

    async fn run_app(
        &self,
        req: Request<pb::RunAppRequest>,
    ) -> Result<Response<pb::RunAppResponse>, Status> {
        self.run_app_of(req).await
    }

    async fn list_apps(
        &self,
        req: Request<pb::ListAppsRequest>,
    ) -> Result<Response<pb::ListAppsResponse>, Status> {
        self.list_apps_of(req).await
    }

    async fn scale_app(
        &self,
        req: Request<pb::ScaleRequest>,
    ) -> Result<Response<pb::RunAppResponse>, Status> {
        self.scope_app(&req, &req.get_ref().name)?;
        let req = req.into_inner();
        check_app_name(&req.name)?;
        let rid = request_id(req.request_id)?;
        let (name, instances) = (req.name, req.instances);
        if instances > berth_model::spec::MAX_INSTANCES {
            return Err(Status::invalid_argument(format!(
                "instances: {instances} is more than the maximum of {}",
                berth_model::spec::MAX_INSTANCES
            )));
        }
        self.refuse_early(rid.as_deref(), |s| s.scale_refusal(&name, instances))
            .await?;
        let (_, outcome) = self
            .commit(
                rid,
                Command::ScaleApp {
                    name: name.clone(),
                    instances,
                },
            )
            .await?;
        Ok(Response::new(self.app_response(name, outcome)))
    }

    async fn stop_app(&self, req: Request<pb::AppRequest>) -> Result<Response<pb::Ack>, Status> {
        self.scope_app(&req, &req.get_ref().name)?;
        let req = req.into_inner();
        check_app_name(&req.name)?;
        let rid = request_id(req.request_id)?;
        self.known_app(&req.name, rid.as_deref()).await?;
        self.commit(rid, Command::StopApp { name: req.name })
            .await?;
        Ok(Response::new(pb::Ack {}))
    }

    async fn remove_app(&self, req: Request<pb::AppRequest>) -> Result<Response<pb::Ack>, Status> {
        self.scope_app(&req, &req.get_ref().name)?;
        let req = req.into_inner();
        check_app_name(&req.name)?;
        let rid = request_id(req.request_id)?;
        self.known_app(&req.name, rid.as_deref()).await?;
        self.commit(rid, Command::RemoveApp { name: req.name })
            .await?;
        Ok(Response::new(pb::Ack {}))
    }

    async fn list_tasks(
        &self,
        req: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        self.list_tasks_of(req).await
    }

    type WatchTasksStream = BoxStream<pb::TaskEvent>;

    async fn watch_tasks(
        &self,
        req: Request<pb::WatchTasksRequest>,
    ) -> Result<Response<Self::WatchTasksStream>, Status> {
        self.watch_tasks_of(req).await
    }

    async fn list_nodes(
        &self,
        req: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        self.list_nodes_of(req).await
    }

    async fn explain(
        &self,
        req: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::Explanation>, Status> {
        self.explain_of(req)
    }

    async fn drain_node(
        &self,
        req: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.drain_node_of(req).await
    }

    async fn get_node(
        &self,
        req: Request<pb::GetNodeRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        self.get_node_of(req).await
    }
}
