//! `berth snapshot save|inspect`: a consistent backup of the cluster
//! state from the leader, and what a backup file holds. `berth server
//! --restore FILE` starts a new cluster from one (see `servercmd`).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use berth_proto as pb;
use berth_store::backup;

use crate::client::{ctl, status};

/// The snapshot commands.
#[derive(clap::Subcommand)]
pub enum SnapshotCmd {
    /// Save a consistent snapshot of the whole state (apps, tasks, nodes,
    /// plugins, volumes' bindings, ACLs, quotas, registry credentials as
    /// sealed) from the leader into FILE. Needs operator admin.
    Save {
        /// Where to write it (replaced atomically).
        file: PathBuf,
    },
    /// What a snapshot file holds (and whether this berth can restore it).
    Inspect {
        /// The snapshot file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a snapshot command.
pub async fn run(addr: &str, cmd: SnapshotCmd) -> anyhow::Result<()> {
    match cmd {
        SnapshotCmd::Save { file } => save(addr, &file).await,
        SnapshotCmd::Inspect { file, json } => inspect(&file, json),
    }
}

async fn save(addr: &str, file: &Path) -> anyhow::Result<()> {
    let mut stream = ctl!(addr, snapshot_save, pb::SnapshotSaveRequest {})?.into_inner();
    let mut bytes = Vec::new();
    while let Some(c) = stream.message().await.map_err(status)? {
        bytes.extend_from_slice(&c.data);
    }
    // Checked before it is kept: a server of another version or a cut
    // stream must not leave a file that would not restore.
    let (h, state) = backup::decode(&bytes).context("the snapshot the leader sent")?;
    let tmp = file.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("{}", tmp.display()))?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, file).with_context(|| format!("{}", file.display()))?;
    println!(
        "saved {} ({} bytes): index {}, {} apps, {} tasks, {} nodes, {} plugins, {} tokens",
        file.display(),
        bytes.len(),
        h.index,
        state.apps.len(),
        state.tasks.values().count(),
        state.nodes.len(),
        state.plugins.len(),
        state.acl.tokens.len(),
    );
    Ok(())
}

/// Reads and checks a snapshot file (at most [`backup::MAX_BACKUP`]).
pub fn read(file: &Path) -> anyhow::Result<(backup::Header, berth_store::state::ClusterState)> {
    let len = std::fs::metadata(file)
        .with_context(|| format!("{}", file.display()))?
        .len();
    if len > backup::MAX_BACKUP {
        bail!(
            "{}: {len} bytes, more than {}",
            file.display(),
            backup::MAX_BACKUP
        );
    }
    let bytes = std::fs::read(file).with_context(|| format!("{}", file.display()))?;
    backup::decode(&bytes).with_context(|| format!("{}", file.display()))
}

fn inspect(file: &Path, json: bool) -> anyhow::Result<()> {
    let (h, s) = read(file)?;
    let v = serde_json::json!({
        "format": h.format,
        "berth": h.berth,
        "index": h.index,
        "created_ms": h.created_ms,
        "sha256": h.sha256,
        "apps": s.apps.len(),
        "tasks": s.tasks.values().count(),
        "nodes": s.nodes.len(),
        "plugins": s.plugins.len(),
        "volumes": s.volumes.len(),
        "policies": s.acl.policies.len(),
        "tokens": s.acl.tokens.len(),
        "servers": s.members.len(),
    });
    if crate::output::structured(json) {
        crate::output::print(&v)?;
    } else {
        for (k, x) in v.as_object().into_iter().flatten() {
            println!("{k:<11} {x}");
        }
    }
    Ok(())
}
