//! Safe tar extraction, for image layers and for archived image layouts.
//!
//! Every entry path is checked: `..` components and absolute paths are
//! refused, and no entry is ever written through a symlink (each parent
//! directory is checked with `lstat` before use), so a layer cannot write
//! outside its directory. In layer mode OCI whiteouts are converted to the
//! overlayfs format: `.wh.NAME` becomes a 0:0 character device `NAME`, and
//! `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use super::error::{ImageError, IoContext};
use super::fsutil::{self, NodeKind, OPAQUE_XATTR, OVERLAY_XATTR_PREFIX};

/// The prefix of OCI whiteout files.
const WHITEOUT_PREFIX: &str = ".wh.";
/// The name of the OCI opaque-directory marker.
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// How [`unpack_tar`] treats entries.
#[derive(Debug, Clone)]
pub(crate) struct UnpackOptions {
    /// Image layer mode: convert whiteouts, keep ownership, xattrs, devices,
    /// symlinks and the exact modes. Otherwise (an archived image layout)
    /// only directories, regular files and hard links are extracted.
    pub layer: bool,
    /// Names the archive in error messages (`layer sha256:..`, a file name).
    pub label: String,
}

/// Checks an entry path and returns it relative to the destination, or
/// `None` for the destination itself (`.`, `./`).
pub(crate) fn safe_rel_path(path: &Path) -> Result<Option<PathBuf>, String> {
    let mut rel = PathBuf::new();
    for comp in path.components() {
        match comp {
            Component::CurDir => {}
            Component::Normal(part) => rel.push(part),
            Component::ParentDir => return Err("path contains `..`".into()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("path is absolute".into());
            }
        }
    }
    Ok(if rel.as_os_str().is_empty() {
        None
    } else {
        Some(rel)
    })
}

/// What to do with an entry whose name may be a whiteout.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Whiteout<'a> {
    /// Not a whiteout: extract normally.
    None,
    /// `.wh..wh..opq`: the parent directory is opaque.
    Opaque,
    /// `.wh.NAME`: NAME in lower layers is deleted.
    Delete(&'a OsStr),
    /// Other `.wh..wh.*` (aufs metadata): ignore.
    Ignore,
}

/// Classifies an entry file name.
pub(crate) fn classify_whiteout(name: &OsStr) -> Result<Whiteout<'_>, String> {
    let bytes = name.as_bytes();
    if bytes == OPAQUE_MARKER.as_bytes() {
        return Ok(Whiteout::Opaque);
    }
    let Some(rest) = bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) else {
        return Ok(Whiteout::None);
    };
    if rest.starts_with(WHITEOUT_PREFIX.as_bytes()) {
        return Ok(Whiteout::Ignore);
    }
    if rest.is_empty() || rest == b"." || rest == b".." {
        return Err("whiteout names no file".into());
    }
    Ok(Whiteout::Delete(OsStr::from_bytes(rest)))
}

fn unsafe_path(opts: &UnpackOptions, entry: &Path, reason: impl Into<String>) -> ImageError {
    ImageError::UnsafePath {
        entry: entry.display().to_string(),
        archive: opts.label.clone(),
        reason: reason.into(),
    }
}

/// Walks `rel`'s components below `dest`, checking that each is a real
/// directory (never a symlink); with `create`, missing ones are made (0755).
/// Returns the absolute directory.
fn walk_dirs(
    dest: &Path,
    rel: Option<&Path>,
    create: bool,
    opts: &UnpackOptions,
    entry: &Path,
) -> Result<PathBuf, ImageError> {
    let mut cur = dest.to_path_buf();
    let Some(rel) = rel else { return Ok(cur) };
    for comp in rel.components() {
        cur.push(comp);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(unsafe_path(
                    opts,
                    entry,
                    format!("it goes through the symlink {}", cur.display()),
                ));
            }
            Ok(m) if create && opts.layer && fsutil::is_whiteout(&m) => {
                // Deleted in lower layers, recreated here: an opaque dir.
                fs::remove_file(&cur).ctx("remove whiteout", &cur)?;
                make_dir(&cur, opts)?;
                fsutil::lsetxattr(&cur, OsStr::new(OPAQUE_XATTR), b"y").ctx("mark opaque", &cur)?;
            }
            Ok(_) => {
                return Err(unsafe_path(
                    opts,
                    entry,
                    format!("its parent {} is not a directory", cur.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => make_dir(&cur, opts)?,
            Err(e) => return Err(ImageError::io(format!("stat {}", cur.display()), e)),
        }
    }
    Ok(cur)
}

fn make_dir(path: &Path, _opts: &UnpackOptions) -> Result<(), ImageError> {
    fs::create_dir(path).ctx("create directory", path)?;
    fsutil::chmod(path, 0o755).ctx("chmod", path)
}

/// Metadata of one entry, gathered before its data is read.
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: (i64, i64),
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
    let h = entry.header();
    let mut meta = Meta {
        mode: h.mode()? & 0o7777,
        uid: h.uid()?,
        gid: h.gid()?,
        mtime: (h.mtime().unwrap_or(0) as i64, 0),
        xattrs: Vec::new(),
    };
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                meta.xattrs
                    .push((name.as_bytes().to_vec(), ext.value_bytes().to_vec()));
            } else if key == "mtime"
                && let Some(t) = parse_pax_time(ext.value_bytes())
            {
                meta.mtime = t;
            }
        }
    }
    Ok(meta)
}

/// Parses a PAX time (`1700000000.123456789`).
fn parse_pax_time(v: &[u8]) -> Option<(i64, i64)> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, c) in frac.chars().take(9).enumerate() {
        nanos += i64::from(c.to_digit(10)?) * 10i64.pow(8 - i as u32);
    }
    Some((secs, nanos))
}

fn apply_meta(
    path: &Path,
    meta: &Meta,
    opts: &UnpackOptions,
    kind: EntryType,
) -> Result<(), ImageError> {
    let symlink = kind == EntryType::Symlink;
    if opts.layer {
        // Ownership first: chown clears setuid bits and file capabilities.
        std::os::unix::fs::lchown(path, Some(meta.uid as u32), Some(meta.gid as u32))
            .ctx("chown", path)?;
        if !symlink {
            fsutil::chmod(path, meta.mode).ctx("chmod", path)?;
        }
        for (name, value) in &meta.xattrs {
            if name.starts_with(OVERLAY_XATTR_PREFIX.as_bytes()) {
                continue;
            }
            let name = OsStr::from_bytes(name);
            if let Err(e) = fsutil::lsetxattr(path, name, value) {
                tracing::warn!(
                    path = %path.display(),
                    xattr = %name.to_string_lossy(),
                    "cannot set xattr from {}: {e}",
                    opts.label
                );
            }
        }
    } else if !symlink {
        // Layout files only need to be readable by us.
        let mode = if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        };
        fsutil::chmod(path, mode).ctx("chmod", path)?;
    }
    if kind != EntryType::Directory {
        fsutil::set_times(path, meta.mtime, meta.mtime).ctx("set times of", path)?;
    }
    Ok(())
}

/// Extracts the tar stream `reader` into the existing directory `dest`.
///
/// The stream is read to its end (so a hashing reader sees every byte).
pub(crate) fn unpack_tar<R: Read>(
    reader: R,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<(), ImageError> {
    let read_err = |e| ImageError::io(format!("read tar {}", opts.label), e);
    let mut archive = tar::Archive::new(reader);
    let mut dirs: Vec<(PathBuf, (i64, i64))> = Vec::new();
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            continue;
        }
        let raw_path = entry.path().map_err(read_err)?.into_owned();
        let rel = match safe_rel_path(&raw_path) {
            Ok(Some(rel)) => rel,
            Ok(None) => {
                // The archive's root ("./"): its metadata becomes dest's.
                if opts.layer && kind == EntryType::Directory {
                    let meta = read_meta(&mut entry).map_err(read_err)?;
                    apply_meta(dest, &meta, opts, kind)?;
                    dirs.push((dest.to_path_buf(), meta.mtime));
                }
                continue;
            }
            Err(reason) => return Err(unsafe_path(opts, &raw_path, reason)),
        };
        let name = rel.file_name().expect("normal last component").to_owned();
        let parent_rel = rel.parent().filter(|p| !p.as_os_str().is_empty());

        if opts.layer {
            match classify_whiteout(&name).map_err(|r| unsafe_path(opts, &raw_path, r))? {
                Whiteout::None => {}
                Whiteout::Ignore => continue,
                Whiteout::Opaque => {
                    let dir = walk_dirs(dest, parent_rel, true, opts, &raw_path)?;
                    fsutil::lsetxattr(&dir, OsStr::new(OPAQUE_XATTR), b"y").ctx(
                        "mark opaque (needs root and a filesystem with trusted xattrs)",
                        &dir,
                    )?;
                    continue;
                }
                Whiteout::Delete(victim) => {
                    let dir = walk_dirs(dest, parent_rel, true, opts, &raw_path)?;
                    let target = dir.join(victim);
                    match fs::symlink_metadata(&target) {
                        // Created by this very layer: it already hides lower
                        // layers (a directory must also stop merging).
                        Ok(m) if m.is_dir() => {
                            fsutil::lsetxattr(&target, OsStr::new(OPAQUE_XATTR), b"y")
                                .ctx("mark opaque", &target)?;
                        }
                        Ok(_) => {}
                        Err(_) => fsutil::make_whiteout(&target).ctx("create whiteout", &target)?,
                    }
                    continue;
                }
            }
        }

        let dir = walk_dirs(dest, parent_rel, true, opts, &raw_path)?;
        let target = dir.join(&name);
        let meta = read_meta(&mut entry).map_err(read_err)?;
        let existing = fs::symlink_metadata(&target).ok();
        match kind {
            EntryType::Directory => {
                match &existing {
                    Some(m) if m.is_dir() => {}
                    Some(m) => {
                        let was_whiteout = opts.layer && fsutil::is_whiteout(m);
                        fsutil::remove_any(&target).ctx("replace", &target)?;
                        make_dir(&target, opts)?;
                        if was_whiteout {
                            fsutil::lsetxattr(&target, OsStr::new(OPAQUE_XATTR), b"y")
                                .ctx("mark opaque", &target)?;
                        }
                    }
                    None => make_dir(&target, opts)?,
                }
                dirs.push((target.clone(), meta.mtime));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                if existing.is_some() {
                    fsutil::remove_any(&target).ctx("replace", &target)?;
                }
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .ctx("create", &target)?;
                io::copy(&mut entry, &mut f).map_err(read_err)?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(read_err)?
                    .ok_or_else(|| unsafe_path(opts, &raw_path, "hard link without a target"))?
                    .into_owned();
                let link_rel = match safe_rel_path(&link) {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        return Err(unsafe_path(
                            opts,
                            &raw_path,
                            "hard link to the archive root",
                        ));
                    }
                    Err(r) => {
                        return Err(unsafe_path(
                            opts,
                            &raw_path,
                            format!("hard link target {}", r),
                        ));
                    }
                };
                let src_dir = walk_dirs(
                    dest,
                    link_rel.parent().filter(|p| !p.as_os_str().is_empty()),
                    false,
                    opts,
                    &raw_path,
                )
                .map_err(|_| {
                    unsafe_path(
                        opts,
                        &raw_path,
                        format!("hard link target {} is not in this archive", link.display()),
                    )
                })?;
                let src = src_dir.join(link_rel.file_name().expect("normal"));
                match fs::symlink_metadata(&src) {
                    Ok(m) if !m.is_dir() => {}
                    _ => {
                        return Err(unsafe_path(
                            opts,
                            &raw_path,
                            format!(
                                "hard link target {} is not a file earlier in this archive",
                                link.display()
                            ),
                        ));
                    }
                }
                if src == target {
                    continue;
                }
                if existing.is_some() {
                    fsutil::remove_any(&target).ctx("replace", &target)?;
                }
                fs::hard_link(&src, &target).ctx("hard link", &target)?;
                continue; // shares the target's metadata
            }
            EntryType::Symlink if opts.layer => {
                let link = entry
                    .link_name()
                    .map_err(read_err)?
                    .ok_or_else(|| unsafe_path(opts, &raw_path, "symlink without a target"))?
                    .into_owned();
                if existing.is_some() {
                    fsutil::remove_any(&target).ctx("replace", &target)?;
                }
                std::os::unix::fs::symlink(&link, &target).ctx("symlink", &target)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo if opts.layer => {
                let node = match kind {
                    EntryType::Char => NodeKind::Char,
                    EntryType::Block => NodeKind::Block,
                    _ => NodeKind::Fifo,
                };
                let h = entry.header();
                let major = h.device_major().map_err(read_err)?.unwrap_or(0);
                let minor = h.device_minor().map_err(read_err)?.unwrap_or(0);
                // A 0:0 character device is an overlayfs whiteout; it means
                // the same here as a `.wh.` file would, so it is kept.
                if existing.is_some() {
                    fsutil::remove_any(&target).ctx("replace", &target)?;
                }
                fsutil::mknod(&target, node, meta.mode, major.into(), minor.into())
                    .ctx("mknod", &target)?;
            }
            other => {
                tracing::debug!(entry = %raw_path.display(), "skipping tar entry of type {other:?} in {}", opts.label);
                continue;
            }
        }
        apply_meta(&target, &meta, opts, kind)?;
    }
    // Directory times last: creating their children changed them.
    for (dir, mtime) in dirs.iter().rev() {
        fsutil::set_times(dir, *mtime, *mtime).ctx("set times of", dir)?;
    }
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(read_err)?;
    Ok(())
}

/// How a layer blob is compressed, judged by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd (not supported).
    Zstd,
    /// bzip2 or xz (not supported).
    Other(&'static str),
}

/// Sniffs the compression of a blob from its magic bytes.
pub(crate) fn sniff_compression(head: &[u8]) -> Compression {
    match head {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        [b'B', b'Z', b'h', ..] => Compression::Other("bzip2"),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Compression::Other("xz"),
        _ => Compression::None,
    }
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
