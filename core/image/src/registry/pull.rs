//! Pulling a pinned image into the node's store.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use berth_model::image::ImageRef;
use futures_util::{StreamExt as _, TryStreamExt as _};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWrite;

use super::{
    Credentials, MAX_MANIFEST, PullProgress, Registry, RegistryError, auth, classify, reference,
};
use crate::error::IoContext;
use crate::fsutil::{self, TempPath, unique_name};
use crate::oci::{self, Descriptor, Document};
use crate::store::{info, parse_config, read_json, zstd_error};
use crate::{ImageInfo, ImageStore, layout};

/// How deep image indexes may nest.
const MAX_DEPTH: usize = 4;
/// One layer's fetch and unpack.
type LayerJob<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), RegistryError>> + Send + 'a>>;

/// Layers fetched (and unpacked) at once.
const PARALLEL: usize = 4;

const ACCEPT: &[&str] = &[
    OCI_IMAGE_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

impl Registry {
    /// Brings `image` into `store` under the name `image.to_string()`, so
    /// [`ImageStore::resolve`] finds it by the spec's reference. A pinned
    /// image already stored costs no request; blobs already stored (from
    /// any image) are not fetched again.
    pub async fn pull(
        &self,
        store: &ImageStore,
        image: &ImageRef,
        creds: Option<&Credentials>,
        progress: &PullProgress,
    ) -> Result<ImageInfo, RegistryError> {
        let name = image.to_string();
        if image.digest.is_some()
            && let Some(found) = store.stored(&name)?
        {
            return Ok(found);
        }
        let r = reference(image)?;
        let auth = auth(creds);
        let client = self.client_for(r.registry(), creds)?;
        let client = client.as_ref();
        // The manifest, following indexes down to this platform's.
        let mut want = image.digest.clone();
        let mut at = r.clone();
        let mut depth = 0;
        let (manifest, digest) = loop {
            let (bytes, digest) = self
                .manifest(client, &at, &auth, want.as_deref(), image)
                .await?;
            store.put_small_blob(&digest, &bytes)?;
            match oci::parse_document(&bytes, &format!("manifest {digest}"))? {
                Document::Manifest(m) => break (m, digest),
                Document::Index(idx) if depth < MAX_DEPTH => {
                    let next = layout::pick_platform(&idx, &digest)?.digest.clone();
                    at = r.clone_with_digest(next.clone());
                    want = Some(next);
                    depth += 1;
                }
                Document::Index(_) => {
                    return Err(RegistryError::Other(format!(
                        "{image}: image indexes nest more than {MAX_DEPTH} deep"
                    )));
                }
            }
        };
        if let Some(l) = manifest
            .layers
            .iter()
            .find(|l| l.media_type.contains("zstd"))
        {
            return Err(zstd_error(l).into());
        }
        let missing = |d: &Descriptor| store.blob_path(&d.digest).map(|p| !p.exists());
        let mut total = 0;
        for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if missing(d)? {
                total += d.size;
            }
        }
        progress
            .layers
            .store(manifest.layers.len() as u64, Ordering::Relaxed);
        progress.bytes_total.store(total, Ordering::Relaxed);
        self.blob(client, store, &at, &manifest.config, image, progress)
            .await?;
        let config_path = store.blob_path(&manifest.config.digest)?;
        let config = parse_config(
            &read_json(&config_path, &manifest.config, "config")?,
            &manifest.config,
        )?;
        let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
        let diff_ids = (diff_ids.len() == manifest.layers.len()).then_some(diff_ids);
        let by = format!("manifest {digest}");
        let jobs: Vec<LayerJob<'_>> = manifest
            .layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let diff_id = diff_ids.as_ref().map(|d| d[i].clone());
                Box::pin(self.layer(client, store, &at, layer, diff_id, &by, image, progress))
                    as LayerJob<'_>
            })
            .collect();
        futures_util::stream::iter(jobs)
            .buffer_unordered(PARALLEL)
            .try_collect::<Vec<()>>()
            .await?;
        store.update_refs(|refs| {
            if refs.get(&name) == Some(&digest) {
                return false;
            }
            refs.insert(name.clone(), digest.clone());
            true
        })?;
        tracing::info!(image = %name, %digest, "pulled image");
        Ok(info(name, digest, &manifest))
    }

    /// Fetches one layer (unless stored) and unpacks it (unless unpacked).
    #[allow(clippy::too_many_arguments)]
    async fn layer(
        &self,
        client: &Client,
        store: &ImageStore,
        at: &Reference,
        layer: &Descriptor,
        diff_id: Option<String>,
        by: &str,
        image: &ImageRef,
        progress: &PullProgress,
    ) -> Result<(), RegistryError> {
        self.blob(client, store, at, layer, image, progress).await?;
        let (s, l, by) = (store.clone(), layer.clone(), by.to_string());
        tokio::task::spawn_blocking(move || s.ensure_layer(&l, diff_id.as_deref(), &by))
            .await
            .map_err(|e| RegistryError::Other(format!("unpacking: {e}")))??;
        progress.layers_done.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Fetches a manifest or index, bounded in size and checked against
    /// `want` when the reference is pinned.
    async fn manifest(
        &self,
        client: &Client,
        at: &Reference,
        auth: &RegistryAuth,
        want: Option<&str>,
        image: &ImageRef,
    ) -> Result<(Vec<u8>, String), RegistryError> {
        let (bytes, _) = client
            .pull_manifest_raw(at, auth, ACCEPT)
            .await
            .map_err(|e| classify(e, image))?;
        if bytes.len() > MAX_MANIFEST {
            return Err(RegistryError::Other(format!(
                "{image}: manifest of {} bytes; at most {MAX_MANIFEST}",
                bytes.len()
            )));
        }
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if let Some(w) = want
            && w != actual
        {
            return Err(RegistryError::DigestMismatch(format!(
                "{image}: manifest {w} hashes to {actual}"
            )));
        }
        Ok((bytes.to_vec(), actual))
    }

    /// Downloads one blob into the store unless it is there; concurrent
    /// calls for one digest download it once.
    async fn blob(
        &self,
        client: &Client,
        store: &ImageStore,
        at: &Reference,
        d: &Descriptor,
        image: &ImageRef,
        progress: &PullProgress,
    ) -> Result<(), RegistryError> {
        let dst = store.blob_path(&d.digest)?;
        if dst.exists() {
            return Ok(());
        }
        let lock = self.blob_lock(&d.digest);
        let _held = lock.lock().await;
        if dst.exists() {
            return Ok(());
        }
        let tmp = TempPath::new(store.tmp_dir().join(unique_name("pull")));
        let file = tokio::fs::File::create(tmp.path())
            .await
            .ctx("create", tmp.path())?;
        let counted = Counting {
            inner: tokio::io::BufWriter::with_capacity(1 << 20, file),
            bytes: &progress.bytes,
        };
        // oci-client checks the content against the digest as it streams.
        client
            .pull_blob(at, d.digest.as_str(), counted)
            .await
            .map_err(|e| classify(e, image))?;
        let size = std::fs::metadata(tmp.path()).ctx("stat", tmp.path())?.len();
        if size != d.size {
            return Err(RegistryError::DigestMismatch(format!(
                "{image}: blob {} is {size} bytes, the manifest says {}",
                d.digest, d.size
            )));
        }
        std::fs::rename(tmp.path(), &dst).ctx("store blob", &dst)?;
        tmp.disarm();
        Ok(())
    }
}

impl ImageStore {
    /// The stored image named `name`, if its manifest is here.
    pub fn stored(&self, name: &str) -> Result<Option<ImageInfo>, crate::ImageError> {
        let refs = self.read_refs()?;
        let Some(digest) = refs.get(name) else {
            return Ok(None);
        };
        match self.stored_manifest(name, digest) {
            Ok(m) => Ok(Some(info(name.to_string(), digest.clone(), &m))),
            Err(_) => Ok(None),
        }
    }

    /// Stores a small blob (a manifest) already verified by the caller.
    fn put_small_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), crate::ImageError> {
        let dst = self.blob_path(digest)?;
        if !dst.exists() {
            fsutil::write_atomic(&dst, bytes)?;
        }
        Ok(())
    }
}

/// A writer that counts what passes into `bytes`.
struct Counting<'a, W> {
    inner: W,
    bytes: &'a AtomicU64,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counting<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            this.bytes.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
