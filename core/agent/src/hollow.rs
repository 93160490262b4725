//! Hollow nodes, in the spirit of Kubernetes' kubemark: many simulated
//! nodes in one process, for benchmarks and scale tests only. Each
//! registers a fixture inventory, heartbeats at the pace the servers set,
//! holds its assignment stream (full set, then deltas), and reports its
//! assigned tasks `running` (and `stopped` or gone when told) without
//! starting anything.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use berth_hostprobe::Inventory;
use berth_model::task::{Desired, TaskState, TaskStatus};
use berth_proto::assignments::View;
use berth_proto::servers::Servers;
use berth_proto::{RegisterRequest, WatchAssignmentsRequest, typed};
use tokio::sync::{mpsc, watch};

use crate::{heartbeat, node_client, report_loop};

/// How many hollow nodes share one connection to the servers.
const NODES_PER_CONNECTION: usize = 100;

/// How hollow nodes run.
#[derive(Debug, Clone)]
pub struct HollowConfig {
    /// How many nodes.
    pub count: usize,
    /// Node names are `PREFIX-0`, `PREFIX-1`, ...
    pub prefix: String,
    /// Control-plane addresses (`host:port[,host:port...]`).
    pub server: String,
    /// The inventory every node registers.
    pub inventory: Inventory,
    /// The shortest pause between heartbeats (the servers may ask for more).
    pub heartbeat: Duration,
    /// Where to write counters as JSON, every 200 ms (`None`: nowhere).
    pub stats: Option<PathBuf>,
    /// TLS for dialing the servers (a client certificate; the process's
    /// management token lets it act as its nodes).
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

/// What the hollow nodes did, for benchmarks.
#[derive(Default)]
pub struct Stats {
    registered: AtomicU64,
    running: AtomicU64,
    confirmed: AtomicU64,
    updates: AtomicU64,
    full_sets: AtomicU64,
    reconnects: AtomicU64,
    heartbeats: AtomicU64,
    heartbeat_failures: AtomicU64,
    /// Heartbeat round trips, in microseconds.
    rtt: std::sync::Mutex<Vec<u32>>,
}

impl Stats {
    /// The counters as JSON.
    pub fn json(&self) -> serde_json::Value {
        let mut rtt = self.rtt.lock().unwrap_or_else(|p| p.into_inner()).clone();
        rtt.sort_unstable();
        let q = |p: f64| -> f64 {
            if rtt.is_empty() {
                return 0.0;
            }
            let i = ((rtt.len() as f64 - 1.0) * p).round() as usize;
            f64::from(rtt[i]) / 1000.0
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "registered": load(&self.registered),
            "running_reported": load(&self.running),
            "running": load(&self.confirmed),
            "updates": load(&self.updates),
            "full_sets": load(&self.full_sets),
            "reconnects": load(&self.reconnects),
            "heartbeats": load(&self.heartbeats),
            "heartbeat_failures": load(&self.heartbeat_failures),
            "heartbeat_p50_ms": q(0.5),
            "heartbeat_p99_ms": q(0.99),
            "heartbeat_max_ms": q(1.0),
        })
    }
}

/// Runs the hollow nodes until `shutdown` fires.
pub async fn run(cfg: HollowConfig, shutdown: watch::Receiver<bool>) -> Result<(), String> {
    let stats = Arc::new(Stats::default());
    let inventory = berth_proto::Inventory::from(&cfg.inventory);
    let cpu_millis = (cfg.inventory.pu_count() as u64).max(1) * 1000;
    let memory_bytes = cfg.inventory.memory_bytes().max(1 << 30);
    let mut conns = Vec::new();
    for _ in 0..cfg.count.div_ceil(NODES_PER_CONNECTION) {
        let mut s = Servers::parse(&cfg.server)
            .map_err(|e| e.to_string())?
            .with_tls(cfg.tls.clone());
        s.deadline = Duration::from_secs(10);
        conns.push(Arc::new(s));
    }
    for i in 0..cfg.count {
        let node = Hollow {
            name: format!("{}-{i}", cfg.prefix),
            servers: conns[i / NODES_PER_CONNECTION].clone(),
            register: RegisterRequest {
                name: format!("{}-{i}", cfg.prefix),
                address: String::new(),
                cpu_millis,
                memory_bytes,
                labels: Default::default(),
                inventory: Some(inventory.clone()),
                ..Default::default()
            },
            heartbeat: cfg.heartbeat,
            stats: stats.clone(),
        };
        tokio::spawn(node.run(shutdown.clone()));
    }
    if let Some(path) = cfg.stats.clone() {
        let stats = stats.clone();
        tokio::spawn(async move {
            loop {
                let tmp = path.with_extension("tmp");
                let text = stats.json().to_string();
                if std::fs::write(&tmp, text).is_ok() {
                    let _ = std::fs::rename(&tmp, &path);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
    let mut shutdown = shutdown;
    let _ = shutdown.wait_for(|s| *s).await;
    println!("{}", stats.json());
    Ok(())
}

struct Hollow {
    name: String,
    servers: Arc<Servers>,
    register: RegisterRequest,
    heartbeat: Duration,
    stats: Arc<Stats>,
}

impl Hollow {
    /// Keeps the count of tasks the servers have committed as running.
    fn count(&self, confirmed: &mut HashSet<String>, id: &str, up: bool) {
        if up {
            if confirmed.insert(id.to_string()) {
                self.stats.confirmed.fetch_add(1, Ordering::Relaxed);
            }
        } else if confirmed.remove(id) {
            self.stats.confirmed.fetch_sub(1, Ordering::Relaxed);
        }
    }

    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        // Spread the start so thousands of nodes do not register at once.
        let jitter = u64::from(crc(&self.name)) % 1000;
        tokio::time::sleep(Duration::from_millis(jitter)).await;
        let (report, reports) = mpsc::unbounded_channel();
        let mut reporter = Some(reports);
        let mut first = true;
        // Kept across reconnects: a new stream's full set replaces the view
        // and says which tasks went away meanwhile.
        let mut view = View::default();
        let mut said: BTreeMap<String, TaskState> = BTreeMap::new();
        let mut confirmed: HashSet<String> = HashSet::new();
        loop {
            let req = self.register.clone();
            let r = self
                .servers
                .call(|ch| {
                    let r = req.clone();
                    async move { node_client(ch).register(r).await }
                })
                .await;
            if r.is_err() {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            if first {
                self.stats.registered.fetch_add(1, Ordering::Relaxed);
                first = false;
            } else {
                self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(r) = reporter.take() {
                tokio::spawn(report_loop(self.servers.clone(), self.name.clone(), r));
            }
            let hb = tokio::spawn(beat(
                self.servers.clone(),
                self.name.clone(),
                self.heartbeat,
                self.stats.clone(),
            ));
            let stream = node_client(self.servers.channel())
                .watch_assignments(WatchAssignmentsRequest {
                    node: self.name.clone(),
                })
                .await;
            let Ok(stream) = stream else {
                hb.abort();
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            let mut stream = stream.into_inner();
            loop {
                tokio::select! {
                    m = stream.message() => match m {
                        Ok(Some(u)) => {
                            if u.full {
                                self.stats.full_sets.fetch_add(1, Ordering::Relaxed);
                            }
                            self.stats.updates.fetch_add(1, Ordering::Relaxed);
                            match view.apply(u) {
                                Ok(ch) => {
                                    for id in ch.changed {
                                        answer(&view, &id, &mut said, &report, &self.stats);
                                        let up = view.tasks.get(&id).is_some_and(|t| {
                                            typed::state_from_wire(t.state) == Some(TaskState::Running)
                                        });
                                        self.count(&mut confirmed, &id, up);
                                    }
                                    for id in ch.removed {
                                        said.remove(&id);
                                        self.count(&mut confirmed, &id, false);
                                    }
                                }
                                Err(_) => break,
                            }
                        }
                        _ => break,
                    },
                    _ = shutdown.changed() => { hb.abort(); return; }
                }
            }
            hb.abort();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Reports what a real agent would once it acted on the assignment.
fn answer(
    view: &View,
    id: &str,
    said: &mut BTreeMap<String, TaskState>,
    report: &mpsc::UnboundedSender<TaskStatus>,
    stats: &Stats,
) {
    let Some(t) = view.tasks.get(id) else {
        return;
    };
    let (state, gone) = match typed::desired_from_wire(t.desired) {
        Some(Desired::Run) => (TaskState::Running, false),
        Some(Desired::Stop) => (TaskState::Stopped, false),
        Some(Desired::Remove) => (TaskState::Stopped, true),
        None => (TaskState::Failed, false),
    };
    if said.get(id) == Some(&state) && !gone {
        return;
    }
    if typed::state_from_wire(t.state) == Some(state) && !gone {
        said.insert(id.to_string(), state);
        return;
    }
    said.insert(id.to_string(), state);
    if state == TaskState::Running {
        stats.running.fetch_add(1, Ordering::Relaxed);
    }
    let _ = report.send(TaskStatus {
        id: id.to_string(),
        state,
        exit_code: None,
        restarts: 0,
        message: if gone {
            "removed".into()
        } else {
            "hollow".into()
        },
        gone,
        given_up: false,
        health: berth_model::task::Health::Unknown,
        ready: state == TaskState::Running,
        ip: String::new(),
    });
}

async fn beat(servers: Arc<Servers>, node: String, every: Duration, stats: Arc<Stats>) {
    loop {
        let start = Instant::now();
        let wait = match heartbeat(&servers, &node, every).await {
            Ok(wait) => {
                let us = start.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                stats.rtt.lock().unwrap_or_else(|p| p.into_inner()).push(us);
                wait
            }
            Err(_) => {
                stats.heartbeat_failures.fetch_add(1, Ordering::Relaxed);
                every
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// A cheap stable hash of a name (start jitter).
fn crc(s: &str) -> u32 {
    s.bytes().fold(2166136261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16777619)
    })
}
