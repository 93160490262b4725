//! The error type of the image store.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong while importing, resolving or unpacking an
/// image. Each message names the cause (a digest, a path, a ref name) so it
/// can be shown to the user as is.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No image is stored under this name.
    #[error(
        "image `{0}` not found in the image store; import it first with \
         `berth image import <oci-layout-dir-or-tar> --name {0}`"
    )]
    NotFound(String),

    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path involved.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A JSON document (index, manifest, config, refs.json) could not be parsed.
    #[error("cannot parse {what}: {source}")]
    Json {
        /// Which document, e.g. `manifest sha256:ab..`.
        what: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },

    /// The import source is not a usable OCI image layout.
    #[error("{path} is not a usable OCI image layout: {reason}")]
    InvalidLayout {
        /// The layout directory or archive.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A blob referenced by the image is not in the layout's (or store's) `blobs/`.
    #[error("{kind} {digest} referenced by {referenced_by} is missing from blobs/")]
    MissingBlob {
        /// `manifest`, `config`, `layer`, `index`.
        kind: &'static str,
        /// The missing digest (`sha256:...`).
        digest: String,
        /// Who referenced it (`index.json`, `manifest sha256:..`).
        referenced_by: String,
    },

    /// A blob's content does not hash to its digest.
    #[error("{kind} {digest} digest mismatch: its content hashes to {actual}")]
    DigestMismatch {
        /// `manifest`, `config`, `layer`, `index`.
        kind: &'static str,
        /// The expected digest.
        digest: String,
        /// What the content actually hashes to.
        actual: String,
    },

    /// A blob's size differs from its descriptor's size.
    #[error("{kind} {digest} size mismatch: descriptor says {expected} bytes, blob has {actual}")]
    SizeMismatch {
        /// `manifest`, `config`, `layer`, `index`.
        kind: &'static str,
        /// The blob's digest.
        digest: String,
        /// The size in the descriptor.
        expected: u64,
        /// The size of the blob.
        actual: u64,
    },

    /// An uncompressed layer does not match the config's `rootfs.diff_ids`.
    #[error(
        "layer {digest} diff_id mismatch: config says {expected}, uncompressed content hashes to {actual}"
    )]
    DiffIdMismatch {
        /// The layer's (compressed) digest.
        digest: String,
        /// The diff_id from the image config.
        expected: String,
        /// What the uncompressed tar hashes to.
        actual: String,
    },

    /// A digest that is malformed or uses an algorithm other than sha256.
    #[error("unsupported or malformed digest `{0}` (only sha256:<64 hex digits> is supported)")]
    BadDigest(String),

    /// The image name is not of the form `repo:tag`.
    #[error("invalid image name `{name}`: {reason}")]
    InvalidName {
        /// The offending name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The layout does not say which name to give the image.
    #[error("{0}")]
    NameRequired(String),

    /// The layout holds several images and none matches the requested name.
    #[error(
        "{path} holds several images; pick one with --name <repo:tag> (ref names in index.json: {refs})"
    )]
    AmbiguousManifest {
        /// The layout.
        path: PathBuf,
        /// The ref names found (comma separated).
        refs: String,
    },

    /// An image index has no manifest for this platform.
    #[error("image index {digest} has no manifest for {platform} (available: {available})")]
    NoPlatform {
        /// The index's digest (or `index.json`).
        digest: String,
        /// The platform we looked for, e.g. `linux/amd64`.
        platform: String,
        /// The platforms it offers.
        available: String,
    },

    /// A media type or layer compression we cannot handle.
    #[error("{0}")]
    Unsupported(String),

    /// A tar archive entry would be written outside its destination.
    #[error("unsafe entry `{entry}` in {archive}: {reason}")]
    UnsafePath {
        /// The entry's path as stored in the archive.
        entry: String,
        /// The archive (layer digest or file name).
        archive: String,
        /// Why it was refused.
        reason: String,
    },

    /// Mounting or unmounting a rootfs failed.
    #[error("{0}")]
    Mount(String),
}

impl ImageError {
    /// Wraps an I/O error with a description of what was being done.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> ImageError {
        ImageError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds context to `io::Result`s.
pub(crate) trait IoContext<T> {
    /// Maps the error into [`ImageError::Io`] with `what` and `path` as context.
    fn ctx(self, what: &str, path: &Path) -> Result<T, ImageError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: &str, path: &Path) -> Result<T, ImageError> {
        self.map_err(|e| ImageError::io(format!("{what} {}", path.display()), e))
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx(self, what: &str, path: &Path) -> Result<T, ImageError> {
        self.map_err(|e| ImageError::io(format!("{what} {}", path.display()), e.into()))
    }
}
