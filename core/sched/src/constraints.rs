//! Marathon's placement constraints over node attributes (`hostname`,
//! labels, and inventory facts such as `gpu.model`): UNIQUE, CLUSTER,
//! GROUP_BY (spread evenly), LIKE, UNLIKE, MAX_PER. Counts are of the
//! task's group (its app) across the whole cluster, so this filter runs
//! first, over every node.

use std::collections::{BTreeMap, BTreeSet};

use berth_model::placement::{Constraint, Operator};

use crate::cluster::{NodeState, TaskRequest};
use crate::plugin::{FilterPlugin, Rejection};

/// The constraints filter.
pub struct Constraints;

fn matches(re: &str, v: &str) -> bool {
    regex::Regex::new(&format!("^(?:{re})$")).is_ok_and(|r| r.is_match(v))
}

/// Tasks of `group` per value of `field`, over `nodes`.
fn counts<'a>(nodes: &[&'a NodeState], group: &str, field: &str) -> BTreeMap<&'a str, u32> {
    let mut out = BTreeMap::new();
    for n in nodes {
        if let Some(v) = n.attributes.get(field) {
            *out.entry(v.as_str()).or_default() += n.groups.get(group).copied().unwrap_or(0);
        }
    }
    out
}

/// Whether a constraint counts the group's tasks (UNIQUE, MAX_PER,
/// CLUSTER, GROUP_BY): its verdict on a node then depends on the others.
fn counts_tasks(c: &Constraint) -> bool {
    !matches!(c.op, Operator::Like | Operator::Unlike)
}

/// `counts` holds the group's tasks per value of `c.field` over the nodes
/// given (empty unless [`counts_tasks`]).
fn check(c: &Constraint, node: &NodeState, counts: &BTreeMap<&str, u32>) -> Result<(), Rejection> {
    let value = node.attributes.get(&c.field).map(String::as_str);
    let reason = || {
        let v = c
            .value
            .as_deref()
            .map(|v| format!(" {v}"))
            .unwrap_or_default();
        format!("constraint {} {}{v}", c.field, c.op.as_str())
    };
    let fail = |detail: String| Err(Rejection::new(reason(), detail));
    match c.op {
        Operator::Like | Operator::Unlike => {
            let re = c.value.as_deref().unwrap_or("");
            let hit = value.is_some_and(|v| matches(re, v));
            if hit == (c.op == Operator::Like) {
                Ok(())
            } else {
                fail(format!("{} is {:?}", c.field, value.unwrap_or("unset")))
            }
        }
        _ if value.is_none() => fail(format!("the node has no {}", c.field)),
        Operator::Unique => {
            let v = value.unwrap_or_default();
            match counts.get(v).copied().unwrap_or(0) {
                0 => Ok(()),
                n => fail(format!("{n} task(s) already on {} {v}", c.field)),
            }
        }
        Operator::MaxPer => {
            let max: u32 = c.value.as_deref().and_then(|v| v.parse().ok()).unwrap_or(1);
            let v = value.unwrap_or_default();
            let n = counts.get(v).copied().unwrap_or(0);
            if n < max {
                Ok(())
            } else {
                fail(format!("{n} of at most {max} already on {} {v}", c.field))
            }
        }
        Operator::Cluster => {
            let v = value.unwrap_or_default();
            let target = c.value.clone().or_else(|| {
                counts
                    .iter()
                    .find(|(_, n)| **n > 0)
                    .map(|(k, _)| k.to_string())
            });
            match target {
                Some(t) if t != v => fail(format!("the group is on {} {t}", c.field)),
                _ => Ok(()),
            }
        }
        Operator::GroupBy => {
            let v = value.unwrap_or_default();
            let values: BTreeSet<&str> = counts.keys().copied().collect();
            let min = values.iter().map(|k| counts[k]).min().unwrap_or(0);
            let n = counts.get(v).copied().unwrap_or(0);
            if n <= min {
                Ok(())
            } else {
                fail(format!(
                    "{} {v} has {n}, the least loaded has {min}",
                    c.field
                ))
            }
        }
    }
}

impl FilterPlugin for Constraints {
    fn name(&self) -> &str {
        "constraints"
    }
    fn filter(&self, task: &TaskRequest, nodes: &[&NodeState], out: &mut [Option<Rejection>]) {
        if let Some(p) = &task.pinned {
            for (n, o) in nodes.iter().zip(out.iter_mut()) {
                if n.name != p.node {
                    *o = Some(Rejection::new(
                        "volume",
                        format!("its volume {} lives on node {}", p.volume, p.node),
                    ));
                }
            }
        }
        if task.constraints.is_empty() {
            return;
        }
        // Each constraint's counts once, not once per node.
        let counted: Vec<BTreeMap<&str, u32>> = task
            .constraints
            .iter()
            .map(|c| {
                if counts_tasks(c) {
                    counts(nodes, &task.group, &c.field)
                } else {
                    BTreeMap::new()
                }
            })
            .collect();
        for (n, o) in nodes.iter().zip(out.iter_mut()) {
            if o.is_some() {
                continue;
            }
            for (c, counts) in task.constraints.iter().zip(&counted) {
                if let Err(r) = check(c, n, counts) {
                    *o = Some(r);
                    break;
                }
            }
        }
    }

    /// A task without constraints or a pinned volume passes everywhere.
    fn need_decides(&self, task: &TaskRequest) -> bool {
        task.pinned.is_none() && task.constraints.is_empty()
    }

    /// Class-pure unless the task is pinned to a node (a volume), counts
    /// its group's tasks, or matches on the node's `hostname`.
    fn class_pure(&self, task: &TaskRequest) -> bool {
        task.pinned.is_none()
            && task
                .constraints
                .iter()
                .all(|c| !counts_tasks(c) && c.field != crate::classes::HOSTNAME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cluster, Pipeline};

    fn node(name: &str, rack: &str) -> NodeState {
        let mut n = NodeState {
            name: name.into(),
            ready: true,
            cpu_capacity: 8000,
            mem_capacity: 8 << 30,
            ..Default::default()
        };
        n.attributes.insert("hostname".into(), name.into());
        n.attributes.insert("rack".into(), rack.into());
        n
    }

    fn task(cs: &[(&str, Operator, Option<&str>)]) -> TaskRequest {
        TaskRequest {
            id: "t".into(),
            group: "web".into(),
            cpu: 100,
            memory: 1,
            constraints: cs
                .iter()
                .map(|(f, op, v)| Constraint {
                    field: f.to_string(),
                    op: *op,
                    value: v.map(String::from),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn place_n(t: &TaskRequest, n: usize) -> Vec<Option<String>> {
        let mut c = Cluster::new(vec![
            node("a", "r1"),
            node("b", "r1"),
            node("c", "r2"),
            node("d", "r3"),
        ]);
        let p = Pipeline::default();
        (0..n)
            .map(|_| {
                let d = p.decide(&c, t);
                d.placement.map(|(node, a)| {
                    c.commit_for(&node, &t.group, &a);
                    node
                })
            })
            .collect()
    }

    #[test]
    fn unique_hostname_spreads_one_per_node() {
        let got = place_n(&task(&[("hostname", Operator::Unique, None)]), 5);
        let placed: BTreeSet<String> = got.iter().flatten().cloned().collect();
        assert_eq!(placed.len(), 4);
        assert!(got[4].is_none(), "a fifth has nowhere to go");
    }

    #[test]
    fn group_by_rack_balances_and_max_per_caps() {
        let got = place_n(&task(&[("rack", Operator::GroupBy, None)]), 3);
        let racks: BTreeSet<String> = got
            .iter()
            .flatten()
            .map(|n| {
                match n.as_str() {
                    "a" | "b" => "r1",
                    "c" => "r2",
                    _ => "r3",
                }
                .to_string()
            })
            .collect();
        assert_eq!(racks.len(), 3, "{got:?}");
        let got = place_n(&task(&[("rack", Operator::MaxPer, Some("1"))]), 4);
        assert_eq!(got.iter().flatten().count(), 3);
    }

    #[test]
    fn like_unlike_and_cluster() {
        let got = place_n(&task(&[("rack", Operator::Like, Some("r[23]"))]), 1);
        assert!(matches!(got[0].as_deref(), Some("c") | Some("d")));
        let got = place_n(&task(&[("rack", Operator::Unlike, Some("r1|r2"))]), 1);
        assert_eq!(got[0].as_deref(), Some("d"));
        let got = place_n(&task(&[("rack", Operator::Cluster, None)]), 3);
        let racks: BTreeSet<&str> = got
            .iter()
            .flatten()
            .map(|n| {
                if n == "a" || n == "b" {
                    "r1"
                } else {
                    n.as_str()
                }
            })
            .collect();
        assert_eq!(racks.len(), 1, "{got:?}");
    }
}
