//! Calls that reach a node: a task's logs and exec, and the node's image
//! store. The client talks to the servers only; a server checks the
//! caller's namespace (or area) and dials the node's agent with its own
//! server certificate, which is the only kind an agent accepts.

use berth_proto as pb;
use berth_proto::agent_client::AgentClient;
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::api::{Api, BoxStream};

/// The node an image call is for (the `berth-node` header).
fn node_header<T>(req: &Request<T>) -> Result<String, Status> {
    req.metadata()
        .get(crate::auth::NODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|n| berth_model::valid_name(n))
        .map(str::to_string)
        .ok_or_else(|| Status::invalid_argument("node: the berth-node header names no valid node"))
}

impl Api {
    /// A client for the agent of node `node`.
    async fn agent(&self, node: &str) -> Result<AgentClient<Channel>, Status> {
        let address = {
            let state = self.store.read();
            let n = state
                .nodes
                .get(node)
                .ok_or_else(|| Status::not_found(format!("no node named {node}")))?;
            n.info.address.clone()
        };
        let ch = berth_proto::servers::endpoint(&address, self.agent_tls.as_ref())
            .map_err(Status::internal)?
            .connect_timeout(std::time::Duration::from_secs(3))
            .connect()
            .await
            .map_err(|e| Status::unavailable(format!("node {node} ({address}): {e}")))?;
        Ok(AgentClient::new(ch)
            .max_decoding_message_size(berth_proto::MAX_MESSAGE)
            .max_encoding_message_size(berth_proto::MAX_MESSAGE))
    }

    /// The node of task `task`, if the caller may see it.
    fn node_of<T>(&self, req: &Request<T>, task: &str) -> Result<String, Status> {
        self.scope_task(req, task)?;
        let state = self.store.read();
        let t = state
            .tasks
            .get(task)
            .ok_or_else(|| Status::not_found(format!("no task {task}")))?;
        t.node.clone().ok_or_else(|| {
            Status::failed_precondition(format!(
                "task {task} has not been placed on a node yet: {}",
                t.message
            ))
        })
    }

    pub(crate) async fn logs_of(
        &self,
        req: Request<pb::LogsRequest>,
    ) -> Result<Response<BoxStream<pb::LogChunk>>, Status> {
        let node = self.node_of(&req, &req.get_ref().task)?;
        let stream = self.agent(&node).await?.logs(req.into_inner()).await?;
        Ok(Response::new(Box::pin(stream.into_inner())))
    }

    pub(crate) async fn exec_of(
        &self,
        req: Request<Streaming<pb::ExecInput>>,
    ) -> Result<Response<BoxStream<pb::ExecOutput>>, Status> {
        let (meta, ext, mut input) = req.into_parts();
        let first = input
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("exec: no start message"))?;
        let Some(pb::exec_input::Msg::Start(start)) = &first.msg else {
            return Err(Status::invalid_argument(
                "exec: the first message must be the start",
            ));
        };
        let probe = Request::from_parts(meta, ext, ());
        let node = self.node_of(&probe, &start.task)?;
        let rest = input.map_while(|m| m.ok());
        let upstream = tokio_stream::once(first).chain(rest);
        let out = self.agent(&node).await?.exec(upstream).await?;
        Ok(Response::new(Box::pin(out.into_inner())))
    }

    pub(crate) async fn import_image_of(
        &self,
        req: Request<Streaming<pb::ImageUpload>>,
    ) -> Result<Response<pb::ImageSummary>, Status> {
        let node = node_header(&req)?;
        let mut agent = self.agent(&node).await?;
        let chunks = req.into_inner().map_while(|m| m.ok());
        agent.import_image(chunks).await
    }

    pub(crate) async fn list_images_of(
        &self,
        req: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let node = node_header(&req)?;
        self.agent(&node).await?.list_images(req.into_inner()).await
    }
}
