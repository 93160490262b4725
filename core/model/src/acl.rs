//! Access control: policies grant levels (`read`, `write`, `admin`) on
//! namespaces and on cluster areas; a token carries policies; every call
//! needs a [`Need`] that one of them grants.
//!
//! A policy file is YAML:
//!
//! ```yaml
//! namespaces: {team-a: write, team-b: read}   # "*": every namespace
//! cluster: {nodes: read, plugins: write, operator: read}
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::spec::DEFAULT_NAMESPACE;
/// The namespace wildcard in a policy.
pub const ANY_NAMESPACE: &str = "*";
/// Most namespace or area rules in one policy.
pub const MAX_RULES: usize = 1024;
/// Largest policy document accepted (bytes).
pub const MAX_POLICY_BYTES: usize = 64 * 1024;

/// How much a rule allows; each level includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Look: list, show, logs.
    Read,
    /// Change: run, scale, stop, remove, exec.
    Write,
    /// Everything, including what can break isolation (an app opting out
    /// of the default seccomp profile).
    Admin,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Read => "read",
            Level::Write => "write",
            Level::Admin => "admin",
        })
    }
}

/// The cluster-wide things a policy can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Area {
    /// Nodes: list, drain, join tokens, images on nodes.
    Nodes,
    /// Scheduling plugins.
    Plugins,
    /// Registry credentials.
    Registries,
    /// The control plane itself: members, ACLs, quotas, the audit log.
    Operator,
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Area::Nodes => "nodes",
            Area::Plugins => "plugins",
            Area::Registries => "registries",
            Area::Operator => "operator",
        })
    }
}

/// What a call needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// A level on a namespace.
    Namespace(String, Level),
    /// A level on a cluster area.
    Cluster(Area, Level),
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Need::Namespace(ns, l) => write!(f, "{l} on namespace {ns}"),
            Need::Cluster(a, l) => write!(f, "{l} on {a}"),
        }
    }
}

/// A named set of rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Levels by namespace (`*`: every namespace).
    #[serde(default)]
    pub namespaces: BTreeMap<String, Level>,
    /// Levels by cluster area.
    #[serde(default)]
    pub cluster: BTreeMap<Area, Level>,
}

impl Policy {
    /// Parses and checks a policy document; errors name the field.
    pub fn parse(text: &str) -> Result<Policy, String> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(format!(
                "policy: {} bytes is over the limit of {MAX_POLICY_BYTES}",
                text.len()
            ));
        }
        let p: Policy = serde_yaml::from_str(text).map_err(|e| format!("policy: {e}"))?;
        p.check()?;
        Ok(p)
    }

    /// Checks the rules' names and count.
    pub fn check(&self) -> Result<(), String> {
        if self.namespaces.len() + self.cluster.len() > MAX_RULES {
            return Err(format!("policy: more than {MAX_RULES} rules"));
        }
        if let Some(ns) = self
            .namespaces
            .keys()
            .find(|n| *n != ANY_NAMESPACE && !crate::valid_name(n))
        {
            return Err(format!(
                "namespaces: {ns:?} is not a namespace name ([a-z0-9-], 1-63 characters) or \"*\""
            ));
        }
        Ok(())
    }

    /// The level this policy grants for `need`'s subject.
    fn level(&self, need: &Need) -> Option<Level> {
        match need {
            Need::Namespace(ns, _) => {
                let exact = self.namespaces.get(ns.as_str()).copied();
                let any = self.namespaces.get(ANY_NAMESPACE).copied();
                exact.max(any)
            }
            Need::Cluster(area, _) => self.cluster.get(area).copied(),
        }
    }

    /// Whether this policy grants `need`.
    pub fn allows(&self, need: &Need) -> bool {
        let wanted = match need {
            Need::Namespace(_, l) | Need::Cluster(_, l) => *l,
        };
        self.level(need).is_some_and(|l| l >= wanted)
    }
}

/// Checks a namespace name (from a flag, a header or a spec).
pub fn check_namespace(ns: &str) -> Result<(), String> {
    if crate::valid_name(ns) {
        Ok(())
    } else {
        Err(format!(
            "namespace: {ns:?} is not a namespace name ([a-z0-9-], 1-63 characters)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_include_the_ones_below() {
        let p = Policy::parse(
            "namespaces: {team-a: write, team-b: read}\ncluster: {nodes: read, plugins: admin}",
        )
        .unwrap();
        let ns = |n: &str, l| Need::Namespace(n.into(), l);
        assert!(p.allows(&ns("team-a", Level::Read)));
        assert!(p.allows(&ns("team-a", Level::Write)));
        assert!(!p.allows(&ns("team-a", Level::Admin)));
        assert!(p.allows(&ns("team-b", Level::Read)));
        assert!(!p.allows(&ns("team-b", Level::Write)));
        assert!(!p.allows(&ns("team-c", Level::Read)));
        assert!(p.allows(&Need::Cluster(Area::Nodes, Level::Read)));
        assert!(!p.allows(&Need::Cluster(Area::Nodes, Level::Write)));
        assert!(p.allows(&Need::Cluster(Area::Plugins, Level::Write)));
        assert!(!p.allows(&Need::Cluster(Area::Operator, Level::Read)));
    }

    #[test]
    fn the_wildcard_covers_every_namespace_and_the_higher_rule_wins() {
        let p = Policy::parse("namespaces: {\"*\": read, team-a: admin}").unwrap();
        assert!(p.allows(&Need::Namespace("anything".into(), Level::Read)));
        assert!(!p.allows(&Need::Namespace("anything".into(), Level::Write)));
        assert!(p.allows(&Need::Namespace("team-a".into(), Level::Admin)));
    }

    #[test]
    fn bad_policies_name_the_field() {
        let e = |t: &str| Policy::parse(t).unwrap_err();
        assert!(e("namespaces: {Team_A: read}").starts_with("namespaces:"));
        assert!(e("namespaces: {a: root}").contains("unknown variant"));
        assert!(e("cluster: {dns: read}").contains("unknown variant"));
        assert!(e("users: {}").contains("unknown field"));
        assert!(e(&"#".repeat(MAX_POLICY_BYTES + 1)).contains("over the limit"));
        assert!(
            check_namespace("Bad")
                .unwrap_err()
                .starts_with("namespace:")
        );
    }
}
