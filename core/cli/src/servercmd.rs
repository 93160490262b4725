//! `berth server`: one member of a replicated control plane, and the
//! membership commands (`members`, `join`, `leave`, `transfer-leader`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use berth_model::quantity::DurationMs;
use berth_proto as pb;
use berth_proto::control_client::ControlClient;
use berth_proto::membership_client::MembershipClient;
use berth_proto::servers::Servers;
use berth_raftnet::{Peers, RaftService};
use berth_server::{Options, Server};
use berth_store::{Store, StoreConfig};
use tokio::sync::watch;

use crate::client::{servers, status};
use crate::output::table;

/// The flags of `berth server`.
#[derive(clap::Args)]
pub struct ServerOpts {
    #[command(flatten)]
    pub registry: crate::image::RegistryFlags,
    /// Where the raft log and state live.
    #[arg(long, env = "BERTH_DATA_DIR", default_value = "/var/lib/berth")]
    pub data_dir: PathBuf,
    /// Placement policy (see `berth dev --help`).
    #[arg(long, env = "BERTH_POLICY", default_value = "default")]
    pub policy: String,
    /// Score at most this many feasible nodes per decision, from a
    /// rotating start (kube-scheduler's percentageOfNodesToScore); default:
    /// every feasible node, once per node class, which decides the same as
    /// scoring each node.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub sample: Option<u64>,
    /// Where this server listens (clients, agents and the other servers);
    /// default: the first address of --addr.
    #[arg(long)]
    pub listen: Option<String>,
    /// Start a new cluster with this server as its only member (the
    /// default for an empty data directory without --join).
    #[arg(long, conflicts_with = "join")]
    pub bootstrap: bool,
    /// Join the cluster served at these addresses (comma-separated; any
    /// member will do). Ignored once this data directory has joined.
    #[arg(long)]
    pub join: Option<String>,
    /// A node silent this long is marked down and its tasks replaced.
    #[arg(long, env = "BERTH_HEARTBEAT_TIMEOUT", default_value = "10s")]
    pub heartbeat_timeout: String,
    /// Heartbeats per second the cluster aims at, at most: as the cluster
    /// grows, nodes are told to heartbeat less often (and the down
    /// deadline grows with that pace).
    #[arg(long, default_value_t = berth_server::liveness::MAX_HEARTBEATS_PER_SECOND,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_heartbeats_per_second: u32,
    /// The range node bridge subnets come from, one /24 per node
    /// (proposed with the first node's registration; fixed after).
    #[arg(long, env = "BERTH_NODE_SUBNETS", default_value = berth_model::node::NODE_SUBNETS)]
    pub node_subnets: String,
    /// Specs' host-path volumes must be under this directory (none:
    /// host paths are refused).
    #[arg(long, env = "BERTH_HOST_VOLUME_ROOT")]
    pub host_volume_root: Option<PathBuf>,
    /// The key secrets are sealed with (a file of 64 hex digits, the same
    /// on every server; `berth tls`-style: keep it out of backups of the
    /// state). Without one, storing secrets is refused.
    #[arg(long, env = "BERTH_SECRET_KEY")]
    pub secret_key: Option<PathBuf>,
    /// The CA's key, to sign the certificates of agents that join with a
    /// token (`berth node token create`); default <data dir>/ca-key.pem
    /// when it is there.
    #[arg(long, env = "BERTH_CA_KEY")]
    pub ca_key: Option<PathBuf>,
    /// Snapshot the state and compact the log after at least this many
    /// entries, once the log since the last snapshot is as large as it (so
    /// snapshots get rarer as the state grows and cost the same per write).
    #[arg(long, default_value_t = 50_000)]
    pub snapshot_every: u64,
    /// Raft tick (heartbeats every 2 ticks, elections after 10-20).
    #[arg(long, default_value = "50ms")]
    pub raft_tick: String,
    /// Start a new cluster from this snapshot (`berth snapshot save`):
    /// apps, tasks, plugins, volumes' bindings, ACLs and quotas come back;
    /// this server is its only member (others join it). Needs an empty
    /// data directory.
    #[arg(long, conflicts_with = "join")]
    pub restore: Option<PathBuf>,
}

/// The membership commands.
#[derive(clap::Subcommand)]
pub enum ServerCmd {
    /// List the servers, their roles and how far each has replicated.
    Members {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a server (normally `berth server --join` does this itself).
    Join {
        /// The new server's address.
        address: String,
        /// Its raft id (default: asked from the server at ADDRESS).
        #[arg(long)]
        id: Option<u64>,
    },
    /// Remove a server, by id or address.
    Leave {
        /// Raft id or host:port.
        server: String,
    },
    /// Hand leadership to a server (default: the most up-to-date follower).
    TransferLeader {
        /// Raft id.
        id: Option<u64>,
    },
}

pub(crate) fn duration(flag: &str, s: &str) -> anyhow::Result<Duration> {
    let d = DurationMs::parse(s).map_err(|e| anyhow!("{flag}: {e}"))?;
    if d.0 == 0 {
        bail!("{flag}: must be positive");
    }
    Ok(Duration::from_millis(d.0))
}

/// This data directory's raft id: made once, kept in `server/id`. A data
/// directory from before ids were stored (a single server) is server 1.
fn server_id(dir: &Path) -> anyhow::Result<u64> {
    let path = dir.join("id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return text
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|id| *id != 0)
            .ok_or_else(|| anyhow!("{}: not a server id", path.display()));
    }
    let id = if dir.join("raft.redb").exists() {
        1
    } else {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(
            &(
                std::time::SystemTime::now(),
                std::process::id(),
                dir.to_path_buf(),
            ),
            &mut h,
        );
        // Positive in an i64, for tools that read ids as signed.
        (std::hash::Hasher::finish(&h) >> 1).max(2)
    };
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// `berth server`.
pub async fn run(addr: &str, o: ServerOpts) -> anyhow::Result<()> {
    let listen_str = o
        .listen
        .clone()
        .unwrap_or_else(|| addr.split(',').next().unwrap_or(addr).trim().to_string());
    let listen: SocketAddr = listen_str
        .parse()
        .with_context(|| format!("--listen: {listen_str:?} is not host:port"))?;
    berth_server::check_policy(&o.policy).context("--policy")?;
    let heartbeat_timeout = duration("--heartbeat-timeout", &o.heartbeat_timeout)?;
    let tick = duration("--raft-tick", &o.raft_tick)?;
    if o.snapshot_every == 0 {
        bail!("--snapshot-every: must be positive");
    }
    let join = match &o.join {
        Some(j) => Some(Servers::parse(j).map_err(|e| anyhow!("--join: {e}"))?),
        None => None,
    };
    let dir = o.data_dir.join("server");
    // A snapshot to restore is read and checked before anything is written.
    let restored = match &o.restore {
        Some(file) => {
            if dir.join("raft.redb").exists() {
                bail!(
                    "--restore: {} already holds a cluster's state; restore into an empty data directory",
                    o.data_dir.display()
                );
            }
            let (h, state) = crate::snapshot::read(file).context("--restore")?;
            Some((h, state))
        }
        None => None,
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let id = server_id(&dir)?;
    let restore = restored.map(|(h, mut state)| {
        // A new cluster: this server is its only member.
        state.members = [(id, listen_str.clone())].into_iter().collect();
        tracing::info!(index = h.index, from = %h.berth, "starting a new cluster from a snapshot");
        (h.index, state)
    });
    let cfg = StoreConfig {
        id,
        data_dir: dir.clone(),
        // Ignored once the directory holds a configuration; until then,
        // --join waits to be added and anything else starts a cluster.
        bootstrap_voters: if join.is_some() { Vec::new() } else { vec![id] },
        snapshot_every: o.snapshot_every,
        tick,
        restore,
    };
    let local_ip = Some(listen.ip()).filter(|ip| !ip.is_unspecified());
    let creds = if crate::access::insecure() {
        None
    } else {
        Some(crate::pki::load(&o.data_dir, berth_tls::Role::Server)?)
    };
    let join_ca = match (&creds, &o.ca_key) {
        (None, _) => None,
        (Some(_), Some(k)) => Some(k.clone()),
        (Some(_), None) => Some(o.data_dir.join(berth_tls::CA_KEY)).filter(|k| k.exists()),
    }
    .map(|key| {
        let ca = crate::access::paths()
            .ca
            .unwrap_or_else(|| o.data_dir.join(berth_tls::CA_CERT));
        crate::pki::join_ca(&ca, &key).map(Arc::new)
    })
    .transpose()
    .context("--ca-key")?;
    let server_tls = creds.as_ref().map(|c| c.client(berth_tls::Role::Server));
    let join = join.map(|j| j.with_tls(server_tls.clone()));
    let peers = Peers::with_tls(id, local_ip, server_tls);
    let store = Store::open(cfg, Arc::new(peers.clone()))
        .with_context(|| format!("opening the store in {}", dir.display()))?;
    peers.attach(store.clone());
    // A server that never finished joining (or never started) knows no
    // voters yet: it joins (again).
    let joining = join.is_some()
        && store
            .status()
            .await
            .context("reading the raft status")?
            .voters
            .is_empty();
    let server = Server::start_with(
        store.clone(),
        Options {
            policy: o.policy.clone(),
            sample: o.sample.map(|s| s as usize),
            plugin_cache: Some(dir.join("plugins")),
            advertise: Some(listen_str.clone()),
            heartbeat_timeout,
            max_heartbeats_per_second: o.max_heartbeats_per_second,
            node_subnets: o.node_subnets.clone(),
            registry: o.registry.client()?,
            host_volume_root: crate::daemon::host_root(o.host_volume_root.as_deref())?,
            secrets: crate::daemon::secret_box(o.secret_key.as_deref(), None)?,
            tls: creds.clone(),
            join_ca,
        },
    )
    .context("--policy")?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(crate::daemon::shutdown_signal(tx));
    let builder = tonic::transport::Server::builder().accept_http1(true);
    let tls = match &creds {
        Some(c) => Some(c.acceptor(true).context("the listener's TLS")?),
        None => None,
    };
    // gRPC and HTTP (`/metrics`) on one port, behind one guard.
    let mut routes = tonic::service::Routes::new(server.control())
        .add_service(server.node_api())
        .add_service(server.membership())
        .add_service(RaftService::server(store.clone()));
    *routes.axum_router_mut() = std::mem::take(routes.axum_router_mut()).merge(server.http());
    let router = builder
        .layer(tower::util::option_layer(server.guard()))
        .add_routes(routes);
    let listener = crate::daemon::serve!(router, listen, tls, rx);
    tracing::info!(%listen, id, "berth server is up");
    if joining && let Some(join) = join {
        let members = join_cluster(&join, id, &listen_str).await?;
        peers.seed(&members);
        tracing::info!(id, "joined the cluster; catching up from the leader");
    }
    listener
        .await
        .context("the listener failed")?
        .with_context(|| format!("serving on {listen}"))?;
    store.shutdown().await;
    Ok(())
}

/// Asks the cluster to add this server; returns the members' addresses.
async fn join_cluster(
    join: &Servers,
    id: u64,
    address: &str,
) -> anyhow::Result<BTreeMap<u64, String>> {
    let req = pb::JoinRequest {
        id,
        address: address.to_string(),
    };
    let resp = join
        .call(|ch| {
            let r = req.clone();
            async move { MembershipClient::new(ch).join(r).await }
        })
        .await
        .map_err(|s| anyhow!("joining the cluster at {}: {}", join.current(), s.message()))?
        .into_inner();
    Ok(resp
        .members
        .into_iter()
        .filter(|m| !m.address.is_empty())
        .map(|m| (m.id, m.address))
        .collect())
}

async fn members_call<F, Fut>(addr: &str, f: F) -> anyhow::Result<pb::MembersResponse>
where
    F: Fn(ControlClient<berth_proto::servers::Authed>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<pb::MembersResponse>, tonic::Status>>,
{
    Ok(servers(addr)?
        .call(|ch| {
            f(ControlClient::with_interceptor(
                ch,
                berth_proto::servers::Bearer,
            ))
        })
        .await
        .map_err(status)?
        .into_inner())
}

/// The membership commands.
pub async fn command(addr: &str, cmd: ServerCmd) -> anyhow::Result<()> {
    let resp = match cmd {
        ServerCmd::Members { json } => {
            let r = members_call(addr, |mut c| async move {
                c.server_members(pb::MembersRequest {}).await
            })
            .await?;
            if crate::output::structured(json) {
                let v: Vec<serde_json::Value> = r
                    .members
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "id": m.id, "address": m.address, "leader": m.leader, "matched": m.matched,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({
                        "members": v, "leader": r.leader, "term": r.term, "commit": r.commit,
                        "id": r.id, "role": r.role, "snapshot": r.snapshot,
                        "snapshot_bytes": r.snapshot_bytes, "applied": r.applied,
                    })
                );
                return Ok(());
            }
            r
        }
        ServerCmd::Join { address, id } => {
            let id = match id {
                Some(id) => id,
                None => {
                    let one = Servers::parse(&address)
                        .map_err(|e| anyhow!("{e}"))?
                        .with_tls(crate::access::client_tls()?);
                    let mut c = ControlClient::with_interceptor(
                        one.channel(),
                        berth_proto::servers::Bearer,
                    );
                    c.server_members(pb::MembersRequest {})
                        .await
                        .map_err(|s| anyhow!("asking {address} for its id: {}", s.message()))?
                        .into_inner()
                        .id
                }
            };
            let req = pb::JoinRequest { id, address };
            members_call(addr, |mut c| {
                let r = req.clone();
                async move { c.server_join(r).await }
            })
            .await?
        }
        ServerCmd::Leave { server } => {
            let req = match server.parse::<u64>() {
                Ok(id) => pb::LeaveRequest {
                    id,
                    address: String::new(),
                },
                Err(_) => pb::LeaveRequest {
                    id: 0,
                    address: server,
                },
            };
            members_call(addr, |mut c| {
                let r = req.clone();
                async move { c.server_leave(r).await }
            })
            .await?
        }
        ServerCmd::TransferLeader { id } => {
            let req = pb::TransferLeaderRequest {
                id: id.unwrap_or(0),
            };
            members_call(
                addr,
                |mut c| async move { c.server_transfer_leader(req).await },
            )
            .await?
        }
    };
    let rows: Vec<Vec<String>> = resp
        .members
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.address.clone(),
                if m.leader { "leader" } else { "follower" }.to_string(),
                if resp.role == "leader" {
                    m.matched.to_string()
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    table(&["ID", "ADDRESS", "ROLE", "MATCHED"], rows);
    println!("term {}, commit {}", resp.term, resp.commit);
    Ok(())
}
