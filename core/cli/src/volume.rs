//! `berth volume ls|rm`.

use berth_proto as pb;
use clap::Subcommand;

use crate::client::{ctl, request_id};
use crate::output::table;

#[derive(Subcommand)]
pub enum VolumeCmd {
    /// Persistent volumes: instance, node, size, the task using it.
    Ls {
        #[arg(long)]
        json: bool,
        /// Only this node's.
        #[arg(long)]
        node: Option<String>,
    },
    /// Forget a volume; its node deletes the data. Refused while an
    /// instance uses it on a node that is up and not drained.
    Rm {
        /// `<app>-<instance>-<name>` (see `berth volume ls`).
        id: String,
    },
}

/// `berth volume ...`.
pub async fn run(addr: &str, cmd: VolumeCmd) -> anyhow::Result<()> {
    match cmd {
        VolumeCmd::Ls { json, node } => {
            let vols = ctl!(
                addr,
                list_volumes,
                pb::ListVolumesRequest {
                    node: node.unwrap_or_default()
                }
            )?
            .into_inner()
            .volumes;
            if crate::output::structured(json) {
                let v: Vec<serde_json::Value> = vols
                    .iter()
                    .map(|v| {
                        serde_json::json!({
                            "id": v.id, "app": v.app, "instance": v.instance, "name": v.name,
                            "node": v.node, "size": v.size,
                            "task": (!v.task.is_empty()).then_some(&v.task),
                        })
                    })
                    .collect();
                crate::output::print(&v)?;
                return Ok(());
            }
            let rows = vols
                .iter()
                .map(|v| {
                    vec![
                        v.id.clone(),
                        v.node.clone(),
                        berth_model::Bytes(v.size).to_string(),
                        if v.task.is_empty() {
                            "-".into()
                        } else {
                            v.task.clone()
                        },
                    ]
                })
                .collect();
            table(&["VOLUME", "NODE", "SIZE", "TASK"], rows);
        }
        VolumeCmd::Rm { id } => {
            ctl!(
                addr,
                remove_volume,
                pb::VolumeRequest {
                    id: id.clone(),
                    request_id: request_id(),
                }
            )?;
            println!("volume {id} removed; its node deletes the data");
        }
    }
    Ok(())
}
