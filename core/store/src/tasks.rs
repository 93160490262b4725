//! The task table and its indexes: tasks by node, by app, and the pending
//! ones, kept in step with every change so no hot path scans every task.
//!
//! Reads go through `Deref` to the ordered map; every change goes through
//! [`TaskTable::insert`], [`TaskTable::update`] or [`TaskTable::remove`],
//! which keep the indexes. Only the map is serialized (snapshots); the
//! indexes are rebuilt on load.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::{Bound, Deref};

use berth_model::task::{Desired, Task};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Tasks by id, with indexes by node, by app and of the pending ones.
#[derive(Debug, Clone, Default)]
pub struct TaskTable {
    all: BTreeMap<String, Task>,
    by_node: HashMap<String, BTreeSet<String>>,
    by_app: HashMap<String, BTreeSet<String>>,
    pending: BTreeSet<String>,
}

/// What a task is indexed under.
#[derive(PartialEq, Eq)]
struct Keys {
    node: Option<String>,
    app: String,
    pending: bool,
}

fn keys(t: &Task) -> Keys {
    Keys {
        node: t.node.clone(),
        app: t.app.clone(),
        pending: is_pending(t),
    }
}

/// Whether a task waits for a placement.
pub fn is_pending(t: &Task) -> bool {
    t.node.is_none() && t.desired == Desired::Run
}

impl Deref for TaskTable {
    type Target = BTreeMap<String, Task>;
    fn deref(&self) -> &Self::Target {
        &self.all
    }
}

impl PartialEq for TaskTable {
    fn eq(&self, other: &Self) -> bool {
        self.all == other.all
    }
}

impl Serialize for TaskTable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.all.serialize(s)
    }
}

impl<'de> Deserialize<'de> for TaskTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let all = BTreeMap::<String, Task>::deserialize(d)?;
        let mut t = TaskTable::default();
        for task in all.into_values() {
            t.insert(task);
        }
        Ok(t)
    }
}

fn add(map: &mut HashMap<String, BTreeSet<String>>, key: &str, id: &str) {
    match map.get_mut(key) {
        Some(set) => {
            set.insert(id.to_string());
        }
        None => {
            map.insert(key.to_string(), BTreeSet::from([id.to_string()]));
        }
    }
}

fn drop_from(map: &mut HashMap<String, BTreeSet<String>>, key: &str, id: &str) {
    if let Some(set) = map.get_mut(key) {
        set.remove(id);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

impl TaskTable {
    fn index(&mut self, id: &str, k: &Keys) {
        if let Some(n) = &k.node {
            add(&mut self.by_node, n, id);
        }
        add(&mut self.by_app, &k.app, id);
        if k.pending {
            self.pending.insert(id.to_string());
        }
    }

    fn unindex(&mut self, id: &str, k: &Keys) {
        if let Some(n) = &k.node {
            drop_from(&mut self.by_node, n, id);
        }
        drop_from(&mut self.by_app, &k.app, id);
        if k.pending {
            self.pending.remove(id);
        }
    }

    /// Adds or replaces a task.
    pub fn insert(&mut self, task: Task) {
        if let Some(old) = self.all.get(&task.id) {
            let k = keys(old);
            self.unindex(&task.id, &k);
        }
        let k = keys(&task);
        self.index(&task.id, &k);
        self.all.insert(task.id.clone(), task);
    }

    /// Removes a task.
    pub fn remove(&mut self, id: &str) -> Option<Task> {
        let t = self.all.remove(id)?;
        let k = keys(&t);
        self.unindex(id, &k);
        Some(t)
    }

    /// Changes a task in place (its id must stay); the indexes follow.
    pub fn update<R>(&mut self, id: &str, f: impl FnOnce(&mut Task) -> R) -> Option<R> {
        let t = self.all.get_mut(id)?;
        let before = keys(t);
        let r = f(t);
        debug_assert_eq!(t.id, id, "a task's id never changes");
        let after = keys(t);
        if before != after {
            self.unindex(id, &before);
            self.index(id, &after);
        }
        Some(r)
    }

    /// Tasks placed on `node` (any desired state), by id.
    pub fn on_node<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.ids(self.by_node.get(node))
    }

    /// How many tasks are placed on `node`.
    pub fn count_on(&self, node: &str) -> usize {
        self.by_node.get(node).map_or(0, BTreeSet::len)
    }

    /// Tasks of `app` (every version), by id.
    pub fn of_app<'a>(&'a self, app: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.ids(self.by_app.get(app))
    }

    /// Tasks of `app` whose ids come after `start`, by id (a page of
    /// [`TaskTable::of_app`]).
    pub fn of_app_from<'a>(
        &'a self,
        app: &str,
        start: Bound<&'a str>,
    ) -> impl Iterator<Item = &'a Task> + 'a {
        self.by_app
            .get(app)
            .into_iter()
            .flat_map(move |ids| ids.range::<str, _>((start, Bound::Unbounded)))
            .filter_map(|id| self.all.get(id))
    }

    /// Tasks waiting for a placement, by id.
    pub fn pending(&self) -> impl Iterator<Item = &Task> {
        self.pending.iter().filter_map(|id| self.all.get(id))
    }

    /// How many tasks wait for a placement.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    fn ids<'a>(&'a self, set: Option<&'a BTreeSet<String>>) -> impl Iterator<Item = &'a Task> + 'a {
        set.into_iter().flatten().filter_map(|id| self.all.get(id))
    }

    /// Checks every index against a scan of all tasks (for tests).
    pub fn check_indexes(&self) -> Result<(), String> {
        let mut fresh = TaskTable::default();
        for t in self.all.values() {
            fresh.insert(t.clone());
        }
        if fresh.by_node != self.by_node {
            return Err("tasks by node differ from a scan".into());
        }
        if fresh.by_app != self.by_app {
            return Err("tasks by app differ from a scan".into());
        }
        let scan: BTreeSet<String> = self
            .all
            .values()
            .filter(|t| is_pending(t))
            .map(|t| t.id.clone())
            .collect();
        if scan != self.pending {
            return Err("pending tasks differ from a scan".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, app: &str) -> Task {
        Task::pending(id.into(), app, 0, 1, String::new())
    }

    #[test]
    fn indexes_follow_changes() {
        let mut t = TaskTable::default();
        t.insert(task("a-1-0", "a"));
        t.insert(task("a-1-1", "a"));
        t.insert(task("b-1-0", "b"));
        assert_eq!(t.pending_count(), 3);
        t.update("a-1-0", |x| x.node = Some("n1".into()));
        assert_eq!(t.pending_count(), 2);
        assert_eq!(
            t.on_node("n1").map(|x| x.id.as_str()).collect::<Vec<_>>(),
            ["a-1-0"]
        );
        t.update("a-1-1", |x| x.desired = Desired::Stop);
        assert_eq!(t.pending().count(), 1);
        assert_eq!(t.of_app("a").count(), 2);
        t.remove("a-1-0");
        assert_eq!(t.count_on("n1"), 0);
        assert!(t.by_node.is_empty(), "empty sets are dropped");
        t.check_indexes().unwrap();
        let json = serde_json::to_string(&t).unwrap();
        let back: TaskTable = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        back.check_indexes().unwrap();
    }
}
