//! The servers' HTTP side, on the same port and TLS listener as gRPC:
//! the JSON API under `/v1` (described by `/v1/openapi.json`), the
//! dashboard under `/ui/`, and `/metrics`.
//!
//! The JSON API is not a second implementation: each route calls the
//! `Control` method of the same name (its OpenAPI `operationId`) with the
//! caller the guard established, and answers with that method's message
//! as JSON. The guard finds a route's rule through that name too
//! ([`operation`]), so one table says what every call needs, whichever
//! way it comes.

mod error;
mod ui;
mod v1;
mod v1_stream;

use std::sync::{Arc, LazyLock};

use axum::extract::FromRequestParts;
use http::request::Parts;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;

use crate::Api;
use crate::auth::{Caller, NAMESPACE_HEADER};

/// The session cookie the dashboard keeps the token in.
pub const SESSION_COOKIE: &str = "berth_token";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Berth",
        description = "Berth's HTTP/JSON API. Every operation is the gRPC `Control` method of the same name (operationId), with the same authorization: a token as `Authorization: Bearer SECRET` (or the dashboard's session cookie), the namespace as the `namespace` query parameter or the `berth-namespace` header. Messages are the gRPC messages as JSON: proto field names, enums as their numbers, absent fields their defaults.",
        license(name = "Apache-2.0")
    ),
    modifiers(&Security),
    components(schemas(ApiError)),
    security(("token" = [])),
    tags(
        (name = "cluster", description = "The cluster at a glance, namespaces, events"),
        (name = "apps", description = "Apps and their deployments"),
        (name = "tasks", description = "Tasks, their placement and logs"),
        (name = "nodes", description = "Nodes and their hardware"),
        (name = "plugins", description = "Scheduling and admission plugins"),
        (name = "operator", description = "Servers, quotas, audit")
    )
)]
struct Doc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "token",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
    }
}

/// The `/v1` routes with their OpenAPI description.
fn v1_routes() -> OpenApiRouter<Api> {
    OpenApiRouter::with_openapi(Doc::openapi())
        .routes(routes!(v1::overview))
        .routes(routes!(v1::list_namespaces))
        .routes(routes!(v1::list_apps, v1::run_app))
        .routes(routes!(v1::remove_app))
        .routes(routes!(v1::scale_app))
        .routes(routes!(v1::stop_app))
        .routes(routes!(v1::deploy_status))
        .routes(routes!(v1::deploy_history))
        .routes(routes!(v1::pause_deploy))
        .routes(routes!(v1::rollback))
        .routes(routes!(v1::job_runs))
        .routes(routes!(v1::list_tasks))
        .routes(routes!(v1::explain))
        .routes(routes!(v1::list_nodes))
        .routes(routes!(v1::get_node))
        .routes(routes!(v1::drain_node))
        .routes(routes!(v1::endpoints))
        .routes(routes!(v1::list_volumes))
        .routes(routes!(v1::list_plugins))
        .routes(routes!(v1::get_plugin))
        .routes(routes!(v1::quota_list))
        .routes(routes!(v1::audit))
        .routes(routes!(v1::server_members))
        .routes(routes!(v1::list_registries))
        .routes(routes!(v1_stream::watch_events))
        .routes(routes!(v1_stream::logs))
}

/// The OpenAPI document of the JSON API (what `/v1/openapi.json`
/// serves; `docs/openapi.json` is a copy, checked by a test).
pub fn openapi() -> &'static utoipa::openapi::OpenApi {
    static DOC: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(|| v1_routes().into_openapi());
    &DOC
}

/// [`openapi`] as pretty JSON.
pub fn openapi_json() -> &'static str {
    static JSON: LazyLock<String> =
        LazyLock::new(|| openapi().to_pretty_json().unwrap_or_default());
    &JSON
}

type Table = matchit::Router<Vec<(http::Method, String)>>;

/// Whether `path` is one of the JSON API's routes (by any method).
fn known_route(path: &str) -> bool {
    TABLE.at(path).is_ok()
}

/// The `Control` method a `/v1` request calls (its `operationId`), if the
/// path and method are known.
pub fn operation(method: &http::Method, path: &str) -> Option<&'static str> {
    let found = TABLE.at(path).ok()?;
    found
        .value
        .iter()
        .find(|(m, _)| m == method)
        .map(|(_, op)| op.as_str())
}

/// The routes of the OpenAPI document, with each method's operation.
static TABLE: LazyLock<Table> = LazyLock::new(|| {
    let mut t = Table::new();
    for (path, item) in &openapi().paths.paths {
        let ops = [
            (http::Method::GET, &item.get),
            (http::Method::POST, &item.post),
            (http::Method::PUT, &item.put),
            (http::Method::DELETE, &item.delete),
        ]
        .into_iter()
        .filter_map(|(m, op)| Some((m, op.as_ref()?.operation_id.clone()?)))
        .collect();
        // Paths come from the route table, which axum accepted.
        let _ = t.insert(path.clone(), ops);
    }
    t
});

/// What an HTTP request asks for (none: a gRPC call): the JSON API's
/// routes map to their `Control` method's rule, the dashboard's files
/// and the OpenAPI document are open, `/metrics` has its own rule. The
/// token comes from `Authorization: Bearer` or the session cookie, the
/// namespace from the `namespace` parameter or the header.
pub fn ask<B>(req: &http::Request<B>) -> Option<crate::auth::Ask> {
    let is_grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let path = req.uri().path();
    if is_grpc || path.starts_with("/berth.v1.") {
        return None;
    }
    let open = "/berth.v1.NodeApi/JoinNode";
    let rule_path = match path {
        "/metrics" => path.to_string(),
        "/" | "/ui" | "/v1/openapi.json" => open.to_string(),
        p if p.starts_with("/ui/") => open.to_string(),
        p if p.starts_with("/v1/") => match operation(req.method(), p) {
            Some(op) => format!("/berth.v1.Control/{op}"),
            // A known route, another method: answered 405 by the router.
            None if known_route(p) => open.to_string(),
            None => format!("/berth.v1.Control/unknown{p}"),
        },
        p => format!("/berth.v1.Control/unknown{p}"),
    };
    let namespace = requested_namespace(req.uri(), req.headers());
    let token = crate::auth::bearer(req.headers())
        .map(str::to_string)
        .or_else(|| session(req.headers()));
    Some(crate::auth::Ask {
        path: rule_path,
        namespace,
        token,
        http: true,
    })
}

/// The `namespace` query parameter, else the `berth-namespace` header.
fn requested_namespace(uri: &http::Uri, headers: &http::HeaderMap) -> Option<String> {
    let from_query = uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "namespace")
            .map(|(_, v)| v.into_owned())
    });
    from_query.or_else(|| {
        headers
            .get(NAMESPACE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    })
}

/// The token in the dashboard's session cookie.
fn session(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty() && v.len() <= 256)
}

/// More metrics for `/metrics` (another exposition, ending `# EOF`).
pub type Extra = Arc<dyn Fn() -> String + Send + Sync>;

/// Everything the servers serve over HTTP.
pub fn router(
    api: Api,
    metrics: Arc<crate::metrics::ServerMetrics>,
    extra: Option<Extra>,
) -> axum::Router {
    let (v1, _) = v1_routes().split_for_parts();
    let (store, plugins) = (api.store.clone(), api.plugins.clone());
    axum::Router::new()
        .merge(v1.with_state(api.clone()))
        .route(
            "/v1/openapi.json",
            axum::routing::get(|| async {
                (
                    [(http::header::CONTENT_TYPE, "application/json")],
                    openapi_json(),
                )
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || {
                let (metrics, store, plugins, extra) = (
                    metrics.clone(),
                    store.clone(),
                    plugins.clone(),
                    extra.clone(),
                );
                async move {
                    let mut text = metrics.render(&store, &plugins).await;
                    if let Some(more) = &extra {
                        // One exposition: the first one's end marker goes.
                        if let Some(body) = text.strip_suffix("# EOF\n") {
                            text = format!("{body}{}", more());
                        }
                    }
                    (
                        [(
                            http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
        .merge(ui::router(api))
}

/// The caller of an HTTP request, as the guard established it, and its
/// namespace: what a gRPC request would carry.
pub(crate) struct Ctx {
    caller: Option<Caller>,
    namespace: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Ctx, ApiError> {
        let caller = parts.extensions.get::<Caller>().cloned();
        let namespace = match &caller {
            Some(c) => Some(c.namespace.clone()),
            None => namespace_of(parts)?,
        };
        Ok(Ctx { caller, namespace })
    }
}

/// The namespace an HTTP request names: the `namespace` query parameter,
/// else the `berth-namespace` header; an invalid one is refused.
pub fn namespace_of(parts: &Parts) -> Result<Option<String>, ApiError> {
    let ns = requested_namespace(&parts.uri, &parts.headers);
    if let Some(n) = &ns {
        berth_model::acl::check_namespace(n)
            .map_err(|e| ApiError::new(tonic::Code::InvalidArgument, e))?;
    }
    Ok(ns)
}

impl Ctx {
    /// A gRPC request for `msg` from this caller.
    pub(crate) fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(c) = &self.caller {
            r.extensions_mut().insert(c.clone());
        }
        if let Some(ns) = &self.namespace
            && let Ok(v) = ns.parse()
        {
            r.metadata_mut().insert(NAMESPACE_HEADER, v);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_a_control_method_with_a_rule() {
        let doc = openapi();
        assert!(doc.paths.paths.len() >= 20);
        for (path, item) in &doc.paths.paths {
            for op in [&item.get, &item.post, &item.put, &item.delete]
                .into_iter()
                .flatten()
            {
                let id = op.operation_id.as_deref().unwrap();
                let (rule, _) = crate::auth::rule(&format!("/berth.v1.Control/{id}"));
                assert_ne!(rule, crate::auth::Rule::Nobody, "{path}: {id}");
            }
        }
        assert_eq!(
            operation(&http::Method::GET, "/v1/tasks"),
            Some("ListTasks")
        );
        assert_eq!(
            operation(&http::Method::POST, "/v1/apps/web/scale"),
            Some("ScaleApp")
        );
        assert_eq!(operation(&http::Method::PUT, "/v1/tasks"), None);
        assert_eq!(operation(&http::Method::GET, "/v1/nope"), None);
    }

    #[test]
    fn the_committed_openapi_document_is_current() {
        let committed = include_str!("../../../../docs/openapi.json");
        assert!(
            committed.trim() == openapi_json().trim(),
            "docs/openapi.json is stale: run `cargo run -p berth-cli -- openapi > docs/openapi.json`"
        );
    }
}
