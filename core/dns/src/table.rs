//! The names an agent answers, indexed: by task, by (namespace, app), and
//! the nodes their SRV targets name. Changes are one endpoint at a time
//! (an instance became ready, or stopped being so); a lookup costs the
//! instances of the one app it names.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

/// The DNS zone Berth answers for.
pub const ZONE: &str = "berth";

/// One ready instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its app.
    pub app: String,
    /// The app's namespace.
    pub namespace: String,
    /// Its task id.
    pub task: String,
    /// The node it runs on.
    pub node: String,
    /// That node's address (what other nodes reach).
    pub node_ip: Ipv4Addr,
    /// Its own address: on the node's bridge, or the node's on the host's
    /// network.
    pub ip: Ipv4Addr,
    /// Its named ports.
    pub ports: Vec<Port>,
}

/// A named port of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// The port's name.
    pub name: String,
    /// The port it listens on at `ip`.
    pub port: u16,
    /// The host port mapped to it on its node, if any.
    pub host: Option<u16>,
}

/// An answer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rec {
    /// An address.
    A(Ipv4Addr),
    /// A service: `target` (a node name under `node.berth`) at `port`,
    /// with the target's address for the additional section.
    Srv {
        /// The node's name, `<node>.node.berth`.
        target: String,
        /// The host port.
        port: u16,
        /// The node's address.
        ip: Ipv4Addr,
    },
}

/// What a name is, to this table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Not under `berth.`: forward it.
    NotOurs,
    /// Under `berth.` but no such name.
    NxDomain,
    /// The name exists; these are its records of the type asked (maybe
    /// none).
    Records(Vec<Rec>),
}

/// The kinds of record asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A.
    A,
    /// SRV.
    Srv,
    /// Anything else (the name may exist; there is nothing of that type).
    Other,
}

/// Ready instances by task, with indexes.
#[derive(Debug, Default)]
pub struct Table {
    tasks: HashMap<String, Endpoint>,
    apps: HashMap<(String, String), BTreeSet<String>>,
    nodes: HashMap<String, (Ipv4Addr, usize)>,
}

impl Table {
    /// Adds or replaces a task's endpoint.
    pub fn upsert(&mut self, e: Endpoint) {
        self.remove(&e.task);
        self.apps
            .entry((e.namespace.clone(), e.app.clone()))
            .or_default()
            .insert(e.task.clone());
        let n = self.nodes.entry(e.node.clone()).or_insert((e.node_ip, 0));
        *n = (e.node_ip, n.1 + 1);
        self.tasks.insert(e.task.clone(), e);
    }

    /// Drops a task's endpoint (not ready any more, or gone).
    pub fn remove(&mut self, task: &str) {
        let Some(e) = self.tasks.remove(task) else {
            return;
        };
        let key = (e.namespace, e.app);
        if let Some(set) = self.apps.get_mut(&key) {
            set.remove(task);
            if set.is_empty() {
                self.apps.remove(&key);
            }
        }
        if let Some(n) = self.nodes.get_mut(&e.node) {
            n.1 -= 1;
            if n.1 == 0 {
                self.nodes.remove(&e.node);
            }
        }
    }

    /// Forgets everything (before a full set).
    pub fn clear(&mut self) {
        *self = Table::default();
    }

    /// How many endpoints it holds.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Answers `name` (any case, with or without the final dot) for `kind`.
    pub fn lookup(&self, name: &str, kind: Kind) -> Answer {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let Some(rest) = name.strip_suffix(ZONE).and_then(|r| r.strip_suffix('.')) else {
            return if name == ZONE {
                Answer::Records(Vec::new())
            } else {
                Answer::NotOurs
            };
        };
        let labels: Vec<&str> = rest.split('.').collect();
        match labels.as_slice() {
            [node, "node"] => match self.nodes.get(*node) {
                Some((ip, _)) if kind == Kind::A => Answer::Records(vec![Rec::A(*ip)]),
                Some(_) => Answer::Records(Vec::new()),
                None => Answer::NxDomain,
            },
            [service, "_tcp", app, ns] => {
                let Some(port) = service.strip_prefix('_') else {
                    return Answer::NxDomain;
                };
                let Some(tasks) = self.apps.get(&(ns.to_string(), app.to_string())) else {
                    return Answer::NxDomain;
                };
                let recs = tasks
                    .iter()
                    .filter_map(|t| self.tasks.get(t))
                    .filter_map(|e| {
                        let p = e.ports.iter().find(|p| p.name == port)?;
                        Some(Rec::Srv {
                            target: format!("{}.node.{ZONE}", e.node),
                            port: p.host?,
                            ip: e.node_ip,
                        })
                    })
                    .collect::<Vec<_>>();
                match (recs.is_empty(), kind) {
                    (true, _) => Answer::NxDomain,
                    (false, Kind::Srv) => Answer::Records(recs),
                    (false, _) => Answer::Records(Vec::new()),
                }
            }
            [name, ns] => {
                let ips: Vec<Rec> = match self.apps.get(&(ns.to_string(), name.to_string())) {
                    Some(tasks) => tasks
                        .iter()
                        .filter_map(|t| self.tasks.get(t))
                        .map(|e| Rec::A(e.ip))
                        .collect(),
                    None => match self.tasks.get(*name).filter(|e| e.namespace == *ns) {
                        Some(e) => vec![Rec::A(e.ip)],
                        None => return Answer::NxDomain,
                    },
                };
                Answer::Records(if kind == Kind::A { ips } else { Vec::new() })
            }
            _ => Answer::NxDomain,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(task: &str, app: &str, ip: [u8; 4], host: Option<u16>) -> Endpoint {
        Endpoint {
            app: app.into(),
            namespace: "default".into(),
            task: task.into(),
            node: "n1".into(),
            node_ip: Ipv4Addr::new(192, 168, 1, 10),
            ip: Ipv4Addr::from(ip),
            ports: vec![Port {
                name: "http".into(),
                port: 8080,
                host,
            }],
        }
    }

    #[test]
    fn names_answer_from_the_ready_instances() {
        let mut t = Table::default();
        t.upsert(ep("web-5-0", "web", [10, 128, 0, 2], Some(20000)));
        t.upsert(ep("web-5-1", "web", [10, 128, 0, 3], None));
        let a = |ip: [u8; 4]| Rec::A(Ipv4Addr::from(ip));
        assert_eq!(
            t.lookup("WEB.default.berth.", Kind::A),
            Answer::Records(vec![a([10, 128, 0, 2]), a([10, 128, 0, 3])])
        );
        assert_eq!(
            t.lookup("web-5-1.default.berth", Kind::A),
            Answer::Records(vec![a([10, 128, 0, 3])])
        );
        // SRV: node and host port, for the instances that have one.
        assert_eq!(
            t.lookup("_http._tcp.web.default.berth", Kind::Srv),
            Answer::Records(vec![Rec::Srv {
                target: "n1.node.berth".into(),
                port: 20000,
                ip: Ipv4Addr::new(192, 168, 1, 10),
            }])
        );
        assert_eq!(
            t.lookup("n1.node.berth", Kind::A),
            Answer::Records(vec![a([192, 168, 1, 10])])
        );
        assert_eq!(
            t.lookup("web.default.berth", Kind::Other),
            Answer::Records(vec![])
        );
        assert_eq!(t.lookup("api.default.berth", Kind::A), Answer::NxDomain);
        assert_eq!(t.lookup("web.other.berth", Kind::A), Answer::NxDomain);
        assert_eq!(
            t.lookup("_db._tcp.web.default.berth", Kind::Srv),
            Answer::NxDomain
        );
        assert_eq!(t.lookup("example.com.", Kind::A), Answer::NotOurs);
        // Not ready any more: gone from the answers, and its node with it.
        t.remove("web-5-0");
        t.remove("web-5-1");
        assert_eq!(t.lookup("web.default.berth", Kind::A), Answer::NxDomain);
        assert_eq!(t.lookup("n1.node.berth", Kind::A), Answer::NxDomain);
        assert!(t.is_empty());
    }
}
