//! Deleting the data of persistent volumes the cluster no longer binds to
//! this node (after `berth volume rm`), once no task here names them.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::ListVolumesRequest;
use berth_proto::control_client::ControlClient;
use berth_proto::servers::Servers;
use berth_runtime::Runtime;
use tokio::sync::watch;

/// How often the node compares its volumes with the cluster's bindings.
pub const EVERY: Duration = Duration::from_secs(5);

/// Runs until `shutdown`: each round, volumes here that are neither bound
/// to this node nor named by a task directory are deleted.
pub async fn collect(
    rt: Arc<Runtime>,
    servers: Arc<Servers>,
    node: String,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.changed() => return,
        }
        let local = rt.volumes();
        if local.is_empty() {
            continue;
        }
        let req = ListVolumesRequest { node: node.clone() };
        let bound = servers
            .call(|ch| {
                let r = req.clone();
                async move { ControlClient::new(ch).list_volumes(r).await }
            })
            .await;
        let Ok(bound) = bound else { continue };
        let bound: std::collections::HashSet<String> = bound
            .into_inner()
            .volumes
            .into_iter()
            .map(|v| v.id)
            .collect();
        let used = rt.volumes_in_use();
        for id in local {
            if bound.contains(&id) || used.contains(&id) {
                continue;
            }
            tracing::info!(volume = %id, "deleting a volume no longer bound to this node");
            if let Err(e) = rt.remove_volume(&id) {
                tracing::warn!(volume = %id, error = %e, "deleting a volume");
            }
        }
    }
}
