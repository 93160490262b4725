//! The gRPC services: `Control` for the CLI, `NodeApi` for agents.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use berth_hostprobe::parse_inventory;
use berth_model::node::NodeInfo;
use berth_model::quantity::{Bytes, MilliCpu};
use berth_model::spec::{parse_spec, valid_name};
use berth_proto as pb;
use berth_proto::control_server::Control;
use berth_proto::node_api_server::NodeApi;
use berth_store::{Command, Envelope, Event, Outcome, Store};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::scheduler::holds_resources;

/// Shared server state behind both services.
#[derive(Clone)]
pub struct Api {
    pub(crate) store: Store,
    /// Last heartbeat per node, kept in memory on the server that got it.
    pub(crate) heartbeats: Arc<Mutex<HashMap<String, Instant>>>,
    /// The latest scheduling decision per task, with per-node detail.
    pub(crate) explanations: crate::scheduler::Explanations,
    /// The plugins this server runs.
    pub(crate) plugins: Arc<crate::plugins::PluginSet>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn request_id(id: String) -> Option<String> {
    (!id.is_empty()).then_some(id)
}

impl Api {
    pub(crate) async fn commit(
        &self,
        request_id: Option<String>,
        command: Command,
    ) -> Result<(u64, Outcome), Status> {
        let (index, outcome) = self
            .store
            .propose(Envelope {
                request_id,
                command,
            })
            .await
            .map_err(|e| self.store_status(e))?;
        if let Outcome::Rejected(why) = &outcome {
            return Err(Status::failed_precondition(why.clone()));
        }
        Ok((index, outcome))
    }
}

fn check_app_name(name: &str) -> Result<(), Status> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "name: {name:?} is not a valid app name"
        )))
    }
}

#[tonic::async_trait]
impl Control for Api {
    async fn install_plugin(
        &self,
        req: Request<pb::PutPluginRequest>,
    ) -> Result<Response<pb::PluginInfo>, Status> {
        self.put_plugin(req, false).await
    }

    async fn upgrade_plugin(
        &self,
        req: Request<pb::PutPluginRequest>,
    ) -> Result<Response<pb::PluginInfo>, Status> {
        self.put_plugin(req, true).await
    }

    async fn rollback_plugin(
        &self,
        req: Request<pb::PluginRequest>,
    ) -> Result<Response<pb::PluginInfo>, Status> {
        let name = self.plugin_change(req, false).await?;
        self.plugin_info(&name)
    }

    async fn remove_plugin(
        &self,
        req: Request<pb::PluginRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.plugin_change(req, true).await?;
        Ok(Response::new(pb::Ack {}))
    }

    async fn list_plugins(
        &self,
        req: Request<pb::ListPluginsRequest>,
    ) -> Result<Response<pb::ListPluginsResponse>, Status> {
        self.barrier(&req).await?;
        Ok(Response::new(self.plugin_list()))
    }

    async fn get_plugin(
        &self,
        req: Request<pb::PluginRequest>,
    ) -> Result<Response<pb::PluginInfo>, Status> {
        self.barrier(&req).await?;
        self.plugin_info(&req.into_inner().name)
    }

    async fn run_app(
        &self,
        req: Request<pb::RunAppRequest>,
    ) -> Result<Response<pb::RunAppResponse>, Status> {
        let req = req.into_inner();
        // Validation happens before anything is proposed: a bad spec stores nothing.
        let spec = parse_spec(&req.spec).map_err(|e| Status::invalid_argument(e.to_string()))?;
        // Admission plugins may refuse or change it (also before anything is stored).
        self.plugins.sync(&self.store.read());
        let spec = if self.plugins.has_admission() {
            let plugins = self.plugins.clone();
            tokio::task::spawn_blocking(move || plugins.admit(spec))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(Status::invalid_argument)?
        } else {
            spec
        };
        let name = spec.name.clone();
        let (_, outcome) = self
            .commit(
                request_id(req.request_id),
                Command::PutApp {
                    spec: Box::new(spec),
                },
            )
            .await?;
        let (version, changed) = match outcome {
            Outcome::App { version, changed } => (version, changed),
            _ => (0, false),
        };
        let tasks = self
            .store
            .read()
            .tasks_of(&name)
            .filter(|t| t.version == version)
            .map(|t| t.id.clone())
            .collect();
        Ok(Response::new(pb::RunAppResponse {
            name,
            version,
            changed,
            tasks,
        }))
    }

    async fn list_apps(
        &self,
        req: Request<pb::ListAppsRequest>,
    ) -> Result<Response<pb::ListAppsResponse>, Status> {
        self.barrier(&req).await?;
        let state = self.store.read();
        let apps = state
            .apps
            .values()
            .map(|a| pb::App {
                name: a.spec.name.clone(),
                image: a.spec.image.clone(),
                instances: a.spec.instances,
                version: a.version,
                stopped: a.stopped,
                running: state
                    .tasks_of(&a.spec.name)
                    .filter(|t| {
                        t.version == a.version && t.state == berth_model::task::TaskState::Running
                    })
                    .count() as u32,
                spec_json: serde_json::to_string(&a.spec).unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::ListAppsResponse { apps }))
    }

    async fn stop_app(&self, req: Request<pb::AppRequest>) -> Result<Response<pb::Ack>, Status> {
        let req = req.into_inner();
        check_app_name(&req.name)?;
        self.commit(
            request_id(req.request_id),
            Command::StopApp { name: req.name },
        )
        .await?;
        Ok(Response::new(pb::Ack {}))
    }

    async fn remove_app(&self, req: Request<pb::AppRequest>) -> Result<Response<pb::Ack>, Status> {
        let req = req.into_inner();
        check_app_name(&req.name)?;
        self.commit(
            request_id(req.request_id),
            Command::RemoveApp { name: req.name },
        )
        .await?;
        Ok(Response::new(pb::Ack {}))
    }

    async fn list_tasks(
        &self,
        req: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        self.barrier(&req).await?;
        let app = req.into_inner().app;
        let state = self.store.read();
        let tasks = state
            .tasks
            .values()
            .filter(|t| app.is_empty() || t.app == app)
            .map(convert::task)
            .collect();
        Ok(Response::new(pb::ListTasksResponse { tasks }))
    }

    type WatchTasksStream = BoxStream<pb::TaskEvent>;

    async fn watch_tasks(
        &self,
        req: Request<pb::WatchTasksRequest>,
    ) -> Result<Response<Self::WatchTasksStream>, Status> {
        let app = req.into_inner().app;
        // Subscribe before reading the current state so nothing falls between.
        let mut events = self.store.subscribe();
        let initial: Vec<pb::TaskEvent> = self
            .store
            .read()
            .tasks
            .values()
            .filter(|t| app.is_empty() || t.app == app)
            .map(|t| pb::TaskEvent {
                task: Some(convert::task(t)),
                removed: false,
            })
            .collect();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            for ev in initial {
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            loop {
                let ev = match events.recv().await {
                    Ok(Event::TaskUpdated(t)) if app.is_empty() || t.app == app => pb::TaskEvent {
                        task: Some(convert::task(&t)),
                        removed: false,
                    },
                    Ok(Event::TaskRemoved(id)) => pb::TaskEvent {
                        task: Some(pb::Task {
                            id,
                            ..Default::default()
                        }),
                        removed: true,
                    },
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::data_loss(format!(
                                "watcher fell {n} events behind; watch again"
                            ))))
                            .await;
                        return;
                    }
                    Err(_) => return,
                };
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_nodes(
        &self,
        req: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        self.barrier(&req).await?;
        let state = self.store.read();
        let nodes = state
            .nodes
            .values()
            .map(|n| node_summary(&state, n))
            .collect();
        Ok(Response::new(pb::ListNodesResponse { nodes }))
    }

    async fn explain(
        &self,
        req: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::Explanation>, Status> {
        let id = req.into_inner().task;
        let task = self
            .store
            .read()
            .tasks
            .get(&id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no task named {id}")))?;
        let ex = self.explanations.lock().unwrap_or_else(|p| p.into_inner());
        let Some(d) = ex.get(&id) else {
            return Ok(Response::new(pb::Explanation {
                task: id,
                summary: task.message.clone(),
                node: task.node.clone().unwrap_or_default(),
                nodes: Vec::new(),
                detail_available: false,
            }));
        };
        let nodes = d
            .nodes
            .iter()
            .map(|n| pb::NodeVerdict {
                node: n.node.clone(),
                filtered_by: n
                    .filtered
                    .as_ref()
                    .map(|(p, _)| p.clone())
                    .unwrap_or_default(),
                reason: n
                    .filtered
                    .as_ref()
                    .map(|(_, r)| r.reason.to_string())
                    .unwrap_or_default(),
                detail: n
                    .filtered
                    .as_ref()
                    .map(|(_, r)| r.detail.to_string())
                    .unwrap_or_default(),
                scores: n
                    .scores
                    .iter()
                    .map(|(p, v)| pb::PluginScore {
                        plugin: p.clone(),
                        score: *v,
                    })
                    .collect(),
                total: n.total,
            })
            .collect();
        Ok(Response::new(pb::Explanation {
            task: id,
            summary: d.summary.clone(),
            node: d
                .placement
                .as_ref()
                .map(|(n, _)| n.clone())
                .unwrap_or_default(),
            nodes,
            detail_available: true,
        }))
    }

    async fn drain_node(
        &self,
        req: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let r = req.into_inner();
        if !valid_name(&r.name) {
            return Err(Status::invalid_argument(format!(
                "name: {:?} is not a valid node name",
                r.name
            )));
        }
        if !self.store.read().nodes.contains_key(&r.name) {
            return Err(Status::not_found(format!("no node named {}", r.name)));
        }
        self.commit(
            request_id(r.request_id),
            Command::DrainNode {
                name: r.name,
                drain: r.drain,
            },
        )
        .await?;
        Ok(Response::new(pb::Ack {}))
    }

    async fn get_node(
        &self,
        req: Request<pb::GetNodeRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        self.barrier(&req).await?;
        let name = req.into_inner().name;
        let state = self.store.read();
        let n = state
            .nodes
            .get(&name)
            .ok_or_else(|| Status::not_found(format!("no node named {name}")))?;
        let mut out = node_summary(&state, n);
        if let Some(inv) = &n.info.inventory {
            out.inventory_json =
                serde_json::to_string(inv).map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(Response::new(out))
    }
}

#[tonic::async_trait]
impl NodeApi for Api {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let r = req.into_inner();
        if !valid_name(&r.name) {
            return Err(Status::invalid_argument(format!(
                "name: {:?} is not a valid node name ([a-z0-9-], 1-63)",
                r.name
            )));
        }
        if r.cpu_millis == 0 || r.memory_bytes == 0 {
            return Err(Status::invalid_argument(
                "cpu_millis and memory_bytes must be positive",
            ));
        }
        let inventory = if r.inventory_json.is_empty() {
            None
        } else {
            let inv = parse_inventory(&r.inventory_json, "inventory_json")
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            Some(Box::new(inv))
        };
        let info = NodeInfo {
            name: r.name.clone(),
            address: r.address,
            cpu: MilliCpu(r.cpu_millis),
            memory: Bytes(r.memory_bytes),
            labels: r.labels.into_iter().collect(),
            inventory,
        };
        self.heartbeats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(r.name, Instant::now());
        self.commit(None, Command::RegisterNode { info }).await?;
        Ok(Response::new(pb::Ack {}))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let node = req.into_inner().node;
        // Liveness is judged by the leader, from the heartbeats it gets.
        if !self.store.is_leader() {
            return Err(self.not_leader());
        }
        if !self.store.read().nodes.contains_key(&node) {
            return Err(Status::not_found(format!("node {node} is not registered")));
        }
        self.heartbeats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node, Instant::now());
        Ok(Response::new(pb::Ack {}))
    }

    type WatchAssignmentsStream = BoxStream<pb::AssignmentSet>;

    async fn watch_assignments(
        &self,
        req: Request<pb::WatchAssignmentsRequest>,
    ) -> Result<Response<Self::WatchAssignmentsStream>, Status> {
        let node = req.into_inner().node;
        let store = self.store.clone();
        let mut applied = store.applied();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut last: Option<pb::AssignmentSet> = None;
            loop {
                let set = assignments(&store, &node);
                if last.as_ref() != Some(&set) {
                    if tx.send(Ok(set.clone())).await.is_err() {
                        return;
                    }
                    last = Some(set);
                }
                tokio::select! {
                    r = applied.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn report_tasks(
        &self,
        req: Request<pb::ReportTasksRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let r = req.into_inner();
        let statuses = r
            .statuses
            .into_iter()
            .map(convert::status)
            .collect::<Result<Vec<_>, _>>()?;
        if statuses.is_empty() {
            return Ok(Response::new(pb::Ack {}));
        }
        self.commit(
            None,
            Command::ReportTasks {
                node: r.node,
                statuses,
            },
        )
        .await?;
        Ok(Response::new(pb::Ack {}))
    }
}

/// A node with what is allocated on it and a hardware summary.
fn node_summary(state: &berth_store::ClusterState, n: &berth_model::node::Node) -> pb::Node {
    let mine: Vec<_> = state
        .tasks
        .values()
        .filter(|t| t.node.as_deref() == Some(n.info.name.as_str()) && holds_resources(state, t))
        .collect();
    let cpu: u64 = mine
        .iter()
        .filter_map(|t| t.allocation.as_ref())
        .map(|a| a.cpu.0)
        .sum();
    let mem: u64 = mine
        .iter()
        .filter_map(|t| t.allocation.as_ref())
        .map(|a| a.memory.0)
        .sum();
    convert::node(n, cpu, mem, mine.len() as u32)
}

/// The tasks a node must act on, with their specs.
fn assignments(store: &Store, node: &str) -> pb::AssignmentSet {
    let state = store.read();
    let mut specs: HashMap<&str, String> = HashMap::new();
    let assignments = state
        .assignments_for(node)
        .map(|t| {
            let spec_json = specs
                .entry(t.app.as_str())
                .or_insert_with(|| {
                    state
                        .apps
                        .get(&t.app)
                        .filter(|a| a.version == t.version)
                        .map(|a| serde_json::to_string(&a.spec).unwrap_or_default())
                        .unwrap_or_default()
                })
                .clone();
            pb::Assignment {
                task: Some(convert::task(t)),
                spec_json,
            }
        })
        .collect();
    pb::AssignmentSet { assignments }
}
