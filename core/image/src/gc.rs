//! Image garbage collection: by last use, down to a size cap.
//!
//! Every [`ImageStore::resolve`] (a container start) records when the
//! image was last used (`used.json`). [`ImageStore::gc`] drops the names
//! used longest ago, except those still needed, until the store's blobs
//! and unpacked layers fit under the cap, then deletes every blob and
//! layer no remaining name reaches. Unpacked layer sizes are measured once
//! and kept beside them (`layers/<hex>.size`).

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;

use super::ImageStore;
use super::error::{ImageError, IoContext};
use super::fsutil;
use super::oci::{self, Document};

/// What a collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Names removed, oldest use first.
    pub removed: Vec<String>,
    /// Bytes freed (blobs and unpacked layers).
    pub freed: u64,
    /// Bytes the store holds afterwards.
    pub size: u64,
}

/// The size of a directory tree (files' apparent sizes; links not followed).
fn tree_size(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_size(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

impl ImageStore {
    fn used_path(&self) -> std::path::PathBuf {
        self.root().join("used.json")
    }

    fn read_used(&self) -> BTreeMap<String, u64> {
        fs::read(self.used_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Records that `name` was used now (best effort).
    pub(crate) fn touch(&self, name: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let _ = self.update_refs(|_| {
            let mut used = self.read_used();
            used.insert(name.to_string(), now);
            if let Ok(mut json) = serde_json::to_vec(&used) {
                json.push(b'\n');
                let _ = fsutil::write_atomic(&self.used_path(), &json);
            }
            false
        });
    }

    /// The size of an unpacked layer, measured once.
    fn layer_size(&self, hex: &str) -> u64 {
        let dir = self.root().join("layers").join(hex);
        let cached = self.root().join("layers").join(format!("{hex}.size"));
        if let Some(n) = fs::read_to_string(&cached)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return n;
        }
        let n = tree_size(&dir);
        let _ = fs::write(&cached, n.to_string());
        n
    }

    /// The blobs (hex) and layers (hex) a name reaches.
    fn reach(&self, digest: &str, blobs: &mut HashSet<String>, layers: &mut HashSet<String>) {
        let Ok(hex) = oci::digest_hex(digest) else {
            return;
        };
        blobs.insert(hex.to_string());
        let Ok(bytes) = fs::read(self.root().join("blobs/sha256").join(hex)) else {
            return;
        };
        match oci::parse_document(&bytes, digest) {
            Ok(Document::Manifest(m)) => {
                if let Ok(h) = oci::digest_hex(&m.config.digest) {
                    blobs.insert(h.to_string());
                }
                for l in &m.layers {
                    if let Ok(h) = oci::digest_hex(&l.digest) {
                        blobs.insert(h.to_string());
                        layers.insert(h.to_string());
                    }
                }
            }
            Ok(Document::Index(idx)) => {
                for d in &idx.manifests {
                    self.reach(&d.digest, blobs, layers);
                }
            }
            Err(_) => {}
        }
    }

    /// The store's size: blobs plus unpacked layers.
    pub fn size(&self) -> u64 {
        let blobs: u64 = fs::read_dir(self.root().join("blobs/sha256"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.metadata().map_or(0, |m| m.len()))
                    .sum()
            })
            .unwrap_or(0);
        let layers: u64 = fs::read_dir(self.root().join("layers"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| self.layer_size(&e.file_name().to_string_lossy()))
                    .sum()
            })
            .unwrap_or(0);
        blobs + layers
    }

    /// Removes the least recently used names not in `keep` until the store
    /// is at most `max` bytes, then deletes what no name reaches.
    pub fn gc(&self, max: u64, keep: &HashSet<String>) -> Result<GcReport, ImageError> {
        let before = self.size();
        let mut report = GcReport {
            size: before,
            ..GcReport::default()
        };
        if before <= max {
            return Ok(report);
        }
        let used = self.read_used();
        let refs = self.read_refs()?;
        let mut order: Vec<(u64, String)> = refs
            .keys()
            .filter(|n| !keep.contains(*n))
            .map(|n| (used.get(n).copied().unwrap_or(0), n.clone()))
            .collect();
        order.sort();
        // Drop names oldest first, estimating what each frees, until under.
        let mut remaining: BTreeMap<String, String> = refs.clone();
        let mut size = before;
        for (_, name) in order {
            if size <= max {
                break;
            }
            remaining.remove(&name);
            report.removed.push(name);
            size = before - self.unreached_size(&remaining);
        }
        let removed = report.removed.clone();
        self.update_refs(|refs| {
            for n in &removed {
                refs.remove(n);
            }
            !removed.is_empty()
        })?;
        // Delete what the names left (re-read under no lock: a pull racing
        // this keeps its blobs, as it names them only once complete).
        let refs = self.read_refs()?;
        let (mut blobs, mut layers) = (HashSet::new(), HashSet::new());
        for d in refs.values() {
            self.reach(d, &mut blobs, &mut layers);
        }
        let blob_dir = self.root().join("blobs/sha256");
        for e in fs::read_dir(&blob_dir).ctx("read", &blob_dir)?.flatten() {
            let hex = e.file_name().to_string_lossy().to_string();
            if !blobs.contains(&hex) {
                let _ = fs::remove_file(e.path());
            }
        }
        let layer_dir = self.root().join("layers");
        for e in fs::read_dir(&layer_dir).ctx("read", &layer_dir)?.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let hex = name.trim_end_matches(".size");
            if !layers.contains(hex) {
                let _ = fsutil::remove_any(&e.path());
            }
        }
        report.size = self.size();
        report.freed = before.saturating_sub(report.size);
        if !report.removed.is_empty() {
            tracing::info!(removed = ?report.removed, freed = report.freed, "image gc");
        }
        Ok(report)
    }

    /// The bytes of blobs and layers that no name in `refs` reaches.
    fn unreached_size(&self, refs: &BTreeMap<String, String>) -> u64 {
        let (mut blobs, mut layers) = (HashSet::new(), HashSet::new());
        for d in refs.values() {
            self.reach(d, &mut blobs, &mut layers);
        }
        let mut n = 0;
        if let Ok(rd) = fs::read_dir(self.root().join("blobs/sha256")) {
            for e in rd.flatten() {
                if !blobs.contains(&*e.file_name().to_string_lossy()) {
                    n += e.metadata().map_or(0, |m| m.len());
                }
            }
        }
        if let Ok(rd) = fs::read_dir(self.root().join("layers")) {
            for e in rd.flatten().filter(|e| e.path().is_dir()) {
                let hex = e.file_name().to_string_lossy().to_string();
                if !layers.contains(&hex) {
                    n += self.layer_size(&hex);
                }
            }
        }
        n
    }
}
