//! `Explain`: why a task went where it went, or why it waits.

use berth_proto as pb;
use tonic::{Request, Response, Status};

use crate::api::Api;

impl Api {
    /// `Explain`: the last decision about a task, per node, if this
    /// server made it and the task is still where it put it; else its
    /// pending reason.
    pub(crate) fn explain_of(
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
        let Some(d) = ex
            .get(&id)
            .filter(|d| d.placement.as_ref().map(|p| &p.0) == task.node.as_ref())
        else {
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
}
