//! Small filesystem helpers: xattrs, device nodes, timestamps, atomic writes
//! and temporary paths. None of them follow a symlink at the final component.

use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::error::{ImageError, IoContext};

/// The xattr overlayfs uses to mark a directory opaque.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Xattrs with this prefix steer overlayfs; they are never taken from image
/// content (a layer could otherwise forge redirects or opaque markers).
pub const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn cname(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains a NUL"))
}

/// Sets an extended attribute on `path` itself (not a symlink's target).
pub fn lsetxattr(path: &Path, name: &OsStr, value: &[u8]) -> io::Result<()> {
    let (p, n) = (cpath(path)?, cname(name)?);
    // SAFETY: p and n are NUL-terminated; value is a valid slice.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads an extended attribute of `path` itself; `None` when it is not set.
pub fn lgetxattr(path: &Path, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
    let (p, n) = (cpath(path)?, cname(name)?);
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: buf is writable for buf.len() bytes; p and n are NUL-terminated.
        let rc =
            unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if rc >= 0 {
            buf.truncate(rc as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return Err(err),
        }
    }
}

/// Lists the extended attribute names of `path` itself.
pub fn llistxattr(path: &Path) -> io::Result<Vec<OsString>> {
    let p = cpath(path)?;
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: buf is writable for buf.len() bytes; p is NUL-terminated.
        let rc = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if rc >= 0 {
            buf.truncate(rc as usize);
            return Ok(buf
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| OsString::from_vec(s.to_vec()))
                .collect());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return Err(err),
        }
    }
}

/// Copies the xattrs of `src` to `dst`, except overlayfs' own.
pub fn copy_xattrs(src: &Path, dst: &Path) -> Result<(), ImageError> {
    for name in llistxattr(src).ctx("list xattrs of", src)? {
        if name.as_bytes().starts_with(OVERLAY_XATTR_PREFIX.as_bytes()) {
            continue;
        }
        if let Some(value) = lgetxattr(src, &name).ctx("read xattr of", src)? {
            lsetxattr(dst, &name, &value).map_err(|e| {
                ImageError::io(
                    format!("set xattr {} on {}", name.to_string_lossy(), dst.display()),
                    e,
                )
            })?;
        }
    }
    Ok(())
}

/// The kinds of special file [`mknod`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A named pipe.
    Fifo,
}

/// Creates a device node or fifo.
pub fn mknod(path: &Path, kind: NodeKind, perm: u32, major: u64, minor: u64) -> io::Result<()> {
    let sflag = match kind {
        NodeKind::Char => SFlag::S_IFCHR,
        NodeKind::Block => SFlag::S_IFBLK,
        NodeKind::Fifo => SFlag::S_IFIFO,
    };
    let dev = nix::sys::stat::makedev(major, minor);
    nix::sys::stat::mknod(path, sflag, Mode::from_bits_truncate(perm & 0o7777), dev)
        .map_err(io::Error::from)
}

/// Creates an overlayfs whiteout (a 0:0 character device) at `path`.
pub fn make_whiteout(path: &Path) -> io::Result<()> {
    mknod(path, NodeKind::Char, 0, 0, 0)
}

/// Whether this metadata is an overlayfs whiteout (a 0:0 character device).
pub fn is_whiteout(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Sets access and modification times of `path` itself (seconds, nanoseconds).
pub fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let ts = |(s, ns): (i64, i64)| TimeSpec::new(s as _, ns as _);
    nix::sys::stat::utimensat(
        None,
        path,
        &ts(atime),
        &ts(mtime),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// Sets the permission bits of `path` (never called on symlinks).
pub fn chmod(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
}

/// Removes whatever is at `path` (file, symlink, device, whole directory
/// tree); a missing path is fine.
pub fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes everything inside the directory `dir`, keeping `dir` itself.
pub fn clear_dir(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        remove_any(&entry?.path())?;
    }
    Ok(())
}

/// A name unique to this process and call, for temporary files.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        ".{prefix}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync,
/// rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = TempPath::new(dir.join(unique_name("write")));
    let mut f = fs::File::create(tmp.path()).ctx("create", tmp.path())?;
    f.write_all(bytes).ctx("write", tmp.path())?;
    f.sync_all().ctx("sync", tmp.path())?;
    drop(f);
    fs::rename(tmp.path(), path).ctx("rename into place", path)?;
    tmp.disarm();
    Ok(())
}

/// A temporary file or directory removed on drop unless disarmed.
pub struct TempPath {
    path: PathBuf,
    armed: bool,
}

impl TempPath {
    /// Guards `path` (which need not exist yet).
    pub fn new(path: PathBuf) -> TempPath {
        TempPath { path, armed: true }
    }

    /// The guarded path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the path: it was renamed into place or is otherwise wanted.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.armed {
            let _ = remove_any(&self.path);
        }
    }
}
