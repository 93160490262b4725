//! Berth's control plane: the gRPC API (`Control` for people, `NodeApi` for
//! agents), the scheduling loop, and node liveness, over a replicated
//! [`berth_store::Store`]. Decisions are made by the leader and committed as
//! results; followers and agents apply them.

pub mod api;
pub mod api_plugins;
pub mod convert;
pub mod plugins;
pub mod scheduler;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_model::node::NodeStatus;
use berth_proto::control_server::ControlServer;
use berth_proto::node_api_server::NodeApiServer;
use berth_sched::policy::{self, PolicyContext, UnknownPolicy};
use berth_store::{Command, Envelope, Store};

pub use api::Api;

/// How long a node may go without a heartbeat before it is marked down.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

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
        check_policy(policy)?;
        let plugins = Arc::new(plugins::PluginSet::new(plugin_cache));
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
        tokio::spawn(liveness(store, api.heartbeats.clone()));
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

    /// The `NodeApi` gRPC service.
    pub fn node_api(&self) -> NodeApiServer<Api> {
        NodeApiServer::new(self.api.clone())
    }
}

/// On the leader: marks nodes down when their heartbeats stop, and ready
/// again when they resume. A new leader gives every node a full timeout.
async fn liveness(store: Store, heartbeats: Arc<Mutex<HashMap<String, Instant>>>) {
    let mut leader_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
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
                    let alive = last.elapsed() < HEARTBEAT_TIMEOUT;
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
