//! Volumes: `berth volume ls|rm`, the agents' list of what to keep, and
//! the submit-time rule for host directories.

use berth_model::spec::{AppSpec, VolumeKind, path_under};
use berth_model::task::Desired;
use berth_proto as pb;
use berth_store::{Command, VolumeCommand};
use tonic::{Request, Response, Status};

use crate::api::{Api, request_id};

impl Api {
    /// Refuses a spec whose host-path volume is outside the cluster's
    /// `--host-volume-root` (or any host path when there is none), naming
    /// the field.
    pub(crate) fn check_host_volumes(&self, spec: &AppSpec) -> Result<(), Status> {
        for (i, v) in spec.volumes.iter().enumerate() {
            if v.kind() != VolumeKind::HostPath {
                continue;
            }
            let path = v.host_path.as_deref().unwrap_or_default();
            match &self.host_volume_root {
                None => {
                    return Err(Status::invalid_argument(format!(
                        "volumes[{i}].host_path: host directories are off in this cluster \
                         (start the servers with --host-volume-root DIR)"
                    )));
                }
                Some(root) if !path_under(path, root) => {
                    return Err(Status::invalid_argument(format!(
                        "volumes[{i}].host_path: {path} is outside the host volume root {root}"
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    pub(crate) async fn list_volumes_of(
        &self,
        req: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, Status> {
        self.barrier(&req).await?;
        let scope = self.scope(&req);
        let node = req.into_inner().node;
        let state = self.store.read();
        let volumes = state
            .volumes
            .iter()
            .filter(|(_, b)| node.is_empty() || b.node == node)
            .filter(|(_, b)| crate::api_acl::in_scope(&state, scope.as_deref(), &b.app))
            .map(|(id, b)| pb::VolumeInfo {
                id: id.clone(),
                app: b.app.clone(),
                instance: b.instance,
                name: b.name.clone(),
                node: b.node.clone(),
                size: b.size,
                task: state
                    .tasks_of(&b.app)
                    .find(|t| {
                        t.instance == b.instance
                            && t.desired == Desired::Run
                            && t.node.as_deref() == Some(b.node.as_str())
                    })
                    .map(|t| t.id.clone())
                    .unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::ListVolumesResponse { volumes }))
    }

    pub(crate) async fn remove_volume_of(
        &self,
        req: Request<pb::VolumeRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let app = self
            .store
            .read()
            .volumes
            .get(&req.get_ref().id)
            .map(|b| b.app.clone());
        if let Some(app) = app {
            self.scope_app(&req, &app)?;
        }
        let r = req.into_inner();
        let rid = request_id(r.request_id)?;
        let id = r.id;
        self.refuse_early(rid.as_deref(), |s| {
            (!s.volumes.contains_key(&id)).then(|| format!("no volume named {id}"))
        })
        .await?;
        self.commit(rid, Command::Volume(VolumeCommand::Remove { id }))
            .await?;
        Ok(Response::new(pb::Ack {}))
    }
}
