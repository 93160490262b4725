//! The long-running modes: `berth dev`, `berth agent` (and see
//! `servercmd` for `berth server`), and
//! the shim's logging.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use berth_agent::{Agent, AgentConfig, AgentService, InventorySource};
use berth_model::quantity::{Bytes, MilliCpu};
use berth_runtime::RuntimeConfig;
use berth_server::Server;
use berth_store::{NoPeers, Store, StoreConfig};
use tokio::sync::watch;

/// The shim logs to its stderr, which the agent points at `shim.log` in the
/// task directory. A fixed level keeps its start-up cheap (no filter parsing).
pub fn shim_logging() {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
}

fn socket(addr: &str) -> anyhow::Result<SocketAddr> {
    addr.parse().with_context(|| {
        format!("--addr/BERTH_ADDR: {addr:?} is not host:port (e.g. 127.0.0.1:7700)")
    })
}

fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = raw
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let name = name.trim_matches('-').to_string();
    if name.is_empty() { "node".into() } else { name }
}

/// The runtime's paths under `data_dir`. `BERTH_CNI_PATH` (directories
/// separated by `:`, as `CNI_PATH`) says where the CNI plugins are
/// (default Debian's `/usr/lib/cni`, then `/opt/cni/bin`).
fn runtime_config(data_dir: &Path) -> anyhow::Result<RuntimeConfig> {
    let shim_exe = std::env::current_exe().context("finding the berth executable for the shim")?;
    let mut cfg = RuntimeConfig::for_data_dir(data_dir, shim_exe);
    if let Ok(p) = std::env::var("BERTH_CNI_PATH") {
        cfg.cni_paths = p
            .split(':')
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .collect();
    }
    Ok(cfg)
}

pub(crate) async fn shutdown_signal(tx: watch::Sender<bool>) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down; containers keep running and are reattached at the next start");
    let _ = tx.send(true);
}

fn open_store(data_dir: &Path) -> anyhow::Result<Store> {
    let cfg = StoreConfig::single(data_dir.join("server"));
    Store::open(cfg, Arc::new(NoPeers))
        .with_context(|| format!("opening the store in {}", data_dir.display()))
}

/// `berth dev`: one server and one agent in one process, one port.
pub async fn dev(
    addr: &str,
    data_dir: &Path,
    node_name: Option<String>,
    policy: &str,
    heartbeat_timeout: &str,
    net: DevNet,
) -> anyhow::Result<()> {
    let dynamic_ports = port_range(Some(&net.dynamic_ports))?;
    berth_model::node::parse_subnets(&net.node_subnets)
        .map_err(|e| anyhow::anyhow!("--node-subnets: {e}"))?;
    let heartbeat_timeout = crate::servercmd::duration("--heartbeat-timeout", heartbeat_timeout)?;
    let listen = socket(addr)?;
    berth_server::check_policy(policy).context("--policy")?;
    let registry = net.registry.client()?;
    let node_name = node_name.unwrap_or_else(hostname);
    let pki = if crate::access::insecure() {
        None
    } else {
        Some(crate::pki::dev(data_dir, &node_name, listen)?)
    };
    let store = open_store(data_dir)?;
    let server = Server::start_with(
        store.clone(),
        berth_server::Options {
            policy: policy.to_string(),
            plugin_cache: Some(data_dir.join("server").join("plugins")),
            advertise: Some(addr.to_string()),
            heartbeat_timeout,
            node_subnets: net.node_subnets.clone(),
            registry: registry.clone(),
            host_volume_root: host_root(net.host_volume_root.as_deref())?,
            secrets: secret_box(
                std::env::var_os("BERTH_SECRET_KEY")
                    .map(PathBuf::from)
                    .as_deref(),
                Some(&data_dir.join("server").join("secret.key")),
            )?,
            tls: pki.as_ref().map(|p| p.server.clone()),
            join_ca: pki.as_ref().map(|p| {
                Arc::new(berth_server::api_acl::JoinCa {
                    cert_pem: p.join_ca.cert_pem.clone(),
                    key_pem: p.join_ca.key_pem.clone(),
                })
            }),
            ..Default::default()
        },
    )
    .context("--policy")?;
    if pki.is_some() {
        tokio::spawn(bootstrap_dev(
            server.api().clone(),
            store.clone(),
            data_dir.join("token"),
        ));
    }
    let (agent, rt, reports) = Agent::new(AgentConfig {
        node_name,
        server: addr.to_string(),
        advertise: addr.to_string(),
        cpu_millis: 0,
        memory_bytes: 0,
        labels: BTreeMap::new(),
        inventory: InventorySource::Probe,
        heartbeat: Duration::from_secs(1),
        runtime: RuntimeConfig {
            host_volume_root: net.host_volume_root.clone(),
            ..runtime_config(data_dir)?
        },
        dynamic_ports,
        dns_loopback: dns_listen(&net.dns_listen)?,
        registry,
        image_cache_max: cache_max(std::env::var("BERTH_IMAGE_CACHE_MAX").ok().as_deref())?,
        tls: pki
            .as_ref()
            .map(|p| p.agent.client(berth_tls::Role::Server)),
    })
    .await?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(shutdown_signal(tx));
    let builder = tonic::transport::Server::builder().accept_http1(true);
    let tls = match &pki {
        Some(p) => Some(p.server.acceptor(true).context("the listener's TLS")?),
        None => None,
    };
    // gRPC and HTTP (`/metrics`) on one port, behind one guard.
    let mut routes = tonic::service::Routes::new(server.control())
        .add_service(server.node_api())
        .add_service(server.membership())
        .add_service(AgentService::guarded(rt));
    let agent_metrics: berth_server::web::Extra =
        Arc::new(|| berth_agent::metrics::METRICS.render());
    *routes.axum_router_mut() =
        std::mem::take(routes.axum_router_mut()).merge(server.http_with(agent_metrics));
    let router = builder
        .layer(tower::util::option_layer(server.guard()))
        .add_routes(routes);
    let listener = serve!(router, listen, tls, rx.clone());
    tracing::info!(%listen, data_dir = %data_dir.display(), "berth dev is up");
    agent.run(reports, rx).await;
    let _ = listener.await;
    store.shutdown().await;
    Ok(())
}

/// Makes `berth dev`'s management token once: the secret goes to `path`
/// (owner-only) before it is committed, so a crash in between leaves a
/// file the next start commits.
async fn bootstrap_dev(api: berth_server::Api, store: Store, path: PathBuf) {
    use std::os::unix::fs::OpenOptionsExt as _;
    for _ in 0..600 {
        if store.is_leader() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if store.read().acl.bootstrapped {
        if !path.exists() {
            tracing::warn!(path = %path.display(), "ACLs are bootstrapped but the token file is gone");
        }
        return;
    }
    let Ok((accessor, made)) = berth_server::auth::new_secret() else {
        return;
    };
    let secret = match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().to_string(),
        Err(_) => {
            let secret = made;
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, secret.as_bytes()));
            if let Err(e) = written {
                tracing::error!(path = %path.display(), error = %e, "writing the management token");
                return;
            }
            secret
        }
    };
    match api.bootstrap_with(&accessor, &secret, String::new()).await {
        Ok(()) => tracing::info!(path = %path.display(), "management token written"),
        Err(e) => tracing::error!(error = %e.message(), "bootstrapping the ACLs"),
    }
}

pub(crate) async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Serves a tonic router on `$addr` until `$rx` turns true, spawned:
/// over TLS with `$tls` (a `TlsAcceptor` offering `h2` and `http/1.1`,
/// see `berth_tls::listen`), else plain. A macro because the two arms
/// serve different connection types through the same router type.
macro_rules! serve {
    ($router:expr, $addr:expr, $tls:expr, $rx:expr) => {{
        let tcp = tokio::net::TcpListener::bind($addr)
            .await
            .with_context(|| format!("listening on {}", $addr))?;
        let stop = crate::daemon::wait_true($rx);
        let router = $router;
        match $tls {
            Some(acceptor) => tokio::spawn(
                router
                    .serve_with_incoming_shutdown(berth_tls::listen::incoming(tcp, acceptor), stop),
            ),
            None => tokio::spawn(
                router.serve_with_incoming_shutdown(berth_tls::listen::plain(tcp), stop),
            ),
        }
    }};
}
pub(crate) use serve;

/// The flags of `berth agent`.
#[derive(clap::Args)]
pub struct AgentOpts {
    #[command(flatten)]
    pub registry: crate::image::RegistryFlags,
    /// Keep the node's image store under this size (e.g. 20Gi): the least
    /// recently used images not needed by tasks here go after each pull.
    #[arg(long, env = "BERTH_IMAGE_CACHE_MAX")]
    pub image_cache_max: Option<String>,
    /// The only directory (and below) host-path volumes may mount.
    #[arg(long, env = "BERTH_HOST_VOLUME_ROOT")]
    pub host_volume_root: Option<PathBuf>,
    /// Where this agent's API (logs, images) listens.
    #[arg(long, default_value = "127.0.0.1:7701")]
    pub listen: String,
    /// Node name (default: the hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Allocatable CPU (cores or millicores, e.g. 2 or 1500m; default: one per PU).
    #[arg(long)]
    pub cpu: Option<String>,
    /// Allocatable memory (e.g. 4Gi; default: all).
    #[arg(long)]
    pub memory: Option<String>,
    /// Node labels, key=value (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Simulate hardware: a built-in fixture name (dgx-h100, a100-pcie-4x,
    /// a100-mig, cpu-2s) or an inventory JSON file. Default: probe this machine.
    #[arg(long)]
    pub inventory: Option<String>,
    /// Where CDI specs live (repeatable; default /etc/cdi and /var/run/cdi).
    #[arg(long = "cdi-dir")]
    pub cdi_dirs: Vec<PathBuf>,
    /// FOR BENCHMARKS AND SCALE TESTS ONLY: run N hollow (simulated) nodes
    /// in this process instead of a real agent. Each registers the
    /// --inventory fixture as `NODE_NAME-i` (default prefix `hollow`),
    /// heartbeats, holds its assignment stream and reports its tasks
    /// running without starting anything.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub hollow: Option<u32>,
    /// The host ports dynamic ports (`host: 0`) come from on this node,
    /// FIRST-LAST.
    #[arg(long, env = "BERTH_DYNAMIC_PORTS", default_value = "20000-32000")]
    pub dynamic_ports: Option<String>,
    /// Where the node's DNS listens besides its bridge address
    /// (`off`: only there).
    #[arg(long, env = "BERTH_DNS_LISTEN", default_value = "127.0.0.1:53")]
    pub dns_listen: String,
    /// A join token (`berth node token create`) to exchange for this
    /// node's certificate when it has none (needs --ca).
    #[arg(long, env = "BERTH_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// With --hollow: write counters (tasks running, heartbeat round trips)
    /// as JSON to this file every 200 ms.
    #[arg(long, requires = "hollow")]
    pub stats: Option<PathBuf>,
}

/// `berth dev`'s networking flags.
pub struct DevNet {
    /// `--dynamic-ports FIRST-LAST`.
    pub dynamic_ports: String,
    /// `--dns-listen ADDR|off`.
    pub dns_listen: String,
    /// `--node-subnets RANGE`.
    pub node_subnets: String,
    /// `--registry-ca`, `--insecure-registry`.
    pub registry: crate::image::RegistryFlags,
    /// `--host-volume-root DIR`.
    pub host_volume_root: Option<PathBuf>,
}

/// The sealer for secrets from `--secret-key FILE`; without one, the key
/// at `default` (made there if missing: `berth dev`), else none.
pub fn secret_box(
    file: Option<&Path>,
    default: Option<&Path>,
) -> anyhow::Result<Option<Arc<berth_server::secrets::SecretBox>>> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = match (file, default) {
        (Some(f), _) => f.to_path_buf(),
        (None, Some(d)) => {
            if !d.exists() {
                if let Some(parent) = d.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let key =
                    berth_server::secrets::SecretBox::new_key().map_err(anyhow::Error::msg)?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(d)
                    .with_context(|| format!("creating {}", d.display()))?;
                std::io::Write::write_all(&mut f, key.as_bytes())?;
            }
            d.to_path_buf()
        }
        (None, None) => return Ok(None),
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("--secret-key {}", path.display()))?;
    let b = berth_server::secrets::SecretBox::from_hex(&text)
        .map_err(|e| anyhow::anyhow!("--secret-key {}: {e}", path.display()))?;
    Ok(Some(Arc::new(b)))
}

/// `--image-cache-max SIZE`.
pub fn cache_max(s: Option<&str>) -> anyhow::Result<Option<u64>> {
    s.map(|s| {
        s.parse::<Bytes>()
            .map(|b| b.0)
            .map_err(|e| anyhow::anyhow!("--image-cache-max: {e}"))
    })
    .transpose()
}

/// `--host-volume-root DIR`: an absolute, clean path (as the servers
/// compare it with specs' host paths).
pub fn host_root(p: Option<&Path>) -> anyhow::Result<Option<String>> {
    let Some(p) = p else { return Ok(None) };
    let s = p.to_string_lossy().to_string();
    if !berth_model::spec::clean_absolute(&s) && s != "/" {
        anyhow::bail!("--host-volume-root: {s:?} must be an absolute path without '.' or '..'");
    }
    Ok(Some(s))
}

/// `--dns-listen ADDR|off`: where the node's DNS listens besides its
/// bridge address.
pub fn dns_listen(s: &str) -> anyhow::Result<Option<std::net::SocketAddr>> {
    if s == "off" {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        anyhow::anyhow!("--dns-listen: {s:?} is not an address like 127.0.0.1:53 (or off)")
    })
}

/// `--dynamic-ports FIRST-LAST`.
pub fn port_range(s: Option<&str>) -> anyhow::Result<Option<(u16, u16)>> {
    s.map(berth_model::node::parse_port_range)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--dynamic-ports: {e}"))
}

/// `berth agent`: a node agent talking to `addr`.
pub async fn agent(addr: &str, data_dir: &Path, o: AgentOpts) -> anyhow::Result<()> {
    if let Some(n) = o.hollow {
        return hollow(addr, n, o).await;
    }
    let listen = o.listen.as_str();
    let listen_addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen: {listen:?} is not host:port"))?;
    let cpu_millis = match o.cpu {
        Some(c) => {
            MilliCpu::parse(&c)
                .map_err(|e| anyhow::anyhow!("--cpu: {e}"))?
                .0
        }
        None => 0,
    };
    let memory_bytes = match o.memory {
        Some(m) => {
            Bytes::parse(&m)
                .map_err(|e| anyhow::anyhow!("--memory: {e}"))?
                .0
        }
        None => 0,
    };
    let mut label_map = BTreeMap::new();
    for l in o.labels {
        let Some((k, v)) = l.split_once('=') else {
            bail!("--label: {l:?} is not key=value");
        };
        label_map.insert(k.to_string(), v.to_string());
    }
    let inventory = match o.inventory {
        Some(f) => InventorySource::Fixture(f),
        None => InventorySource::Probe,
    };
    let node_name = o.node_name.unwrap_or_else(hostname);
    // A bad fixture is a bad flag, whatever else is missing.
    if let InventorySource::Fixture(f) = &inventory {
        berth_hostprobe::load_fixture(f).map_err(|e| anyhow::anyhow!("--inventory: {e}"))?;
    }
    let creds = if crate::access::insecure() {
        None
    } else {
        if !data_dir.join("agent.pem").exists()
            && crate::access::paths().cert.is_none()
            && let Some(token) = &o.join_token
        {
            let ca = crate::access::paths()
                .ca
                .unwrap_or_else(|| data_dir.join(berth_tls::CA_CERT));
            crate::pki::join(addr, data_dir, &node_name, token, &ca).await?;
        }
        Some(crate::pki::load(data_dir, berth_tls::Role::Agent)?)
    };
    if let Some(c) = &creds
        && c.whoami().map(|(_, n)| n).as_deref() != Some(node_name.as_str())
    {
        bail!(
            "--node-name: the agent certificate is for {:?}, not {node_name:?}",
            c.whoami().map(|(_, n)| n).unwrap_or_default()
        );
    }
    let mut runtime = runtime_config(data_dir)?;
    host_root(o.host_volume_root.as_deref())?;
    runtime.host_volume_root = o.host_volume_root.clone();
    if !o.cdi_dirs.is_empty() {
        runtime.cdi_dirs = o.cdi_dirs;
    }
    let (agent, rt, reports) = Agent::new(AgentConfig {
        node_name,
        server: addr.to_string(),
        advertise: listen.to_string(),
        cpu_millis,
        memory_bytes,
        labels: label_map,
        inventory,
        heartbeat: Duration::from_secs(1),
        runtime,
        dynamic_ports: port_range(o.dynamic_ports.as_deref())?,
        dns_loopback: dns_listen(&o.dns_listen)?,
        registry: o.registry.client()?,
        image_cache_max: cache_max(o.image_cache_max.as_deref())?,
        tls: creds.as_ref().map(|c| c.client(berth_tls::Role::Server)),
    })
    .await?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(shutdown_signal(tx));
    let tls = match &creds {
        Some(c) => Some(c.acceptor(false).context("the listener's TLS")?),
        None => None,
    };
    // The agent's service (servers only) and `/metrics` (any certificate
    // of the cluster: the listener refuses others).
    let mut routes = tonic::service::Routes::new(AgentService::guarded(rt));
    *routes.axum_router_mut() =
        std::mem::take(routes.axum_router_mut()).merge(berth_agent::metrics::router());
    let router = tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(routes);
    let listener = serve!(router, listen_addr, tls, rx.clone());
    agent.run(reports, rx).await;
    let _ = listener.await;
    Ok(())
}

/// `berth agent --hollow N`: simulated nodes for benchmarks.
async fn hollow(addr: &str, n: u32, o: AgentOpts) -> anyhow::Result<()> {
    let fixture = o
        .inventory
        .context("--hollow needs --inventory (a fixture name or file)")?;
    let inventory = berth_hostprobe::load_fixture(&fixture).context("--inventory")?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(shutdown_signal(tx));
    berth_agent::hollow::run(
        berth_agent::hollow::HollowConfig {
            count: n as usize,
            prefix: o.node_name.unwrap_or_else(|| "hollow".into()),
            server: addr.to_string(),
            inventory,
            heartbeat: Duration::from_secs(1),
            stats: o.stats,
            tls: crate::access::client_tls()?,
        },
        rx,
    )
    .await
    .map_err(|e| anyhow::anyhow!(e))
}
