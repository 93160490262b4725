//! `berth logs TASK [-f] [--tail N] [--since 5m] [--stdout|--stderr] [-t]`:
//! a task's output from its node (through the servers), both streams
//! interleaved by time.

use std::io::Write as _;

use anyhow::{anyhow, bail};
use berth_proto::control_client::ControlClient;
use berth_proto::{self as pb, MAX_MESSAGE};

use crate::client::{find_task, list_tasks, request, servers, status};

/// The flags of `berth logs`.
#[derive(clap::Args)]
pub struct LogsArgs {
    /// A task id, or an app name for its first task.
    pub task: String,
    /// Keep streaming new output.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<u64>,
    /// Only lines from this long ago on (`5m`, `1h30m`) or from a time
    /// (`2026-12-02T18:00:00Z`).
    #[arg(long)]
    pub since: Option<String>,
    /// Only standard error.
    #[arg(long, conflicts_with = "stdout")]
    pub stderr: bool,
    /// Only standard output.
    #[arg(long)]
    pub stdout: bool,
    /// Prefix each line with its time and stream.
    #[arg(long, short = 't')]
    pub timestamps: bool,
}

/// `--since`: a duration ago or an RFC 3339 time, as ms since the epoch.
fn since_ms(s: &str) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    let d = berth_model::DurationMs::parse(s)
        .map_err(|e| anyhow!("--since: {s:?} is neither a duration (5m) nor a time: {e}"))?;
    let now = chrono::Utc::now().timestamp_millis();
    Ok(now - i64::try_from(d.0).unwrap_or(i64::MAX).min(now))
}

/// The id of `task` (a task id, or an app name for its first task), and
/// a `Control` client to reach its node through.
pub(crate) async fn task_client(
    addr: &str,
    task: &str,
) -> anyhow::Result<(String, ControlClient<tonic::transport::Channel>)> {
    let tasks = list_tasks(addr, None).await?;
    let t = find_task(&tasks, task)?;
    if t.node.is_empty() {
        bail!(
            "task {} has not been placed on a node yet: {}",
            t.id,
            t.message
        );
    }
    let client = ControlClient::new(servers(addr)?.channel())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    Ok((t.id.clone(), client))
}

/// `berth logs`.
pub async fn run(addr: &str, a: LogsArgs) -> anyhow::Result<()> {
    let since = a.since.as_deref().map(since_ms).transpose()?.unwrap_or(0);
    let (id, mut agent) = task_client(addr, &a.task).await?;
    let stream = if a.stderr {
        pb::LogStream::Stderr
    } else if a.stdout {
        pb::LogStream::Stdout
    } else {
        pb::LogStream::Unspecified
    };
    let mut chunks = agent
        .logs(request(pb::LogsRequest {
            task: id,
            follow: a.follow,
            offset: 0,
            tail: a.tail.unwrap_or(0),
            since_ms: since,
            stream: stream as i32,
            timestamps: a.timestamps,
        }))
        .await
        .map_err(status)?
        .into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = chunks.message().await.map_err(status)? {
        out.write_all(&chunk.data)?;
        out.flush()?;
    }
    Ok(())
}
