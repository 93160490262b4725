//! Berth's control plane: the gRPC API (`Control` for people, `NodeApi` for
//! agents), the scheduling loop, and node liveness, over a replicated
//! [`berth_store::Store`]. Decisions are made by the leader and committed as
//! results; followers and agents apply them.

pub mod api;
pub mod api_plugins;
pub mod convert;
pub mod members;
pub mod plugins;
pub mod scheduler;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_model::node::NodeStatus;
use berth_proto::control_server::ControlServer;
use berth_proto::membership_server::MembershipServer;
use berth_proto::node_api_server::NodeApiServer;
use berth_sched::policy::{self, PolicyContext, UnknownPolicy};
use berth_store::{Command, Envelope, Store};

pub use api::Api;

/// How long a node may go without a heartbeat before it is marked down
/// (the default of [`Options::heartbeat_timeout`]).
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a server runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Placement policy (see [`policy::CLUSTER_POLICIES`]).
    pub policy: String,
    /// Where compiled plugins are cached.
    pub plugin_cache: Option<std::path::PathBuf>,
    /// This server's client address, recorded in the replicated
    /// membership so other servers can point clients at it.
    pub advertise: Option<String>,
    /// A node silent this long is marked down and its tasks replaced.
    pub heartbeat_timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            policy: "default".into(),
            plugin_cache: None,
            advertise: None,
            heartbeat_timeout: HEARTBEAT_TIMEOUT,
        }
    }
}

/// Whether the servers know the placement policy `name`.
pub fn check_policy(name: &str) -> Result<(), UnknownPolicy> {
    policy::cluster_pipeline(name, &PolicyContext::default()).map(|_| ())
}

/// A control-plane server over an open store.
pub struct Server {
    api: Api,
}

impl Server {
    /// Wraps the store and starts the leader's loops (scheduling with the
    /// placement policy `policy` and the installed plugins, node liveness).
    /// Compiled plugins are cached in `plugin_cache`. An unknown policy is
    /// an error naming the known ones (see [`policy::CLUSTER_POLICIES`]).
    pub fn start(
        store: Store,
        policy: &str,
        plugin_cache: Option<std::path::PathBuf>,
    ) -> Result<Server, UnknownPolicy> {
        Server::start_with(
            store,
            Options {
                policy: policy.to_string(),
                plugin_cache,
                ..Options::default()
            },
        )
    }

    /// [`Server::start`] with every option.
    pub fn start_with(store: Store, o: Options) -> Result<Server, UnknownPolicy> {
        let policy = o.policy.as_str();
        check_policy(policy)?;
        let plugins = Arc::new(plugins::PluginSet::new(o.plugin_cache));
        let api = Api {
            store: store.clone(),
            heartbeats: Arc::new(Mutex::new(HashMap::new())),
            explanations: Arc::new(Mutex::new(HashMap::new())),
            plugins: plugins.clone(),
        };
        tokio::spawn(scheduler::run(
            store.clone(),
            policy.to_string(),
            plugins,
            api.explanations.clone(),
        ));
        if let Some(addr) = o.advertise {
            tokio::spawn(members::advertise(store.clone(), addr));
        }
        tokio::spawn(liveness(store, api.heartbeats.clone(), o.heartbeat_timeout));
        Ok(Server { api })
    }

    /// The service implementation (for in-process callers and tests).
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// The `Control` gRPC service.
    pub fn control(&self) -> ControlServer<Api> {
        ControlServer::new(self.api.clone())
    }

    /// The `Membership` gRPC service.
    pub fn membership(&self) -> MembershipServer<Api> {
        MembershipServer::new(self.api.clone())
    }

    /// The `NodeApi` gRPC service.
    pub fn node_api(&self) -> NodeApiServer<Api> {
        NodeApiServer::new(self.api.clone())
    }
}

/// On the leader: marks nodes down when their heartbeats stop, and ready
/// again when they resume. A new leader gives every node a full timeout.
async fn liveness(
    store: Store,
    heartbeats: Arc<Mutex<HashMap<String, Instant>>>,
    timeout: Duration,
) {
    let mut leader_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(
            (timeout / 10).clamp(Duration::from_millis(100), Duration::from_secs(1)),
        )
        .await;
        if !store.is_leader() {
            leader_since = None;
            continue;
        }
        let since = *leader_since.get_or_insert_with(Instant::now);
        let changes: Vec<(String, NodeStatus)> = {
            let state = store.read();
            let hb = heartbeats.lock().unwrap_or_else(|p| p.into_inner());
            state
                .nodes
                .values()
                .filter_map(|n| {
                    let last = hb.get(&n.info.name).copied().unwrap_or(since).max(since);
                    let alive = last.elapsed() < timeout;
                    let want = if alive {
                        NodeStatus::Ready
                    } else {
                        NodeStatus::Down
                    };
                    (want != n.status).then(|| (n.info.name.clone(), want))
                })
                .collect()
        };
        for (name, status) in changes {
            tracing::info!(node = %name, status = status.as_str(), "node status changed");
            let cmd = Command::SetNodeStatus { name, status };
            if let Err(e) = store
                .propose(Envelope {
                    request_id: None,
                    command: cmd,
                })
                .await
            {
                tracing::warn!(error = %e, "committing node status failed");
            }
        }
    }
}
