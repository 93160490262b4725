//! The agent's image API: `berth image import` streams an OCI layout tar
//! into this node's store (the store this agent runs containers from), and
//! `berth image ls` lists it.

use std::sync::Arc;

use berth_image::ImageInfo;
use berth_proto::{ImageSummary, ImageUpload, ListImagesResponse};
use berth_runtime::Runtime;
use tokio::io::AsyncWriteExt as _;
use tonic::{Status, Streaming};

/// The largest image one import may upload.
pub const MAX_IMPORT: u64 = 16 << 30;

fn summary(i: ImageInfo) -> ImageSummary {
    ImageSummary {
        name: i.name,
        digest: i.digest,
        size: i.size,
        layers: i.layers as u32,
    }
}

/// Receives an uploaded layout archive into a temporary file under the
/// store, then imports it.
pub async fn import(
    rt: &Arc<Runtime>,
    mut upload: Streaming<ImageUpload>,
) -> Result<ImageSummary, Status> {
    let store = rt.images().clone();
    let tmp_dir = store.root().join("tmp");
    let tmp = tempfile_in(&tmp_dir)?;
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| Status::internal(format!("creating {}: {e}", tmp.display())))?;
    let guard = RemoveOnDrop(tmp.clone());
    let mut name = None;
    let mut size = 0u64;
    while let Some(chunk) = upload.message().await? {
        if name.is_none() {
            name = Some(chunk.name);
        }
        size += chunk.data.len() as u64;
        if size > MAX_IMPORT {
            return Err(Status::invalid_argument(format!(
                "image: more than {MAX_IMPORT} bytes"
            )));
        }
        file.write_all(&chunk.data)
            .await
            .map_err(|e| Status::internal(format!("writing {}: {e}", tmp.display())))?;
    }
    file.flush()
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    drop(file);
    if size == 0 {
        return Err(Status::invalid_argument("image: the upload was empty"));
    }
    let name = name.filter(|n| !n.is_empty());
    let info = tokio::task::spawn_blocking(move || {
        let r = store.import(&guard.0, name.as_deref());
        drop(guard);
        r
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?
    .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(summary(info))
}

/// Lists this node's images.
pub async fn list(rt: &Arc<Runtime>) -> Result<ListImagesResponse, Status> {
    let store = rt.images().clone();
    let images = tokio::task::spawn_blocking(move || store.list())
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(e.to_string()))?;
    Ok(ListImagesResponse {
        images: images.into_iter().map(summary).collect(),
    })
}

fn tempfile_in(dir: &std::path::Path) -> Result<std::path::PathBuf, Status> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Status::internal(format!("creating {}: {e}", dir.display())))?;
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Ok(dir.join(format!("upload-{}-{n}.tar", std::process::id())))
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
