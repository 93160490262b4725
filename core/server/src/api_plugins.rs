//! The plugin half of the `Control` API: install, upgrade, roll back,
//! remove, list and show. A component is loaded (compiled, type-checked
//! against its kind's world, `init` run with its configuration) before
//! anything is proposed, so a bad plugin stores nothing.

use berth_proto as pb;
use berth_store::{Blob, Command, Mode, PluginCommand, PluginRecord, PluginSettings};
use tonic::{Request, Response, Status};

use crate::api::Api;

/// The largest component accepted.
pub const MAX_COMPONENT: usize = 16 << 20;

fn settings_from(
    req: &pb::PutPluginRequest,
    base: Option<&PluginSettings>,
) -> Result<PluginSettings, Status> {
    let kind = match (&req.kind, base) {
        (Some(k), _) => k.clone(),
        (None, Some(b)) => b.kind.clone(),
        (None, None) => {
            return Err(Status::invalid_argument(
                "kind: required to install (admission, filter, score or allocate)",
            ));
        }
    };
    let mode = match req.mode.as_deref() {
        Some("enforce") => Mode::Enforce,
        Some("shadow") => Mode::Shadow,
        Some(m) => {
            return Err(Status::invalid_argument(format!(
                "mode: {m:?} is not enforce or shadow"
            )));
        }
        None => base.map_or(Mode::Enforce, |b| b.mode),
    };
    let budget_ms = req.budget_ms.or(base.map(|b| b.budget_ms)).unwrap_or(50);
    let memory_mib = req.memory_mib.or(base.map(|b| b.memory_mib)).unwrap_or(64);
    let s = PluginSettings {
        kind,
        weight: req.weight.or(base.map(|b| b.weight)).unwrap_or(1.0),
        config: req
            .config
            .clone()
            .or(base.map(|b| b.config.clone()))
            .unwrap_or_else(|| "{}".into()),
        mode,
        on_error: req
            .on_error
            .clone()
            .or(base.map(|b| b.on_error.clone()))
            .unwrap_or_else(|| "ignore".into()),
        budget_ms,
        memory_mib,
        class_pure: req
            .class_pure
            .or(base.map(|b| b.class_pure))
            .unwrap_or(false),
    };
    crate::plugins::spec(&req.name, &s).map_err(Status::invalid_argument)?;
    Ok(s)
}

fn check_name(name: &str) -> Result<(), Status> {
    if berth_model::spec::valid_name(name) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "name: {name:?} is not a valid plugin name (a-z, 0-9, '-')"
        )))
    }
}

impl Api {
    /// Install (`upgrade` false) or upgrade a plugin.
    pub(crate) async fn put_plugin(
        &self,
        req: Request<pb::PutPluginRequest>,
        upgrade: bool,
    ) -> Result<Response<pb::PluginInfo>, Status> {
        let req = req.into_inner();
        check_name(&req.name)?;
        if req.wasm.len() > MAX_COMPONENT {
            return Err(Status::invalid_argument(format!(
                "wasm: {} bytes is more than the limit of {MAX_COMPONENT}",
                req.wasm.len()
            )));
        }
        let current = {
            let state = self.store.read();
            match (state.plugins.get(&req.name), upgrade) {
                (Some(_), false) => {
                    return Err(Status::already_exists(format!(
                        "plugin {} is installed already (use upgrade)",
                        req.name
                    )));
                }
                (None, true) => {
                    return Err(Status::not_found(format!("no plugin named {}", req.name)));
                }
                (r, _) => r.map(|r| {
                    let v = r.current();
                    let bytes = state.blobs.get(&v.digest).map(|b| b.0.clone());
                    (v.settings.clone(), v.digest.clone(), bytes)
                }),
            }
        };
        let settings = settings_from(&req, current.as_ref().map(|c| &c.0))?;
        if let Some((old, _, _)) = &current
            && old.kind != settings.kind
        {
            return Err(Status::invalid_argument(format!(
                "kind: plugin {} is a {} plugin",
                req.name, old.kind
            )));
        }
        let (wasm, digest) = if req.wasm.is_empty() {
            match current {
                Some((_, digest, Some(bytes))) => (bytes, digest),
                _ => return Err(Status::invalid_argument("wasm: the component is required")),
            }
        } else {
            let d = berth_wasm::digest(&req.wasm);
            (req.wasm, d)
        };
        let plugins = self.plugins.clone();
        let (name, s2, w2) = (req.name.clone(), settings.clone(), wasm.clone());
        tokio::task::spawn_blocking(move || plugins.check(&name, &w2, &s2))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::invalid_argument(format!("plugin {}: {e}", req.name)))?;
        let known = self.store.read().blobs.contains_key(&digest);
        self.commit(
            crate::api::request_id(req.request_id)?,
            Command::Plugin(PluginCommand::Put {
                name: req.name.clone(),
                digest,
                wasm: (!known).then_some(Blob(wasm)),
                settings,
                upgrade,
            }),
        )
        .await?;
        self.plugin_info(&req.name)
    }

    /// Roll back or remove.
    pub(crate) async fn plugin_change(
        &self,
        req: Request<pb::PluginRequest>,
        remove: bool,
    ) -> Result<String, Status> {
        let req = req.into_inner();
        check_name(&req.name)?;
        let cmd = if remove {
            PluginCommand::Remove {
                name: req.name.clone(),
            }
        } else {
            PluginCommand::Rollback {
                name: req.name.clone(),
            }
        };
        self.commit(
            crate::api::request_id(req.request_id)?,
            Command::Plugin(cmd),
        )
        .await?;
        Ok(req.name)
    }

    /// One plugin as the API reports it.
    pub(crate) fn plugin_info(&self, name: &str) -> Result<Response<pb::PluginInfo>, Status> {
        let state = self.store.read();
        let r = state
            .plugins
            .get(name)
            .ok_or_else(|| Status::not_found(format!("no plugin named {name}")))?;
        Ok(Response::new(self.info(r)))
    }

    /// Every plugin.
    pub(crate) fn plugin_list(&self) -> pb::ListPluginsResponse {
        let state = self.store.read();
        pb::ListPluginsResponse {
            plugins: state.plugins.values().map(|r| self.info(r)).collect(),
        }
    }

    fn info(&self, r: &PluginRecord) -> pb::PluginInfo {
        let v = r.current();
        let (loaded, metrics, shadow) = self.plugins.status(&r.name);
        pb::PluginInfo {
            name: r.name.clone(),
            kind: v.settings.kind.clone(),
            mode: v.settings.mode.as_str().into(),
            on_error: v.settings.on_error.clone(),
            weight: v.settings.weight,
            config: v.settings.config.clone(),
            digest: v.digest.clone(),
            version: r.active as u32 + 1,
            versions: r.versions.iter().map(|v| v.digest.clone()).collect(),
            budget_ms: v.settings.budget_ms,
            memory_mib: v.settings.memory_mib,
            class_pure: v.settings.class_pure,
            loaded,
            metrics,
            shadow,
        }
    }
}
