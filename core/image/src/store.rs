//! The content-addressed image store.
//!
//! ```text
//! <root>/blobs/sha256/<hex>   every blob (index, manifest, config, layer), verified
//! <root>/layers/<hex>/        each layer unpacked once, keyed by its blob digest,
//!                             whiteouts in overlayfs format
//! <root>/refs.json            { "name:tag": "sha256:<manifest>" }
//! <root>/refs.lock            flock(2)ed while refs.json is rewritten
//! <root>/tmp/                 temporary files and directories (same filesystem,
//!                             so finished ones are renamed into place)
//! ```
//!
//! Blobs are never garbage collected: [`ImageStore::remove`] drops the ref
//! only, and unreferenced blobs and layers stay until a future `gc`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use sha2::{Digest as _, Sha256};

use super::error::{ImageError, IoContext};
use super::fsutil::{self, TempPath, unique_name};
use super::layout::{self, Layout, MAX_JSON};
use super::oci::{self, ConfigFile, Descriptor, Document, Manifest};
use super::unpack::{self, Compression, UnpackOptions};
use super::{ImageConfig, ImageInfo, ResolvedImage};

/// How deep image indexes may nest before we give up.
const MAX_INDEX_DEPTH: usize = 4;

/// The image store: imported images, their blobs and unpacked layers,
/// under one root directory. Cheap to open; safe to use from several
/// processes at once (blobs and layers are renamed into place, refs.json is
/// rewritten under a lock).
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

/// A reader that hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

impl<R> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    fn digest(self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.finalize()))
    }
}

fn blob_kind(d: &Descriptor) -> &'static str {
    if d.media_type.contains("index") || d.media_type.contains("manifest.list") {
        "index"
    } else {
        "manifest"
    }
}

impl ImageStore {
    /// Opens (creating as needed) the store rooted at `root`.
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        let store = ImageStore {
            root: root.to_path_buf(),
        };
        for dir in [store.blobs_dir(), store.layers_dir(), store.tmp_dir()] {
            fs::create_dir_all(&dir).ctx("create", &dir)?;
        }
        let refs = store.refs_path();
        if !refs.exists() {
            fsutil::write_atomic(&refs, b"{}\n")?;
        }
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn refs_path(&self) -> PathBuf {
        self.root.join("refs.json")
    }

    /// Where the store keeps the blob `digest`.
    pub(crate) fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.blobs_dir().join(oci::digest_hex(digest)?))
    }

    /// Imports the image in `src` (an OCI image layout directory, or a plain
    /// or gzipped tar of one) and names it `name` (`repo:tag`), or, without
    /// a name, by the layout's `org.opencontainers.image.ref.name`.
    ///
    /// Every blob is verified against its digest before it is stored; each
    /// layer is unpacked once. Importing the same image again changes
    /// nothing; importing another image under an existing name repoints it.
    pub fn import(&self, src: &Path, name: Option<&str>) -> Result<ImageInfo, ImageError> {
        if let Some(name) = name {
            layout::parse_name(name)?;
        }
        let layout = Layout::open(src, &self.tmp_dir())?;
        let index = layout.index()?;
        let entry = layout::select_entry(&index, name, src)?;
        let stored_name = match name {
            Some(n) => n.to_string(),
            None => layout::name_from_ref(entry, src)?,
        };

        // Follow nested indexes down to this platform's manifest.
        let mut desc = entry.clone();
        let mut referenced_by = "index.json".to_string();
        let mut depth = 0;
        let manifest = loop {
            let kind = blob_kind(&desc);
            let path = self.copy_blob(&layout, &desc, kind, &referenced_by)?;
            let what = format!("{kind} {}", desc.digest);
            match oci::parse_document(&read_json(&path, &desc, kind)?, &what)? {
                Document::Manifest(m) => break m,
                Document::Index(idx) if depth < MAX_INDEX_DEPTH => {
                    let next = layout::pick_platform(&idx, &desc.digest)?.clone();
                    referenced_by = format!("image index {}", desc.digest);
                    desc = next;
                    depth += 1;
                }
                Document::Index(_) => {
                    return Err(ImageError::Unsupported(format!(
                        "image indexes nest more than {MAX_INDEX_DEPTH} deep at {}",
                        desc.digest
                    )));
                }
            }
        };
        let manifest_by = format!("manifest {}", desc.digest);
        for layer in &manifest.layers {
            if layer.media_type.contains("zstd") {
                return Err(zstd_error(layer));
            }
        }
        let config_path = self.copy_blob(&layout, &manifest.config, "config", &manifest_by)?;
        let config = parse_config(
            &read_json(&config_path, &manifest.config, "config")?,
            &manifest.config,
        )?;
        for layer in &manifest.layers {
            self.copy_blob(&layout, layer, "layer", &manifest_by)?;
        }
        let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
        let diff_ids = (diff_ids.len() == manifest.layers.len()).then_some(diff_ids);
        for (i, layer) in manifest.layers.iter().enumerate() {
            let diff_id = diff_ids.as_ref().map(|d| d[i].as_str());
            self.ensure_layer(layer, diff_id, &manifest_by)?;
        }
        self.update_refs(|refs| {
            if refs.get(&stored_name) == Some(&desc.digest) {
                return false;
            }
            refs.insert(stored_name.clone(), desc.digest.clone());
            true
        })?;
        tracing::info!(name = %stored_name, digest = %desc.digest, "imported image");
        Ok(info(stored_name, desc.digest, &manifest))
    }

    /// Lists the stored images, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageInfo>, ImageError> {
        let refs = self.read_refs()?;
        let mut out = Vec::with_capacity(refs.len());
        for (name, digest) in refs {
            let manifest = self.stored_manifest(&name, &digest)?;
            out.push(info(name, digest, &manifest));
        }
        Ok(out)
    }

    /// Looks up an image by name: its unpacked layers (bottom first) and
    /// its run configuration. Layers missing from `layers/` are unpacked
    /// again from their blobs.
    pub fn resolve(&self, name: &str) -> Result<ResolvedImage, ImageError> {
        let refs = self.read_refs()?;
        let digest = refs
            .get(name)
            .ok_or_else(|| ImageError::NotFound(name.to_string()))?
            .clone();
        let manifest = self.stored_manifest(name, &digest)?;
        self.touch(name);
        let by = format!("manifest {digest}");
        let config_path = self.stored_blob(&manifest.config, "config", &by)?;
        let config = parse_config(
            &read_json(&config_path, &manifest.config, "config")?,
            &manifest.config,
        )?;
        let mut layers = Vec::with_capacity(manifest.layers.len());
        for layer in &manifest.layers {
            layers.push(self.ensure_layer(layer, None, &by)?);
        }
        let run = config.config.unwrap_or_default();
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        Ok(ResolvedImage {
            name: name.to_string(),
            digest,
            layers,
            config: ImageConfig {
                env: run.env.unwrap_or_default(),
                entrypoint: run.entrypoint.unwrap_or_default(),
                cmd: run.cmd.unwrap_or_default(),
                working_dir: nonempty(run.working_dir),
                user: nonempty(run.user),
            },
        })
    }

    /// Removes the name `name`. Blobs and unpacked layers are kept (there
    /// is no garbage collection yet), so re-importing is cheap.
    pub fn remove(&self, name: &str) -> Result<(), ImageError> {
        let mut found = false;
        self.update_refs(|refs| {
            found = refs.remove(name).is_some();
            found
        })?;
        if found {
            Ok(())
        } else {
            Err(ImageError::NotFound(name.to_string()))
        }
    }

    pub(crate) fn stored_manifest(&self, name: &str, digest: &str) -> Result<Manifest, ImageError> {
        let path = self.blob_path(digest)?;
        if !path.exists() {
            return Err(ImageError::MissingBlob {
                kind: "manifest",
                digest: digest.to_string(),
                referenced_by: format!("refs.json entry `{name}`"),
            });
        }
        let bytes = fs::read(&path).ctx("read", &path)?;
        match oci::parse_document(&bytes, &format!("manifest {digest}"))? {
            Document::Manifest(m) => Ok(m),
            Document::Index(_) => Err(ImageError::Unsupported(format!(
                "refs.json entry `{name}` points at an image index, not a manifest"
            ))),
        }
    }

    fn stored_blob(
        &self,
        d: &Descriptor,
        kind: &'static str,
        by: &str,
    ) -> Result<PathBuf, ImageError> {
        let path = self.blob_path(&d.digest)?;
        if path.exists() {
            Ok(path)
        } else {
            Err(ImageError::MissingBlob {
                kind,
                digest: d.digest.clone(),
                referenced_by: by.to_string(),
            })
        }
    }

    /// Copies a blob from the layout into the store, verifying its size
    /// and digest on the way; a blob already stored is not copied again.
    fn copy_blob(
        &self,
        layout: &Layout,
        d: &Descriptor,
        kind: &'static str,
        referenced_by: &str,
    ) -> Result<PathBuf, ImageError> {
        let dst = self.blob_path(&d.digest)?;
        if dst.exists() {
            return Ok(dst);
        }
        let src = layout.blob_path(&d.digest)?;
        let file = match fs::File::open(&src) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ImageError::MissingBlob {
                    kind,
                    digest: d.digest.clone(),
                    referenced_by: referenced_by.to_string(),
                });
            }
            Err(e) => return Err(ImageError::io(format!("open {}", src.display()), e)),
        };
        let tmp = TempPath::new(self.tmp_dir().join(unique_name("blob")));
        let mut out = fs::File::create(tmp.path()).ctx("create", tmp.path())?;
        let mut reader = HashingReader::new(file);
        io::copy(&mut reader, &mut out).ctx("copy blob", &src)?;
        out.flush().ctx("write", tmp.path())?;
        out.sync_all().ctx("sync", tmp.path())?;
        let size = reader.count;
        let actual = reader.digest();
        if size != d.size {
            return Err(ImageError::SizeMismatch {
                kind,
                digest: d.digest.clone(),
                expected: d.size,
                actual: size,
            });
        }
        if actual != d.digest {
            return Err(ImageError::DigestMismatch {
                kind,
                digest: d.digest.clone(),
                actual,
            });
        }
        fs::rename(tmp.path(), &dst).ctx("store blob", &dst)?;
        tmp.disarm();
        Ok(dst)
    }

    /// Unpacks a stored layer blob into `layers/<hex>/` unless it is there
    /// already: into a temporary directory first, renamed when complete.
    pub(crate) fn ensure_layer(
        &self,
        layer: &Descriptor,
        diff_id: Option<&str>,
        by: &str,
    ) -> Result<PathBuf, ImageError> {
        let hex = oci::digest_hex(&layer.digest)?;
        let dir = self.layers_dir().join(hex);
        if dir.is_dir() {
            return Ok(dir);
        }
        let blob = self.stored_blob(layer, "layer", by)?;
        let file = fs::File::open(&blob).ctx("open layer blob", &blob)?;
        let mut reader = BufReader::new(file);
        let head = reader.fill_buf().ctx("read", &blob)?.to_vec();
        let tmp = TempPath::new(
            self.tmp_dir()
                .join(unique_name(&format!("layer-{}", &hex[..12]))),
        );
        fs::create_dir(tmp.path()).ctx("create", tmp.path())?;
        fsutil::chmod(tmp.path(), 0o755).ctx("chmod", tmp.path())?;
        let opts = UnpackOptions {
            layer: true,
            label: format!("layer {}", layer.digest),
        };
        let uncompressed = match unpack::sniff_compression(&head) {
            Compression::None => {
                let mut r = HashingReader::new(reader);
                unpack::unpack_tar(&mut r, tmp.path(), &opts)?;
                r.digest()
            }
            Compression::Gzip => {
                let mut r = HashingReader::new(MultiGzDecoder::new(reader));
                unpack::unpack_tar(&mut r, tmp.path(), &opts)?;
                r.digest()
            }
            Compression::Zstd => return Err(zstd_error(layer)),
            Compression::Other(kind) => {
                return Err(ImageError::Unsupported(format!(
                    "layer {} is {kind}-compressed; only tar and tar+gzip layers are supported",
                    layer.digest
                )));
            }
        };
        if let Some(expected) = diff_id
            && expected.starts_with("sha256:")
            && expected != uncompressed
        {
            return Err(ImageError::DiffIdMismatch {
                digest: layer.digest.clone(),
                expected: expected.to_string(),
                actual: uncompressed,
            });
        }
        match fs::rename(tmp.path(), &dir) {
            Ok(()) => tmp.disarm(),
            // Another import unpacked it meanwhile; ours is dropped.
            Err(_) if dir.is_dir() => {}
            Err(e) => return Err(ImageError::io(format!("store layer {}", dir.display()), e)),
        }
        Ok(dir)
    }

    pub(crate) fn read_refs(&self) -> Result<BTreeMap<String, String>, ImageError> {
        let path = self.refs_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(ImageError::io(format!("read {}", path.display()), e)),
        };
        serde_json::from_slice(&bytes).map_err(|source| ImageError::Json {
            what: path.display().to_string(),
            source,
        })
    }

    /// Rewrites refs.json under an exclusive lock if `change` says it changed
    /// something.
    pub(crate) fn update_refs(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, String>) -> bool,
    ) -> Result<(), ImageError> {
        let lock_path = self.root.join("refs.lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .ctx("open", &lock_path)?;
        // Held until `lock` is dropped at the end of this function.
        let lock = match nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive) {
            Ok(lock) => lock,
            Err((_, errno)) => {
                return Err(ImageError::io(
                    format!("lock {}", lock_path.display()),
                    io::Error::from(errno),
                ));
            }
        };
        let mut refs = self.read_refs()?;
        if change(&mut refs) {
            let mut json = serde_json::to_vec_pretty(&refs).expect("a map of strings serializes");
            json.push(b'\n');
            fsutil::write_atomic(&self.refs_path(), &json)?;
        }
        drop(lock);
        Ok(())
    }
}

pub(crate) fn info(name: String, digest: String, manifest: &Manifest) -> ImageInfo {
    ImageInfo {
        name,
        digest,
        size: manifest.layers.iter().map(|l| l.size).sum(),
        layers: manifest.layers.len(),
    }
}

pub(crate) fn zstd_error(layer: &Descriptor) -> ImageError {
    ImageError::Unsupported(format!(
        "layer {} is zstd-compressed ({}); Berth unpacks only tar and tar+gzip layers \
         (convert with e.g. `skopeo copy --dest-compress-format gzip`)",
        layer.digest, layer.media_type
    ))
}

/// Reads a small JSON blob, refusing absurd sizes.
pub(crate) fn read_json(path: &Path, d: &Descriptor, kind: &str) -> Result<Vec<u8>, ImageError> {
    if d.size > MAX_JSON {
        return Err(ImageError::Unsupported(format!(
            "{kind} {} is {} bytes; refusing JSON documents over {MAX_JSON} bytes",
            d.digest, d.size
        )));
    }
    fs::read(path).ctx("read", path)
}

pub(crate) fn parse_config(bytes: &[u8], d: &Descriptor) -> Result<ConfigFile, ImageError> {
    serde_json::from_slice(bytes).map_err(|source| ImageError::Json {
        what: format!("config {}", d.digest),
        source,
    })
}
