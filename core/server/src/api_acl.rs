//! The ACL calls: bootstrap, policies, tokens, the audit log, quotas, and
//! node join tokens (made here, exchanged for a certificate by
//! `NodeApi.JoinNode`); and the namespace scoping every app call uses.

use std::time::Duration;

use berth_model::acl::{Level, Need, Policy};
use berth_model::quota::Quota;
use berth_proto as pb;
use berth_store::Command;
use berth_store::acl::{AclCommand, JoinToken, Token};
use tonic::{Request, Response, Status};

use crate::api::{Api, request_id};
use crate::auth::{self, caller, hash_secret, new_secret};

/// The longest a token or join token may live (10 years for API tokens).
pub const MAX_TTL: Duration = Duration::from_secs(3650 * 24 * 3600);
/// The longest a node join token may live: 1 week.
pub const MAX_JOIN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long an agent certificate from a join token is valid (days).
pub const JOINED_CERT_DAYS: u32 = 365;

/// The CA servers sign joining agents' certificates with.
pub struct JoinCa {
    /// The CA's certificate (PEM).
    pub cert_pem: String,
    /// Its key (PEM).
    pub key_pem: String,
}

impl std::fmt::Debug for JoinCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinCa")
    }
}

fn ttl(ms: u64, max: Duration) -> Result<Option<u64>, Status> {
    if ms == 0 {
        return Ok(None);
    }
    if u128::from(ms) > max.as_millis() {
        return Err(Status::invalid_argument(format!(
            "ttl: at most {} hours",
            max.as_secs() / 3600
        )));
    }
    Ok(Some(berth_store::command::now_ms() + ms))
}

/// Whether app `app` is in namespace `scope` (none: every namespace; an
/// app that is gone is in none).
pub(crate) fn in_scope(state: &berth_store::ClusterState, scope: Option<&str>, app: &str) -> bool {
    scope.is_none_or(|ns| state.apps.get(app).is_some_and(|a| a.spec.namespace == ns))
}

impl Api {
    /// The namespace `req` may see apps of (none: everything, when the
    /// server runs without ACLs or is called in-process).
    pub(crate) fn scope<T>(&self, req: &Request<T>) -> Option<String> {
        caller(req)
            .filter(|c| !c.sees_all())
            .map(|c| c.namespace.clone())
    }

    /// Refuses a call on app `app` from another namespace as if the app
    /// did not exist (names do not leak across namespaces).
    pub(crate) fn scope_app<T>(&self, req: &Request<T>, app: &str) -> Result<(), Status> {
        let Some(ns) = self.scope(req) else {
            return Ok(());
        };
        match self.store.read().apps.get(app) {
            Some(a) if a.spec.namespace != ns => Err(Status::not_found(format!(
                "no app named {app} in namespace {ns}"
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses a call on task `task` from another namespace.
    pub(crate) fn scope_task<T>(&self, req: &Request<T>, task: &str) -> Result<(), Status> {
        let Some(ns) = self.scope(req) else {
            return Ok(());
        };
        let state = self.store.read();
        let app_ns = state
            .tasks
            .get(task)
            .and_then(|t| state.apps.get(&t.app))
            .map(|a| a.spec.namespace.clone());
        match app_ns {
            Some(a) if a != ns => Err(Status::not_found(format!(
                "no task {task} in namespace {ns}"
            ))),
            _ => Ok(()),
        }
    }

    /// Checks a spec's namespace against the call's, and what it asks
    /// for against the caller's rights (opting out of seccomp needs
    /// `admin` on the namespace).
    pub(crate) fn admit_namespace<T>(
        &self,
        req: &Request<T>,
        spec: &berth_model::AppSpec,
    ) -> Result<(), Status> {
        if let Some(c) = caller(req) {
            if spec.namespace != c.namespace {
                return Err(Status::invalid_argument(format!(
                    "namespace: the spec is in namespace {} but the call is for {} (pass -n {})",
                    spec.namespace, c.namespace, spec.namespace
                )));
            }
            if spec.seccomp == berth_model::spec::Seccomp::Unconfined {
                auth::check(
                    &self.store,
                    Some(c),
                    &Need::Namespace(spec.namespace.clone(), Level::Admin),
                )
                .map_err(|e| {
                    Status::permission_denied(format!("seccomp: unconfined needs {}", e.message()))
                })?;
            }
        }
        if let Some(a) = self.store.read().apps.get(&spec.name)
            && a.spec.namespace != spec.namespace
        {
            return Err(Status::already_exists(format!(
                "name: an app named {} exists in another namespace (app names are unique \
                 across the cluster)",
                spec.name
            )));
        }
        Ok(())
    }

    async fn commit_acl(&self, rid: String, cmd: AclCommand) -> Result<(), Status> {
        self.commit(request_id(rid)?, Command::Acl(cmd)).await?;
        Ok(())
    }

    pub(crate) async fn acl_bootstrap_of(
        &self,
        req: Request<pb::AclBootstrapRequest>,
    ) -> Result<Response<pb::AclTokenSecret>, Status> {
        let r = req.into_inner();
        let (accessor, made) = new_secret()?;
        let secret = if r.secret.is_empty() {
            made
        } else {
            if r.secret.len() < 16
                || r.secret.len() > 256
                || !r.secret.bytes().all(|c| c.is_ascii_graphic())
            {
                return Err(Status::invalid_argument(
                    "secret: 16-256 printable characters without spaces",
                ));
            }
            r.secret
        };
        self.bootstrap_with(&accessor, &secret, r.request_id)
            .await?;
        Ok(Response::new(pb::AclTokenSecret {
            accessor,
            secret,
            expires_ms: 0,
        }))
    }

    /// Commits the management token whose secret is `secret` (`berth dev`
    /// calls this in-process with the secret it keeps in its data dir).
    pub async fn bootstrap_with(
        &self,
        accessor: &str,
        secret: &str,
        rid: String,
    ) -> Result<(), Status> {
        if self.store.read().acl.bootstrapped {
            return Err(Status::failed_precondition(
                "acl: already bootstrapped (the management token is given out once)",
            ));
        }
        let token = Token {
            accessor: accessor.to_string(),
            hash: hash_secret(secret),
            policies: Vec::new(),
            management: true,
            expires_ms: None,
            created_ms: berth_store::command::now_ms(),
            description: "bootstrap management token".into(),
        };
        self.commit_acl(rid, AclCommand::Bootstrap { token }).await
    }

    pub(crate) async fn acl_policy_apply_of(
        &self,
        req: Request<pb::AclPolicyRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let r = req.into_inner();
        let policy = Policy::parse(&r.policy).map_err(Status::invalid_argument)?;
        self.commit_acl(
            r.request_id,
            AclCommand::PutPolicy {
                name: r.name,
                policy,
            },
        )
        .await?;
        Ok(Response::new(pb::Ack {}))
    }

    pub(crate) async fn acl_policy_delete_of(
        &self,
        req: Request<pb::AclNameRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let r = req.into_inner();
        self.commit_acl(r.request_id, AclCommand::DeletePolicy { name: r.name })
            .await?;
        Ok(Response::new(pb::Ack {}))
    }

    pub(crate) async fn acl_policy_list_of(
        &self,
        req: Request<pb::AclListRequest>,
    ) -> Result<Response<pb::AclPolicies>, Status> {
        self.barrier(&req).await?;
        let state = self.store.read();
        let policies = state
            .acl
            .policies
            .iter()
            .map(|(name, p)| pb::AclPolicy {
                name: name.clone(),
                policy: serde_json::to_string(p).unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::AclPolicies { policies }))
    }

    pub(crate) async fn acl_token_create_of(
        &self,
        req: Request<pb::AclTokenRequest>,
    ) -> Result<Response<pb::AclTokenSecret>, Status> {
        let r = req.into_inner();
        if r.policies.is_empty() {
            return Err(Status::invalid_argument(
                "policies: a token needs at least one policy",
            ));
        }
        let expires_ms = ttl(r.ttl_ms, MAX_TTL)?;
        let (accessor, secret) = new_secret()?;
        let token = Token {
            accessor: accessor.clone(),
            hash: hash_secret(&secret),
            policies: r.policies,
            management: false,
            expires_ms,
            created_ms: berth_store::command::now_ms(),
            description: r.description,
        };
        self.commit_acl(r.request_id, AclCommand::CreateToken { token })
            .await?;
        Ok(Response::new(pb::AclTokenSecret {
            accessor,
            secret,
            expires_ms: expires_ms.unwrap_or(0),
        }))
    }

    pub(crate) async fn acl_token_list_of(
        &self,
        req: Request<pb::AclListRequest>,
    ) -> Result<Response<pb::AclTokens>, Status> {
        self.barrier(&req).await?;
        let state = self.store.read();
        let tokens = state
            .acl
            .tokens
            .values()
            .map(|t| pb::AclToken {
                accessor: t.accessor.clone(),
                policies: t.policies.clone(),
                management: t.management,
                expires_ms: t.expires_ms.unwrap_or(0),
                created_ms: t.created_ms,
                description: t.description.clone(),
            })
            .collect();
        Ok(Response::new(pb::AclTokens { tokens }))
    }

    pub(crate) async fn acl_token_revoke_of(
        &self,
        req: Request<pb::AclNameRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let r = req.into_inner();
        self.commit_acl(r.request_id, AclCommand::RevokeToken { accessor: r.name })
            .await?;
        Ok(Response::new(pb::Ack {}))
    }

    pub(crate) async fn audit_of(
        &self,
        req: Request<pb::AuditRequest>,
    ) -> Result<Response<pb::AuditLog>, Status> {
        self.barrier(&req).await?;
        let limit = match req.into_inner().limit {
            0 => usize::MAX,
            n if n as usize > berth_store::acl::AUDIT_KEPT => {
                return Err(Status::invalid_argument(format!(
                    "limit: {n} is more than the {} entries kept",
                    berth_store::acl::AUDIT_KEPT
                )));
            }
            n => n as usize,
        };
        let state = self.store.read();
        let log = &state.acl.audit;
        let entries = log
            .iter()
            .skip(log.len().saturating_sub(limit))
            .map(|e| pb::AuditEntry {
                at_ms: e.at_ms,
                who: e.who.clone(),
                action: e.action.clone(),
                target: e.target.clone(),
                outcome: e.outcome.clone(),
            })
            .collect();
        Ok(Response::new(pb::AuditLog { entries }))
    }

    pub(crate) async fn quota_set_of(
        &self,
        req: Request<pb::QuotaRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let r = req.into_inner();
        let quota = if r.quota.is_empty() {
            None
        } else {
            if r.quota.len() > 64 * 1024 {
                return Err(Status::invalid_argument("quota: too large"));
            }
            let q: Quota = serde_json::from_str(&r.quota)
                .map_err(|e| Status::invalid_argument(format!("quota: {e}")))?;
            q.check().map_err(Status::invalid_argument)?;
            Some(q)
        };
        self.commit_acl(
            r.request_id,
            AclCommand::SetQuota {
                namespace: r.namespace,
                quota,
            },
        )
        .await?;
        Ok(Response::new(pb::Ack {}))
    }

    pub(crate) async fn quota_list_of(
        &self,
        req: Request<pb::AclListRequest>,
    ) -> Result<Response<pb::Quotas>, Status> {
        self.barrier(&req).await?;
        let state = self.store.read();
        let quotas = state
            .acl
            .quotas
            .iter()
            .map(|(ns, q)| pb::QuotaUse {
                namespace: ns.clone(),
                quota: serde_json::to_string(q).unwrap_or_default(),
                used: serde_json::to_string(&state.namespace_usage(ns)).unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::Quotas { quotas }))
    }

    pub(crate) async fn node_token_create_of(
        &self,
        req: Request<pb::NodeTokenRequest>,
    ) -> Result<Response<pb::AclTokenSecret>, Status> {
        let r = req.into_inner();
        if self.join_ca.is_none() {
            return Err(Status::failed_precondition(
                "this server cannot sign agent certificates: start it with --ca-key",
            ));
        }
        let ms = if r.ttl_ms == 0 { 3_600_000 } else { r.ttl_ms };
        let expires_ms = ttl(ms, MAX_JOIN_TTL)?.unwrap_or(0);
        let (accessor, secret) = new_secret()?;
        let token = JoinToken {
            accessor: accessor.clone(),
            hash: hash_secret(&secret),
            expires_ms,
            created_ms: berth_store::command::now_ms(),
        };
        self.commit_acl(r.request_id, AclCommand::CreateJoinToken { token })
            .await?;
        Ok(Response::new(pb::AclTokenSecret {
            accessor,
            secret,
            expires_ms,
        }))
    }

    /// `NodeApi.JoinNode`: a live join token and a certificate signing
    /// request become an agent certificate for the node named.
    pub(crate) async fn join_node_with_token(
        &self,
        r: pb::JoinNodeRequest,
    ) -> Result<Response<pb::JoinNodeResponse>, Status> {
        let Some(ca) = &self.join_ca else {
            return Err(Status::failed_precondition(
                "this server cannot sign agent certificates (no --ca-key)",
            ));
        };
        if r.token.len() > 256 {
            return Err(Status::unauthenticated("token: unknown or expired"));
        }
        let now = berth_store::command::now_ms();
        if self
            .store
            .read()
            .acl
            .join_token(&hash_secret(&r.token), now)
            .is_none()
        {
            return Err(Status::unauthenticated(
                "token: unknown or expired join token",
            ));
        }
        if !berth_model::valid_name(&r.node) {
            return Err(Status::invalid_argument(format!(
                "node: {:?} is not a valid node name",
                r.node
            )));
        }
        let cert = berth_tls::sign_request(
            &ca.cert_pem,
            &ca.key_pem,
            berth_tls::Role::Agent,
            &r.node,
            &r.csr,
            JOINED_CERT_DAYS,
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::info!(node = %r.node, "issued an agent certificate for a join token");
        Ok(Response::new(pb::JoinNodeResponse {
            certificate: cert,
            ca: ca.cert_pem.clone(),
        }))
    }
}
