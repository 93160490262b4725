//! The certificates the long-running modes use: `berth dev` makes its own
//! CA and every certificate it needs in its data dir; `berth server` and
//! `berth agent` load theirs (an agent without one exchanges a join token
//! for it).

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context as _, bail};
use berth_tls::{Credentials, Role};

/// How long the certificates `berth dev` makes are valid (days).
const DEV_DAYS: u32 = 365;

/// What `berth dev` runs with.
pub struct DevPki {
    /// The listener's (server and agent in one process).
    pub server: Credentials,
    /// The embedded agent's, for dialing the server.
    pub agent: Credentials,
    /// The CA that signs joining agents' certificates.
    pub join_ca: berth_server::api_acl::JoinCa,
}

/// Issues `<stem>.pem` for `role` `name` unless one for that identity is
/// there.
fn ensure(dir: &Path, stem: &str, role: Role, name: &str, sans: &[String]) -> anyhow::Result<()> {
    let paths = berth_tls::Paths::default().in_dir(dir, role);
    let paths = berth_tls::Paths {
        cert: Some(dir.join(format!("{stem}.pem"))),
        key: Some(dir.join(format!("{stem}-key.pem"))),
        ..paths
    };
    if let Ok(c) = Credentials::load_identity(&paths)
        && c.whoami() == Some((role, name.to_string()))
    {
        return Ok(());
    }
    let issued = berth_tls::issue(dir, role, name, sans, DEV_DAYS)?;
    berth_tls::save_as(dir, stem, &issued)?;
    Ok(())
}

/// Makes (once) the CA, the listener's, the agent's and a client
/// certificate in `dir`: `ca.pem`, `server.pem`, `agent.pem`,
/// `client.pem` (the CLI finds it through `BERTH_DATA_DIR`).
pub fn dev(dir: &Path, node: &str, listen: SocketAddr) -> anyhow::Result<DevPki> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if !dir.join(berth_tls::CA_CERT).exists() {
        berth_tls::init(dir, berth_tls::MAX_DAYS)?;
    }
    // One listener serves both the control plane and the node's agent,
    // so its certificate answers to both names.
    let sans = vec![
        berth_tls::role_dns(Role::Agent),
        "localhost".to_string(),
        listen.ip().to_string(),
    ];
    ensure(dir, "server", Role::Server, "dev", &sans)?;
    ensure(dir, "agent", Role::Agent, node, &[])?;
    ensure(dir, "client", Role::Client, "admin", &[])?;
    let load = |role: Role| {
        Credentials::load_identity(&berth_tls::Paths::default().in_dir(dir, role))
            .with_context(|| format!("loading the {role} certificate in {}", dir.display()))
    };
    Ok(DevPki {
        server: load(Role::Server)?,
        agent: load(Role::Agent)?,
        join_ca: join_ca(&dir.join(berth_tls::CA_CERT), &dir.join(berth_tls::CA_KEY))?,
    })
}

/// The CA (certificate and key) that signs joining agents.
pub fn join_ca(cert: &Path, key: &Path) -> anyhow::Result<berth_server::api_acl::JoinCa> {
    Ok(berth_server::api_acl::JoinCa {
        cert_pem: berth_tls::transport::read_pem(cert, "CERTIFICATE")?,
        key_pem: berth_tls::transport::read_pem(key, "PRIVATE KEY")?,
    })
}

/// The credentials of a server or an agent: flags and environment
/// (`--ca`, `--cert`, `--key`), else `ca.pem`, `ROLE.pem`,
/// `ROLE-key.pem` in `dir`.
pub fn load(dir: &Path, role: Role) -> anyhow::Result<Credentials> {
    let paths = crate::access::paths().in_dir(dir, role);
    let c = Credentials::load_identity(&paths).with_context(|| {
        format!(
            "loading the {role}'s TLS files (give --ca, --cert and --key, or put ca.pem, \
             {role}.pem and {role}-key.pem in {}; --insecure runs without TLS, for \
             benchmarks only)",
            dir.display()
        )
    })?;
    match c.whoami() {
        Some((r, _)) if r == role => Ok(c),
        Some((r, n)) => bail!("--cert: the certificate is for {r}/{n}, not a {role}"),
        None => bail!("--cert: not a Berth certificate (no berth://ROLE/NAME name in it)"),
    }
}

/// An agent without a certificate: makes a key and a signing request for
/// node `node`, exchanges `token` for the certificate at the servers
/// `addr` (checked against the CA at `ca`), and saves it in `dir` as
/// `agent.pem` and `agent-key.pem`.
pub async fn join(
    addr: &str,
    dir: &Path,
    node: &str,
    token: &str,
    ca: &Path,
) -> anyhow::Result<()> {
    let ca_pem = berth_tls::transport::read_pem(ca, "CERTIFICATE")
        .context("--ca: the cluster CA to check the servers against")?;
    let anonymous = Credentials {
        ca_pem,
        identity: None,
    };
    let req = berth_tls::request(node)?;
    let servers = berth_proto::servers::Servers::parse(addr)
        .map_err(|e| anyhow::anyhow!("--addr: {e}"))?
        .with_tls(Some(anonymous.client(Role::Server)));
    let msg = berth_proto::JoinNodeRequest {
        token: token.trim().to_string(),
        node: node.to_string(),
        csr: req.cert_pem.clone(),
    };
    let resp = servers
        .call(|ch| {
            let m = msg.clone();
            async move {
                berth_proto::node_api_client::NodeApiClient::new(ch)
                    .join_node(m)
                    .await
            }
        })
        .await
        .map_err(|s| anyhow::anyhow!("joining with the token: {}", s.message()))?
        .into_inner();
    std::fs::create_dir_all(dir)?;
    berth_tls::save_as(
        dir,
        "agent",
        &berth_tls::Issued {
            cert_pem: resp.certificate,
            key_pem: req.key_pem,
        },
    )?;
    if !dir.join(berth_tls::CA_CERT).exists() {
        std::fs::write(dir.join(berth_tls::CA_CERT), resp.ca)?;
    }
    tracing::info!(node, "joined: agent certificate saved in {}", dir.display());
    Ok(())
}
