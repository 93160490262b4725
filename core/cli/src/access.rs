//! How this process proves who it is: the cluster CA, its certificate and
//! key, its ACL token and the namespace it works in. Flags and
//! environment first (`BERTH_CA`, `BERTH_CERT`, `BERTH_KEY`,
//! `BERTH_TOKEN`, `BERTH_NAMESPACE`), then the files `berth dev` writes
//! in its data dir (`BERTH_DATA_DIR`): `ca.pem`, `client.pem`,
//! `client-key.pem`, `token`.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{Context as _, bail};
use berth_tls::{Credentials, Paths, Role};

/// The global flags about identity.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct AccessFlags {
    /// The namespace of namespaced commands (apps, tasks, logs, exec).
    #[arg(long, short = 'n', global = true, env = "BERTH_NAMESPACE")]
    pub namespace: Option<String>,
    /// The ACL token (default: <data dir>/token).
    #[arg(long, global = true, env = "BERTH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The cluster CA (default: <data dir>/ca.pem).
    #[arg(long, global = true, env = "BERTH_CA")]
    pub ca: Option<PathBuf>,
    /// This client's certificate (default: <data dir>/client.pem).
    #[arg(long, global = true, env = "BERTH_CERT")]
    pub cert: Option<PathBuf>,
    /// Its key (default: <data dir>/client-key.pem).
    #[arg(long, global = true, env = "BERTH_KEY")]
    pub key: Option<PathBuf>,
    /// FOR BENCHMARKS ONLY: plaintext, no certificates, no tokens (the
    /// servers must run with --insecure too).
    #[arg(
        long,
        global = true,
        env = "BERTH_INSECURE",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub insecure: bool,
}

static FLAGS: OnceLock<AccessFlags> = OnceLock::new();

/// Keeps the flags for the calls this process makes.
pub fn init(f: AccessFlags) -> anyhow::Result<()> {
    if let Some(ns) = &f.namespace {
        berth_model::acl::check_namespace(ns).map_err(|e| anyhow::anyhow!("--{e}"))?;
    }
    let _ = FLAGS.set(f);
    Ok(())
}

fn flags() -> &'static AccessFlags {
    FLAGS.get_or_init(AccessFlags::default)
}

/// The data dir whose files are the defaults.
pub fn data_dir() -> PathBuf {
    std::env::var_os("BERTH_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/berth"))
}

/// The TLS files named by flags or environment (the rest default to a
/// data dir's).
pub fn paths() -> Paths {
    let f = flags();
    Paths {
        ca: f.ca.clone(),
        cert: f.cert.clone(),
        key: f.key.clone(),
    }
}

/// The namespace of this process's calls.
pub fn namespace() -> String {
    flags()
        .namespace
        .clone()
        .unwrap_or_else(|| berth_model::acl::DEFAULT_NAMESPACE.to_string())
}

/// Whether this process runs without TLS (benchmarks).
pub fn insecure() -> bool {
    flags().insecure
}

/// The client's TLS (none with --insecure), and sets the token its calls
/// carry. Called once, before the first call.
pub fn client_tls() -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
    static TLS: OnceLock<Option<tonic::transport::ClientTlsConfig>> = OnceLock::new();
    if let Some(t) = TLS.get() {
        return Ok(t.clone());
    }
    let f = flags();
    if f.insecure {
        return Ok(TLS.get_or_init(|| None).clone());
    }
    let dir = data_dir();
    let paths = paths().in_dir(&dir, Role::Client);
    let ca = paths.ca.clone().unwrap_or_default();
    if !ca.exists() {
        bail!(
            "no cluster CA at {}: set BERTH_CA (or BERTH_DATA_DIR to where `berth dev` keeps \
             ca.pem), or --insecure for a cluster run without TLS",
            ca.display()
        );
    }
    let creds = Credentials::load(&paths).context("loading the client's TLS files")?;
    if creds.identity.is_none() {
        bail!(
            "no client certificate at {}: make one with `berth tls issue client NAME` and set \
             BERTH_CERT and BERTH_KEY",
            paths.cert.unwrap_or_default().display()
        );
    }
    let token = match &f.token {
        Some(t) => Some(t.clone()),
        None => std::fs::read_to_string(dir.join("token"))
            .ok()
            .map(|t| t.trim().to_string()),
    };
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        berth_proto::servers::set_token(&t).map_err(|e| anyhow::anyhow!("BERTH_TOKEN: {e}"))?;
    }
    Ok(TLS.get_or_init(|| Some(creds.client(Role::Server))).clone())
}
