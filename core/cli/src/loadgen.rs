//! `berth loadgen`: a write load on the control plane for benchmarks
//! (`ci/bench.sh ha`). Many concurrent clients submit small apps (no
//! instances) with unique request ids through the leader-following client,
//! and the command reports throughput, commit latency percentiles and,
//! optionally, when each write was acknowledged (for failover timing).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::anyhow;
use berth_proto as pb;
use berth_proto::control_client::ControlClient;
use berth_proto::servers::Servers;
use serde_json::json;

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

async fn client(servers: Arc<Servers>, id: usize, prefix: String, until: Instant) -> Tally {
    let mut t = Tally::default();
    let mut i = 0u64;
    while Instant::now() < until {
        let name = format!("{prefix}-{id}-{i}");
        let req = pb::RunAppRequest {
            spec: format!("name: {name}\nimage: busybox:latest\ninstances: 0\n"),
            request_id: format!("{name}-rid"),
        };
        let start = Instant::now();
        let r = servers
            .call(|ch| {
                let r = req.clone();
                async move { ControlClient::new(ch).run_app(r).await }
            })
            .await;
        match r {
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
    let mut servers = Servers::parse(addr).map_err(|e| anyhow!("--addr/BERTH_ADDR: {e}"))?;
    servers.deadline = Duration::from_secs(30);
    let servers = Arc::new(servers);
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(a.seconds);
    let tasks: Vec<_> = (0..a.concurrency)
        .map(|i| tokio::spawn(client(servers.clone(), i, a.prefix.clone(), until)))
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
