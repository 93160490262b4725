//! Unit tests of tar extraction: path checks and whiteout conversion.
//! They need root (device nodes, trusted xattrs, chown), as the runtime does.

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use super::*;
use crate::fsutil::{TempPath, unique_name};

fn tempdir() -> TempPath {
    let p = std::env::temp_dir().join(unique_name("berth-unpack-test"));
    fs::create_dir(&p).unwrap();
    TempPath::new(p)
}

fn layer_opts() -> UnpackOptions {
    UnpackOptions {
        layer: true,
        label: "layer test".into(),
    }
}

/// A tar entry written with raw header fields, bypassing the tar crate's
/// own path checks (so we can build hostile archives).
fn raw_entry(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: EntryType, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(if kind == EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_size(data.len() as u64);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    let old = h.as_old_mut();
    old.name[..path.len()].copy_from_slice(path.as_bytes());
    old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn build(entries: &[(&str, EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, link, data) in entries {
        raw_entry(&mut b, path, *kind, link, data);
    }
    b.into_inner().unwrap()
}

#[test]
fn safe_rel_path_rules() {
    assert_eq!(
        safe_rel_path(Path::new("./a/b")).unwrap(),
        Some(PathBuf::from("a/b"))
    );
    assert_eq!(
        safe_rel_path(Path::new("a//b/")).unwrap(),
        Some(PathBuf::from("a/b"))
    );
    assert_eq!(safe_rel_path(Path::new("./")).unwrap(), None);
    assert_eq!(safe_rel_path(Path::new(".")).unwrap(), None);
    assert!(safe_rel_path(Path::new("../evil")).is_err());
    assert!(safe_rel_path(Path::new("a/../../evil")).is_err());
    assert!(safe_rel_path(Path::new("/etc/passwd")).is_err());
}

#[test]
fn whiteout_names() {
    fn c(s: &str) -> Result<Whiteout<'_>, String> {
        classify_whiteout(OsStr::new(s))
    }
    assert_eq!(c("file").unwrap(), Whiteout::None);
    assert_eq!(c(".wh..wh..opq").unwrap(), Whiteout::Opaque);
    assert_eq!(c(".wh.gone").unwrap(), Whiteout::Delete(OsStr::new("gone")));
    assert_eq!(c(".wh..wh.plnk").unwrap(), Whiteout::Ignore);
    assert!(c(".wh.").is_err());
    assert!(c(".wh..").is_err());
    assert!(c(".wh...").is_err());
}

#[test]
fn whiteouts_become_overlay_format() {
    let dir = tempdir();
    let d = dir.path();
    let tar = build(&[
        ("./", EntryType::Directory, "", b""),
        ("./.wh.gone", EntryType::Regular, "", b""),
        ("./d/", EntryType::Directory, "", b""),
        ("./d/.wh..wh..opq", EntryType::Regular, "", b""),
        ("./d/new", EntryType::Regular, "", b"new"),
        ("./e/.wh.x", EntryType::Regular, "", b""),
        ("./.wh..wh.plnk", EntryType::Directory, "", b""),
        ("./.wh.back", EntryType::Regular, "", b""),
        ("./back/", EntryType::Directory, "", b""),
    ]);
    unpack_tar(&tar[..], d, &layer_opts()).unwrap();

    let gone = fs::symlink_metadata(d.join("gone")).unwrap();
    assert!(gone.file_type().is_char_device());
    assert_eq!(gone.rdev(), 0);
    let x = fs::symlink_metadata(d.join("e/x")).unwrap();
    assert!(fsutil::is_whiteout(&x));
    assert_eq!(
        fsutil::lgetxattr(&d.join("d"), OsStr::new(OPAQUE_XATTR)).unwrap(),
        Some(b"y".to_vec())
    );
    assert_eq!(fs::read(d.join("d/new")).unwrap(), b"new");
    assert_eq!(
        fsutil::lgetxattr(&d.join("e"), OsStr::new(OPAQUE_XATTR)).unwrap(),
        None
    );
    // A whiteout followed by a directory of the same name: an opaque dir.
    assert!(d.join("back").is_dir());
    assert_eq!(
        fsutil::lgetxattr(&d.join("back"), OsStr::new(OPAQUE_XATTR)).unwrap(),
        Some(b"y".to_vec())
    );
    // No .wh.* names survive.
    let names: Vec<_> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names.iter().all(|n| !n.as_bytes().starts_with(b".wh.")),
        "{names:?}"
    );
}

#[test]
fn layout_mode_keeps_whiteout_names() {
    let dir = tempdir();
    let tar = build(&[("a/.wh.b", EntryType::Regular, "", b"x")]);
    let opts = UnpackOptions {
        layer: false,
        label: "layout".into(),
    };
    unpack_tar(&tar[..], dir.path(), &opts).unwrap();
    assert_eq!(fs::read(dir.path().join("a/.wh.b")).unwrap(), b"x");
}

#[test]
fn parent_dir_traversal_is_refused() {
    let dir = tempdir();
    let inner = dir.path().join("inner");
    fs::create_dir(&inner).unwrap();
    let tar = build(&[("../evil", EntryType::Regular, "", b"evil")]);
    let err = unpack_tar(&tar[..], &inner, &layer_opts()).unwrap_err();
    assert!(err.to_string().contains("../evil"), "{err}");
    assert!(!dir.path().join("evil").exists());
}

#[test]
fn absolute_path_is_refused() {
    let dir = tempdir();
    let tar = build(&[("/tmp/berth-absolute-evil", EntryType::Regular, "", b"evil")]);
    let err = unpack_tar(&tar[..], dir.path(), &layer_opts()).unwrap_err();
    assert!(err.to_string().contains("absolute"), "{err}");
    assert!(!Path::new("/tmp/berth-absolute-evil").exists());
}

#[test]
fn writing_through_a_symlink_is_refused() {
    let dir = tempdir();
    let outside = dir.path().join("outside");
    let inner = dir.path().join("inner");
    fs::create_dir(&outside).unwrap();
    fs::create_dir(&inner).unwrap();
    let target = outside.to_str().unwrap().to_owned();
    let tar = build(&[
        ("link", EntryType::Symlink, &target, b""),
        ("link/evil", EntryType::Regular, "", b"evil"),
    ]);
    let err = unpack_tar(&tar[..], &inner, &layer_opts()).unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    assert!(!outside.join("evil").exists());
    // The symlink itself is fine (it is only dangerous if followed).
    assert!(
        fs::symlink_metadata(inner.join("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn hard_links_stay_inside() {
    let dir = tempdir();
    let inner = dir.path().join("inner");
    fs::create_dir(&inner).unwrap();
    fs::write(dir.path().join("secret"), "s").unwrap();
    let tar = build(&[("h", EntryType::Link, "../secret", b"")]);
    assert!(unpack_tar(&tar[..], &inner, &layer_opts()).is_err());
    assert!(!inner.join("h").exists());

    let tar = build(&[
        ("l", EntryType::Symlink, "..", b""),
        ("h", EntryType::Link, "l/secret", b""),
    ]);
    assert!(unpack_tar(&tar[..], &inner, &layer_opts()).is_err());
    assert!(!inner.join("h").exists());

    let ok = tempdir();
    let tar = build(&[
        ("a", EntryType::Regular, "", b"data"),
        ("sub/b", EntryType::Link, "a", b""),
    ]);
    unpack_tar(&tar[..], ok.path(), &layer_opts()).unwrap();
    let a = fs::metadata(ok.path().join("a")).unwrap();
    let b = fs::metadata(ok.path().join("sub/b")).unwrap();
    assert_eq!(a.ino(), b.ino());
}

#[test]
fn later_entries_replace_earlier_ones() {
    let dir = tempdir();
    let tar = build(&[
        ("f", EntryType::Regular, "", b"one"),
        ("f", EntryType::Regular, "", b"two"),
        ("s", EntryType::Symlink, "x", b""),
        ("s", EntryType::Symlink, "y", b""),
    ]);
    unpack_tar(&tar[..], dir.path(), &layer_opts()).unwrap();
    assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"two");
    assert_eq!(
        fs::read_link(dir.path().join("s")).unwrap(),
        PathBuf::from("y")
    );
}

#[test]
fn compression_is_sniffed() {
    assert_eq!(sniff_compression(&[0x1f, 0x8b, 8]), Compression::Gzip);
    assert_eq!(
        sniff_compression(&[0x28, 0xb5, 0x2f, 0xfd]),
        Compression::Zstd
    );
    assert_eq!(sniff_compression(b"./\0\0"), Compression::None);
    assert_eq!(sniff_compression(b""), Compression::None);
}

#[test]
fn pax_times_parse() {
    assert_eq!(
        parse_pax_time(b"1700000000.5"),
        Some((1_700_000_000, 500_000_000))
    );
    assert_eq!(parse_pax_time(b"12"), Some((12, 0)));
    assert_eq!(parse_pax_time(b"x"), None);
}
