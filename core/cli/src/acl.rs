//! `berth acl`, `berth audit`, `berth quota` and `berth node token`: who
//! may do what, what they did, and how much each namespace may hold.

use std::path::PathBuf;

use anyhow::{Context as _, anyhow, bail};
use berth_model::quota::Quota;
use berth_proto as pb;
use clap::Subcommand;

use crate::client::{ctl, request_id};
use crate::output::table;

#[derive(Subcommand)]
pub enum AclCmd {
    /// Make the management token (once per cluster) and print it.
    Bootstrap {
        /// Use the secret in this file (`-`: stdin) instead of a new one
        /// (for automation that must know it beforehand).
        #[arg(long)]
        secret_file: Option<PathBuf>,
        /// Print JSON (`{"accessor": ..., "secret": ...}`).
        #[arg(long)]
        json: bool,
    },
    /// Policies: what a token's holder may do.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Tokens: made for policies, listed, revoked.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
}

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Create or replace policy NAME from a YAML FILE (`-`: stdin):
    /// `{namespaces: {team-a: write}, cluster: {nodes: read}}`.
    Apply { name: String, file: PathBuf },
    /// List the policies.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Delete a policy.
    Rm { name: String },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Make a token for the policies and print its secret (shown once).
    Create {
        /// A policy (repeatable).
        #[arg(long = "policy", required = true)]
        policies: Vec<String>,
        /// Expire after this long (`1h`, `30d`); default never.
        #[arg(long)]
        ttl: Option<String>,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
        /// Print JSON (`{"accessor": ..., "secret": ...}`).
        #[arg(long)]
        json: bool,
    },
    /// List tokens (accessors, never secrets).
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its accessor.
    Revoke { accessor: String },
}

#[derive(Subcommand)]
pub enum QuotaCmd {
    /// Set a namespace's limits (those left out are unlimited).
    Set {
        namespace: String,
        /// CPU (cores or millicores: 64, 1500m).
        #[arg(long)]
        cpu: Option<String>,
        /// Memory (256Gi).
        #[arg(long)]
        memory: Option<String>,
        /// GPUs by model: H100=8,A100=4.
        #[arg(long)]
        gpus: Option<String>,
        /// Instances holding resources.
        #[arg(long)]
        tasks: Option<u32>,
    },
    /// Remove a namespace's quota.
    Rm { namespace: String },
    /// Each namespace's use against its limits.
    Ls {
        #[arg(long)]
        json: bool,
    },
}

fn ttl_ms(ttl: Option<&str>) -> anyhow::Result<u64> {
    ttl.map(|t| {
        berth_model::DurationMs::parse(t)
            .map(|d| d.0)
            .map_err(|e| anyhow!("--ttl: {e}"))
    })
    .transpose()
    .map(Option::unwrap_or_default)
}

fn print_secret(s: &pb::AclTokenSecret, json: bool) {
    if crate::output::structured(json) {
        println!(
            "{}",
            serde_json::json!({
                "accessor": s.accessor, "secret": s.secret,
                "expires_ms": (s.expires_ms > 0).then_some(s.expires_ms),
            })
        );
    } else {
        println!("accessor: {}\nsecret:   {}", s.accessor, s.secret);
        if s.expires_ms > 0 {
            println!("expires:  {}", crate::output::time_ms(s.expires_ms));
        }
    }
}

/// `berth acl ...`.
pub async fn run(addr: &str, cmd: AclCmd) -> anyhow::Result<()> {
    match cmd {
        AclCmd::Bootstrap { secret_file, json } => {
            let secret = match secret_file {
                Some(f) => crate::client::read_input(&f)?.trim().to_string(),
                None => String::new(),
            };
            let s = ctl!(
                addr,
                acl_bootstrap,
                pb::AclBootstrapRequest {
                    request_id: request_id(),
                    secret,
                }
            )?
            .into_inner();
            print_secret(&s, json);
        }
        AclCmd::Policy { cmd } => policy(addr, cmd).await?,
        AclCmd::Token { cmd } => token(addr, cmd).await?,
    }
    Ok(())
}

async fn policy(addr: &str, cmd: PolicyCmd) -> anyhow::Result<()> {
    match cmd {
        PolicyCmd::Apply { name, file } => {
            let text = crate::client::read_input(&file)?;
            // Checked here for a precise answer; the servers check again.
            berth_model::acl::Policy::parse(&text)
                .map_err(|e| anyhow!("{}: {e}", file.display()))?;
            ctl!(
                addr,
                acl_policy_apply,
                pb::AclPolicyRequest {
                    name: name.clone(),
                    policy: text,
                    request_id: request_id(),
                }
            )?;
            println!("policy {name} applied");
        }
        PolicyCmd::Ls { json } => {
            let ps = ctl!(addr, acl_policy_list, pb::AclListRequest {})?
                .into_inner()
                .policies;
            if crate::output::structured(json) {
                let v: Vec<serde_json::Value> = ps
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "name": p.name,
                            "policy": serde_json::from_str::<serde_json::Value>(&p.policy)
                                .unwrap_or_default(),
                        })
                    })
                    .collect();
                crate::output::print(&v)?;
            } else {
                table(
                    &["NAME", "RULES"],
                    ps.into_iter().map(|p| vec![p.name, p.policy]).collect(),
                );
            }
        }
        PolicyCmd::Rm { name } => {
            ctl!(
                addr,
                acl_policy_delete,
                pb::AclNameRequest {
                    name: name.clone(),
                    request_id: request_id(),
                }
            )?;
            println!("policy {name} deleted");
        }
    }
    Ok(())
}

async fn token(addr: &str, cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create {
            policies,
            ttl,
            description,
            json,
        } => {
            let s = ctl!(
                addr,
                acl_token_create,
                pb::AclTokenRequest {
                    policies,
                    ttl_ms: ttl_ms(ttl.as_deref())?,
                    description,
                    request_id: request_id(),
                }
            )?
            .into_inner();
            print_secret(&s, json);
        }
        TokenCmd::Ls { json } => {
            let ts = ctl!(addr, acl_token_list, pb::AclListRequest {})?
                .into_inner()
                .tokens;
            if crate::output::structured(json) {
                let v: Vec<serde_json::Value> = ts
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "accessor": t.accessor, "policies": t.policies,
                            "management": t.management, "description": t.description,
                            "created_ms": t.created_ms,
                            "expires_ms": (t.expires_ms > 0).then_some(t.expires_ms),
                        })
                    })
                    .collect();
                crate::output::print(&v)?;
            } else {
                let rows = ts
                    .into_iter()
                    .map(|t| {
                        vec![
                            t.accessor,
                            if t.management {
                                "(management)".into()
                            } else {
                                t.policies.join(",")
                            },
                            if t.expires_ms > 0 {
                                crate::output::time_ms(t.expires_ms)
                            } else {
                                "never".into()
                            },
                            t.description,
                        ]
                    })
                    .collect();
                table(&["ACCESSOR", "POLICIES", "EXPIRES", "DESCRIPTION"], rows);
            }
        }
        TokenCmd::Revoke { accessor } => {
            ctl!(
                addr,
                acl_token_revoke,
                pb::AclNameRequest {
                    name: accessor.clone(),
                    request_id: request_id(),
                }
            )?;
            println!("token {accessor} revoked");
        }
    }
    Ok(())
}

/// `berth audit`.
pub async fn audit(addr: &str, json: bool, limit: u32) -> anyhow::Result<()> {
    let es = ctl!(addr, audit, pb::AuditRequest { limit })?
        .into_inner()
        .entries;
    if crate::output::structured(json) {
        let v: Vec<serde_json::Value> = es
            .iter()
            .map(|e| {
                serde_json::json!({
                    "at_ms": e.at_ms, "who": e.who, "action": e.action,
                    "target": e.target, "outcome": e.outcome,
                })
            })
            .collect();
        crate::output::print(&v)?;
    } else {
        table(
            &["TIME", "WHO", "ACTION", "NAMESPACE", "OUTCOME"],
            es.into_iter()
                .map(|e| {
                    vec![
                        crate::output::time_ms(e.at_ms),
                        e.who,
                        e.action,
                        e.target,
                        e.outcome,
                    ]
                })
                .collect(),
        );
    }
    Ok(())
}

/// `--gpus H100=8,A100=4`.
fn gpus(s: &str) -> anyhow::Result<std::collections::BTreeMap<String, u32>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (m, n) = p
                .split_once('=')
                .ok_or_else(|| anyhow!("--gpus: {p:?} is not MODEL=COUNT"))?;
            let n = n
                .trim()
                .parse::<u32>()
                .map_err(|_| anyhow!("--gpus: {n:?} is not a count"))?;
            Ok((m.trim().to_string(), n))
        })
        .collect()
}

/// `berth quota ...`.
pub async fn quota(addr: &str, cmd: QuotaCmd) -> anyhow::Result<()> {
    match cmd {
        QuotaCmd::Set {
            namespace,
            cpu,
            memory,
            gpus: g,
            tasks,
        } => {
            let q = Quota {
                cpu_millis: cpu
                    .map(|c| berth_model::MilliCpu::parse(&c).map(|m| m.0))
                    .transpose()
                    .map_err(|e| anyhow!("--cpu: {e}"))?,
                memory_bytes: memory
                    .map(|m| berth_model::Bytes::parse(&m).map(|b| b.0))
                    .transpose()
                    .map_err(|e| anyhow!("--memory: {e}"))?,
                gpus: g.as_deref().map(gpus).transpose()?.unwrap_or_default(),
                tasks,
            };
            q.check().map_err(|e| anyhow!("--{e}"))?;
            if q == Quota::default() {
                bail!("give at least one of --cpu, --memory, --gpus, --tasks (or `quota rm`)");
            }
            ctl!(
                addr,
                quota_set,
                pb::QuotaRequest {
                    namespace: namespace.clone(),
                    quota: serde_json::to_string(&q).context("encoding the quota")?,
                    request_id: request_id(),
                }
            )?;
            println!("quota for namespace {namespace} set");
        }
        QuotaCmd::Rm { namespace } => {
            ctl!(
                addr,
                quota_set,
                pb::QuotaRequest {
                    namespace: namespace.clone(),
                    quota: String::new(),
                    request_id: request_id(),
                }
            )?;
            println!("quota for namespace {namespace} removed");
        }
        QuotaCmd::Ls { json } => {
            let qs = ctl!(addr, quota_list, pb::AclListRequest {})?
                .into_inner()
                .quotas;
            let parsed: Vec<(String, Quota, berth_model::quota::Usage)> = qs
                .into_iter()
                .map(|q| {
                    (
                        q.namespace,
                        serde_json::from_str(&q.quota).unwrap_or_default(),
                        serde_json::from_str(&q.used).unwrap_or_default(),
                    )
                })
                .collect();
            if crate::output::structured(json) {
                let v: Vec<serde_json::Value> = parsed
                    .iter()
                    .map(|(ns, q, u)| serde_json::json!({"namespace": ns, "limit": q, "used": u}))
                    .collect();
                crate::output::print(&v)?;
                return Ok(());
            }
            let of = |u: String, l: Option<String>| match l {
                Some(l) => format!("{u}/{l}"),
                None => format!("{u}/-"),
            };
            let rows = parsed
                .into_iter()
                .map(|(ns, q, u)| {
                    let g = q
                        .gpus
                        .iter()
                        .map(|(m, l)| format!("{m} {}/{l}", u.gpus_of(m)))
                        .collect::<Vec<_>>()
                        .join(", ");
                    vec![
                        ns,
                        of(
                            berth_model::MilliCpu(u.cpu_millis).to_string(),
                            q.cpu_millis.map(|c| berth_model::MilliCpu(c).to_string()),
                        ),
                        of(
                            berth_model::Bytes(u.memory_bytes).to_string(),
                            q.memory_bytes.map(|b| berth_model::Bytes(b).to_string()),
                        ),
                        of(u.tasks.to_string(), q.tasks.map(|t| t.to_string())),
                        g,
                    ]
                })
                .collect();
            table(&["NAMESPACE", "CPU", "MEMORY", "TASKS", "GPUS"], rows);
        }
    }
    Ok(())
}

/// `berth node token create`.
pub async fn node_token(addr: &str, ttl: Option<&str>, json: bool) -> anyhow::Result<()> {
    let s = ctl!(
        addr,
        node_token_create,
        pb::NodeTokenRequest {
            ttl_ms: ttl_ms(ttl)?,
            request_id: request_id(),
        }
    )?
    .into_inner();
    print_secret(&s, json);
    if !json {
        println!(
            "join a node with: berth agent --join-token {} --ca ca.pem --addr SERVERS",
            s.secret
        );
    }
    Ok(())
}
