//! The agent's own API: a task's log (its rotated files too, filtered by
//! stream, time and count, and followed); images (see [`crate::images`]).

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::agent_server::{Agent, AgentServer};
use berth_proto::{
    ImageSummary, ImageUpload, ListImagesRequest, ListImagesResponse, LogChunk, LogStream,
    LogsRequest,
};
use berth_runtime::Runtime;
use berth_runtime::logs::{Filter, Record, Selection, Stream, parse_or_plain, render};
use tokio_stream::Stream as TokioStream;
use tonic::codegen::InterceptedService;
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

    /// [`AgentService::server`] that only servers may call: over TLS, a
    /// caller whose certificate is not a server's is refused (clients
    /// reach a node through the servers, which check their tokens).
    pub fn guarded(rt: Arc<Runtime>) -> InterceptedService<AgentServer<AgentService>, OnlyServers> {
        InterceptedService::new(AgentService::server(rt), only_servers)
    }
}

/// The check [`AgentService::guarded`] runs on each call.
pub type OnlyServers = fn(Request<()>) -> Result<Request<()>, Status>;

fn only_servers(req: Request<()>) -> Result<Request<()>, Status> {
    // No certificates: a listener without TLS (benchmarks only).
    let Some(certs) = req.peer_certs() else {
        return Ok(req);
    };
    match certs.first().and_then(|c| berth_tls::identity(c.as_ref())) {
        Some((berth_tls::Role::Server, _)) => Ok(req),
        Some((role, name)) => Err(Status::permission_denied(format!(
            "{role}/{name}: only servers may call an agent (use the servers' API)"
        ))),
        None => Err(Status::permission_denied(
            "not a Berth certificate: only servers may call an agent",
        )),
    }
}

type ChunkStream = Pin<Box<dyn TokioStream<Item = Result<LogChunk, Status>> + Send>>;

/// The most lines `tail` may ask for.
pub const MAX_TAIL: u64 = 1_000_000;

/// Reads the current log file line by line, remembering where it is, so
/// following picks up exactly after what was sent.
struct Cursor {
    path: PathBuf,
    reader: Option<BufReader<std::fs::File>>,
    ino: u64,
    partial: Vec<u8>,
}

impl Cursor {
    fn open(path: &Path) -> Cursor {
        let mut c = Cursor {
            path: path.to_path_buf(),
            reader: None,
            ino: 0,
            partial: Vec::new(),
        };
        c.reopen();
        c
    }

    fn reopen(&mut self) {
        self.reader = std::fs::File::open(&self.path).ok().map(|f| {
            self.ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
            BufReader::new(f)
        });
        self.partial.clear();
    }

    /// The complete lines written since the last call.
    fn lines(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let Some(r) = self.reader.as_mut() else {
            self.reopen();
            return out;
        };
        loop {
            match r.read_until(b'\n', &mut self.partial) {
                Ok(0) | Err(_) => break,
                Ok(_) if self.partial.ends_with(b"\n") => {
                    self.partial.pop();
                    out.push(String::from_utf8_lossy(&self.partial).into_owned());
                    self.partial.clear();
                }
                Ok(_) => break,
            }
        }
        out
    }

    /// Whether the file was rotated away (a new file has its name).
    fn rotated(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| m.ino() != self.ino)
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    type LogsStream = ChunkStream;
    type ExecStream = crate::exec::ExecStream;

    async fn exec(
        &self,
        req: Request<tonic::Streaming<berth_proto::ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        crate::exec::exec(&self.rt, req.into_inner())
            .await
            .map(Response::new)
    }

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
        if req.tail > MAX_TAIL {
            return Err(Status::invalid_argument(format!(
                "tail: at most {MAX_TAIL} lines"
            )));
        }
        let path = self.rt.log_path(&req.task);
        if !path.exists() {
            return Err(Status::not_found(format!(
                "no logs for task {} on this node",
                req.task
            )));
        }
        let filter = Filter {
            tail: req.tail as usize,
            since_nanos: req.since_ms.saturating_mul(1_000_000),
            stream: match LogStream::try_from(req.stream) {
                Ok(LogStream::Stdout) => Some(Stream::Stdout),
                Ok(LogStream::Stderr) => Some(Stream::Stderr),
                _ => None,
            },
        };
        let td = self.rt.task_dir(&req.task);
        let files = td.read_launch().map_or(3, |l| l.spec.logs.files.max(1));
        let (follow, stamps) = (req.follow, req.timestamps);
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let send = |records: Vec<Record>| {
                let mut data = Vec::new();
                for r in &records {
                    render(r, stamps, &mut data);
                }
                data
            };
            // What is there now: the rotated files, then the current one.
            let first = tokio::task::spawn_blocking({
                let (path, filter) = (path.clone(), filter.clone());
                move || {
                    let mut sel = Selection::new(filter);
                    let _ = sel.rotated(&path, files);
                    let mut cursor = Cursor::open(&path);
                    for line in cursor.lines() {
                        sel.push(&line);
                    }
                    (sel.into_records(), cursor)
                }
            })
            .await;
            let Ok((records, mut cursor)) = first else {
                return;
            };
            for chunk in send(records).chunks(64 * 1024) {
                if tx
                    .send(Ok(LogChunk {
                        data: chunk.to_vec(),
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if !follow {
                return;
            }
            // Following ends once the container has ended and the log is drained.
            let since = Filter { tail: 0, ..filter };
            loop {
                let lines = cursor.lines();
                if lines.is_empty() {
                    if cursor.rotated() {
                        cursor.reopen();
                        continue;
                    }
                    if tx.is_closed() || (td.live_shim().is_none() && td.read_exit().is_some()) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                let records = lines
                    .iter()
                    .map(|l| parse_or_plain(l))
                    .filter(|r| since.admits(r))
                    .collect();
                let data = send(records);
                if !data.is_empty() && tx.send(Ok(LogChunk { data })).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
