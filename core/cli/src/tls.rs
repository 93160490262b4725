//! `berth tls init|issue`: the cluster CA and its certificates.

use std::path::PathBuf;

use anyhow::Context as _;
use berth_tls::Role;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum TlsCmd {
    /// Make a cluster CA (`ca.pem`, `ca-key.pem`) in --dir.
    Init {
        /// Where the CA lives (default: <data dir>/tls).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Valid for this many days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
        #[arg(long, env = "BERTH_DATA_DIR", default_value = "/var/lib/berth")]
        data_dir: PathBuf,
    },
    /// Issue a certificate for a server, an agent (its node name) or a
    /// client: `<role>-<name>.pem` and `<role>-<name>-key.pem` in --dir.
    Issue {
        /// server, agent or client.
        role: String,
        /// The server's, node's or user's name.
        name: String,
        /// A DNS name or IP address it is reached at (repeatable).
        #[arg(long)]
        san: Vec<String>,
        /// Valid for this many days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Where the CA lives (default: <data dir>/tls).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, env = "BERTH_DATA_DIR", default_value = "/var/lib/berth")]
        data_dir: PathBuf,
    },
}

/// `berth tls ...`.
pub fn run(cmd: TlsCmd) -> anyhow::Result<()> {
    match cmd {
        TlsCmd::Init {
            dir,
            days,
            data_dir,
        } => {
            let dir = dir.unwrap_or_else(|| data_dir.join("tls"));
            berth_tls::init(&dir, days)?;
            println!(
                "cluster CA written to {}",
                dir.join(berth_tls::CA_CERT).display()
            );
        }
        TlsCmd::Issue {
            role,
            name,
            san,
            days,
            dir,
            data_dir,
        } => {
            let dir = dir.unwrap_or_else(|| data_dir.join("tls"));
            let role = Role::parse(&role)?;
            let issued = berth_tls::issue(&dir, role, &name, &san, days)
                .with_context(|| format!("issuing with the CA in {}", dir.display()))?;
            let path = berth_tls::save(&dir, role, &name, &issued)?;
            println!(
                "{role} certificate for {name} written to {}",
                path.display()
            );
        }
    }
    Ok(())
}
