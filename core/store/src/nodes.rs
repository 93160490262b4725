//! What the state machine does when a node goes down, comes back or is
//! drained: the tasks it held are replaced by pending instances (the
//! scheduler places them elsewhere, under their constraints), and the old
//! ones are told to go, which their agent does if it ever returns.

use berth_model::node::NodeStatus;
use berth_model::task::{Desired, Task};

use crate::state::{ClusterState, Event, Outcome};

impl ClusterState {
    /// Marks a node ready or down; a node that goes down has its tasks
    /// replaced.
    pub(crate) fn set_node_status(
        &mut self,
        index: u64,
        name: &str,
        status: NodeStatus,
        events: &mut Vec<Event>,
    ) -> Outcome {
        let Some(n) = self.nodes.get_mut(name) else {
            return Outcome::Rejected(format!("no node named {name}"));
        };
        if n.status == status {
            return Outcome::Ok;
        }
        n.status = status;
        events.push(Event::NodeChanged(name.to_string()));
        let (action, m) = match status {
            NodeStatus::Down => ("down", format!("node {name} missed its heartbeats")),
            _ => ("up", format!("node {name} is ready")),
        };
        self.notice("node", name, None, action, m);
        if status == NodeStatus::Down {
            self.replace_tasks_on(index, name, "node went down", events);
        }
        Outcome::Ok
    }

    /// Drains a node (no new work; its tasks are replaced) or lets it take
    /// work again.
    pub(crate) fn drain_node(
        &mut self,
        index: u64,
        name: &str,
        drain: bool,
        events: &mut Vec<Event>,
    ) -> Outcome {
        let Some(n) = self.nodes.get_mut(name) else {
            return Outcome::Rejected(format!("no node named {name}"));
        };
        if n.drained != drain {
            n.drained = drain;
            events.push(Event::NodeChanged(name.to_string()));
            let (action, m) = if drain {
                (
                    "drained",
                    format!("node {name} drained: its tasks move elsewhere"),
                )
            } else {
                ("undrained", format!("node {name} takes work again"))
            };
            self.notice("node", name, None, action, m);
        }
        if drain {
            self.replace_tasks_on(index, name, "node drained", events);
        }
        Outcome::Ok
    }

    fn replace_tasks_on(&mut self, index: u64, node: &str, why: &str, events: &mut Vec<Event>) {
        let ids: Vec<String> = self
            .tasks
            .on_node(node)
            .filter(|t| t.desired == Desired::Run)
            .map(|t| t.id.clone())
            .collect();
        for id in ids {
            // A drained node keeps instances whose volumes live there.
            if why == "node drained"
                && let Some(t) = self.tasks.get(&id).cloned()
                && let Some(stay) = self.held_by_volume(&t, node)
            {
                self.tasks.update(&id, |t| {
                    if t.message != stay {
                        t.message = stay.clone();
                        events.push(Event::TaskUpdated(Box::new(t.clone())));
                    }
                });
                continue;
            }
            self.replace_task(index, &id, format!("{why} ({node})"), events);
        }
    }

    /// Tells task `id` to go (with `why`) and adds a pending instance in
    /// its place, under a new id.
    pub(crate) fn replace_task(
        &mut self,
        index: u64,
        id: &str,
        why: String,
        events: &mut Vec<Event>,
    ) {
        let Some(v) = self.tasks.update(id, |v| {
            v.desired = Desired::Remove;
            v.message = why.clone();
            events.push(Event::TaskUpdated(Box::new(v.clone())));
            v.clone()
        }) else {
            return;
        };
        let replacement = Task::pending(
            format!("{}-{}-{}-r{index}", v.app, v.version, v.instance),
            &v.app,
            v.instance,
            v.version,
            format!("replaces {id}: {why}"),
        );
        events.push(Event::TaskUpdated(Box::new(replacement.clone())));
        self.tasks.insert(replacement);
    }
}
