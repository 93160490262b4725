//! Who may call what: every request is checked before its handler runs.
//!
//! The [`Guard`] layer sits in front of every service of a server. It reads
//! the caller's certificate (mutual TLS: the role and name the cluster CA
//! signed, see `berth_tls::identity`) and, for the `Control` API, its
//! token (`authorization: Bearer SECRET`), finds what the method needs
//! ([`rule`]), refuses what is not granted, and hands the handler a
//! [`Caller`] in the request's extensions. Denials and writes go to the
//! audit log through the [`crate::audit::Auditor`].

use std::sync::Arc;
use std::task::{Context, Poll};

use berth_model::acl::{Area, Level, Need};
use berth_store::Store;
use berth_store::acl::{Denied, Token};
use berth_tls::Role;
use sha2::Digest as _;
use tonic::Status;
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::audit::Auditor;

/// Request metadata naming the namespace of a call (default `default`).
pub const NAMESPACE_HEADER: &str = "berth-namespace";
/// Request metadata naming the node of an image call.
pub const NODE_HEADER: &str = "berth-node";

/// Who is calling, as the guard established it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The certificate's role and name (none: no certificate, only a
    /// join token exchange gets this far).
    pub cert: Option<(Role, String)>,
    /// The token, for `Control` calls.
    pub token: Option<Token>,
    /// The namespace of the call.
    pub namespace: String,
}

impl Caller {
    /// Whether this caller sees every namespace: servers and agents (a
    /// node runs and names every namespace's tasks).
    pub fn sees_all(&self) -> bool {
        matches!(self.cert, Some((Role::Server | Role::Agent, _)))
    }

    /// Who, for the audit log: `client/alice token 0123…`.
    pub fn who(&self) -> String {
        let mut s = match &self.cert {
            Some((r, n)) => format!("{r}/{n}"),
            None => "no certificate".into(),
        };
        if let Some(t) = &self.token {
            s.push_str(&format!(" token {}", t.accessor));
        }
        s
    }
}

/// The caller of `req` (none when the server runs without TLS and ACLs,
/// or is called in-process: everything is allowed).
pub fn caller<T>(req: &tonic::Request<T>) -> Option<&Caller> {
    req.extensions().get::<Caller>()
}

/// The namespace a request is for: the guard's, else the header's, else
/// `default`.
pub fn namespace<T>(req: &tonic::Request<T>) -> Result<String, Status> {
    if let Some(c) = caller(req) {
        return Ok(c.namespace.clone());
    }
    let ns = req
        .metadata()
        .get(NAMESPACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(berth_model::acl::DEFAULT_NAMESPACE);
    berth_model::acl::check_namespace(ns).map_err(Status::invalid_argument)?;
    Ok(ns.to_string())
}

/// Whether `req`'s caller may act as node `node`: its agent certificate
/// names it, or it holds a management token (hollow nodes in benchmarks).
pub fn check_node<T>(req: &tonic::Request<T>, node: &str) -> Result<(), Status> {
    let Some(c) = caller(req) else { return Ok(()) };
    match &c.cert {
        Some((Role::Agent, name)) if name == node => Ok(()),
        _ if c.token.as_ref().is_some_and(|t| t.management) => Ok(()),
        _ => Err(Status::permission_denied(format!(
            "node: {} may not act as node {node}",
            c.who()
        ))),
    }
}

/// Whether `req`'s caller is granted `need` (to check what the guard
/// could not, such as the namespace inside a spec).
pub fn check(store: &Store, req_caller: Option<&Caller>, need: &Need) -> Result<(), Status> {
    let Some(c) = req_caller else { return Ok(()) };
    let Some(t) = &c.token else {
        return Err(Status::permission_denied(format!("{}: no token", c.who())));
    };
    if store.read().acl.allows(t, need) {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "{} is not allowed {need}",
            c.who()
        )))
    }
}

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// A server certificate (raft, joining the servers).
    Servers,
    /// An agent certificate (the handler checks the node name), or a
    /// management token.
    Agents,
    /// Nothing (exchanging a join token for a certificate).
    Anyone,
    /// Any certificate of the cluster (bootstrapping the ACLs, once).
    Certificate,
    /// A token granting a level on the call's namespace.
    Namespace(Level),
    /// A token granting a level on a cluster area.
    Cluster(Area, Level),
    /// An agent's or a server's certificate (the node's DNS follows every
    /// namespace's endpoints), or a token granting the level on the
    /// call's namespace.
    NodesOr(Level),
    /// Any valid token (the handler shows what it grants).
    AnyToken,
    /// Nobody (a method this server does not know).
    Nobody,
}

/// The rule of a gRPC method (`/berth.v1.Control/RunApp`) and whether it
/// writes (writes are audited).
pub fn rule(path: &str) -> (Rule, bool) {
    use Level::*;
    if path == "/metrics" {
        return (Rule::Cluster(Area::Operator, Read), false);
    }
    let Some((service, method)) = path
        .strip_prefix("/berth.v1.")
        .and_then(|p| p.split_once('/'))
    else {
        return (Rule::Nobody, false);
    };
    let ns = |l| (Rule::Namespace(l), l != Read);
    let cl = |a, l| (Rule::Cluster(a, l), l != Read);
    match (service, method) {
        // An agent's own service (`berth dev` serves it beside the
        // servers'): the servers' proxy calls it.
        ("Raft" | "Agent" | "Membership", _) => (Rule::Servers, false),
        ("NodeApi", "JoinNode") => (Rule::Anyone, true),
        ("NodeApi", "Register") => (Rule::Agents, true),
        ("NodeApi", _) => (Rule::Agents, false),
        ("Control", m) => match m {
            "RunApp" | "StopApp" | "ScaleApp" | "RemoveApp" | "PauseDeploy" | "Rollback"
            | "StartJob" | "RemoveVolume" | "Exec" => ns(Write),
            "Endpoints" | "WatchEndpoints" | "ListVolumes" => (Rule::NodesOr(Read), false),
            "ListApps" | "ListTasks" | "WatchTasks" | "DeployStatus" | "DeployHistory"
            | "JobRuns" | "Explain" | "Logs" => ns(Read),
            "ListNodes" | "GetNode" | "ListImages" => cl(Area::Nodes, Read),
            "DrainNode" | "ImportImage" | "NodeTokenCreate" => cl(Area::Nodes, Write),
            "InstallPlugin" | "UpgradePlugin" | "RollbackPlugin" | "RemovePlugin" => {
                cl(Area::Plugins, Write)
            }
            "ListPlugins" | "GetPlugin" => cl(Area::Plugins, Read),
            "RegistryLogin" | "RegistryLogout" => cl(Area::Registries, Write),
            "ListRegistries" => cl(Area::Registries, Read),
            "AclBootstrap" => (Rule::Certificate, true),
            "AclPolicyApply" | "AclPolicyDelete" | "AclTokenCreate" | "AclTokenRevoke" => {
                cl(Area::Operator, Admin)
            }
            "AclPolicyList" | "AclTokenList" => cl(Area::Operator, Admin),
            "Audit" | "QuotaList" | "ServerMembers" => cl(Area::Operator, Read),
            "ServerJoin" | "ServerLeave" | "ServerTransferLeader" => cl(Area::Operator, Write),
            "QuotaSet" => cl(Area::Operator, Write),
            "Overview" | "WatchEvents" => ns(Read),
            // A backup holds every namespace, token hashes and sealed secrets.
            "SnapshotSave" => (Rule::Cluster(Area::Operator, Admin), true),
            "ListNamespaces" => (Rule::AnyToken, false),
            _ => (Rule::Nobody, false),
        },
        _ => (Rule::Nobody, false),
    }
}

/// The SHA-256 of a token secret, hex: what the state keeps.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// A fresh secret (UUID-shaped, 122 random bits) and a 16-hex-digit
/// accessor.
pub fn new_secret() -> Result<(String, String), Status> {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 24];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| Status::internal("no randomness for a token"))?;
    let h = hex::encode(&b[..16]);
    let secret = format!(
        "{}-{}-4{}-a{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    );
    Ok((hex::encode(&b[16..]), secret))
}

/// The bearer token of a request's headers.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let t = v.strip_prefix("Bearer ").unwrap_or(v).trim();
    (!t.is_empty() && t.len() <= 256).then_some(t)
}

/// The most of a refused HTTP request's body read before answering.
const MAX_DRAINED: usize = 1 << 20;

/// What one request asks for, as the guard reads it.
#[derive(Debug, Clone)]
pub struct Ask {
    /// The gRPC method's path (an HTTP route's is its method's, see
    /// [`crate::web::operation`]).
    pub path: String,
    /// The call's namespace (none: `default`).
    pub namespace: Option<String>,
    /// The bearer token, if one came.
    pub token: Option<String>,
    /// An HTTP request (the JSON API, the dashboard, `/metrics`): a token
    /// alone will do, as browsers and Prometheus show no certificate.
    pub http: bool,
}

impl Ask {
    /// A gRPC call's: its path, the `berth-namespace` header, the bearer
    /// token.
    pub fn grpc(path: &str, headers: &http::HeaderMap) -> Ask {
        Ask {
            path: path.to_string(),
            namespace: headers
                .get(NAMESPACE_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            token: bearer(headers).map(str::to_string),
            http: false,
        }
    }
}

/// The decision for one request: the caller it may proceed as, or the
/// status it is refused with.
pub fn decide(
    store: &Store,
    ask: &Ask,
    cert: Option<(Role, String)>,
    now_ms: u64,
) -> Result<Caller, Box<(Caller, Status)>> {
    let path = ask.path.as_str();
    let mut c = Caller {
        cert,
        token: None,
        namespace: ask
            .namespace
            .clone()
            .unwrap_or_else(|| berth_model::acl::DEFAULT_NAMESPACE.to_string()),
    };
    let (rule, _) = rule(path);
    let refuse = |c: Caller, st: Status| Err(Box::new((c, st)));
    let role = c.cert.as_ref().map(|(r, _)| *r);
    let token_only = ask.http && ask.token.is_some();
    if rule != Rule::Anyone && role.is_none() && !token_only {
        return refuse(
            c,
            Status::unauthenticated(if ask.http {
                "no token: log in, or send Authorization: Bearer SECRET"
            } else {
                "no client certificate: every call but JoinNode needs one"
            }),
        );
    }
    // A token, when one came (agents need none; a bad one does not stop
    // the calls that need none: the bootstrap, the join exchange).
    let open = matches!(rule, Rule::Anyone | Rule::Certificate);
    if let Some(secret) = ask.token.as_deref().filter(|_| !open) {
        let state = store.read();
        match state.acl.token(&hash_secret(secret), now_ms) {
            Ok(t) => c.token = Some(t.clone()),
            Err(Denied::Expired) => {
                drop(state);
                return refuse(c, Status::unauthenticated("token: expired"));
            }
            Err(_) => {
                drop(state);
                return refuse(c, Status::unauthenticated("token: unknown or revoked"));
            }
        }
    }
    // Who it is first, then what it names.
    if let Err(e) = berth_model::acl::check_namespace(&c.namespace) {
        return refuse(c, Status::invalid_argument(e));
    }
    let need = match rule {
        Rule::Anyone | Rule::Certificate => return Ok(c),
        Rule::Nobody if ask.http => return refuse(c, Status::not_found("no such route")),
        Rule::Nobody => return refuse(c, Status::unimplemented(format!("{path}: unknown"))),
        Rule::Servers => {
            return if role == Some(Role::Server) {
                Ok(c)
            } else {
                let who = c.who();
                refuse(
                    c,
                    Status::permission_denied(format!("{who}: only servers may call {path}")),
                )
            };
        }
        Rule::Agents => {
            // The handler checks the node name against the certificate.
            let management = c.token.as_ref().is_some_and(|t| t.management);
            return if role == Some(Role::Agent) || role == Some(Role::Server) || management {
                Ok(c)
            } else {
                let who = c.who();
                refuse(
                    c,
                    Status::permission_denied(format!("{who}: only agents may call {path}")),
                )
            };
        }
        Rule::NodesOr(_) if matches!(role, Some(Role::Server | Role::Agent)) => return Ok(c),
        Rule::NodesOr(l) => Need::Namespace(c.namespace.clone(), l),
        Rule::Cluster(a, l) => Need::Cluster(a, l),
        Rule::AnyToken => {
            return match c.token {
                Some(_) => Ok(c),
                None => refuse(
                    c,
                    Status::unauthenticated("no token: set BERTH_TOKEN (or --token)"),
                ),
            };
        }
        Rule::Namespace(l) => Need::Namespace(c.namespace.clone(), l),
    };
    let Some(t) = &c.token else {
        return refuse(
            c,
            Status::unauthenticated("no token: set BERTH_TOKEN (or --token)"),
        );
    };
    if store.read().acl.allows(t, &need) {
        Ok(c)
    } else {
        let who = c.who();
        refuse(
            c,
            Status::permission_denied(format!("{who} is not allowed {need}")),
        )
    }
}

/// The layer in front of a server's services.
#[derive(Clone)]
pub struct Guard {
    store: Store,
    auditor: Auditor,
}

impl Guard {
    /// A guard deciding with `store`'s ACLs, auditing through `auditor`.
    pub fn new(store: Store, auditor: Auditor) -> Guard {
        Guard { store, auditor }
    }
}

impl<S> tower_layer::Layer<S> for Guard {
    type Service = Guarded<S>;
    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            guard: self.clone(),
        }
    }
}

/// A service behind the [`Guard`].
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    guard: Guard,
}

/// The caller's certificate identity from the TLS connection.
fn peer(req: &http::Request<Body>) -> Option<(Role, String)> {
    let info = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>()?;
    let certs = info.peer_certs()?;
    berth_tls::identity(certs.first()?.as_ref())
}

/// A refusal as a plain HTTP answer: for the JSON API the body
/// `{code, message}` it answers every failure with, for `/metrics` and
/// the rest the reason as text.
fn plain(st: &Status, json: bool) -> http::Response<Body> {
    if json {
        let e = crate::web::ApiError::from(st);
        let (parts, body) = axum::response::IntoResponse::into_response(e).into_parts();
        return http::Response::from_parts(parts, Body::new(body));
    }
    let code = match st.code() {
        tonic::Code::Unauthenticated => http::StatusCode::UNAUTHORIZED,
        tonic::Code::PermissionDenied => http::StatusCode::FORBIDDEN,
        tonic::Code::InvalidArgument => http::StatusCode::BAD_REQUEST,
        _ => http::StatusCode::NOT_FOUND,
    };
    let mut r = http::Response::new(Body::new(http_body_util::Full::new(bytes::Bytes::from(
        format!("{}\n", st.message()),
    ))));
    *r.status_mut() = code;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The gRPC status code and message of a response's headers (set there
/// when a call fails before its body: every refusal and most errors).
fn status_of(resp: &http::Response<Body>) -> Option<(i32, String)> {
    let h = resp.headers();
    let code: i32 = h.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let msg = h
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Some((code, msg))
}

/// An HTTP answer's outcome in gRPC terms (7: denied, 16:
/// unauthenticated, 2: another failure), for the audit log.
fn http_outcome(resp: &http::Response<Body>) -> Option<(i32, String)> {
    let s = resp.status();
    match s.as_u16() {
        401 => Some((16, s.to_string())),
        403 => Some((7, s.to_string())),
        400.. => Some((2, s.to_string())),
        _ => None,
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl<S> tower_service::Service<http::Request<Body>> for Guarded<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let ask =
            crate::web::ask(&req).unwrap_or_else(|| Ask::grpc(req.uri().path(), req.headers()));
        let path = ask.path.clone();
        let action = path.strip_prefix("/berth.v1.").unwrap_or(&path).to_string();
        let now = berth_store::command::now_ms();
        let decision = decide(&self.guard.store, &ask, peer(&req), now);
        let auditor = self.guard.auditor.clone();
        let (_, write) = rule(&path);
        match decision {
            Err(refused) => {
                let (c, st) = *refused;
                auditor.record(now, &c, &action, format!("denied: {}", st.message()));
                let grpc = req
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
                let json = path.starts_with("/berth.v1.Control/") && !grpc;
                let body = req.into_body();
                Box::pin(async move {
                    if grpc {
                        return Ok(st.into_http());
                    }
                    // Read what the client sent first (some HTTP/2
                    // clients take a reset of an unread upload for an
                    // error), a little and briefly at most.
                    let drain = http_body_util::BodyExt::collect(http_body_util::Limited::new(
                        body,
                        MAX_DRAINED,
                    ));
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
                    Ok(plain(&st, json))
                })
            }
            Ok(c) => {
                req.extensions_mut().insert(c.clone());
                let fut = self.inner.call(req);
                let c = Arc::new(c);
                let http = ask.http;
                Box::pin(async move {
                    let resp = fut.await?;
                    let status = match http {
                        true => http_outcome(&resp),
                        false => status_of(&resp),
                    };
                    match status {
                        // 7: permission denied, 16: unauthenticated (the
                        // handlers' own checks: node names, namespaces).
                        Some((7 | 16, msg)) => {
                            auditor.record(now, &c, &action, format!("denied: {msg}"))
                        }
                        Some((code, msg)) if write && code != 0 => {
                            auditor.record(now, &c, &action, format!("error: {msg}"))
                        }
                        _ if write => auditor.record(now, &c, &action, "ok".into()),
                        _ => {}
                    }
                    Ok(resp)
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_method_has_a_rule() {
        let proto = include_str!("../../proto/proto/berth.proto");
        let mut service = "";
        for line in proto.lines().map(str::trim) {
            if let Some(s) = line.strip_prefix("service ") {
                service = s.trim_end_matches(" {");
            } else if let Some(m) = line.strip_prefix("rpc ") {
                let method = m.split('(').next().unwrap();
                let (r, _) = rule(&format!("/berth.v1.{service}/{method}"));
                assert_ne!(r, Rule::Nobody, "{service}/{method} has no rule");
            }
        }
        assert_eq!(rule("/berth.v1.Control/Nope").0, Rule::Nobody);
        assert_eq!(rule("/other/Thing").0, Rule::Nobody);
    }

    #[test]
    fn secrets_are_fresh_and_hash_to_64_hex_digits() {
        let (a1, s1) = new_secret().unwrap();
        let (a2, s2) = new_secret().unwrap();
        assert_ne!(s1, s2);
        assert_ne!(a1, a2);
        assert_eq!(a1.len(), 16);
        assert_eq!(s1.len(), 36);
        assert_eq!(hash_secret(&s1).len(), 64);
        assert_eq!(percent_decode("a%20b%3A"), "a b:");
    }
}
