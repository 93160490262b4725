//! The JSON API's request/response routes: each calls the `Control`
//! method named by its `operation_id` (see the module above).

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use berth_proto as pb;
use berth_proto::control_server::Control;
use http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::{ApiError, Errors};
use super::{Api, Ctx};

/// The longest JSON body accepted (an app spec is at most 1 MiB).
pub const MAX_BODY: usize = 2 << 20;

/// Query parameters, refused with a 400 naming the parameter.
pub(crate) struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Q<T>, ApiError> {
        let q = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Q)
            .map_err(|e| ApiError::bad(format!("query: {}: {}", e.path(), e.inner())))
    }
}

/// A JSON body, refused with a 400 naming the field.
pub(crate) struct J<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for J<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, _: &S) -> Result<J<T>, ApiError> {
        let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|_| ApiError::bad(format!("body: more than {MAX_BODY} bytes")))?;
        let de = &mut serde_json::Deserializer::from_slice(&body);
        serde_path_to_error::deserialize(de)
            .map(J)
            .map_err(|e| ApiError::bad(format!("body: {}: {}", e.path(), e.inner())))
    }
}

/// A JSON body that may be left out (then its default).
pub(crate) struct JD<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for JD<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, s: &S) -> Result<JD<T>, ApiError> {
        let empty = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v == "0")
            || !req.headers().contains_key(http::header::CONTENT_TYPE);
        if empty {
            return Ok(JD(T::default()));
        }
        // `null` is as good as nothing.
        J::<Option<T>>::from_request(req, s)
            .await
            .map(|J(t)| JD(t.unwrap_or_default()))
    }
}

/// The one path parameter of a route, refused with a 400 if unreadable.
pub(crate) struct P(pub String);

impl<S: Send + Sync> FromRequestParts<S> for P {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<P, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, s)
            .await
            .map(|p| P(p.0))
            .map_err(|e| ApiError::bad(format!("path: {e}")))
    }
}

type Answer<T> = Result<Json<T>, ApiError>;

/// The namespace of a namespaced call (default `default`).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Ns {
    /// The namespace (or the `berth-namespace` header).
    #[allow(dead_code)]
    #[param(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    namespace: Option<String>,
}

/// Only one app's.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AppFilter {
    /// An app name (none: every app).
    #[serde(default)]
    #[param(pattern = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)?$")]
    app: String,
}

/// A page of a listing (see `ListTasksRequest`).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// Items at most (0 or none: all).
    #[serde(default)]
    #[param(maximum = 10000)]
    page_size: u32,
    /// The previous answer's `next_page_token` (none: from the start).
    #[serde(default)]
    #[param(max_length = 256)]
    page_token: String,
}

/// Only the nodes whose name starts with `prefix`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct NodeFilter {
    /// The start of a node name.
    #[serde(default)]
    #[param(pattern = r"^[a-z0-9-]{0,63}$")]
    prefix: String,
}

/// `GET /v1/overview` parameters.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct OverviewQuery {
    /// Pending tasks listed (default 50).
    #[serde(default)]
    #[param(maximum = 1000)]
    pending_limit: u32,
}

/// `GET /v1/audit` parameters.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// The newest entries (default: all kept).
    #[serde(default)]
    #[param(maximum = 10000)]
    limit: u32,
}

/// An integer, also when written `3.0` (JSON Schema's integers).
fn integral<'de, D: serde::Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    let v = n
        .as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1.8e19)
                .map(|f| f as u64)
        })
        .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a whole number")))?;
    T::try_from(v).map_err(|_| serde::de::Error::custom(format!("{n} is too large")))
}

#[utoipa::path(get, path = "/v1/overview", operation_id = "Overview", tag = "cluster",
    params(Ns, OverviewQuery),
    responses((status = 200, body = pb::ClusterOverview), Errors))]
pub(crate) async fn overview(
    State(api): State<Api>,
    ctx: Ctx,
    Q(q): Q<OverviewQuery>,
) -> Answer<pb::ClusterOverview> {
    let r = ctx.req(pb::OverviewRequest {
        pending_limit: q.pending_limit,
    });
    Ok(Json(api.overview(r).await?.into_inner()))
}

#[utoipa::path(get, path = "/v1/namespaces", operation_id = "ListNamespaces", tag = "cluster",
    responses((status = 200, body = pb::ListNamespacesResponse), Errors))]
pub(crate) async fn list_namespaces(
    State(api): State<Api>,
    ctx: Ctx,
) -> Answer<pb::ListNamespacesResponse> {
    let r = ctx.req(pb::ListNamespacesRequest {});
    Ok(Json(api.list_namespaces(r).await?.into_inner()))
}

#[utoipa::path(get, path = "/v1/apps", operation_id = "ListApps", tag = "apps", params(Ns),
    responses((status = 200, body = pb::ListAppsResponse), Errors))]
pub(crate) async fn list_apps(State(api): State<Api>, ctx: Ctx) -> Answer<pb::ListAppsResponse> {
    let r = ctx.req(pb::ListAppsRequest {});
    Ok(Json(api.list_apps(r).await?.into_inner()))
}

#[utoipa::path(post, path = "/v1/apps", operation_id = "RunApp", tag = "apps", params(Ns),
    request_body = pb::RunAppRequest,
    responses((status = 200, body = pb::RunAppResponse), Errors))]
pub(crate) async fn run_app(
    State(api): State<Api>,
    ctx: Ctx,
    J(body): J<pb::RunAppRequest>,
) -> Answer<pb::RunAppResponse> {
    Ok(Json(api.run_app(ctx.req(body)).await?.into_inner()))
}

/// A request id, for the calls that take nothing else.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(default)]
pub(crate) struct Idempotent {
    /// Client-generated; a retry with the same id applies once.
    request_id: String,
}

fn app_request(name: String, body: Option<Idempotent>) -> pb::AppRequest {
    pb::AppRequest {
        name,
        request_id: body.map(|b| b.request_id).unwrap_or_default(),
    }
}

#[utoipa::path(delete, path = "/v1/apps/{name}", operation_id = "RemoveApp", tag = "apps",
    params(("name" = String, Path, description = "app name", pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"), Ns),
    responses((status = 200, body = pb::Ack), Errors))]
pub(crate) async fn remove_app(State(api): State<Api>, ctx: Ctx, P(name): P) -> Answer<pb::Ack> {
    let r = ctx.req(app_request(name, None));
    Ok(Json(api.remove_app(r).await?.into_inner()))
}

#[utoipa::path(post, path = "/v1/apps/{name}/stop", operation_id = "StopApp", tag = "apps",
    params(("name" = String, Path, description = "app name", pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"), Ns),
    request_body(content = Option<Idempotent>),
    responses((status = 200, body = pb::Ack), Errors))]
pub(crate) async fn stop_app(
    State(api): State<Api>,
    ctx: Ctx,
    P(name): P,
    JD(body): JD<Idempotent>,
) -> Answer<pb::Ack> {
    let r = ctx.req(app_request(name, Some(body)));
    Ok(Json(api.stop_app(r).await?.into_inner()))
}

/// `POST /v1/apps/{name}/scale`.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct ScaleBody {
    /// The new instance count.
    #[schema(maximum = 1000)]
    #[serde(deserialize_with = "integral")]
    instances: u32,
    #[serde(default)]
    request_id: String,
}

#[utoipa::path(post, path = "/v1/apps/{name}/scale", operation_id = "ScaleApp", tag = "apps",
    params(("name" = String, Path, description = "app name", pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"), Ns),
    request_body = ScaleBody,
    responses((status = 200, body = pb::RunAppResponse), Errors))]
pub(crate) async fn scale_app(
    State(api): State<Api>,
    ctx: Ctx,
    P(name): P,
    J(b): J<ScaleBody>,
) -> Answer<pb::RunAppResponse> {
    let r = ctx.req(pb::ScaleRequest {
        name,
        instances: b.instances,
        request_id: b.request_id,
    });
    Ok(Json(api.scale_app(r).await?.into_inner()))
}

#[utoipa::path(get, path = "/v1/apps/{name}/deployment", operation_id = "DeployStatus", tag = "apps",
    params(("name" = String, Path, description = "app name", pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"), Ns),
    responses((status = 200, body = pb::Deployment), Errors))]
pub(crate) async fn deploy_status(
    State(api): State<Api>,
    ctx: Ctx,
    P(name): P,
) -> Answer<pb::Deployment> {
    let r = ctx.req(app_request(name, None));
    Ok(Json(api.deploy_status(r).await?.into_inner()))
}

#[utoipa::path(get, path = "/v1/apps/{name}/deployments", operation_id = "DeployHistory", tag = "apps",
    params(("name" = String, Path, description = "app name", pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"), Ns),
    responses((status = 200, body = pb::DeployHistoryResponse), Errors))]
pub(crate) async fn deploy_history(
    State(api): State<Api>,
    ctx: Ctx,
    P(name): P,
) -> Answer<pb::DeployHistoryResponse> {
    let r = ctx.req(app_request(name, None));
    Ok(Json(api.deploy_history(r).await?.into_inner()))
}

/// `POST /v1/apps/{name}/pause`.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct PauseBody {
    /// True to pause the deployment, false to resume it.
    paused: bool,
    #[serde(default)]
    request_id: String,
}

#[utoipa::path(post, path = "/v1/apps/{name}/pause", operation_id = "PauseDeploy", tag = "apps",
    params(("name" = String, Path, description = "app name", pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"), Ns),
    request_body = PauseBody,
    responses((status = 200, body = pb::Deployment), Errors))]
pub(crate) async fn pause_deploy(
    State(api): State<Api>,
    ctx: Ctx,
    P(name): P,
    J(b): J<PauseBody>,
) -> Answer<pb::Deployment> {
    let r = ctx.req(pb::PauseDeployRequest {
        name,
        paused: b.paused,
        request_id: b.request_id,
    });
    Ok(Json(api.pause_deploy(r).await?.into_inner()))
}

/// `POST /v1/apps/{name}/rollback`.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(default)]
pub(crate) struct RollbackBody {
    /// The version to go back to (0: the last that succeeded).
    #[serde(deserialize_with = "integral")]
    to: u64,
    request_id: String,
}

#[utoipa::path(post, path = "/v1/apps/{name}/rollback", operation_id = "Rollback", tag = "apps",
    params(("name" = String, Path, description = "app name", pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"), Ns),
    request_body(content = Option<RollbackBody>),
    responses((status = 200, body = pb::RunAppResponse), Errors))]
pub(crate) async fn rollback(
    State(api): State<Api>,
    ctx: Ctx,
    P(name): P,
    JD(b): JD<RollbackBody>,
) -> Answer<pb::RunAppResponse> {
    let r = ctx.req(pb::RollbackRequest {
        name,
        to: b.to,
        request_id: b.request_id,
    });
    Ok(Json(api.rollback(r).await?.into_inner()))
}

#[utoipa::path(get, path = "/v1/apps/{name}/runs", operation_id = "JobRuns", tag = "apps",
    params(("name" = String, Path, description = "job name", pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"), Ns),
    responses((status = 200, body = pb::JobRunsResponse), Errors))]
pub(crate) async fn job_runs(
    State(api): State<Api>,
    ctx: Ctx,
    P(name): P,
) -> Answer<pb::JobRunsResponse> {
    let r = ctx.req(app_request(name, None));
    Ok(Json(api.job_runs(r).await?.into_inner()))
}

#[utoipa::path(get, path = "/v1/tasks", operation_id = "ListTasks", tag = "tasks",
    params(AppFilter, PageQuery, Ns),
    responses((status = 200, body = pb::ListTasksResponse), Errors))]
pub(crate) async fn list_tasks(
    State(api): State<Api>,
    ctx: Ctx,
    Q(q): Q<AppFilter>,
    Q(page): Q<PageQuery>,
) -> Answer<pb::ListTasksResponse> {
    let r = ctx.req(pb::ListTasksRequest {
        app: q.app,
        page_size: page.page_size,
        page_token: page.page_token,
    });
    Ok(Json(api.list_tasks(r).await?.into_inner()))
}

#[utoipa::path(get, path = "/v1/tasks/{id}/explain", operation_id = "Explain", tag = "tasks",
    params(("id" = String, Path, description = "task id"), Ns),
    responses((status = 200, body = pb::Explanation), Errors))]
pub(crate) async fn explain(
    State(api): State<Api>,
    ctx: Ctx,
    P(task): P,
) -> Answer<pb::Explanation> {
    let r = ctx.req(pb::ExplainRequest { task });
    Ok(Json(api.explain(r).await?.into_inner()))
}

#[utoipa::path(get, path = "/v1/nodes", operation_id = "ListNodes", tag = "nodes",
    params(NodeFilter, PageQuery),
    responses((status = 200, body = pb::ListNodesResponse), Errors))]
pub(crate) async fn list_nodes(
    State(api): State<Api>,
    ctx: Ctx,
    Q(f): Q<NodeFilter>,
    Q(page): Q<PageQuery>,
) -> Answer<pb::ListNodesResponse> {
    let r = ctx.req(pb::ListNodesRequest {
        page_size: page.page_size,
        page_token: page.page_token,
        prefix: f.prefix,
    });
    Ok(Json(api.list_nodes(r).await?.into_inner()))
}

#[utoipa::path(get, path = "/v1/nodes/{name}", operation_id = "GetNode", tag = "nodes",
    params(("name" = String, Path, description = "node name", pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")),
    responses((status = 200, body = pb::Node), Errors))]
pub(crate) async fn get_node(State(api): State<Api>, ctx: Ctx, P(name): P) -> Answer<pb::Node> {
    let r = ctx.req(pb::GetNodeRequest { name });
    Ok(Json(api.get_node(r).await?.into_inner()))
}

/// `POST /v1/nodes/{name}/drain`.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct DrainBody {
    /// True to drain, false to take work again.
    drain: bool,
    #[serde(default)]
    request_id: String,
}

#[utoipa::path(post, path = "/v1/nodes/{name}/drain", operation_id = "DrainNode", tag = "nodes",
    params(("name" = String, Path, description = "node name", pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")),
    request_body = DrainBody,
    responses((status = 200, body = pb::Ack), Errors))]
pub(crate) async fn drain_node(
    State(api): State<Api>,
    ctx: Ctx,
    P(name): P,
    J(b): J<DrainBody>,
) -> Answer<pb::Ack> {
    let r = ctx.req(pb::DrainRequest {
        name,
        drain: b.drain,
        request_id: b.request_id,
    });
    Ok(Json(api.drain_node(r).await?.into_inner()))
}

#[utoipa::path(get, path = "/v1/endpoints", operation_id = "Endpoints", tag = "tasks",
    params(AppFilter, Ns),
    responses((status = 200, body = pb::EndpointsResponse), Errors))]
pub(crate) async fn endpoints(
    State(api): State<Api>,
    ctx: Ctx,
    Q(q): Q<AppFilter>,
) -> Answer<pb::EndpointsResponse> {
    let r = ctx.req(pb::EndpointsRequest { app: q.app });
    Ok(Json(api.endpoints(r).await?.into_inner()))
}

#[utoipa::path(get, path = "/v1/volumes", operation_id = "ListVolumes", tag = "tasks",
    params(("node" = Option<String>, Query, description = "only this node's"), Ns),
    responses((status = 200, body = pb::ListVolumesResponse), Errors))]
pub(crate) async fn list_volumes(
    State(api): State<Api>,
    ctx: Ctx,
    Q(q): Q<pb::ListVolumesRequest>,
) -> Answer<pb::ListVolumesResponse> {
    Ok(Json(api.list_volumes(ctx.req(q)).await?.into_inner()))
}

#[utoipa::path(get, path = "/v1/plugins", operation_id = "ListPlugins", tag = "plugins",
    responses((status = 200, body = pb::ListPluginsResponse), Errors))]
pub(crate) async fn list_plugins(
    State(api): State<Api>,
    ctx: Ctx,
) -> Answer<pb::ListPluginsResponse> {
    let r = ctx.req(pb::ListPluginsRequest {});
    Ok(Json(api.list_plugins(r).await?.into_inner()))
}

#[utoipa::path(get, path = "/v1/plugins/{name}", operation_id = "GetPlugin", tag = "plugins",
    params(("name" = String, Path, description = "plugin name")),
    responses((status = 200, body = pb::PluginInfo), Errors))]
pub(crate) async fn get_plugin(
    State(api): State<Api>,
    ctx: Ctx,
    P(name): P,
) -> Answer<pb::PluginInfo> {
    let r = ctx.req(pb::PluginRequest {
        name,
        request_id: String::new(),
    });
    Ok(Json(api.get_plugin(r).await?.into_inner()))
}

#[utoipa::path(get, path = "/v1/quotas", operation_id = "QuotaList", tag = "operator",
    responses((status = 200, body = pb::Quotas), Errors))]
pub(crate) async fn quota_list(State(api): State<Api>, ctx: Ctx) -> Answer<pb::Quotas> {
    let r = ctx.req(pb::AclListRequest {});
    Ok(Json(api.quota_list(r).await?.into_inner()))
}

#[utoipa::path(get, path = "/v1/audit", operation_id = "Audit", tag = "operator",
    params(AuditQuery),
    responses((status = 200, body = pb::AuditLog), Errors))]
pub(crate) async fn audit(
    State(api): State<Api>,
    ctx: Ctx,
    Q(q): Q<AuditQuery>,
) -> Answer<pb::AuditLog> {
    let r = ctx.req(pb::AuditRequest { limit: q.limit });
    Ok(Json(api.audit(r).await?.into_inner()))
}

#[utoipa::path(get, path = "/v1/servers", operation_id = "ServerMembers", tag = "operator",
    responses((status = 200, body = pb::MembersResponse), Errors))]
pub(crate) async fn server_members(
    State(api): State<Api>,
    ctx: Ctx,
) -> Answer<pb::MembersResponse> {
    let r = ctx.req(pb::MembersRequest {});
    Ok(Json(api.server_members(r).await?.into_inner()))
}

#[utoipa::path(get, path = "/v1/registries", operation_id = "ListRegistries", tag = "operator",
    responses((status = 200, body = pb::ListRegistriesResponse), Errors))]
pub(crate) async fn list_registries(
    State(api): State<Api>,
    ctx: Ctx,
) -> Answer<pb::ListRegistriesResponse> {
    let r = ctx.req(pb::ListRegistriesRequest {});
    Ok(Json(api.list_registries(r).await?.into_inner()))
}
