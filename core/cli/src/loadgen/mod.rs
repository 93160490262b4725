//! `berth loadgen`: a write load on the control plane for benchmarks
//! (`ci/bench.sh ha`). Many concurrent clients submit small apps (no
//! instances) with unique request ids through the leader-following client,
//! and the command reports throughput, commit latency percentiles and,
//! optionally, when each write was acknowledged (for failover timing).
//!
//! With `--etcd URL` the same clients put keys of the same size into etcd
//! instead, so the comparison differs only in the server.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::anyhow;
use berth_proto as pb;
use berth_proto::control_client::ControlClient;
use berth_proto::servers::Servers;
use serde_json::json;

mod etcd;
mod reads;

/// The flags of `berth loadgen`.
#[derive(clap::Args)]
pub struct LoadArgs {
    /// Writes in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to write.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Append `unix-seconds` of every acknowledged write to this file.
    #[arg(long)]
    acks: Option<PathBuf>,
    /// App name prefix (unique per run).
    #[arg(long, default_value = "load")]
    prefix: String,
    /// Stop after this many writes in all (then `--seconds` is a limit).
    #[arg(long)]
    total: Option<u64>,
    /// Write to these etcd members (`http://host:port,...`; the first
    /// until it fails) instead of Berth: the same writers, each write a
    /// `KV/Put` of a key and a value the size of the app spec.
    #[arg(long)]
    etcd: Option<String>,
    /// With `--etcd`: how long a put may take before it fails and the
    /// writer moves to the next member (the failover benchmark uses 1 s).
    #[arg(long, default_value_t = 5000)]
    etcd_timeout_ms: u64,
    /// Instead of writing: list this app's tasks, over gRPC
    /// (`Control.ListTasks`) or the JSON API (`GET /v1/tasks?app=`), each
    /// answer decoded (`--via`).
    #[arg(long)]
    read_tasks: Option<String>,
    /// With `--read-tasks`: grpc or http.
    #[arg(long, default_value = "grpc")]
    via: String,
}

/// Where the writes (or reads) go.
#[derive(Clone)]
enum Target {
    Berth(Arc<Servers>),
    Etcd(Arc<etcd::Members>),
    Read(Arc<reads::Reads>),
}

impl Target {
    /// One acknowledged write named `name`.
    async fn write(&self, name: String) -> Result<(), tonic::Status> {
        let spec = format!("name: {name}\nimage: busybox:latest\ninstances: 0\n");
        match self {
            Target::Berth(servers) => {
                let req = pb::RunAppRequest {
                    spec,
                    request_id: format!("{name}-rid"),
                };
                servers
                    .call(|ch| {
                        let r = crate::client::request(req.clone());
                        async move { ControlClient::new(ch).run_app(r).await }
                    })
                    .await
                    .map(|_| ())
            }
            Target::Etcd(members) => members.put(format!("/apps/{name}"), spec).await,
            Target::Read(r) => r.once().await,
        }
    }
}

/// One client's results: latencies of acknowledged writes, failures, and
/// the wall-clock times of acknowledgements.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    failed: u64,
    acked_at: Vec<f64>,
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// How the clients share the work: a deadline and, optionally, a count.
struct Budget {
    until: Instant,
    left: Option<AtomicU64>,
}

impl Budget {
    /// Whether another write may start (and, with a count, claims it).
    fn take(&self) -> bool {
        if Instant::now() >= self.until {
            return false;
        }
        match &self.left {
            None => true,
            Some(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }
}

async fn client(target: Target, id: usize, prefix: String, budget: Arc<Budget>) -> Tally {
    let mut t = Tally::default();
    let mut i = 0u64;
    while budget.take() {
        let name = format!("{prefix}-{id}-{i}");
        let start = Instant::now();
        match target.write(name).await {
            Ok(_) => {
                t.latencies.push(start.elapsed());
                t.acked_at.push(now_unix());
            }
            Err(_) => t.failed += 1,
        }
        i += 1;
    }
    t
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let k = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[k].as_secs_f64() * 1e3
}

/// Runs the load and prints one JSON line.
pub async fn run(addr: &str, a: LoadArgs) -> anyhow::Result<()> {
    if a.concurrency == 0 || a.seconds <= 0.0 {
        return Err(anyhow!("--concurrency and --seconds must be positive"));
    }
    let target = match (&a.etcd, &a.read_tasks) {
        (_, Some(app)) => {
            let servers = Servers::parse(addr)
                .map_err(|e| anyhow!("--addr/BERTH_ADDR: {e}"))?
                .with_tls(crate::access::client_tls()?);
            Target::Read(Arc::new(reads::Reads::new(&servers, app, &a.via)?))
        }
        (Some(urls), None) => Target::Etcd(Arc::new(
            etcd::Members::parse(urls, Duration::from_millis(a.etcd_timeout_ms))
                .map_err(|e| anyhow!("--etcd: {e}"))?,
        )),
        (None, None) => {
            let mut servers = Servers::parse(addr)
                .map_err(|e| anyhow!("--addr/BERTH_ADDR: {e}"))?
                .with_tls(crate::access::client_tls()?);
            servers.deadline = Duration::from_secs(30);
            Target::Berth(Arc::new(servers))
        }
    };
    let start = Instant::now();
    let budget = Arc::new(Budget {
        until: start + Duration::from_secs_f64(a.seconds),
        left: a.total.map(AtomicU64::new),
    });
    let tasks: Vec<_> = (0..a.concurrency)
        .map(|i| tokio::spawn(client(target.clone(), i, a.prefix.clone(), budget.clone())))
        .collect();
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await?;
        all.latencies.extend(t.latencies);
        all.failed += t.failed;
        all.acked_at.extend(t.acked_at);
    }
    let wall = start.elapsed().as_secs_f64();
    all.latencies.sort();
    if let Some(path) = &a.acks {
        all.acked_at.sort_by(f64::total_cmp);
        let mut f = std::fs::File::create(path)?;
        for t in &all.acked_at {
            writeln!(f, "{t:.6}")?;
        }
    }
    println!(
        "{}",
        json!({
            "writes": all.latencies.len(),
            "failed": all.failed,
            "seconds": (wall * 100.0).round() / 100.0,
            "writes_per_sec": (all.latencies.len() as f64 / wall).round(),
            "p50_ms": (pct(&all.latencies, 0.5) * 100.0).round() / 100.0,
            "p99_ms": (pct(&all.latencies, 0.99) * 100.0).round() / 100.0,
            "concurrency": a.concurrency,
        })
    );
    Ok(())
}
