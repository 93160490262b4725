//! A container's root filesystem from an image's unpacked layers: an
//! overlayfs mount where the kernel allows it, else a private copy.
//!
//! ```text
//! <dir>/rootfs         the root filesystem (overlay mount point, or the copy)
//! <dir>/upper, work    overlayfs upperdir and workdir (overlay only)
//! <dir>/.rootfs-copy   a copy being built, renamed to rootfs when complete
//! ```

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use super::ResolvedImage;
use super::error::{ImageError, IoContext};
use super::fsutil::{self, NodeKind, OPAQUE_XATTR};

/// How a [`Rootfs`] was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum RootfsKind {
    /// An overlayfs mount of the layers, with a private upper directory.
    Overlay,
    /// A private copy of the layers, applied bottom first.
    Copy,
}

/// Which kind of rootfs [`prepare_rootfs_with`] may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RootfsMode {
    /// Overlayfs when the kernel has it and the mount works, else a copy.
    #[default]
    Auto,
    /// Overlayfs or an error.
    Overlay,
    /// Always a copy (slower, but works on any filesystem).
    Copy,
}

/// A prepared root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootfs {
    /// `<dir>/rootfs`.
    pub path: PathBuf,
    /// Overlay mount or copy.
    pub kind: RootfsKind,
}

/// Makes `dir/rootfs` for `image`: an overlayfs mount (lowerdir = the layers
/// top first, upperdir `dir/upper`, workdir `dir/work`) when
/// `/proc/filesystems` lists overlay, the lowerdir option fits in a page and
/// the mount succeeds; otherwise a copy of the layers. Calling it again on a
/// prepared `dir` returns what is there.
pub fn prepare_rootfs(image: &ResolvedImage, dir: &Path) -> Result<Rootfs, ImageError> {
    prepare_rootfs_with(image, dir, RootfsMode::Auto)
}

/// [`prepare_rootfs`] with a choice of overlay, copy or either.
pub fn prepare_rootfs_with(
    image: &ResolvedImage,
    dir: &Path,
    mode: RootfsMode,
) -> Result<Rootfs, ImageError> {
    fs::create_dir_all(dir).ctx("create", dir)?;
    let rootfs = dir.join("rootfs");
    let upper = dir.join("upper");
    let done = |kind| {
        Ok(Rootfs {
            path: rootfs.clone(),
            kind,
        })
    };
    if is_mounted(dir, &rootfs)? {
        return done(RootfsKind::Overlay);
    }
    if upper.exists() && mode == RootfsMode::Copy {
        remove_all(dir)?;
    } else if !upper.exists() && rootfs.exists() {
        if mode == RootfsMode::Overlay {
            return Err(ImageError::Mount(format!(
                "{} already holds a copied rootfs; release it before asking for an overlay",
                dir.display()
            )));
        }
        return done(RootfsKind::Copy);
    }
    if mode != RootfsMode::Copy {
        match mount_overlay(image, dir) {
            Ok(()) => return done(RootfsKind::Overlay),
            Err(e) if mode == RootfsMode::Auto => {
                tracing::warn!(dir = %dir.display(), "overlayfs unavailable, copying layers instead: {e}");
                remove_all(dir)?;
            }
            Err(e) => return Err(e),
        }
    }
    let staging = dir.join(".rootfs-copy");
    fsutil::remove_any(&staging).ctx("remove stale", &staging)?;
    fs::create_dir(&staging).ctx("create", &staging)?;
    fsutil::chmod(&staging, 0o755).ctx("chmod", &staging)?;
    for layer in &image.layers {
        apply_layer(layer, &staging)?;
    }
    fs::rename(&staging, &rootfs).ctx("rename copied rootfs to", &rootfs)?;
    done(RootfsKind::Copy)
}

/// Unmounts `dir/rootfs` if mounted (lazily if busy) and removes rootfs,
/// upper and work. Nothing there is fine.
pub fn release_rootfs(dir: &Path) -> Result<(), ImageError> {
    if !dir.exists() {
        return Ok(());
    }
    let rootfs = dir.join("rootfs");
    for _ in 0..8 {
        if !is_mounted(dir, &rootfs)? {
            break;
        }
        match nix::mount::umount2(&rootfs, MntFlags::empty()) {
            Ok(()) => {}
            Err(Errno::EBUSY) => nix::mount::umount2(&rootfs, MntFlags::MNT_DETACH)
                .map_err(|e| ImageError::Mount(format!("detach {}: {e}", rootfs.display())))?,
            Err(e) => {
                return Err(ImageError::Mount(format!(
                    "unmount {}: {e}",
                    rootfs.display()
                )));
            }
        }
    }
    if is_mounted(dir, &rootfs)? {
        return Err(ImageError::Mount(format!(
            "{} is still mounted after unmounting it",
            rootfs.display()
        )));
    }
    remove_all(dir)
}

fn remove_all(dir: &Path) -> Result<(), ImageError> {
    for name in ["rootfs", "upper", "work", ".rootfs-copy"] {
        let p = dir.join(name);
        fsutil::remove_any(&p).ctx("remove", &p)?;
    }
    Ok(())
}

/// A mount on `rootfs` shows up as a device number other than its parent's.
fn is_mounted(dir: &Path, rootfs: &Path) -> Result<bool, ImageError> {
    let Ok(r) = fs::symlink_metadata(rootfs) else {
        return Ok(false);
    };
    let d = fs::metadata(dir).ctx("stat", dir)?;
    Ok(r.dev() != d.dev())
}

fn kernel_has_overlay() -> bool {
    fs::read_to_string("/proc/filesystems")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
        .unwrap_or(false)
}

/// Builds the overlay mount options, or says why they cannot work.
pub(crate) fn overlay_options(
    layers: &[PathBuf],
    upper: &Path,
    work: &Path,
) -> Result<String, String> {
    if layers.is_empty() {
        return Err("the image has no layers".into());
    }
    let mut lower = Vec::with_capacity(layers.len());
    for p in layers
        .iter()
        .rev()
        .map(|p| p.as_path())
        .chain([upper, work])
    {
        let s = p
            .to_str()
            .ok_or_else(|| format!("{} is not UTF-8", p.display()))?;
        if s.contains([',', ':', '\\']) {
            return Err(format!(
                "{s} contains `,`, `:` or `\\`, which overlay options cannot hold"
            ));
        }
        lower.push(s);
    }
    let (upper, work) = (lower[layers.len()], lower[layers.len() + 1]);
    let opts = format!(
        "lowerdir={},upperdir={upper},workdir={work}",
        lower[..layers.len()].join(":")
    );
    // The kernel copies mount data into a single page.
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| usize::try_from(p).ok())
        .unwrap_or(4096);
    if opts.len() >= page {
        return Err(format!(
            "overlay options for {} layers are {} bytes, over the {page}-byte limit",
            layers.len(),
            opts.len()
        ));
    }
    Ok(opts)
}

fn mount_overlay(image: &ResolvedImage, dir: &Path) -> Result<(), ImageError> {
    overlay_plan(image, dir)?.mount()
}

/// An overlayfs mount of a container's root, described but not yet made, so
/// that it can be made inside the mount namespace of the process that runs
/// the container (the shim). The host's mount table then never holds one
/// mount per container, and the kernel drops the mount with the namespace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OverlayMount {
    /// Mount point: `<dir>/rootfs`.
    pub target: PathBuf,
    /// Options: `lowerdir=...,upperdir=...,workdir=...`.
    pub options: String,
}

impl OverlayMount {
    /// Mounts the overlay on its target.
    pub fn mount(&self) -> Result<(), ImageError> {
        nix::mount::mount(
            Some("overlay"),
            &self.target,
            Some("overlay"),
            MsFlags::empty(),
            Some(self.options.as_str()),
        )
        .map_err(|e| ImageError::Mount(format!("mount overlay on {}: {e}", self.target.display())))
    }
}

/// Creates `dir/upper`, `dir/work` and an empty `dir/rootfs` and describes
/// the overlay to mount there; errors if the kernel or paths rule overlay out.
fn overlay_plan(image: &ResolvedImage, dir: &Path) -> Result<OverlayMount, ImageError> {
    if !kernel_has_overlay() {
        return Err(ImageError::Mount(
            "overlay is not in /proc/filesystems".into(),
        ));
    }
    let (upper, work, rootfs) = (dir.join("upper"), dir.join("work"), dir.join("rootfs"));
    let options = overlay_options(&image.layers, &upper, &work).map_err(ImageError::Mount)?;
    for d in [&upper, &work, &rootfs] {
        if !d.is_dir() {
            fs::create_dir(d).ctx("create", d)?;
            fsutil::chmod(d, 0o755).ctx("chmod", d)?;
        }
    }
    Ok(OverlayMount {
        target: rootfs,
        options,
    })
}

/// Prepares `dir` for a root that the caller mounts in its own mount
/// namespace: returns the overlay to mount, or `None` after making a copy
/// when overlay cannot be used here. Any earlier root in `dir` is released.
pub fn plan_rootfs(image: &ResolvedImage, dir: &Path) -> Result<Option<OverlayMount>, ImageError> {
    release_rootfs(dir)?;
    fs::create_dir_all(dir).ctx("create", dir)?;
    match overlay_plan(image, dir) {
        Ok(m) => Ok(Some(m)),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "overlayfs unavailable, copying layers instead: {e}");
            remove_all(dir)?;
            prepare_rootfs_with(image, dir, RootfsMode::Copy)?;
            Ok(None)
        }
    }
}

/// Applies one unpacked layer onto `dst`: whiteouts delete, opaque
/// directories are emptied first, everything else is copied over.
pub(crate) fn apply_layer(layer: &Path, dst: &Path) -> Result<(), ImageError> {
    let mut links = HashMap::new();
    apply_dir(layer, dst, &mut links)?;
    let meta = fs::symlink_metadata(layer).ctx("stat", layer)?;
    copy_meta(layer, dst, &meta)
}

fn apply_dir(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), ImageError> {
    for entry in fs::read_dir(src).ctx("read", src)? {
        let entry = entry.ctx("read", src)?;
        let (s, d) = (entry.path(), dst.join(entry.file_name()));
        let m = fs::symlink_metadata(&s).ctx("stat", &s)?;
        if fsutil::is_whiteout(&m) {
            fsutil::remove_any(&d).ctx("remove whited-out", &d)?;
            continue;
        }
        let existing = fs::symlink_metadata(&d).ok();
        if m.is_dir() {
            let opaque = fsutil::lgetxattr(&s, OsStr::new(OPAQUE_XATTR))
                .ctx("read xattr of", &s)?
                .is_some_and(|v| v == b"y");
            match existing {
                Some(e) if e.is_dir() => {
                    if opaque {
                        fsutil::clear_dir(&d).ctx("empty opaque directory", &d)?;
                    }
                }
                Some(_) => {
                    fsutil::remove_any(&d).ctx("replace", &d)?;
                    fs::create_dir(&d).ctx("create", &d)?;
                }
                None => fs::create_dir(&d).ctx("create", &d)?,
            }
            apply_dir(&s, &d, links)?;
            copy_meta(&s, &d, &m)?;
            continue;
        }
        if existing.is_some() {
            fsutil::remove_any(&d).ctx("replace", &d)?;
        }
        if m.nlink() > 1
            && let Some(first) = links.get(&(m.dev(), m.ino()))
        {
            fs::hard_link(first, &d).ctx("hard link", &d)?;
            continue;
        }
        let ft = m.file_type();
        if ft.is_file() {
            fs::copy(&s, &d).ctx("copy", &s)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&s).ctx("read link", &s)?;
            std::os::unix::fs::symlink(target, &d).ctx("symlink", &d)?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = if ft.is_char_device() {
                NodeKind::Char
            } else if ft.is_block_device() {
                NodeKind::Block
            } else {
                NodeKind::Fifo
            };
            let rdev = m.rdev();
            fsutil::mknod(
                &d,
                kind,
                m.mode(),
                nix::sys::stat::major(rdev),
                nix::sys::stat::minor(rdev),
            )
            .ctx("mknod", &d)?;
        } else {
            continue; // sockets
        }
        copy_meta(&s, &d, &m)?;
        if m.nlink() > 1 {
            links.insert((m.dev(), m.ino()), d);
        }
    }
    Ok(())
}

fn copy_meta(src: &Path, dst: &Path, m: &fs::Metadata) -> Result<(), ImageError> {
    std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid())).ctx("chown", dst)?;
    if !m.file_type().is_symlink() {
        fsutil::chmod(dst, m.mode()).ctx("chmod", dst)?;
    }
    fsutil::copy_xattrs(src, dst)?;
    fsutil::set_times(
        dst,
        (m.atime(), m.atime_nsec()),
        (m.mtime(), m.mtime_nsec()),
    )
    .ctx("set times of", dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_order_and_limits() {
        let layers: Vec<PathBuf> = ["/s/l/a", "/s/l/b"].iter().map(PathBuf::from).collect();
        let opts = overlay_options(&layers, Path::new("/c/upper"), Path::new("/c/work")).unwrap();
        assert_eq!(
            opts,
            "lowerdir=/s/l/b:/s/l/a,upperdir=/c/upper,workdir=/c/work"
        );
        assert!(overlay_options(&[], Path::new("/u"), Path::new("/w")).is_err());
        let bad = vec![PathBuf::from("/s/a,b")];
        assert!(overlay_options(&bad, Path::new("/u"), Path::new("/w")).is_err());
        let many: Vec<PathBuf> = (0..100)
            .map(|i| PathBuf::from(format!("/var/lib/berth/images/layers/{i:064}")))
            .collect();
        let err = overlay_options(&many, Path::new("/u"), Path::new("/w")).unwrap_err();
        assert!(err.contains("limit"), "{err}");
    }
}
