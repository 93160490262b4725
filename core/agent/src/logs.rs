//! The agent's own API: streams a task's log file; images (see
//! [`crate::images`]).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::agent_server::{Agent, AgentServer};
use berth_proto::{
    ImageSummary, ImageUpload, ListImagesRequest, ListImagesResponse, LogChunk, LogsRequest,
};
use berth_runtime::Runtime;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Serves the `Agent` service: logs from the runtime's task directories,
/// and the node's image store.
pub struct AgentService {
    rt: Arc<Runtime>,
}

impl AgentService {
    /// A tonic service over `rt`.
    pub fn server(rt: Arc<Runtime>) -> AgentServer<AgentService> {
        AgentServer::new(AgentService { rt })
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<LogChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for AgentService {
    type LogsStream = ChunkStream;

    async fn import_image(
        &self,
        req: Request<tonic::Streaming<ImageUpload>>,
    ) -> Result<Response<ImageSummary>, Status> {
        crate::images::import(&self.rt, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_images(
        &self,
        _req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        crate::images::list(&self.rt).await.map(Response::new)
    }

    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<ChunkStream>, Status> {
        let req = req.into_inner();
        if req.task.is_empty() || req.task.contains('/') || req.task.starts_with('.') {
            return Err(Status::invalid_argument("task: not a task id"));
        }
        let path = self.rt.log_path(&req.task);
        let mut file = tokio::fs::File::open(&path).await.map_err(|_| {
            Status::not_found(format!("no logs for task {} on this node", req.task))
        })?;
        file.seek(std::io::SeekFrom::Start(req.offset))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let follow = req.follow;
        let td = self.rt.task_dir(&req.task);
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            // Following ends once the container has ended and the file is drained.
            let mut ended = false;
            loop {
                match file.read(&mut buf).await {
                    Ok(0) if follow && !ended => {
                        if tx.is_closed() || !path.exists() {
                            break;
                        }
                        ended = td.live_shim().is_none() && td.read_exit().is_some();
                        if !ended {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    Ok(0) => break,
                    Ok(n) => {
                        if tx
                            .send(Ok(LogChunk {
                                data: buf[..n].to_vec(),
                            }))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                        break;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
