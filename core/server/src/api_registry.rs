//! Registry credentials (`berth registry login|logout|ls`, and the agents'
//! lookup) and pinning a spec's image tag to its digest.

use berth_image::registry::{Credentials, RegistryError};
use berth_model::image::ImageRef;
use berth_model::spec::AppSpec;
use berth_proto as pb;
use berth_store::{Command, RegistryCommand, RegistryLogin, Secret};
use tonic::{Request, Response, Status};

use crate::api::{Api, request_id};

impl Api {
    /// The stored credentials for `registry`, if any, opened.
    fn credentials(&self, registry: &str) -> Result<Option<Credentials>, Status> {
        let login = {
            let state = self.store.read();
            state.registries.get(registry).cloned()
        };
        let Some(l) = login else { return Ok(None) };
        let password = match (&self.secrets, crate::secrets::is_sealed(&l.password.0)) {
            (Some(b), _) => b.open(&l.password.0).map_err(Status::failed_precondition)?,
            (None, false) => l.password.0,
            (None, true) => {
                return Err(Status::failed_precondition(
                    "registry credentials are sealed and this server has no --secret-key",
                ));
            }
        };
        Ok(Some(Credentials {
            username: l.username,
            password,
        }))
    }

    /// Pins a registry image named by tag to the digest the tag names now,
    /// so every instance of this version runs the same bytes whatever
    /// happens to the tag later. Local images and pinned references are
    /// left as they are. A tag that cannot be resolved is refused here,
    /// before anything is stored, with the registry's reason.
    pub(crate) async fn pin_image(&self, spec: &mut AppSpec) -> Result<(), Status> {
        let image = ImageRef::parse(&spec.image)
            .map_err(|e| Status::invalid_argument(format!("image: {:?} {e}", spec.image)))?;
        if !image.is_remote() || image.digest.is_some() {
            return Ok(());
        }
        let creds = match image.registry.as_deref() {
            Some(r) => self.credentials(r)?,
            None => None,
        };
        let digest = self
            .registry
            .resolve(&image, creds.as_ref())
            .await
            .map_err(|e| match e {
                RegistryError::Unreachable { .. } => Status::unavailable(format!("image: {e}")),
                e => Status::failed_precondition(format!("image: {e}")),
            })?;
        tracing::info!(image = %image, %digest, "pinned image tag");
        spec.image = image.pinned(digest).to_string();
        Ok(())
    }

    pub(crate) async fn registry_login_of(
        &self,
        req: Request<pb::RegistryLoginRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let r = req.into_inner();
        let rid = request_id(r.request_id)?;
        let login = RegistryLogin {
            username: r.username,
            password: Secret(r.password),
        };
        berth_store::registry::check_login(&r.registry, &login)
            .map_err(Status::invalid_argument)?;
        // Only ciphertext enters the log, the state and its snapshots.
        let Some(sealer) = &self.secrets else {
            return Err(Status::failed_precondition(
                "this server has no --secret-key to seal credentials with (start every server \
                 with the same key file)",
            ));
        };
        let login = RegistryLogin {
            password: Secret(sealer.seal(&login.password.0).map_err(Status::internal)?),
            ..login
        };
        self.commit(
            rid,
            Command::Registry(RegistryCommand::Login {
                registry: r.registry,
                login,
            }),
        )
        .await?;
        Ok(Response::new(pb::Ack {}))
    }

    pub(crate) async fn registry_logout_of(
        &self,
        req: Request<pb::RegistryRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let r = req.into_inner();
        let rid = request_id(r.request_id)?;
        let registry = r.registry;
        self.refuse_early(rid.as_deref(), |s| {
            (!s.registries.contains_key(&registry))
                .then(|| format!("registry: not logged in to {registry}"))
        })
        .await?;
        self.commit(rid, Command::Registry(RegistryCommand::Logout { registry }))
            .await?;
        Ok(Response::new(pb::Ack {}))
    }

    pub(crate) async fn list_registries_of(
        &self,
        req: Request<pb::ListRegistriesRequest>,
    ) -> Result<Response<pb::ListRegistriesResponse>, Status> {
        self.barrier(&req).await?;
        let state = self.store.read();
        let registries = state
            .registries
            .iter()
            .map(|(r, l)| pb::RegistryEntry {
                registry: r.clone(),
                username: l.username.clone(),
            })
            .collect();
        Ok(Response::new(pb::ListRegistriesResponse { registries }))
    }

    pub(crate) async fn registry_credential_of(
        &self,
        req: Request<pb::RegistryRequest>,
    ) -> Result<Response<pb::RegistryCredential>, Status> {
        let r = req.into_inner();
        Ok(Response::new(match self.credentials(&r.registry)? {
            Some(c) => pb::RegistryCredential {
                found: true,
                username: c.username,
                password: c.password,
            },
            None => pb::RegistryCredential::default(),
        }))
    }
}
