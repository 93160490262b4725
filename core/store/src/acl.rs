//! ACL records in the replicated state: policies, tokens (only the SHA-256
//! of each secret is kept), join tokens for new nodes, quotas per
//! namespace, and the audit log (bounded).
//!
//! Secrets are made and hashed by the server that answers the call; the
//! state never holds one.

use std::collections::{BTreeMap, HashMap, VecDeque};

use berth_model::acl::{Need, Policy};
use berth_model::quota::Quota;
use serde::{Deserialize, Serialize};

use crate::state::{ClusterState, Outcome};

/// Most policies the cluster keeps.
pub const MAX_POLICIES: usize = 1024;
/// Most tokens (ACL and join) the cluster keeps.
pub const MAX_TOKENS: usize = 100_000;
/// How many audit entries are kept (the oldest go first).
pub const AUDIT_KEPT: usize = 10_000;
/// Most audit entries one command carries.
pub const MAX_AUDIT_BATCH: usize = 2_000;
/// Longest field of an audit entry or a token's description.
pub const MAX_TEXT: usize = 512;
/// Most quotas (namespaces with one).
pub const MAX_QUOTAS: usize = 10_000;

/// An ACL token: its policies (or management: everything) and expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Its public id (16 hex digits): what `list` shows and `revoke` takes.
    pub accessor: String,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    /// Names of its policies.
    #[serde(default)]
    pub policies: Vec<String>,
    /// A management token may do anything.
    #[serde(default)]
    pub management: bool,
    /// When it stops working (ms since the epoch); none: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    /// When it was made.
    pub created_ms: u64,
    /// What it is for.
    #[serde(default)]
    pub description: String,
}

/// What a node's join token allows: exchanging it for an agent
/// certificate until it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// Public id.
    pub accessor: String,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    /// When it stops working.
    pub expires_ms: u64,
    /// When it was made.
    pub created_ms: u64,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When (ms since the epoch, the deciding server's clock).
    pub at_ms: u64,
    /// Who: the certificate and the token's accessor.
    pub who: String,
    /// The call (`Control/RunApp`).
    pub action: String,
    /// What it was on: a namespace, an area, a node.
    pub target: String,
    /// `ok`, `denied: ...` or `error: ...`.
    pub outcome: String,
}

/// A change to the ACL records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AclCommand {
    /// The first management token; refused once there is one.
    Bootstrap {
        /// The token (management).
        token: Token,
    },
    /// Create or replace a policy.
    PutPolicy {
        /// Its name.
        name: String,
        /// Its rules.
        policy: Policy,
    },
    /// Delete a policy (tokens naming it lose its rules).
    DeletePolicy {
        /// Its name.
        name: String,
    },
    /// Add a token.
    CreateToken {
        /// The token.
        token: Token,
    },
    /// Delete a token (by accessor).
    RevokeToken {
        /// Its accessor.
        accessor: String,
    },
    /// Add a node join token.
    CreateJoinToken {
        /// The token.
        token: JoinToken,
    },
    /// Set (or, with none, clear) a namespace's quota.
    SetQuota {
        /// The namespace.
        namespace: String,
        /// The limits.
        quota: Option<Quota>,
    },
    /// Append to the audit log.
    Audit {
        /// Entries, oldest first.
        entries: Vec<AuditEntry>,
    },
}

/// The ACL part of the cluster state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AclState {
    /// Whether the management token was given out.
    #[serde(default)]
    pub bootstrapped: bool,
    /// Policies by name.
    #[serde(default)]
    pub policies: BTreeMap<String, Policy>,
    /// Tokens by accessor.
    #[serde(default)]
    pub tokens: BTreeMap<String, Token>,
    /// Node join tokens by accessor.
    #[serde(default)]
    pub join_tokens: BTreeMap<String, JoinToken>,
    /// Quotas by namespace.
    #[serde(default)]
    pub quotas: BTreeMap<String, Quota>,
    /// The audit log, oldest first.
    #[serde(default)]
    pub audit: VecDeque<AuditEntry>,
    /// Accessors by secret hash (derived).
    #[serde(skip)]
    by_hash: HashMap<String, String>,
}

/// Why a token does not authorize a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No such token (wrong, revoked).
    Unknown,
    /// Past its expiry.
    Expired,
    /// Valid, but none of its policies grants what the call needs.
    NotAllowed,
}

impl AclState {
    /// Rebuilds the index by hash (after loading a snapshot).
    pub fn rebuild(&mut self) {
        self.by_hash = self
            .tokens
            .values()
            .map(|t| (t.hash.clone(), t.accessor.clone()))
            .collect();
    }

    /// The live token whose secret hashes to `hash`, at `now_ms`.
    pub fn token(&self, hash: &str, now_ms: u64) -> Result<&Token, Denied> {
        let t = self
            .by_hash
            .get(hash)
            .and_then(|a| self.tokens.get(a))
            .ok_or(Denied::Unknown)?;
        match t.expires_ms {
            Some(e) if e <= now_ms => Err(Denied::Expired),
            _ => Ok(t),
        }
    }

    /// Whether `token` may do what `need` says.
    pub fn allows(&self, token: &Token, need: &Need) -> bool {
        token.management
            || token
                .policies
                .iter()
                .filter_map(|p| self.policies.get(p))
                .any(|p| p.allows(need))
    }

    /// The live join token whose secret hashes to `hash`.
    pub fn join_token(&self, hash: &str, now_ms: u64) -> Option<&JoinToken> {
        self.join_tokens
            .values()
            .find(|t| t.hash == hash && t.expires_ms > now_ms)
    }
}

fn check_token_fields(accessor: &str, hash: &str) -> Result<(), String> {
    if accessor.len() != 16 || !accessor.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err("accessor: must be 16 hex digits".into());
    }
    if hash.len() != 64 || !hash.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err("hash: must be 64 hex digits".into());
    }
    Ok(())
}

impl ClusterState {
    pub(crate) fn apply_acl(&mut self, at: u64, cmd: AclCommand) -> Outcome {
        let acl = &mut self.acl;
        let token_count = acl.tokens.len() + acl.join_tokens.len();
        match cmd {
            AclCommand::Bootstrap { token } => {
                if acl.bootstrapped {
                    return Outcome::Rejected(
                        "acl: already bootstrapped (the management token is given out once)".into(),
                    );
                }
                if let Err(e) = check_token_fields(&token.accessor, &token.hash) {
                    return Outcome::Rejected(e);
                }
                acl.bootstrapped = true;
                acl.by_hash
                    .insert(token.hash.clone(), token.accessor.clone());
                acl.tokens.insert(token.accessor.clone(), token);
            }
            AclCommand::PutPolicy { name, policy } => {
                if !berth_model::valid_name(&name) {
                    return Outcome::Rejected(format!(
                        "name: {name:?} is not a policy name ([a-z0-9-], 1-63 characters)"
                    ));
                }
                if let Err(e) = policy.check() {
                    return Outcome::Rejected(e);
                }
                if !acl.policies.contains_key(&name) && acl.policies.len() >= MAX_POLICIES {
                    return Outcome::Rejected(format!("policy: at most {MAX_POLICIES} policies"));
                }
                acl.policies.insert(name, policy);
            }
            AclCommand::DeletePolicy { name } => {
                if acl.policies.remove(&name).is_none() {
                    return Outcome::Rejected(format!("policy: no policy named {name}"));
                }
            }
            AclCommand::CreateToken { token } => {
                if let Err(e) = check_token_fields(&token.accessor, &token.hash) {
                    return Outcome::Rejected(e);
                }
                if let Some(p) = token
                    .policies
                    .iter()
                    .find(|p| !acl.policies.contains_key(*p))
                {
                    return Outcome::Rejected(format!("policy: no policy named {p}"));
                }
                if token.description.len() > MAX_TEXT {
                    return Outcome::Rejected(format!("description: more than {MAX_TEXT} bytes"));
                }
                if token.policies.len() > 64 {
                    return Outcome::Rejected("policies: more than 64".into());
                }
                // Expired tokens go when new ones come.
                let expired: Vec<String> = acl
                    .tokens
                    .values()
                    .filter(|t| t.expires_ms.is_some_and(|e| e <= at))
                    .map(|t| t.accessor.clone())
                    .collect();
                for a in expired {
                    if let Some(t) = acl.tokens.remove(&a) {
                        acl.by_hash.remove(&t.hash);
                    }
                }
                if token_count >= MAX_TOKENS || acl.tokens.contains_key(&token.accessor) {
                    return Outcome::Rejected("token: too many tokens, or a duplicate".into());
                }
                acl.by_hash
                    .insert(token.hash.clone(), token.accessor.clone());
                acl.tokens.insert(token.accessor.clone(), token);
            }
            AclCommand::RevokeToken { accessor } => match acl.tokens.remove(&accessor) {
                Some(t) => {
                    acl.by_hash.remove(&t.hash);
                }
                None => {
                    if acl.join_tokens.remove(&accessor).is_none() {
                        return Outcome::Rejected(format!("token: no token {accessor}"));
                    }
                }
            },
            AclCommand::CreateJoinToken { token } => {
                if let Err(e) = check_token_fields(&token.accessor, &token.hash) {
                    return Outcome::Rejected(e);
                }
                acl.join_tokens.retain(|_, t| t.expires_ms > at);
                if token_count >= MAX_TOKENS {
                    return Outcome::Rejected("token: too many tokens".into());
                }
                acl.join_tokens.insert(token.accessor.clone(), token);
            }
            AclCommand::SetQuota { namespace, quota } => {
                if let Err(e) = berth_model::acl::check_namespace(&namespace) {
                    return Outcome::Rejected(e);
                }
                match quota {
                    Some(q) => {
                        if let Err(e) = q.check() {
                            return Outcome::Rejected(e);
                        }
                        if !acl.quotas.contains_key(&namespace) && acl.quotas.len() >= MAX_QUOTAS {
                            return Outcome::Rejected(format!("quota: at most {MAX_QUOTAS}"));
                        }
                        acl.quotas.insert(namespace, q);
                    }
                    None => {
                        acl.quotas.remove(&namespace);
                    }
                }
            }
            AclCommand::Audit { entries } => {
                if entries.len() > MAX_AUDIT_BATCH {
                    return Outcome::Rejected(format!(
                        "audit: more than {MAX_AUDIT_BATCH} entries"
                    ));
                }
                for mut e in entries {
                    for f in [&mut e.who, &mut e.action, &mut e.target, &mut e.outcome] {
                        if f.len() > MAX_TEXT {
                            let mut cut = MAX_TEXT;
                            while !f.is_char_boundary(cut) {
                                cut -= 1;
                            }
                            f.truncate(cut);
                        }
                    }
                    acl.audit.push_back(e);
                }
                while acl.audit.len() > AUDIT_KEPT {
                    acl.audit.pop_front();
                }
            }
        }
        Outcome::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Command, Envelope};
    use berth_model::acl::Level;

    fn apply(s: &mut ClusterState, at: u64, c: AclCommand) -> Outcome {
        s.apply(
            1,
            Envelope {
                request_id: None,
                command: Command::Acl(c),
                at_ms: at,
            },
            &mut Vec::new(),
        )
    }

    fn token(n: u8, policies: &[&str], expires_ms: Option<u64>) -> Token {
        Token {
            accessor: format!("{n:016x}"),
            hash: format!("{n:064x}"),
            policies: policies.iter().map(|p| p.to_string()).collect(),
            management: false,
            expires_ms,
            created_ms: 0,
            description: String::new(),
        }
    }

    #[test]
    fn tokens_are_found_by_hash_until_revoked_or_expired() {
        let mut s = ClusterState::default();
        let mut root = token(1, &[], None);
        root.management = true;
        assert_eq!(
            apply(
                &mut s,
                0,
                AclCommand::Bootstrap {
                    token: root.clone()
                }
            ),
            Outcome::Ok
        );
        assert!(matches!(
            apply(&mut s, 0, AclCommand::Bootstrap { token: root }),
            Outcome::Rejected(_)
        ));
        assert!(matches!(
            apply(&mut s, 0, AclCommand::CreateToken { token: token(2, &["ro"], None) }),
            Outcome::Rejected(e) if e.contains("no policy named ro")
        ));
        let ro = Policy::parse("namespaces: {team-a: read}").unwrap();
        apply(
            &mut s,
            0,
            AclCommand::PutPolicy {
                name: "ro".into(),
                policy: ro,
            },
        );
        apply(
            &mut s,
            0,
            AclCommand::CreateToken {
                token: token(2, &["ro"], Some(100)),
            },
        );
        let t = s.acl.token(&format!("{:064x}", 2), 50).unwrap().clone();
        let read_a = Need::Namespace("team-a".into(), Level::Read);
        assert!(s.acl.allows(&t, &read_a));
        assert!(
            !s.acl
                .allows(&t, &Need::Namespace("team-a".into(), Level::Write))
        );
        assert!(
            !s.acl
                .allows(&t, &Need::Namespace("team-b".into(), Level::Read))
        );
        assert_eq!(
            s.acl.token(&format!("{:064x}", 2), 100),
            Err(Denied::Expired)
        );
        // Snapshots keep only the records; the index is rebuilt.
        let mut copy: ClusterState =
            serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        copy.rebuild_indexes();
        assert!(copy.acl.token(&format!("{:064x}", 2), 50).is_ok());
        apply(
            &mut s,
            0,
            AclCommand::RevokeToken {
                accessor: format!("{:016x}", 2),
            },
        );
        assert_eq!(
            s.acl.token(&format!("{:064x}", 2), 50),
            Err(Denied::Unknown)
        );
    }

    #[test]
    fn the_audit_log_is_bounded() {
        let mut s = ClusterState::default();
        let e = |i: usize| AuditEntry {
            at_ms: i as u64,
            who: "x".repeat(MAX_TEXT + 10),
            action: "Control/RunApp".into(),
            target: "team-a".into(),
            outcome: "ok".into(),
        };
        for chunk in 0..6 {
            let entries = (0..MAX_AUDIT_BATCH)
                .map(|i| e(chunk * MAX_AUDIT_BATCH + i))
                .collect();
            assert_eq!(apply(&mut s, 0, AclCommand::Audit { entries }), Outcome::Ok);
        }
        assert_eq!(s.acl.audit.len(), AUDIT_KEPT);
        assert_eq!(
            s.acl.audit.back().unwrap().at_ms,
            6 * MAX_AUDIT_BATCH as u64 - 1
        );
        assert_eq!(s.acl.audit[0].who.len(), MAX_TEXT);
    }
}
