//! Berth's control plane: the gRPC API (`Control` for people, `NodeApi` for
//! agents), the scheduling loop, and node liveness, over a replicated
//! [`berth_store::Store`]. Decisions are made by the leader and committed as
//! results; followers and agents apply them.
#![forbid(unsafe_code)]

pub mod api;
pub mod api_acl;
pub mod api_apps;
pub mod api_cluster;
pub mod api_deploy;
pub mod api_endpoints;
pub mod api_explain;
pub mod api_node;
pub mod api_nodes;
pub mod api_plugins;
pub mod api_proxy;
pub mod api_registry;
pub mod api_volumes;
pub mod api_watch;
pub mod assign;
pub mod audit;
pub mod auth;
pub mod convert;
pub mod deployer;
pub mod events;
pub mod live;
pub mod liveness;
pub mod members;
pub mod metrics;
pub mod paging;
pub mod plugins;
pub mod scheduler;
pub mod secrets;
pub mod usage;
pub mod web;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::MAX_MESSAGE;
use berth_proto::control_server::ControlServer;
use berth_proto::membership_server::MembershipServer;
use berth_proto::node_api_server::NodeApiServer;
use berth_sched::policy::{self, PolicyContext, UnknownPolicy};
use berth_store::Store;

pub use api::Api;

/// How long a node may go without a heartbeat before it is marked down
/// (the default of [`Options::heartbeat_timeout`]).
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a server runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Placement policy (see [`policy::CLUSTER_POLICIES`]).
    pub policy: String,
    /// Score at most this many feasible nodes per decision (`None`, the
    /// default: every feasible node, once per node class).
    pub sample: Option<usize>,
    /// Where compiled plugins are cached.
    pub plugin_cache: Option<std::path::PathBuf>,
    /// This server's client address, recorded in the replicated
    /// membership so other servers can point clients at it.
    pub advertise: Option<String>,
    /// A node silent this long (plus the pacing handed to it) is marked
    /// down and its tasks replaced.
    pub heartbeat_timeout: Duration,
    /// Heartbeats per second the cluster aims at, at most: nodes are told
    /// to heartbeat less often as the cluster grows.
    pub max_heartbeats_per_second: u32,
    /// The range node bridge subnets come from (one /24 per node).
    pub node_subnets: String,
    /// The client that pins image tags to digests (its CA and insecure
    /// registries come from `--registry-ca`, `--insecure-registry`).
    pub registry: Arc<berth_image::registry::Registry>,
    /// Where host-path volumes may come from (`--host-volume-root`; none:
    /// host paths are refused).
    pub host_volume_root: Option<String>,
    /// Seals secrets before they are proposed (`--secret-key`; none:
    /// secrets are refused).
    pub secrets: Option<Arc<secrets::SecretBox>>,
    /// The cluster CA and this server's certificate: with them every
    /// call is authenticated and authorized ([`Server::guard`]), and
    /// agents and other servers are dialed over mutual TLS. None: no TLS
    /// and no ACLs (benchmarks and in-process tests only).
    pub tls: Option<berth_tls::Credentials>,
    /// The CA's key, to sign the certificates of agents joining with a
    /// token (`--ca-key`; none: `berth node token create` is refused).
    pub join_ca: Option<Arc<api_acl::JoinCa>>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            policy: "default".into(),
            sample: None,
            plugin_cache: None,
            advertise: None,
            heartbeat_timeout: HEARTBEAT_TIMEOUT,
            max_heartbeats_per_second: liveness::MAX_HEARTBEATS_PER_SECOND,
            node_subnets: berth_model::node::NODE_SUBNETS.into(),
            registry: Arc::new(
                berth_image::registry::Registry::new(&Default::default())
                    .expect("a registry client without a CA always builds"),
            ),
            host_volume_root: None,
            secrets: None,
            tls: None,
            join_ca: None,
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
    guard: Option<auth::Guard>,
    metrics: Arc<metrics::ServerMetrics>,
}

/// Hands a follower's audit entries to the leader.
fn forward_audit(store: Store, tls: Option<tonic::transport::ClientTlsConfig>) -> audit::Forward {
    Arc::new(move |entries| {
        let store = store.clone();
        let tls = tls.clone();
        Box::pin(async move {
            let leader = store.leader();
            let Some(addr) = store.read().members.get(&leader).cloned() else {
                return false;
            };
            let Ok(ep) = berth_proto::servers::endpoint(&addr, tls.as_ref()) else {
                return false;
            };
            let Ok(ch) = ep.connect_timeout(Duration::from_secs(2)).connect().await else {
                return false;
            };
            let batch = berth_proto::AuditBatch {
                entries: entries
                    .into_iter()
                    .map(|e| berth_proto::AuditEntry {
                        at_ms: e.at_ms,
                        who: e.who,
                        action: e.action,
                        target: e.target,
                        outcome: e.outcome,
                    })
                    .collect(),
            };
            berth_proto::membership_client::MembershipClient::new(ch)
                .audit(batch)
                .await
                .is_ok()
        })
    })
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
        let server_tls = o.tls.as_ref().map(|c| c.client(berth_tls::Role::Server));
        let auditor = match &o.tls {
            Some(_) => {
                audit::Auditor::start(store.clone(), forward_audit(store.clone(), server_tls))
            }
            None => audit::Auditor::none(),
        };
        let metrics = Arc::new(metrics::ServerMetrics::new());
        let api = Api {
            metrics: metrics.clone(),
            store: store.clone(),
            liveness: Arc::new(liveness::Liveness::new(
                o.heartbeat_timeout,
                o.max_heartbeats_per_second,
            )),
            explanations: Arc::new(Mutex::new(scheduler::Explained::default())),
            plugins: plugins.clone(),
            router: assign::Router::default(),
            node_subnets: o.node_subnets.clone(),
            registry: o.registry.clone(),
            host_volume_root: o.host_volume_root.clone(),
            secrets: o.secrets.clone(),
            agent_tls: o.tls.as_ref().map(|c| c.client(berth_tls::Role::Agent)),
            join_ca: o.join_ca.clone(),
            auditor,
            events: events::EventLog::start(store.clone()),
        };
        let guard = o
            .tls
            .as_ref()
            .map(|_| auth::Guard::new(store.clone(), api.auditor.clone()));
        tokio::spawn(api.router.clone().run(store.clone()));
        metrics.watch_leader(&store);
        scheduler::start(
            store.clone(),
            policy.to_string(),
            o.sample,
            plugins,
            api.explanations.clone(),
            metrics.clone(),
        );
        if let Some(addr) = o.advertise {
            tokio::spawn(members::advertise(store.clone(), addr));
        }
        tokio::spawn(deployer::run(store.clone()));
        tokio::spawn(api.liveness.clone().run(store));
        Ok(Server {
            api,
            guard,
            metrics,
        })
    }

    /// The layer that authenticates and authorizes every call (none
    /// without TLS): `Server::builder().layer(...)`.
    pub fn guard(&self) -> Option<auth::Guard> {
        self.guard.clone()
    }

    /// The service implementation (for in-process callers and tests).
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// The HTTP routes served beside the gRPC services on the same port
    /// (behind the same guard): the JSON API, the dashboard, `/metrics`
    /// (see [`web`]).
    pub fn http(&self) -> axum::Router {
        web::router(self.api.clone(), self.metrics.clone(), None)
    }

    /// [`Server::http`] whose `/metrics` also carries `extra`'s
    /// exposition (`berth dev`: its in-process agent's).
    pub fn http_with(&self, extra: web::Extra) -> axum::Router {
        web::router(self.api.clone(), self.metrics.clone(), Some(extra))
    }

    /// The `Control` gRPC service.
    pub fn control(&self) -> ControlServer<Api> {
        ControlServer::new(self.api.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// The `Membership` gRPC service.
    pub fn membership(&self) -> MembershipServer<Api> {
        MembershipServer::new(self.api.clone())
    }

    /// The `NodeApi` gRPC service.
    pub fn node_api(&self) -> NodeApiServer<Api> {
        NodeApiServer::new(self.api.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
}
