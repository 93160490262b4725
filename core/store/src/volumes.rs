//! Persistent volumes' bindings: which node holds instance N's volume.
//!
//! A binding is made when an instance with persistent volumes is first
//! placed (in the same apply as the placement) and pins every later task
//! of that instance to the node, through rolling upgrades, restarts and
//! node drains, until `berth volume rm`. Agents delete the data of
//! volumes no longer bound.

use berth_model::spec::{AppSpec, VolumeKind, volume_id};
use berth_model::task::{Desired, Task};
use serde::{Deserialize, Serialize};

use crate::state::{ClusterState, Event, Outcome};
use berth_model::node::NodeStatus;

/// Where one instance's persistent volume lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeBinding {
    /// The app.
    pub app: String,
    /// The instance number.
    pub instance: u32,
    /// The volume's name in the spec.
    pub name: String,
    /// The node that holds its data.
    pub node: String,
    /// Its size in bytes when created.
    pub size: u64,
    /// The log index that created it.
    pub created: u64,
}

/// A change to the volume bindings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeCommand {
    /// Forget a volume (its node deletes the data); an instance pinned by
    /// it on a drained or down node is replaced elsewhere.
    Remove {
        /// `<app>-<instance>-<name>`.
        id: String,
    },
}

impl ClusterState {
    /// The node instance `instance` of the app with `spec` is pinned to by
    /// a bound persistent volume, and that volume's id.
    pub fn volume_pin(&self, spec: &AppSpec, instance: u32) -> Option<(&str, String)> {
        spec.volumes
            .iter()
            .filter(|v| v.kind() == VolumeKind::Persistent)
            .find_map(|v| {
                let id = volume_id(&spec.name, instance, &v.name);
                self.volumes.get(&id).map(|b| (b.node.as_str(), id))
            })
    }

    /// Binds the persistent volumes of `task` (just placed on `node`) that
    /// are not bound yet.
    pub(crate) fn bind_volumes(&mut self, index: u64, task: &Task, node: &str) {
        let Some(spec) = self
            .apps
            .get(&task.app)
            .and_then(|a| a.spec_of(task.version))
        else {
            return;
        };
        let new: Vec<(String, VolumeBinding)> = spec
            .volumes
            .iter()
            .filter(|v| v.kind() == VolumeKind::Persistent)
            .map(|v| {
                (
                    volume_id(&task.app, task.instance, &v.name),
                    VolumeBinding {
                        app: task.app.clone(),
                        instance: task.instance,
                        name: v.name.clone(),
                        node: node.to_string(),
                        size: v.size.map_or(0, |s| s.0),
                        created: index,
                    },
                )
            })
            .collect();
        for (id, b) in new {
            self.volumes.entry(id).or_insert(b);
        }
    }

    /// Whether `task` is held on `node` by a volume bound there (and the
    /// reason to show), so a drain leaves it where it is.
    pub(crate) fn held_by_volume(&self, task: &Task, node: &str) -> Option<String> {
        let spec = self.apps.get(&task.app)?.spec_of(task.version)?;
        let (at, id) = self.volume_pin(spec, task.instance)?;
        (at == node).then(|| {
            format!(
                "stays on drained node {node}: its volume {id} is bound there \
                 (`berth volume rm {id}` releases it and moves the instance)"
            )
        })
    }

    pub(crate) fn apply_volume(
        &mut self,
        index: u64,
        cmd: VolumeCommand,
        events: &mut Vec<Event>,
    ) -> Outcome {
        let VolumeCommand::Remove { id } = cmd;
        let Some(b) = self.volumes.get(&id).cloned() else {
            return Outcome::Rejected(format!("no volume named {id}"));
        };
        let node_open = self
            .nodes
            .get(&b.node)
            .is_some_and(|n| n.status == NodeStatus::Ready && !n.drained);
        let users: Vec<String> = self
            .tasks
            .of_app(&b.app)
            .filter(|t| {
                t.instance == b.instance
                    && t.desired == Desired::Run
                    && t.node.as_deref() == Some(b.node.as_str())
            })
            .map(|t| t.id.clone())
            .collect();
        if node_open && let Some(t) = users.first() {
            return Outcome::Rejected(format!(
                "volume {id} is in use by task {t} on node {}; stop the app or scale it \
                 below {} instance(s) first",
                b.node,
                b.instance + 1
            ));
        }
        self.volumes.remove(&id);
        // Released from a drained or down node: the instance moves on,
        // with a new volume wherever it lands.
        for t in users {
            self.replace_task(index, &t, format!("volume {id} removed"), events);
        }
        Outcome::Ok
    }
}
