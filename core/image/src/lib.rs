//! Berth's OCI images: the node's content-addressed store.
//!
//! Images come in as OCI image layouts (a directory with `oci-layout`,
//! `index.json` and `blobs/`, or a plain or gzipped tar of one), e.g. built
//! by `umoci` or copied with `skopeo copy docker://... oci:DIR:TAG`. There is
//! no registry client: `berth image import` is the way in.
//!
//! [`ImageStore::import`] verifies and stores every blob by digest, unpacks
//! each layer once (converting OCI whiteouts to the overlayfs format) and
//! records `name -> manifest digest`. [`ImageStore::resolve`] gives the
//! unpacked layer directories and run configuration of a name, and
//! [`prepare_rootfs`] turns them into a container root filesystem: an
//! overlayfs mount, or a copy where overlayfs is unavailable.
//!
//! The store needs root: layers keep their owners, device nodes and
//! `trusted.overlay.*` xattrs. See [`store`] for the on-disk layout.
//!
//! [`registry`] pulls from and pushes to registries; [`ImageStore::gc`]
//! drops the least recently used images down to a size cap.
//!
//! Not done (yet): zstd layers, non-sha256 digests.

mod error;
mod fsutil;
mod gc;
mod layout;
mod oci;
pub mod registry;
mod rootfs;
pub mod store;
mod unpack;
mod user;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use error::ImageError;
pub use gc::GcReport;
pub use rootfs::{
    OverlayMount, Rootfs, RootfsKind, RootfsMode, plan_rootfs, prepare_rootfs, prepare_rootfs_with,
    release_rootfs,
};
pub use store::ImageStore;
pub use user::resolve_user;

/// A stored image, as [`ImageStore::list`] and [`ImageStore::import`]
/// report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// `repo:tag`.
    pub name: String,
    /// `sha256:...` of the image manifest.
    pub digest: String,
    /// Sum of the layers' (compressed) blob sizes, in bytes.
    pub size: u64,
    /// Number of layers.
    pub layers: usize,
}

/// An image ready to run: what [`ImageStore::resolve`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedImage {
    /// `repo:tag`.
    pub name: String,
    /// `sha256:...` of the image manifest.
    pub digest: String,
    /// The unpacked layer directories, bottom layer first. Whiteouts in
    /// them are in overlayfs format (0:0 character devices, and
    /// `trusted.overlay.opaque=y` on opaque directories).
    pub layers: Vec<PathBuf>,
    /// The image's run configuration.
    pub config: ImageConfig,
}

/// The parts of the image config a container starts from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `KEY=value` environment entries.
    pub env: Vec<String>,
    /// The entrypoint (may be empty).
    pub entrypoint: Vec<String>,
    /// The default command, or arguments to the entrypoint (may be empty).
    pub cmd: Vec<String>,
    /// The working directory, if the image sets one.
    pub working_dir: Option<String>,
    /// The user (`uid`, `uid:gid`, `name`, `name:group`), if the image sets one.
    pub user: Option<String>,
}
