//! `NodeApi`, the service agents use: registration with the hardware
//! inventory, heartbeats, the assignment stream and status reports.

use std::collections::BTreeSet;

use berth_hostprobe::Inventory;
use berth_hostprobe::validate::validate as validate_inventory;
use berth_model::node::NodeInfo;
use berth_model::quantity::{Bytes, MilliCpu};
use berth_model::spec::valid_name;
use berth_proto as pb;
use berth_proto::node_api_server::NodeApi;
use berth_store::Command;
use tonic::{Request, Response, Status};

use crate::api::{
    Api, BoxStream, MAX_LABELS, MAX_NODE_CPU_MILLIS, MAX_NODE_MEMORY, MAX_STATUSES,
    MAX_TASK_MESSAGE,
};
use crate::assign;
use crate::convert;

/// The largest hardware inventory a node may register (encoded bytes; the
/// DGX H100 fixture's is under 25 KiB even as JSON).
pub const MAX_INVENTORY: usize = 1 << 20;

#[tonic::async_trait]
impl NodeApi for Api {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        crate::auth::check_node(&req, &req.get_ref().name)?;
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
        // A node cannot claim more than any machine has, which would draw
        // every task to it.
        if r.cpu_millis > MAX_NODE_CPU_MILLIS {
            return Err(Status::invalid_argument(format!(
                "cpu_millis: {} is more than any node has ({MAX_NODE_CPU_MILLIS})",
                r.cpu_millis
            )));
        }
        if r.memory_bytes > MAX_NODE_MEMORY {
            return Err(Status::invalid_argument(format!(
                "memory_bytes: {} is more than any node has ({MAX_NODE_MEMORY})",
                r.memory_bytes
            )));
        }
        if r.labels.len() > MAX_LABELS {
            return Err(Status::invalid_argument(format!(
                "labels: {} entries, more than {MAX_LABELS}",
                r.labels.len()
            )));
        }
        let inventory = match r.inventory {
            None => None,
            Some(wire) => {
                // It is kept in the replicated state and in every snapshot.
                let size = prost::Message::encoded_len(&wire);
                if size > MAX_INVENTORY {
                    return Err(Status::invalid_argument(format!(
                        "inventory: {size} bytes, more than {MAX_INVENTORY}"
                    )));
                }
                let inv = Inventory::try_from(wire)
                    .map_err(|e| Status::invalid_argument(format!("inventory.{e}")))?;
                validate_inventory(&inv).map_err(|(path, message)| {
                    Status::invalid_argument(format!("inventory.{path}: {message}"))
                })?;
                // Capacity is what the hardware has, or less (reserved).
                let pus = inv.pu_count() as u64;
                if pus > 0 && r.cpu_millis > pus * 1000 {
                    return Err(Status::invalid_argument(format!(
                        "cpu_millis: {} is more than the inventory's {pus} CPUs",
                        r.cpu_millis
                    )));
                }
                let mem = inv.memory_bytes();
                if mem > 0 && r.memory_bytes > mem {
                    return Err(Status::invalid_argument(format!(
                        "memory_bytes: {} is more than the inventory's {mem}",
                        r.memory_bytes
                    )));
                }
                Some(Box::new(inv))
            }
        };
        let dynamic_ports = match (r.dynamic_port_min, r.dynamic_port_max) {
            (0, 0) => None,
            (a, b) if a >= 1 && a <= b && b <= 65535 => Some((a as u16, b as u16)),
            (a, b) => {
                return Err(Status::invalid_argument(format!(
                    "dynamic_port_min, dynamic_port_max: {a}-{b} is not a port range"
                )));
            }
        };
        let info = NodeInfo {
            name: r.name.clone(),
            address: r.address,
            cpu: MilliCpu(r.cpu_millis),
            memory: Bytes(r.memory_bytes),
            labels: r.labels.into_iter().collect(),
            inventory,
            dynamic_ports,
        };
        let name = r.name;
        let subnets = Some(self.node_subnets.clone());
        self.commit(None, Command::RegisterNode { info, subnets })
            .await?;
        self.liveness.registered(&name);
        let subnet = self.store.read().subnet_of(&name).unwrap_or_default();
        Ok(Response::new(pb::RegisterResponse { subnet }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        crate::auth::check_node(&req, &req.get_ref().node)?;
        let node = req.into_inner().node;
        if !valid_name(&node) {
            return Err(Status::invalid_argument(format!(
                "node: {node:?} is not a valid node name"
            )));
        }
        // Liveness is judged by the leader, from the heartbeats it gets.
        if !self.store.is_leader() {
            return Err(self.not_leader());
        }
        // The state's lock is taken only for a node this server has not
        // seen registered yet.
        let store = &self.store;
        if !self
            .liveness
            .beat(&node, || store.read().nodes.contains_key(&node))
        {
            return Err(Status::not_found(format!("node {node} is not registered")));
        }
        Ok(Response::new(pb::HeartbeatResponse {
            next_ms: self.liveness.interval().as_millis() as u64,
        }))
    }

    type WatchAssignmentsStream = BoxStream<pb::AssignmentUpdate>;

    async fn watch_assignments(
        &self,
        req: Request<pb::WatchAssignmentsRequest>,
    ) -> Result<Response<Self::WatchAssignmentsStream>, Status> {
        crate::auth::check_node(&req, &req.get_ref().node)?;
        let node = req.into_inner().node;
        if !valid_name(&node) {
            return Err(Status::invalid_argument(format!(
                "node: {node:?} is not a valid node name"
            )));
        }
        let store = self.store.clone();
        // Register before reading the full set, so nothing falls between.
        let mut routed = self.router.register(&node);
        let mut stream = assign::Stream::new(node);
        let first = stream.full(&store.read());
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            loop {
                let r = tokio::select! {
                    r = routed.recv() => r,
                    _ = tx.closed() => return,
                };
                let Some(r) = r else { return };
                // Everything queued meanwhile goes out as one update.
                let mut touched = BTreeSet::new();
                let mut resync = !assign::touched(&r, &mut touched);
                while let Ok(r) = routed.try_recv() {
                    resync |= !assign::touched(&r, &mut touched);
                }
                let update = {
                    let state = store.read();
                    if resync {
                        Some(stream.full(&state))
                    } else {
                        stream.delta(&state, &touched)
                    }
                };
                if let Some(u) = update
                    && tx.send(Ok(u)).await.is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_registry_credential(
        &self,
        req: Request<pb::RegistryRequest>,
    ) -> Result<Response<pb::RegistryCredential>, Status> {
        self.registry_credential_of(req).await
    }

    async fn join_node(
        &self,
        req: Request<pb::JoinNodeRequest>,
    ) -> Result<Response<pb::JoinNodeResponse>, Status> {
        self.join_node_with_token(req.into_inner()).await
    }

    async fn report_tasks(
        &self,
        req: Request<pb::ReportTasksRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        crate::auth::check_node(&req, &req.get_ref().node)?;
        let r = req.into_inner();
        if r.statuses.len() > MAX_STATUSES {
            return Err(Status::invalid_argument(format!(
                "statuses: {} reports, more than {MAX_STATUSES}",
                r.statuses.len()
            )));
        }
        if let Some(s) = r
            .statuses
            .iter()
            .find(|s| s.message.len() > MAX_TASK_MESSAGE)
        {
            return Err(Status::invalid_argument(format!(
                "statuses[{}].message: {} bytes, more than {MAX_TASK_MESSAGE}",
                s.id,
                s.message.len()
            )));
        }
        let statuses = r
            .statuses
            .into_iter()
            .map(convert::status)
            .collect::<Result<Vec<_>, _>>()?;
        if statuses.is_empty() {
            return Ok(Response::new(pb::Ack {}));
        }
        // A node reports only its own tasks (ids unknown here are ignored
        // when applied: removed meanwhile).
        {
            let state = self.store.read();
            if let Some(s) = statuses.iter().find(|s| {
                state
                    .tasks
                    .get(&s.id)
                    .is_some_and(|t| t.node.as_deref() != Some(r.node.as_str()))
            }) {
                return Err(Status::permission_denied(format!(
                    "statuses: task {} is not assigned to node {}",
                    s.id, r.node
                )));
            }
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
