//! A node's copy of its assignments, kept from an assignment stream: a
//! full set, then deltas. The agent and the hollow nodes both keep one.

use std::collections::{BTreeMap, HashMap};

use crate::v1::{AssignmentUpdate, Launch, Task};

/// An update that does not follow the last one applied: the stream lost
/// something, and the node must resynchronize from a full set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("assignment update follows version {since}, but this node has {have}; resynchronizing")]
pub struct Gap {
    /// The version the update says it follows.
    pub since: u64,
    /// The version this node holds.
    pub have: u64,
}

/// What one update changed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Changes {
    /// Tasks added or changed (ids).
    pub changed: Vec<String>,
    /// Tasks no longer assigned (ids).
    pub removed: Vec<String>,
    /// True when the update was a full set (everything not in it is gone).
    pub full: bool,
}

/// The tasks assigned to one node and the launch specs they need.
#[derive(Debug, Default, Clone)]
pub struct View {
    /// Assigned tasks by id.
    pub tasks: BTreeMap<String, Task>,
    /// Launch specs by (app, version).
    pub launches: HashMap<(String, u64), Launch>,
    /// The version of the last update applied (0: none yet).
    pub version: u64,
}

impl View {
    /// Applies one update in stream order. A delta that does not follow the
    /// last update is a [`Gap`] and changes nothing.
    pub fn apply(&mut self, u: AssignmentUpdate) -> Result<Changes, Gap> {
        if !u.full && u.since != self.version {
            return Err(Gap {
                since: u.since,
                have: self.version,
            });
        }
        let mut out = Changes {
            full: u.full,
            ..Changes::default()
        };
        if u.full {
            let old = std::mem::take(&mut self.tasks);
            self.launches.clear();
            let now: std::collections::HashSet<&str> =
                u.tasks.iter().map(|t| t.id.as_str()).collect();
            out.removed = old
                .into_keys()
                .filter(|id| !now.contains(id.as_str()))
                .collect();
        }
        for l in u.launches {
            self.launches.insert((l.app.clone(), l.version), l);
        }
        for t in u.tasks {
            out.changed.push(t.id.clone());
            self.tasks.insert(t.id.clone(), t);
        }
        for id in u.removed {
            if self.tasks.remove(&id).is_some() {
                out.removed.push(id);
            }
        }
        self.version = u.version;
        Ok(out)
    }

    /// The launch spec of a task's app version, if the stream sent it.
    pub fn launch_for(&self, t: &Task) -> Option<&Launch> {
        self.launches.get(&(t.app.clone(), t.version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> Task {
        Task {
            id: id.into(),
            app: "a".into(),
            version: 1,
            ..Default::default()
        }
    }

    #[test]
    fn deltas_follow_a_full_set_and_gaps_are_refused() {
        let mut v = View::default();
        let c = v
            .apply(AssignmentUpdate {
                version: 5,
                full: true,
                tasks: vec![task("x"), task("y")],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(c.changed, ["x", "y"]);
        let c = v
            .apply(AssignmentUpdate {
                version: 9,
                since: 5,
                tasks: vec![task("z")],
                removed: vec!["x".into()],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            (c.changed, c.removed),
            (vec!["z".to_string()], vec!["x".to_string()])
        );
        let gap = v.apply(AssignmentUpdate {
            version: 12,
            since: 10,
            ..Default::default()
        });
        assert_eq!(gap, Err(Gap { since: 10, have: 9 }));
        assert_eq!(v.tasks.keys().collect::<Vec<_>>(), ["y", "z"]);
        let c = v
            .apply(AssignmentUpdate {
                version: 20,
                full: true,
                tasks: vec![task("z")],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(c.removed, ["y"]);
    }

    #[test]
    fn a_node_with_20000_tasks_fits_one_message_and_reconciles_by_deltas() {
        use prost::Message as _;
        let tasks: Vec<Task> = (0..20_000)
            .map(|i| Task {
                id: format!("app{}-{}-{i}", i % 20, 1000 + i % 20),
                app: format!("app{}", i % 20),
                version: 1000 + (i % 20) as u64,
                instance: i,
                node: "n1".into(),
                state: crate::TaskState::Running as i32,
                desired: crate::Desired::Run as i32,
                message: "placed; waiting for the node to start it".into(),
                allocation: Some(crate::Allocation {
                    cpu_millis: 10,
                    memory_bytes: 16 << 20,
                    cpuset: (0..8).collect(),
                    numa_nodes: vec![0],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let full = AssignmentUpdate {
            version: 7,
            full: true,
            tasks,
            ..Default::default()
        };
        let bytes = full.encode_to_vec();
        // Launch specs travel once per app version, not once per task: the
        // full set stays well inside the limit both sides set.
        assert!(
            bytes.len() < crate::MAX_MESSAGE / 8,
            "{} bytes",
            bytes.len()
        );
        let mut v = View::default();
        let c = v
            .apply(AssignmentUpdate::decode(bytes.as_slice()).unwrap())
            .unwrap();
        assert_eq!(c.changed.len(), 20_000);
        // One task told to stop, one gone: the delta carries two, not 20,000.
        let mut stop = v.tasks["app3-1003-3"].clone();
        stop.desired = crate::Desired::Stop as i32;
        let delta = AssignmentUpdate {
            version: 8,
            since: 7,
            tasks: vec![stop],
            removed: vec!["app4-1004-4".into()],
            ..Default::default()
        };
        assert!(delta.encode_to_vec().len() < 1024);
        let c = v.apply(delta).unwrap();
        assert_eq!((c.changed.len(), c.removed.len()), (1, 1));
        assert_eq!(v.tasks.len(), 19_999);
        assert_eq!(v.tasks["app3-1003-3"].desired, crate::Desired::Stop as i32);
    }
}
