//! `berth image import|ls|push` and `berth registry login|logout|ls`.
//!
//! Import and list go to the node agents (each runs containers from its own
//! store); push goes straight from this machine to a registry; credentials
//! go to the servers, which keep them in the replicated state.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use berth_model::image::ImageRef;
use berth_proto::control_client::ControlClient;
use berth_proto::{self as pb, MAX_MESSAGE};
use berth_runtime::image::registry::{Credentials, Registry, RegistryOptions};
use clap::{Args, Subcommand};

use crate::client::{ctl, list_nodes, request_id, status};
use crate::output::table;

/// How to reach registries (servers pin tags, agents pull, the CLI pushes).
#[derive(Args, Clone, Debug, Default)]
pub struct RegistryFlags {
    /// A PEM CA certificate trusted for registries, besides the system's.
    #[arg(long, env = "BERTH_REGISTRY_CA")]
    pub registry_ca: Option<PathBuf>,
    /// A registry (host:port) spoken to over plain HTTP; repeat or
    /// comma-separate for several.
    #[arg(long, env = "BERTH_INSECURE_REGISTRIES", value_delimiter = ',')]
    pub insecure_registry: Vec<String>,
}

impl RegistryFlags {
    /// The registry client these flags describe.
    pub fn client(&self) -> anyhow::Result<Arc<Registry>> {
        let ca_pem = match &self.registry_ca {
            Some(p) => {
                Some(std::fs::read(p).with_context(|| format!("--registry-ca {}", p.display()))?)
            }
            None => None,
        };
        let reg = Registry::new(&RegistryOptions {
            ca_pem,
            insecure: self.insecure_registry.clone(),
        })
        .map_err(|e| anyhow!("--registry-ca: {e}"))?;
        Ok(Arc::new(reg))
    }
}

#[derive(Subcommand)]
pub enum ImageCmd {
    /// Import an OCI image layout (directory or tar) into the nodes' stores
    /// through their agents (every ready node unless --node is given).
    Import {
        path: PathBuf,
        /// Name it NAME:TAG (default: the layout's own ref name).
        #[arg(long)]
        name: Option<String>,
        /// Only this node (repeat for several).
        #[arg(long)]
        node: Vec<String>,
    },
    /// List the images in the nodes' stores.
    Ls {
        #[arg(long)]
        json: bool,
        /// Only this node (repeat for several).
        #[arg(long)]
        node: Vec<String>,
    },
    /// Benchmark helper: pull into an image store directory here, as an
    /// agent does (`ci/bench.sh pull`).
    #[command(hide = true)]
    PullLocal {
        reference: String,
        #[arg(long)]
        store: PathBuf,
        #[command(flatten)]
        registry: RegistryFlags,
    },
    /// Upload an OCI image layout (directory or tar) to a registry.
    Push {
        /// The layout.
        layout: PathBuf,
        /// Where to: REGISTRY[:PORT]/REPO:TAG.
        reference: String,
        /// With several images in the layout, the ref name of the one to push.
        #[arg(long)]
        name: Option<String>,
        /// Registry user name (with --password-stdin).
        #[arg(long, short = 'u', env = "BERTH_REGISTRY_USERNAME")]
        username: Option<String>,
        /// Read the password from standard input.
        #[arg(long, requires = "username")]
        password_stdin: bool,
        #[command(flatten)]
        registry: RegistryFlags,
    },
}

#[derive(Subcommand)]
pub enum RegistryCmd {
    /// Store credentials for a registry in the cluster (servers and agents
    /// use them; they are never printed).
    Login {
        /// host[:port].
        registry: String,
        #[arg(long, short = 'u')]
        username: String,
        /// Read the password from standard input (the only way: a password
        /// on the command line ends up in shell history and `ps`).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Forget a registry's credentials.
    Logout { registry: String },
    /// The registries the cluster has credentials for (user names only).
    Ls {
        #[arg(long)]
        json: bool,
    },
}

/// Reads a password from standard input (one line, or all of it), bounded.
fn password_from_stdin() -> anyhow::Result<String> {
    let mut buf = String::new();
    std::io::stdin()
        .take(8192)
        .read_to_string(&mut buf)
        .context("reading the password from standard input")?;
    let pw = buf.trim_end_matches(['\n', '\r']).to_string();
    if pw.is_empty() {
        bail!("--password-stdin: standard input was empty");
    }
    Ok(pw)
}

/// `berth image ...`.
pub async fn run(addr: &str, cmd: ImageCmd) -> anyhow::Result<()> {
    match cmd {
        ImageCmd::Import { path, name, node } => import(addr, &path, name, &node).await,
        ImageCmd::Ls { json, node } => ls(addr, json, &node).await,
        ImageCmd::PullLocal {
            reference,
            store,
            registry,
        } => {
            let image = ImageRef::parse(&reference).map_err(|e| anyhow!("{reference:?} {e}"))?;
            let store = berth_runtime::image::ImageStore::open(&store)?;
            let progress = berth_runtime::image::registry::PullProgress::default();
            let start = std::time::Instant::now();
            let info = registry
                .client()?
                .pull(&store, &image, None, &progress)
                .await?;
            println!(
                "{}",
                serde_json::json!({
                    "name": info.name, "digest": info.digest, "layers": info.layers,
                    "bytes": progress.bytes.load(std::sync::atomic::Ordering::Relaxed),
                    "seconds": start.elapsed().as_secs_f64(),
                })
            );
            Ok(())
        }
        ImageCmd::Push {
            layout,
            reference,
            name,
            username,
            password_stdin,
            registry,
        } => {
            let image = ImageRef::parse(&reference).map_err(|e| anyhow!("{reference:?} {e}"))?;
            if !image.is_remote() {
                bail!("{reference:?} names no registry (expected REGISTRY[:PORT]/REPO:TAG)");
            }
            let creds = match (username, password_stdin) {
                (Some(u), true) => Some(Credentials {
                    username: u,
                    password: password_from_stdin()?,
                }),
                (Some(u), false) => match std::env::var("BERTH_REGISTRY_PASSWORD") {
                    Ok(p) => Some(Credentials {
                        username: u,
                        password: p,
                    }),
                    Err(_) => bail!("--username needs --password-stdin or BERTH_REGISTRY_PASSWORD"),
                },
                _ => None,
            };
            let client = registry.client()?;
            let tmp = tempfile::tempdir()?;
            let digest = client
                .push(&layout, name.as_deref(), &image, creds.as_ref(), tmp.path())
                .await?;
            println!("pushed {image}@{digest}");
            Ok(())
        }
    }
}

/// The agents to talk to: the named nodes, or every ready one.
async fn agents(addr: &str, only: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let nodes = list_nodes(addr).await?;
    for n in only {
        if !nodes.iter().any(|x| &x.name == n) {
            bail!("--node: no node named {n}");
        }
    }
    let out: Vec<(String, String)> = nodes
        .into_iter()
        .filter(|n| {
            if only.is_empty() {
                n.state == pb::NodeState::Ready as i32
            } else {
                only.contains(&n.name)
            }
        })
        .map(|n| (n.name, n.address))
        .collect();
    if out.is_empty() {
        bail!("no ready node to import to: start an agent (or `berth dev`) first");
    }
    Ok(out)
}

/// A `Control` client for image calls, and a request for node `node`
/// (the servers pass it on to that node's agent).
fn node_call<T>(
    addr: &str,
    node: &str,
    msg: T,
) -> anyhow::Result<(ControlClient<tonic::transport::Channel>, tonic::Request<T>)> {
    let client = ControlClient::new(crate::client::servers(addr)?.channel())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let mut req = crate::client::request(msg);
    req.metadata_mut().insert(
        "berth-node",
        node.parse()
            .map_err(|_| anyhow::anyhow!("--node: {node:?} is not a node name"))?,
    );
    Ok((client, req))
}

/// A layout directory as a tar file (a tar is used as it is).
fn as_tar(path: &Path, tmp: &Path) -> anyhow::Result<PathBuf> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    if !meta.is_dir() {
        return Ok(path.to_path_buf());
    }
    let out = tmp.join("layout.tar");
    let file = std::fs::File::create(&out)?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(file));
    b.follow_symlinks(false);
    b.append_dir_all(".", path)
        .with_context(|| format!("packing {}", path.display()))?;
    b.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    Ok(out)
}

async fn import(
    addr: &str,
    path: &Path,
    name: Option<String>,
    only: &[String],
) -> anyhow::Result<()> {
    let targets = agents(addr, only).await?;
    let tmp = tempfile::tempdir()?;
    let tar = as_tar(path, tmp.path())?;
    let mut failed = 0;
    for (node, _) in targets {
        let upload = chunks(&tar, name.clone().unwrap_or_default())?;
        let r = async {
            let (mut c, req) = node_call(addr, &node, tokio_stream::iter(upload))?;
            c.import_image(req).await.map_err(status)
        }
        .await;
        match r {
            Ok(info) => {
                let i = info.into_inner();
                println!(
                    "{node}: imported {} ({}, {} layer(s), {} bytes)",
                    i.name, i.digest, i.layers, i.size
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!("{node}: {e:#}");
            }
        }
    }
    if failed > 0 {
        bail!("the import failed on {failed} node(s)");
    }
    Ok(())
}

/// The upload messages of a file: 1 MiB each, the first naming the image.
fn chunks(tar: &Path, name: String) -> anyhow::Result<Vec<pb::ImageUpload>> {
    let mut f = std::fs::File::open(tar).with_context(|| format!("{}", tar.display()))?;
    let mut out = Vec::new();
    let mut name = Some(name);
    loop {
        let mut buf = vec![0u8; 1 << 20];
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        out.push(pb::ImageUpload {
            name: name.take().unwrap_or_default(),
            data: buf,
        });
    }
    Ok(out)
}

async fn ls(addr: &str, json: bool, only: &[String]) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for (node, _) in agents(addr, only).await? {
        let (mut c, req) = node_call(addr, &node, pb::ListImagesRequest {})?;
        let images = c
            .list_images(req)
            .await
            .map_err(status)?
            .into_inner()
            .images;
        all.extend(images.into_iter().map(|i| (node.clone(), i)));
    }
    if crate::output::structured(json) {
        let v: Vec<serde_json::Value> = all
            .iter()
            .map(|(n, i)| {
                serde_json::json!({
                    "node": n, "name": i.name, "digest": i.digest,
                    "layers": i.layers, "size": i.size,
                })
            })
            .collect();
        crate::output::print(&v)?;
        return Ok(());
    }
    let rows = all
        .iter()
        .map(|(n, i)| {
            vec![
                n.clone(),
                i.name.clone(),
                i.digest.chars().take(19).collect(),
                i.layers.to_string(),
                i.size.to_string(),
            ]
        })
        .collect();
    table(&["NODE", "NAME", "DIGEST", "LAYERS", "SIZE"], rows);
    Ok(())
}

/// `berth registry ...`.
pub async fn registry(addr: &str, cmd: RegistryCmd) -> anyhow::Result<()> {
    match cmd {
        RegistryCmd::Login {
            registry,
            username,
            password_stdin: _,
        } => {
            let password = password_from_stdin()?;
            ctl!(
                addr,
                registry_login,
                pb::RegistryLoginRequest {
                    registry: registry.clone(),
                    username: username.clone(),
                    password: password.clone(),
                    request_id: request_id(),
                }
            )?;
            println!("logged in to {registry} as {username}");
        }
        RegistryCmd::Logout { registry } => {
            ctl!(
                addr,
                registry_logout,
                pb::RegistryRequest {
                    registry: registry.clone(),
                    request_id: request_id(),
                }
            )?;
            println!("logged out of {registry}");
        }
        RegistryCmd::Ls { json } => {
            let regs = ctl!(addr, list_registries, pb::ListRegistriesRequest {})?
                .into_inner()
                .registries;
            if crate::output::structured(json) {
                let v: Vec<serde_json::Value> = regs
                    .iter()
                    .map(|r| serde_json::json!({"registry": r.registry, "username": r.username}))
                    .collect();
                crate::output::print(&v)?;
            } else {
                let rows = regs
                    .iter()
                    .map(|r| vec![r.registry.clone(), r.username.clone()])
                    .collect();
                table(&["REGISTRY", "USERNAME"], rows);
            }
        }
    }
    Ok(())
}
