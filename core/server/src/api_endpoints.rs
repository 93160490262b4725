//! Endpoints: every ready instance with its node, address and ports, for
//! `berth endpoints`, the agents' DNS, and (later) the dashboard. The
//! watch sends the current set, then only what changes it (per stream, the
//! endpoints it has sent are remembered).

use std::collections::HashMap;

use berth_model::task::{Desired, Task, TaskState};
use berth_proto as pb;
use berth_store::{ClusterState, Event};
use tonic::{Request, Response, Status};

use crate::api::{Api, BoxStream, check_app_name};

/// The host part of a node's registered `host:port` address.
fn host_of(address: &str) -> String {
    match address.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        None => address.to_string(),
    }
}

/// `t` as an endpoint, if it is one: meant to run, running and ready.
pub fn endpoint(state: &ClusterState, t: &Task) -> Option<pb::Endpoint> {
    if t.desired != Desired::Run || t.state != TaskState::Running || !t.ready {
        return None;
    }
    let spec = state.apps.get(&t.app)?.spec_of(t.version)?;
    let node = state.nodes.get(t.node.as_deref()?)?;
    let node_ip = host_of(&node.info.address);
    let alloc = t.allocation.as_ref();
    let mut host_ports = alloc.map(|a| a.ports.iter()).into_iter().flatten();
    let bridge = spec.network() == berth_model::spec::Network::Bridge;
    let ports = spec
        .ports
        .iter()
        .map(|p| {
            let host = p.host.and_then(|_| host_ports.next().copied());
            let listen = if bridge {
                p.container.unwrap_or(0)
            } else {
                host.unwrap_or(0)
            };
            pb::EndpointPort {
                name: p.name.clone().unwrap_or_default(),
                port: u32::from(listen),
                host_port: host.map_or(0, u32::from),
            }
        })
        .collect();
    Some(pb::Endpoint {
        app: t.app.clone(),
        namespace: spec.namespace.clone(),
        task: t.id.clone(),
        node: node.info.name.clone(),
        ip: if t.ip.is_empty() {
            node_ip.clone()
        } else {
            t.ip.clone()
        },
        node_ip,
        ports,
    })
}

fn added(e: pb::Endpoint) -> pb::EndpointEvent {
    pb::EndpointEvent {
        endpoint: Some(e),
        ..Default::default()
    }
}

fn wanted(app: &str, t: &Task) -> bool {
    app.is_empty() || t.app == app
}

impl Api {
    /// `Endpoints`.
    pub(crate) async fn endpoints_of(
        &self,
        req: Request<pb::EndpointsRequest>,
    ) -> Result<Response<pb::EndpointsResponse>, Status> {
        self.barrier(&req).await?;
        self.scope_app(&req, &req.get_ref().app)?;
        let scope = self.scope(&req);
        let app = req.into_inner().app;
        if !app.is_empty() {
            check_app_name(&app)?;
        }
        let state = self.store.read();
        if !app.is_empty() && !state.apps.contains_key(&app) {
            return Err(Status::not_found(format!("no app named {app}")));
        }
        let visible = |t: &&Task| crate::api_acl::in_scope(&state, scope.as_deref(), &t.app);
        let endpoints = if app.is_empty() {
            state
                .tasks
                .values()
                .filter(visible)
                .filter_map(|t| endpoint(&state, t))
                .collect()
        } else {
            state
                .tasks_of(&app)
                .filter(visible)
                .filter_map(|t| endpoint(&state, t))
                .collect()
        };
        Ok(Response::new(pb::EndpointsResponse { endpoints }))
    }

    /// `WatchEndpoints`.
    pub(crate) async fn watch_endpoints_of(
        &self,
        req: Request<pb::EndpointsRequest>,
    ) -> Result<Response<BoxStream<pb::EndpointEvent>>, Status> {
        self.scope_app(&req, &req.get_ref().app)?;
        let scope = self.scope(&req);
        let app = req.into_inner().app;
        if !app.is_empty() {
            check_app_name(&app)?;
        }
        // Subscribe before reading the current set so nothing falls between.
        let mut events = self.store.subscribe();
        // What this stream has said is an endpoint: a task change that
        // changes no endpoint sends nothing.
        let mut sent: HashMap<String, pb::Endpoint> = {
            let state = self.store.read();
            let tasks: Box<dyn Iterator<Item = &Task>> = if app.is_empty() {
                Box::new(state.tasks.values())
            } else {
                Box::new(state.tasks_of(&app))
            };
            tasks
                .filter(|t| crate::api_acl::in_scope(&state, scope.as_deref(), &t.app))
                .filter_map(|t| endpoint(&state, t))
                .map(|e| (e.task.clone(), e))
                .collect()
        };
        let initial: Vec<pb::EndpointEvent> = sent
            .values()
            .map(|e| added(e.clone()))
            .chain(std::iter::once(pb::EndpointEvent {
                synced: true,
                ..Default::default()
            }))
            .collect();
        let store = self.store.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            for ev in initial {
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            while let Some(batch) = events.recv().await {
                let mut out = Vec::new();
                {
                    let state = store.read();
                    for e in &batch.events {
                        let (Event::TaskUpdated(t) | Event::TaskRemoved(t)) = e else {
                            continue;
                        };
                        if !wanted(&app, t) {
                            continue;
                        }
                        let now = state
                            .tasks
                            .get(&t.id)
                            .filter(|t| crate::api_acl::in_scope(&state, scope.as_deref(), &t.app))
                            .and_then(|t| endpoint(&state, t));
                        match now {
                            Some(e) if sent.get(&e.task) != Some(&e) => {
                                sent.insert(e.task.clone(), e.clone());
                                out.push(added(e));
                            }
                            None if sent.remove(&t.id).is_some() => {
                                out.push(pb::EndpointEvent {
                                    removed: t.id.clone(),
                                    ..Default::default()
                                });
                            }
                            _ => {}
                        }
                    }
                }
                for ev in out {
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
