//! Uploading an OCI image layout to a registry (`berth image push`).

use std::path::Path;

use berth_model::image::ImageRef;
use oci_client::errors::OciDistributionError;
use oci_client::{Client, Reference};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt as _;

use super::{Credentials, MAX_MANIFEST, Registry, RegistryError, auth, classify, reference};
use crate::error::IoContext;
use crate::layout::{self, Layout};
use crate::oci::{self, Descriptor, Document};

/// Bytes read from a layer file per chunk sent.
const CHUNK: usize = 4 << 20;

impl Registry {
    /// Pushes the image in `src` (an OCI layout directory or tar; with
    /// several images, the one whose ref name is `select`) to `image`, which
    /// must carry a tag. Blobs the registry has are not sent again. Returns
    /// the pushed manifest's digest. `tmp` holds an extracted archive.
    pub async fn push(
        &self,
        src: &Path,
        select: Option<&str>,
        image: &ImageRef,
        creds: Option<&Credentials>,
        tmp: &Path,
    ) -> Result<String, RegistryError> {
        if image.tag.is_none() || image.digest.is_some() {
            return Err(RegistryError::Invalid(format!(
                "{image}: push to a tag (registry/repo:tag), not a digest"
            )));
        }
        let r = reference(image)?;
        let layout = Layout::open(src, tmp)?;
        let index = layout.index()?;
        let mut desc = layout::select_entry(&index, select, src)?.clone();
        // Follow an index down to this platform's manifest.
        let (bytes, manifest) = loop {
            let path = layout.blob_path(&desc.digest)?;
            let bytes = std::fs::read(&path).ctx("read", &path)?;
            if bytes.len() > MAX_MANIFEST {
                return Err(RegistryError::Invalid(format!(
                    "manifest {} is {} bytes; at most {MAX_MANIFEST}",
                    desc.digest,
                    bytes.len()
                )));
            }
            match oci::parse_document(&bytes, &format!("manifest {}", desc.digest))? {
                Document::Manifest(m) => break (bytes, m),
                Document::Index(idx) => desc = layout::pick_platform(&idx, &desc.digest)?.clone(),
            }
        };
        let auth = auth(creds);
        let client = self.client_for(r.registry(), creds)?;
        client
            .store_auth_if_needed(r.resolve_registry(), &auth)
            .await;
        // Authenticate for push once (a token, or a basic-auth check).
        client
            .auth(&r, &auth, oci_client::RegistryOperation::Push)
            .await
            .map_err(|e| classify(e, image))?;
        for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
            push_blob(&client, &layout, &r, d, image).await?;
        }
        let media = if desc.media_type.is_empty() {
            oci_client::manifest::OCI_IMAGE_MEDIA_TYPE.to_string()
        } else {
            desc.media_type.clone()
        };
        let content_type = media
            .parse()
            .map_err(|_| RegistryError::Invalid(format!("bad media type {media:?}")))?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        client
            .push_manifest_raw(&r, bytes, content_type)
            .await
            .map_err(|e| classify(e, image))?;
        tracing::info!(image = %image, %digest, "pushed image");
        Ok(digest)
    }
}

async fn push_blob(
    client: &Client,
    layout: &Layout,
    r: &Reference,
    d: &Descriptor,
    image: &ImageRef,
) -> Result<(), RegistryError> {
    let exists = client
        .blob_exists(r, &d.digest)
        .await
        .map_err(|e| classify(e, image))?;
    if exists {
        return Ok(());
    }
    let path = layout.blob_path(&d.digest)?;
    let file = tokio::fs::File::open(&path).await.ctx("open", &path)?;
    let chunks = futures_util::stream::unfold(file, |mut f| async move {
        let mut buf = vec![0u8; CHUNK];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(OciDistributionError::IoError(e)), f)),
        }
    });
    client
        .push_blob_stream(r, chunks, &d.digest, Some(d.size))
        .await
        .map_err(|e| classify(e, image))?;
    Ok(())
}
