//! Berth's node agent: registers the node, heartbeats, watches the tasks
//! assigned to it, runs each through a supervisor on the runtime, and
//! reports their state. It knows nothing of scheduling: it applies the
//! control plane's decisions.
#![forbid(unsafe_code)]

pub mod discovery;
pub mod exec;
pub mod health;
pub mod images;
pub mod inventory;
pub mod logs;
pub mod metrics;
mod plan;
pub mod pull;
pub mod supervisor;
pub mod volumes;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use berth_hostprobe::Inventory;
use berth_model::task::{Desired, TaskState, TaskStatus};
use berth_proto::assignments::{Changes, View};
use berth_proto::node_api_client::NodeApiClient;
use berth_proto::servers::Servers;
use berth_proto::{
    self as pb, HeartbeatRequest, MAX_MESSAGE, RegisterRequest, ReportTasksRequest,
    WatchAssignmentsRequest, typed,
};
use berth_runtime::taskdir::LaunchRecord;
use berth_runtime::{ExitRecord, Recovered, Runtime, RuntimeConfig};
use plan::{plan_for, plan_from_launch};
use supervisor::{Start, TaskPlan, supervise};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub mod hollow;

pub use inventory::InventorySource;
pub use logs::AgentService;

/// A NodeApi client that sends and accepts messages up to [`MAX_MESSAGE`]
/// (and this process's token, if it has one: hollow nodes).
pub fn node_client(ch: tonic::transport::Channel) -> NodeApiClient<berth_proto::servers::Authed> {
    NodeApiClient::with_interceptor(ch, berth_proto::servers::Bearer)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// Agent settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Node name.
    pub node_name: String,
    /// Control-plane address (`host:port`).
    pub server: String,
    /// Address where this agent's API (logs) is reachable.
    pub advertise: String,
    /// Allocatable CPU in millicores (0: all cores).
    pub cpu_millis: u64,
    /// Allocatable memory in bytes (0: all memory).
    pub memory_bytes: u64,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Where the node's hardware inventory comes from.
    pub inventory: InventorySource,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Runtime paths.
    pub runtime: RuntimeConfig,
    /// The host ports dynamic ports come from here (none: the default).
    pub dynamic_ports: Option<(u16, u16)>,
    /// Where the node's DNS also listens besides its bridge address
    /// (none: only there).
    pub dns_loopback: Option<std::net::SocketAddr>,
    /// The registry client images are pulled through.
    pub registry: Arc<berth_image::registry::Registry>,
    /// Keep the image store under this many bytes (none: no cap).
    pub image_cache_max: Option<u64>,
    /// TLS for dialing the servers (none: plaintext, benchmarks only).
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The runtime could not be opened.
    #[error(transparent)]
    Runtime(#[from] berth_runtime::RuntimeError),
    /// The inventory fixture does not load.
    #[error("--inventory: {0}")]
    Inventory(#[from] berth_hostprobe::FixtureError),
}

struct Supervised {
    desired: watch::Sender<Desired>,
    join: JoinHandle<()>,
}

/// A running agent.
pub struct Agent {
    cfg: AgentConfig,
    rt: Arc<Runtime>,
    tasks: HashMap<String, Supervised>,
    /// Containers found ended at start, waiting for their first assignment.
    ended: HashMap<String, (LaunchRecord, ExitRecord)>,
    report: mpsc::UnboundedSender<TaskStatus>,
    /// Pulls images for the supervisors.
    puller: Arc<pull::Puller>,
    /// The node's current hardware inventory.
    inventory: watch::Receiver<Inventory>,
    /// The assignments as the control plane last said.
    view: View,
}

/// Total CPU (millicores) and memory (bytes) of this machine.
pub fn machine_capacity() -> (u64, u64) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as u64;
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    (cpus * 1000, mem)
}

impl Agent {
    /// Opens the runtime, loads the node's inventory, and prepares the
    /// agent; call [`Agent::run`] next. A bad inventory fixture is an error.
    pub async fn new(
        cfg: AgentConfig,
    ) -> Result<(Agent, Arc<Runtime>, mpsc::UnboundedReceiver<TaskStatus>), AgentError> {
        let inv = inventory::load(&cfg.inventory, &cfg.runtime.cdi_dirs).await?;
        for note in &inv.probe_notes {
            tracing::info!("inventory: {note}");
        }
        let (inv_tx, inv_rx) = watch::channel(inv);
        tokio::spawn(inventory::watch_changes(
            cfg.inventory.clone(),
            cfg.runtime.cdi_dirs.clone(),
            inv_tx,
            Duration::from_secs(5),
        ));
        let rt = Arc::new(Runtime::open(cfg.runtime.clone())?);
        let (report, reports) = mpsc::unbounded_channel();
        let creds = Servers::parse(&cfg.server)
            .ok()
            .map(|s| Arc::new(s.with_tls(cfg.tls.clone())));
        let in_use = {
            let rt = rt.clone();
            Box::new(move || rt.images_in_use())
        };
        let puller = Arc::new(pull::Puller::new(
            cfg.registry.clone(),
            rt.images().clone(),
            creds,
            cfg.image_cache_max,
            in_use,
        ));
        Ok((
            Agent {
                cfg,
                puller,
                rt: rt.clone(),
                tasks: HashMap::new(),
                ended: HashMap::new(),
                report,
                inventory: inv_rx,
                view: View::default(),
            },
            rt,
            reports,
        ))
    }

    /// Reattaches to containers that outlived a previous agent, then serves
    /// assignments from the control plane until `shutdown` fires.
    pub async fn run(
        mut self,
        reports: mpsc::UnboundedReceiver<TaskStatus>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.recover();
        let servers =
            match Servers::parse(&self.cfg.server).map(|s| s.with_tls(self.cfg.tls.clone())) {
                Ok(mut s) => {
                    s.deadline = Duration::from_secs(3);
                    Arc::new(s)
                }
                Err(e) => {
                    tracing::error!(error = %e, "bad server address list");
                    return;
                }
            };
        let mut reporter = Some(reports);
        let mut discovery_started = false;
        loop {
            // Registration goes to the leader (followed through redirects);
            // the assignment stream then comes from the same server.
            let req = self.register_request();
            let registered = servers
                .call(|ch| {
                    let r = req.clone();
                    async move { node_client(ch).register(r).await }
                })
                .await;
            match registered {
                Ok(r) if !r.get_ref().subnet.is_empty() => {
                    self.rt.cni().set_subnet(&r.get_ref().subnet);
                    if !discovery_started {
                        discovery_started = true;
                        tokio::spawn(volumes::collect(
                            self.rt.clone(),
                            servers.clone(),
                            self.cfg.node_name.clone(),
                            shutdown.clone(),
                        ));
                        let dns = self.cfg.dns_loopback;
                        discovery::start(&self.rt, servers.clone(), dns, shutdown.clone()).await;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "registration failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(300)) => continue,
                        _ = shutdown.changed() => return,
                    }
                }
            }
            let mut client = node_client(servers.channel());
            tracing::info!(node = %self.cfg.node_name, server = %servers.current(), "registered");
            if let Some(r) = reporter.take() {
                tokio::spawn(report_loop(servers.clone(), self.cfg.node_name.clone(), r));
            }
            let hb = tokio::spawn(heartbeat_loop(
                servers.clone(),
                self.cfg.node_name.clone(),
                self.cfg.heartbeat,
            ));
            let stream = client
                .watch_assignments(WatchAssignmentsRequest {
                    node: self.cfg.node_name.clone(),
                })
                .await;
            let mut stream = match stream {
                Ok(s) => s.into_inner(),
                Err(e) => {
                    hb.abort();
                    tracing::warn!(error = %e, "watching assignments failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            // The leader may move while this stream's server lives on (cut
            // off from the others, it would only send stale sets): follow
            // the server that heartbeats and reports reach.
            let source = servers.current();
            let mut check = tokio::time::interval(self.cfg.heartbeat);
            loop {
                tokio::select! {
                    msg = stream.message() => match msg {
                        Ok(Some(update)) => match self.view.apply(update) {
                            Ok(changes) => self.reconcile(changes),
                            Err(gap) => {
                                tracing::warn!("{gap}");
                                break;
                            }
                        },
                        Ok(None) | Err(_) => break,
                    },
                    _ = check.tick() => if servers.current() != source { break },
                    _ = shutdown.changed() => { hb.abort(); return; }
                    r = self.inventory.changed() => {
                        if r.is_ok() && let Err(e) = client.register(self.register_request()).await {
                            tracing::warn!(error = %e, "re-registering the changed inventory failed");
                        }
                    }
                }
            }
            hb.abort();
            tracing::warn!("assignment stream ended; reconnecting");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Registration: capacity from the flags, else from the inventory (one
    /// CPU per PU, as Kubernetes counts), else from this machine.
    fn register_request(&self) -> RegisterRequest {
        let inv = self.inventory.borrow();
        let (cpu, mem) = machine_capacity();
        let pus = inv.pu_count() as u64;
        let cpu_millis = match self.cfg.cpu_millis {
            0 if pus > 0 => pus * 1000,
            0 => cpu,
            c => c,
        };
        let memory_bytes = match self.cfg.memory_bytes {
            0 if inv.memory_bytes() > 0 => inv.memory_bytes(),
            0 => mem,
            m => m,
        };
        RegisterRequest {
            name: self.cfg.node_name.clone(),
            address: self.cfg.advertise.clone(),
            cpu_millis,
            memory_bytes,
            labels: self.cfg.labels.clone().into_iter().collect(),
            inventory: Some(berth_proto::Inventory::from(&*inv)),
            dynamic_port_min: self.cfg.dynamic_ports.map_or(0, |r| u32::from(r.0)),
            dynamic_port_max: self.cfg.dynamic_ports.map_or(0, |r| u32::from(r.1)),
        }
    }

    /// Finds containers that outlived the previous agent. Live shims are
    /// adopted at once (never started twice). Containers that ended while
    /// nobody watched wait for the first assignment, which says whether the
    /// restart policy still applies or the task was stopped or removed.
    fn recover(&mut self) {
        for r in self.rt.recover() {
            match r {
                Recovered::Running {
                    task,
                    launch,
                    shim_pid,
                } => {
                    tracing::info!(%task, shim_pid, "reattaching to running container");
                    let shim = self.rt.adopt(&task, shim_pid);
                    let attempt = launch.attempt;
                    self.spawn(
                        plan_from_launch(&task, &launch, self.rt.task_dir(&task).path()),
                        Start::Adopt(shim, attempt),
                    );
                }
                Recovered::Exited {
                    task,
                    launch: Some(launch),
                    exit,
                } => {
                    self.ended.insert(task, (launch, exit));
                }
                Recovered::Exited {
                    task, launch: None, ..
                } => {
                    tracing::warn!(%task, "task directory without a launch record; leaving it for removal");
                }
            }
        }
    }

    fn spawn(&mut self, plan: TaskPlan, start: Start) {
        let (tx, rx) = watch::channel(Desired::Run);
        let id = plan.id.clone();
        let join = tokio::spawn(supervise(
            plan,
            self.rt.clone(),
            self.puller.clone(),
            start,
            rx,
            self.report.clone(),
        ));
        self.tasks.insert(id, Supervised { desired: tx, join });
    }

    /// Releases a task's network in the background (CNI DEL is a few
    /// plugin processes).
    fn release_network(&self, id: String) {
        let rt = self.rt.clone();
        tokio::spawn(async move {
            if let Err(e) = rt.release_network(&id).await {
                tracing::warn!(task = %id, error = %e, "releasing a task's network");
            }
        });
    }

    /// Brings local containers in line with what changed in the view.
    fn reconcile(&mut self, changes: Changes) {
        for id in &changes.changed {
            let Some(task) = self.view.tasks.get(id).cloned() else {
                continue;
            };
            self.reconcile_one(&task);
        }
        if changes.full {
            // Ended containers the control plane no longer knows: delete them.
            let stale: Vec<String> = self
                .ended
                .keys()
                .filter(|k| !self.view.tasks.contains_key(*k))
                .cloned()
                .collect();
            for id in stale {
                self.ended.remove(&id);
                if let Err(e) = self.rt.remove(&id) {
                    tracing::warn!(task = %id, error = %e, "removing an orphaned task");
                }
            }
            // Networks left by tasks that are gone, or no longer meant to
            // run and not supervised (an agent killed mid-way): released.
            for id in self.rt.cni().attached() {
                let wanted = self.tasks.contains_key(&id)
                    || self
                        .view
                        .tasks
                        .get(&id)
                        .is_some_and(|t| t.desired == Desired::Run as i32);
                if !wanted {
                    self.release_network(id);
                }
            }
        }
        // Local tasks the control plane no longer knows: stop and delete them.
        let orphans: Vec<String> = if changes.full {
            self.tasks
                .keys()
                .filter(|k| !self.view.tasks.contains_key(*k))
                .cloned()
                .collect()
        } else {
            changes.removed
        };
        for id in orphans {
            if let Some(s) = self.tasks.remove(&id) {
                let _ = s.desired.send(Desired::Remove);
            }
        }
    }

    /// Brings one task in line with its assignment.
    fn reconcile_one(&mut self, task: &pb::Task) {
        let Some(desired) = typed::desired_from_wire(task.desired) else {
            // Never guess: an unknown desired state runs nothing.
            tracing::error!(task = %task.id, desired = task.desired, "unknown desired state");
            let _ = self.report.send(status(
                &task.id,
                TaskState::Failed,
                &format!(
                    "desired state {} is unknown to this agent; it runs nothing (upgrade the agent)",
                    typed::desired_name(task.desired)
                ),
                false,
            ));
            return;
        };
        if let Some(s) = self.tasks.get(&task.id)
            && !s.join.is_finished()
        {
            s.desired.send_if_modified(|d| {
                let changed = *d != desired;
                *d = desired;
                changed
            });
            return;
        }
        if task.given_up && desired == Desired::Run {
            // Over its restart limit: it stays failed until replaced.
            self.ended.remove(&task.id);
            return;
        }
        if let Some((launch, exit)) = self.ended.remove(&task.id)
            && desired == Desired::Run
        {
            let attempt = launch.attempt;
            self.spawn(
                plan_from_launch(&task.id, &launch, self.rt.task_dir(&task.id).path()),
                Start::Ended(exit, attempt),
            );
            return;
        }
        match desired {
            Desired::Run => {
                // A finished supervisor means the task ended for good (or
                // was stopped): only a new task id runs again.
                if self.tasks.contains_key(&task.id) {
                    return;
                }
                match plan_for(task, self.view.launch_for(task)) {
                    Ok(plan) => {
                        plan::keep(self.rt.task_dir(&task.id).path(), &plan);
                        self.spawn(plan, Start::Fresh(0))
                    }
                    Err(e) => {
                        let _ = self
                            .report
                            .send(status(&task.id, TaskState::Failed, &e, false));
                    }
                }
            }
            Desired::Stop => {
                if !self.tasks.contains_key(&task.id) {
                    self.release_network(task.id.clone());
                }
                if typed::state_from_wire(task.state) != Some(TaskState::Stopped) {
                    let _ = self.report.send(status(
                        &task.id,
                        TaskState::Stopped,
                        "stopped on request",
                        false,
                    ));
                }
            }
            Desired::Remove => {
                self.release_network(task.id.clone());
                let gone = match self.rt.remove(&task.id) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(task = %task.id, error = %e, "removing task files");
                        false
                    }
                };
                self.tasks.remove(&task.id);
                let _ = self
                    .report
                    .send(status(&task.id, TaskState::Stopped, "removed", gone));
            }
        }
    }
}

fn status(id: &str, state: TaskState, message: &str, gone: bool) -> TaskStatus {
    TaskStatus {
        id: id.to_string(),
        state,
        exit_code: None,
        restarts: 0,
        message: message.into(),
        gone,
        given_up: false,
        health: berth_model::task::Health::Unknown,
        ready: false,
        ip: String::new(),
    }
}

/// Heartbeats go to the leader, which judges liveness and says when to
/// send the next one (never sooner than `every`).
async fn heartbeat_loop(servers: Arc<Servers>, node: String, every: Duration) {
    loop {
        let wait = match heartbeat(&servers, &node, every).await {
            Ok(wait) => wait,
            Err(e) => {
                tracing::debug!(error = %e, "heartbeat failed");
                every
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Sends one heartbeat; answers how long to wait before the next (the
/// servers' pace, never less than `every`).
pub async fn heartbeat(
    servers: &Servers,
    node: &str,
    every: Duration,
) -> Result<Duration, tonic::Status> {
    let sent = std::time::Instant::now();
    let r = servers
        .call(|ch| {
            let req = HeartbeatRequest {
                node: node.to_string(),
            };
            async move { node_client(ch).heartbeat(req).await }
        })
        .await?;
    metrics::METRICS
        .heartbeat_seconds
        .observe(sent.elapsed().as_secs_f64());
    Ok(every.max(pace(r.into_inner().next_ms)))
}

/// The pause the servers asked for, capped at a minute.
pub fn pace(next_ms: u64) -> Duration {
    Duration::from_millis(next_ms.min(60_000))
}

/// Sends status reports in batches, keeping only the latest per task, and
/// retries until the control plane takes them.
async fn report_loop(
    servers: Arc<Servers>,
    node: String,
    mut rx: mpsc::UnboundedReceiver<TaskStatus>,
) {
    let mut pending: BTreeMap<String, TaskStatus> = BTreeMap::new();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(s) => {
                    pending.insert(s.id.clone(), s);
                }
                None => return,
            }
        }
        while let Ok(s) = rx.try_recv() {
            pending.insert(s.id.clone(), s);
        }
        let req = ReportTasksRequest {
            node: node.clone(),
            statuses: pending.values().map(to_proto).collect(),
        };
        let r = servers
            .call(|ch| {
                let r = req.clone();
                async move { node_client(ch).report_tasks(r).await }
            })
            .await;
        match r {
            Ok(_) => pending.clear(),
            Err(e) => {
                tracing::debug!(error = %e, "reporting failed; will retry");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

fn to_proto(s: &TaskStatus) -> pb::TaskStatus {
    pb::TaskStatus {
        id: s.id.clone(),
        state: typed::state_to_wire(s.state) as i32,
        has_exit_code: s.exit_code.is_some(),
        exit_code: s.exit_code.unwrap_or(0),
        restarts: s.restarts,
        message: s.message.clone(),
        gone: s.gone,
        given_up: s.given_up,
        health: typed::health_to_wire(s.health) as i32,
        ready: s.ready,
        ip: s.ip.clone(),
    }
}
