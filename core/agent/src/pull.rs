//! Pulling a task's image from its registry before it starts, with the
//! cluster's credentials for that registry.

use std::sync::Arc;
use std::time::Duration;

use berth_image::ImageStore;
use berth_image::registry::{Credentials, PullProgress, Registry, RegistryError};
use berth_model::image::ImageRef;
use berth_proto::RegistryRequest;
use berth_proto::servers::Servers;

use crate::node_client;

/// Backoff before retrying a failed pull number `failures` (1-based):
/// 1 s doubling to 5 min, like Kubernetes' image pull backoff.
pub fn pull_backoff(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(9);
    Duration::from_secs(secs.min(300))
}

/// Brings images into the node's store from their registries.
pub struct Puller {
    registry: Arc<Registry>,
    store: ImageStore,
    /// Keep the store under this many bytes (none: no cap).
    cache_max: Option<u64>,
    /// Names the collector keeps (the images tasks here still use).
    in_use: Box<dyn Fn() -> std::collections::HashSet<String> + Send + Sync>,
    /// Where credentials come from (none: always anonymous).
    servers: Option<Arc<Servers>>,
}

impl Puller {
    /// A puller into `store` through `registry`, asking `servers` for
    /// credentials.
    pub fn new(
        registry: Arc<Registry>,
        store: ImageStore,
        servers: Option<Arc<Servers>>,
        cache_max: Option<u64>,
        in_use: Box<dyn Fn() -> std::collections::HashSet<String> + Send + Sync>,
    ) -> Self {
        Puller {
            registry,
            store,
            cache_max,
            in_use,
            servers,
        }
    }

    /// Drops the least recently used images until the store fits its cap
    /// (after a pull; images tasks here still name are kept).
    pub async fn collect(&self) {
        let Some(max) = self.cache_max else { return };
        let mut keep = (self.in_use)();
        let store = self.store.clone();
        let r = tokio::task::spawn_blocking(move || {
            keep.shrink_to_fit();
            store.gc(max, &keep)
        })
        .await;
        if let Ok(Err(e)) = r {
            tracing::warn!(error = %e, "image gc");
        }
    }

    /// Makes sure `image` is in the store: a no-op for local images (the
    /// runtime says if one is missing) and for pinned images already
    /// pulled.
    pub async fn ensure(&self, image: &str, progress: &PullProgress) -> Result<(), RegistryError> {
        let r =
            ImageRef::parse(image).map_err(|e| RegistryError::Invalid(format!("{image} {e}")))?;
        if !r.is_remote() {
            return Ok(());
        }
        if r.digest.is_some() && self.store.stored(image)?.is_some() {
            return Ok(());
        }
        let creds = match &r.registry {
            Some(reg) => self.credentials(reg).await?,
            None => None,
        };
        let t0 = std::time::Instant::now();
        let pulled = self
            .registry
            .pull(&self.store, &r, creds.as_ref(), progress)
            .await;
        crate::metrics::METRICS.pull(pulled.is_ok(), t0.elapsed());
        pulled?;
        self.collect().await;
        Ok(())
    }

    async fn credentials(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        let Some(servers) = &self.servers else {
            return Ok(None);
        };
        let req = RegistryRequest {
            registry: registry.to_string(),
            request_id: String::new(),
        };
        let resp = servers
            .call(|ch| {
                let r = req.clone();
                async move { node_client(ch).get_registry_credential(r).await }
            })
            .await
            .map_err(|e| RegistryError::Other(format!("asking the servers for credentials: {e}")))?
            .into_inner();
        Ok(resp.found.then_some(Credentials {
            username: resp.username,
            password: resp.password,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_five_minutes() {
        assert_eq!(pull_backoff(1), Duration::from_secs(1));
        assert_eq!(pull_backoff(2), Duration::from_secs(2));
        assert_eq!(pull_backoff(5), Duration::from_secs(16));
        assert_eq!(pull_backoff(30), Duration::from_secs(300));
    }
}
