//! `ListNodes`, `GetNode` (with the inventory and the tasks placed there)
//! and `DrainNode`.

use std::ops::Bound;

use berth_model::spec::valid_name;
use berth_proto as pb;
use berth_store::Command;
use tonic::{Request, Response, Status};

use crate::api::{Api, request_id};
use crate::convert;

impl Api {
    pub(crate) async fn list_nodes_of(
        &self,
        req: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        self.barrier(&req).await?;
        let r = req.into_inner();
        if r.prefix.len() > 63
            || !r
                .prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(Status::invalid_argument(format!(
                "prefix: {:?} is not the start of a node name (a-z, 0-9, '-'; 63 at most)",
                r.prefix
            )));
        }
        let page = crate::paging::Page::new(r.page_size, r.page_token)?;
        let state = self.store.read();
        // From the later of the token and the prefix.
        let start = match page.start() {
            Bound::Excluded(t) if t >= r.prefix.as_str() => Bound::Excluded(t),
            _ if r.prefix.is_empty() => Bound::Unbounded,
            _ => Bound::Included(r.prefix.as_str()),
        };
        let (nodes, next_page_token) = page.take(
            state
                .nodes
                .range::<str, _>((start, Bound::Unbounded))
                .take_while(|(name, _)| name.starts_with(&r.prefix))
                .map(|(name, n)| (name.as_str(), node_summary(&state, n))),
        );
        Ok(Response::new(pb::ListNodesResponse {
            nodes,
            next_page_token,
        }))
    }

    pub(crate) async fn drain_node_of(
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
        let rid = request_id(r.request_id)?;
        if !self.store.read().nodes.contains_key(&r.name) {
            return Err(Status::not_found(format!("no node named {}", r.name)));
        }
        self.commit(
            rid,
            Command::DrainNode {
                name: r.name,
                drain: r.drain,
            },
        )
        .await?;
        Ok(Response::new(pb::Ack {}))
    }

    pub(crate) async fn get_node_of(
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
        out.inventory = n.info.inventory.as_deref().map(pb::Inventory::from);
        out.placed = state
            .tasks
            .on_node(&name)
            .filter(|t| state.holds_resources(t))
            .map(convert::task)
            .collect();
        Ok(Response::new(out))
    }
}

/// A node with what is allocated on it and a hardware summary.
fn node_summary(state: &berth_store::ClusterState, n: &berth_model::node::Node) -> pb::Node {
    let mine: Vec<_> = state
        .tasks
        .on_node(&n.info.name)
        .filter(|t| state.holds_resources(t))
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
