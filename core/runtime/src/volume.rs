//! Volumes on the node: persistent ones under `<root>/volumes/<id>/`,
//! ephemeral ones in the task directory, host directories as they are.
//!
//! A sized volume is a sparse file holding an ext4 filesystem
//! (`disk.img`, `mkfs.ext4 -m 0`), loop-mounted at `data/` in the host's
//! mount namespace, so the size is enforced by the filesystem (a write
//! past it fails with ENOSPC), the data outlives containers, agents and
//! `berth dev` restarts, and the container gets a bind mount of `data/`.
//! A persistent volume's filesystem root belongs to the container's user
//! when it is created.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::RuntimeError;

/// A volume as the runtime mounts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// Its name in the spec.
    pub name: String,
    /// Where it appears in the container.
    pub path: String,
    /// Mounted read-only.
    #[serde(default)]
    pub read_only: bool,
    /// What backs it.
    pub source: VolumeSource,
}

/// What backs a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum VolumeSource {
    /// The instance's own, kept across its tasks.
    Persistent {
        /// `<app>-<instance>-<name>`.
        id: String,
        /// Bytes.
        size: u64,
    },
    /// The task's own, deleted with it.
    Ephemeral {
        /// Bytes.
        size: u64,
    },
    /// A directory of the node.
    HostPath {
        /// Absolute path on the node.
        path: String,
    },
}

fn run(cmd: &mut Command, what: &str) -> Result<(), RuntimeError> {
    let out = cmd
        .output()
        .map_err(|e| RuntimeError::StartFailed(format!("{what}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(RuntimeError::StartFailed(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Whether `dir` is a mount point (its device differs from its parent's).
pub fn is_mounted(dir: &Path) -> bool {
    let (Ok(d), Some(Ok(p))) = (std::fs::metadata(dir), dir.parent().map(std::fs::metadata)) else {
        return false;
    };
    d.dev() != p.dev()
}

/// Makes sure `base/data` is a mounted ext4 of `size` bytes backed by
/// `base/disk.img`, created (owned by `owner`) if new. Returns `base/data`.
pub fn ensure_sized(base: &Path, size: u64, owner: (u32, u32)) -> Result<PathBuf, RuntimeError> {
    let data = base.join("data");
    if is_mounted(&data) {
        return Ok(data);
    }
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| RuntimeError::StartFailed(format!("{what}: {e}"))
    };
    std::fs::create_dir_all(&data).map_err(io(&format!("creating {}", data.display())))?;
    let img = base.join("disk.img");
    if !img.exists() {
        let tmp = base.join("disk.img.new");
        let f = std::fs::File::create(&tmp).map_err(io("creating the volume file"))?;
        f.set_len(size).map_err(io("sizing the volume file"))?;
        drop(f);
        run(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-m", "0", "-E"])
                .arg(format!("root_owner={}:{}", owner.0, owner.1))
                .arg(&tmp),
            "mkfs.ext4 (e2fsprogs)",
        )?;
        std::fs::rename(&tmp, &img).map_err(io("keeping the volume file"))?;
    }
    run(
        Command::new("mount")
            .args(["-t", "ext4", "-o", "loop,nosuid,nodev"])
            .arg(&img)
            .arg(&data),
        &format!("mounting {}", img.display()),
    )?;
    // The filesystem's own lost+found is noise inside an app's directory.
    let _ = std::fs::remove_dir(data.join("lost+found"));
    Ok(data)
}

/// Unmounts `base/data` (if mounted) and deletes `base`.
pub fn remove_sized(base: &Path) -> Result<(), RuntimeError> {
    let data = base.join("data");
    if is_mounted(&data) {
        nix::mount::umount2(&data, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| RuntimeError::Io(format!("unmounting {}: {e}", data.display())))?;
    }
    match std::fs::remove_dir_all(base) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RuntimeError::Io(format!(
            "removing {}: {e}",
            base.display()
        ))),
    }
}

/// The persistent volumes found under `root` (their ids).
pub fn list(root: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}
