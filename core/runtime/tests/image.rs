//! Image store tests on real files: OCI layouts built with umoci and
//! ci/make-demo-image.sh, real tar archives, real overlay mounts.
//! They need root and `umoci`, `jq`, `busybox-static`, `tar`.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use berth_runtime::image::{
    ImageError, ImageStore, RootfsKind, RootfsMode, prepare_rootfs, prepare_rootfs_with,
    release_rootfs,
};

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "berth-image-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Releases a container dir's rootfs on drop, so a failing test leaves no mount.
struct RootfsGuard(PathBuf);

impl Drop for RootfsGuard {
    fn drop(&mut self) {
        let _ = release_rootfs(&self.0);
    }
}

fn sh(script: &str) {
    let out = Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "script failed: {script}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn demo_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ci/make-demo-image.sh")
}

/// Builds the busybox demo layout at `dir/layout` with a custom page.
fn demo_layout(dir: &Path) -> PathBuf {
    let www = dir.join("www");
    fs::create_dir_all(&www).unwrap();
    fs::write(www.join("index.html"), "hello from the test\n").unwrap();
    let layout = dir.join("layout");
    sh(&format!(
        "{} {} {} >/dev/null",
        demo_script().display(),
        layout.display(),
        www.display()
    ));
    layout
}

/// A three-layer image named `wh:v1` inside the layout (tag `v1`):
/// layer 1 has files; layer 2 (umoci repack) deletes `del.txt` and `gone/`
/// and replaces `opq/` with new content; layer 3 (a hand-made tar) makes
/// `data/` opaque with an OCI `.wh..wh..opq` marker.
fn whiteout_layout(dir: &Path) -> PathBuf {
    let l = dir.join("wh-layout");
    let d = dir.display();
    sh(&format!(
        r#"
        cd {d}
        umoci init --layout {l}
        umoci new --image {l}:v1
        umoci config --image {l}:v1 --config.cmd=/bin/sh --config.workingdir=/data --config.user=65534
        umoci unpack --image {l}:v1 b1
        r=b1/rootfs
        echo keep > $r/keep.txt
        echo del > $r/del.txt
        mkdir -p $r/opq/sub $r/data $r/gone
        echo old > $r/opq/old.txt
        echo x > $r/opq/sub/x
        echo a > $r/data/a
        echo b > $r/data/b
        echo f > $r/gone/f
        echo linked > $r/hl1
        ln $r/hl1 $r/hl2
        ln -s keep.txt $r/sym
        chmod 4755 $r/keep.txt
        umoci repack --image {l}:v1 b1
        umoci unpack --image {l}:v1 b2
        r=b2/rootfs
        rm $r/del.txt
        rm -rf $r/opq $r/gone
        mkdir $r/opq
        echo new > $r/opq/new.txt
        umoci repack --image {l}:v1 b2
        mkdir -p l3/data
        : > l3/data/.wh..wh..opq
        echo c > l3/data/c
        tar -C l3 -cf l3.tar .
        umoci raw add-layer --image {l}:v1 l3.tar
        umoci gc --layout {l}
        "#,
        l = l.display()
    ));
    l
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn overlay_listed() -> bool {
    fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .any(|l| l.ends_with("overlay"))
}

#[test]
fn demo_image_import_list_resolve_reimport() {
    let tmp = TempDir::new("demo");
    let layout = demo_layout(tmp.path());
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    assert!(store.list().unwrap().is_empty());

    let info = store.import(&layout, None).unwrap();
    assert_eq!(info.name, "busybox:latest");
    assert!(info.digest.starts_with("sha256:") && info.digest.len() == 71);
    assert_eq!(info.layers, 1);
    assert!(info.size > 100_000, "{info:?}");
    assert_eq!(store.list().unwrap(), vec![info.clone()]);

    let img = store.resolve("busybox:latest").unwrap();
    assert_eq!(img.digest, info.digest);
    assert_eq!(img.layers.len(), 1);
    let top = &img.layers[0];
    assert!(top.join("bin/busybox").is_file());
    assert_eq!(
        fs::read_link(top.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert!(
        fs::symlink_metadata(top.join("bin/httpd"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        fs::metadata(top.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    assert_eq!(
        fs::read_to_string(top.join("www/index.html")).unwrap(),
        "hello from the test\n"
    );
    assert!(
        fs::read_to_string(top.join("etc/passwd"))
            .unwrap()
            .contains("nobody:x:65534")
    );
    assert_eq!(img.config.cmd, vec!["/bin/sh"]);
    assert!(img.config.env.contains(&"PATH=/bin".to_string()));
    assert!(img.config.entrypoint.is_empty());

    // Re-import: nothing changes on disk.
    let refs = tmp.path().join("store/refs.json");
    let before = (
        fs::metadata(&refs).unwrap().mtime_nsec(),
        fs::metadata(top).unwrap().ino(),
    );
    assert_eq!(store.import(&layout, None).unwrap(), info);
    let after = (
        fs::metadata(&refs).unwrap().mtime_nsec(),
        fs::metadata(top).unwrap().ino(),
    );
    assert_eq!(before, after);
    assert_eq!(names(&tmp.path().join("store/layers")).len(), 1);

    // A tar of the layout, and a gzipped one, under other names.
    sh(&format!(
        "tar -C {l} -cf {t}/x.tar . && tar -C {l} -czf {t}/x.tar.gz .",
        l = layout.display(),
        t = tmp.path().display()
    ));
    let other = store
        .import(&tmp.path().join("x.tar"), Some("other:v1"))
        .unwrap();
    assert_eq!(
        (other.name.as_str(), other.digest.as_str()),
        ("other:v1", info.digest.as_str())
    );
    store
        .import(&tmp.path().join("x.tar.gz"), Some("gz.example/demo:v2"))
        .unwrap();
    let listed: Vec<String> = store.list().unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(listed, ["busybox:latest", "gz.example/demo:v2", "other:v1"]);
    assert!(
        names(&tmp.path().join("store/tmp")).is_empty(),
        "temp files left behind"
    );

    // Names must be repo:tag.
    let err = store.import(&layout, Some("latest")).unwrap_err();
    assert!(matches!(err, ImageError::InvalidName { .. }), "{err}");

    // Remove, and unknown names.
    store.remove("other:v1").unwrap();
    assert_eq!(store.list().unwrap().len(), 2);
    assert!(matches!(
        store.remove("other:v1"),
        Err(ImageError::NotFound(_))
    ));
    let err = store.resolve("nope:1").unwrap_err();
    assert!(matches!(err, ImageError::NotFound(_)));
    assert!(err.to_string().contains("berth image import"), "{err}");

    // The rootfs runs: busybox through its applet symlinks, in both modes.
    for (i, mode) in [RootfsMode::Auto, RootfsMode::Copy].into_iter().enumerate() {
        let cdir = tmp.path().join(format!("c{i}"));
        let _guard = RootfsGuard(cdir.clone());
        let rootfs = prepare_rootfs_with(&img, &cdir, mode).unwrap();
        sh(&format!(
            "test \"$(chroot {} /bin/sh -c 'echo hi; id -u')\" = \"$(printf 'hi\\n0')\"",
            rootfs.path.display()
        ));
        release_rootfs(&cdir).unwrap();
    }
}

#[test]
fn importing_another_image_under_a_name_repoints_it() {
    let tmp = TempDir::new("repoint");
    let layout = demo_layout(tmp.path());
    let wh = whiteout_layout(tmp.path());
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let first = store.import(&layout, None).unwrap();
    let second = store.import(&wh, Some("busybox:latest")).unwrap();
    assert_ne!(first.digest, second.digest);
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].digest, second.digest);
    assert_eq!(store.resolve("busybox:latest").unwrap().layers.len(), 3);
}

#[test]
fn whiteouts_and_opaque_dirs_in_overlay_and_copy() {
    let tmp = TempDir::new("whiteout");
    let layout = whiteout_layout(tmp.path());
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();

    // The layout names the image by its tag only: a name is required...
    let err = store.import(&layout, None).unwrap_err();
    assert!(err.to_string().contains("--name"), "{err}");
    // ...and the tag part of the name picks the entry.
    let info = store.import(&layout, Some("wh:v1")).unwrap();
    assert_eq!(info.layers, 3);
    let img = store.resolve("wh:v1").unwrap();
    assert_eq!(img.config.working_dir.as_deref(), Some("/data"));
    assert_eq!(img.config.user.as_deref(), Some("65534"));

    // Layer 2 holds overlay whiteouts, not .wh. files.
    let del = fs::symlink_metadata(img.layers[1].join("del.txt")).unwrap();
    assert!(del.file_type().is_char_device() && del.rdev() == 0);
    assert!(!img.layers[1].join(".wh.del.txt").exists());
    assert!(!img.layers[2].join("data/.wh..wh..opq").exists());

    let auto_kind = if overlay_listed() {
        None
    } else {
        Some(RootfsKind::Copy)
    };
    for (i, mode) in [RootfsMode::Auto, RootfsMode::Copy].into_iter().enumerate() {
        let cdir = tmp.path().join(format!("container{i}"));
        let _guard = RootfsGuard(cdir.clone());
        let rootfs = if mode == RootfsMode::Auto {
            prepare_rootfs(&img, &cdir).unwrap()
        } else {
            prepare_rootfs_with(&img, &cdir, mode).unwrap()
        };
        match mode {
            RootfsMode::Copy => assert_eq!(rootfs.kind, RootfsKind::Copy),
            _ => {
                if let Some(k) = auto_kind {
                    assert_eq!(rootfs.kind, k);
                }
                eprintln!("auto mode gave {:?}", rootfs.kind);
            }
        }
        let r = &rootfs.path;
        assert_eq!(r, &cdir.join("rootfs"));
        assert_eq!(fs::read_to_string(r.join("keep.txt")).unwrap(), "keep\n");
        assert_eq!(
            fs::metadata(r.join("keep.txt")).unwrap().mode() & 0o7777,
            0o4755
        );
        assert!(!r.join("del.txt").exists() && fs::symlink_metadata(r.join("del.txt")).is_err());
        assert!(fs::symlink_metadata(r.join("gone")).is_err());
        assert_eq!(
            names(&r.join("opq")),
            BTreeSet::from(["new.txt".to_string()])
        );
        assert_eq!(names(&r.join("data")), BTreeSet::from(["c".to_string()]));
        assert_eq!(fs::read_link(r.join("sym")).unwrap(), Path::new("keep.txt"));
        let (h1, h2) = (
            fs::metadata(r.join("hl1")).unwrap(),
            fs::metadata(r.join("hl2")).unwrap(),
        );
        assert_eq!(fs::read_to_string(r.join("hl2")).unwrap(), "linked\n");
        if rootfs.kind == RootfsKind::Copy {
            assert_eq!(h1.ino(), h2.ino());
        }

        // Writes stay in the container.
        fs::write(r.join("keep.txt"), "changed").unwrap();
        fs::remove_file(r.join("hl1")).unwrap();
        assert_eq!(
            fs::read_to_string(img.layers[0].join("keep.txt")).unwrap(),
            "keep\n"
        );
        assert!(img.layers[0].join("hl1").exists());

        // Idempotent: preparing again returns what is there.
        let again = prepare_rootfs_with(&img, &cdir, mode).unwrap();
        assert_eq!(again, rootfs);
        assert_eq!(fs::read_to_string(r.join("keep.txt")).unwrap(), "changed");

        release_rootfs(&cdir).unwrap();
        for sub in ["rootfs", "upper", "work"] {
            assert!(!cdir.join(sub).exists(), "{sub} left behind");
        }
        release_rootfs(&cdir).unwrap();
    }
}

#[test]
fn corrupt_blob_is_refused_and_stores_no_ref() {
    let tmp = TempDir::new("corrupt");
    let layout = demo_layout(tmp.path());
    // The largest blob is the layer.
    let blobs = layout.join("blobs/sha256");
    let layer = fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let hex = layer.file_name().unwrap().to_string_lossy().into_owned();
    let mut bytes = fs::read(&layer).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&layer, bytes).unwrap();

    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let err = store.import(&layout, None).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{msg}");
    assert!(
        msg.contains(&format!("layer sha256:{hex} digest mismatch")),
        "{msg}"
    );
    assert!(store.list().unwrap().is_empty());
    assert_eq!(
        fs::read_to_string(tmp.path().join("store/refs.json"))
            .unwrap()
            .trim(),
        "{}"
    );
    assert!(!tmp.path().join("store/blobs/sha256").join(&hex).exists());
    assert!(names(&tmp.path().join("store/layers")).is_empty());
    assert!(names(&tmp.path().join("store/tmp")).is_empty());

    // A missing blob is named too.
    fs::remove_file(&layer).unwrap();
    let msg = store.import(&layout, None).unwrap_err().to_string();
    assert!(
        msg.contains(&format!("layer sha256:{hex}")) && msg.contains("missing from blobs/"),
        "{msg}"
    );
}

#[test]
fn missing_index_json_is_a_clear_error() {
    let tmp = TempDir::new("noindex");
    let layout = demo_layout(tmp.path());
    fs::remove_file(layout.join("index.json")).unwrap();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let err = store.import(&layout, None).unwrap_err();
    assert!(matches!(err, ImageError::InvalidLayout { .. }), "{err}");
    assert!(err.to_string().contains("index.json is missing"), "{err}");

    let err = store
        .import(&tmp.path().join("does-not-exist"), None)
        .unwrap_err();
    assert!(err.to_string().contains("does-not-exist"), "{err}");
}

#[test]
fn layout_with_several_images_needs_a_name() {
    let tmp = TempDir::new("several");
    let layout = demo_layout(tmp.path());
    sh(&format!(
        "umoci tag --image {l}:busybox:latest v2",
        l = layout.display()
    ));
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let msg = store.import(&layout, None).unwrap_err().to_string();
    assert!(
        msg.contains("`busybox:latest`") && msg.contains("`v2`"),
        "{msg}"
    );
    let info = store.import(&layout, Some("mine:v2")).unwrap();
    assert_eq!(info.name, "mine:v2");
    let info = store.import(&layout, Some("busybox:latest")).unwrap();
    assert_eq!(info.name, "busybox:latest");
}

#[test]
fn tar_with_parent_path_is_refused() {
    let tmp = TempDir::new("evil");
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in [
        ("oci-layout", &br#"{"imageLayoutVersion":"1.0.0"}"#[..]),
        ("../evil", b"evil"),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        builder.append(&h, data).unwrap();
    }
    let tar_path = tmp.path().join("evil.tar");
    fs::write(&tar_path, builder.into_inner().unwrap()).unwrap();

    let store_root = tmp.path().join("store");
    let store = ImageStore::open(&store_root).unwrap();
    let err = store.import(&tar_path, Some("evil:v1")).unwrap_err();
    assert!(matches!(err, ImageError::UnsafePath { .. }), "{err}");
    assert!(err.to_string().contains("../evil"), "{err}");
    for p in [
        store_root.join("tmp/evil"),
        store_root.join("evil"),
        tmp.path().join("evil"),
    ] {
        assert!(!p.exists(), "{} was written", p.display());
    }
    assert!(names(&store_root.join("tmp")).is_empty());
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn nested_index_picks_this_platform() {
    let tmp = TempDir::new("nested");
    let layout = demo_layout(tmp.path());
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let other_arch = if arch == "s390x" { "ppc64le" } else { "s390x" };
    // Wrap the manifest in an image index listing a foreign platform first
    // (whose manifest blob is absent: it must not be touched).
    sh(&format!(
        r#"
        cd {l}
        m=$(jq -c '.manifests[0] | del(.annotations)' index.json)
        jq -n --argjson m "$m" '{{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
            manifests: [
              {{mediaType: $m.mediaType, size: 1, digest: ("sha256:" + ("0" * 64)),
               platform: {{os: "linux", architecture: "{other_arch}"}}}},
              ($m + {{platform: {{os: "linux", architecture: "{arch}"}}}})
            ]}}' > nested.json
        d=$(sha256sum nested.json | cut -d' ' -f1)
        s=$(stat -c %s nested.json)
        mv nested.json blobs/sha256/$d
        jq --arg d "sha256:$d" --argjson s $s \
          '.manifests[0] |= (.digest = $d | .size = $s | .mediaType = "application/vnd.oci.image.index.v1+json")' \
          index.json > index.new && mv index.new index.json
        "#,
        l = layout.display()
    ));
    let manifest_digest = {
        let idx: serde_json::Value =
            serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
        let hex = idx["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_owned();
        let nested: serde_json::Value =
            serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(hex)).unwrap())
                .unwrap();
        nested["manifests"][1]["digest"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let info = store.import(&layout, None).unwrap();
    assert_eq!(info.name, "busybox:latest");
    assert_eq!(info.digest, manifest_digest);
    assert!(
        store.resolve("busybox:latest").unwrap().layers[0]
            .join("bin/busybox")
            .exists()
    );
}

#[test]
fn gc_drops_the_least_recently_used_down_to_the_cap_and_keeps_what_is_needed() {
    let tmp = TempDir::new("gc");
    let demo = demo_layout(tmp.path());
    let wh = whiteout_layout(tmp.path());
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    store.import(&demo, Some("a:1")).unwrap();
    store.import(&demo, Some("b:1")).unwrap();
    store.import(&wh, Some("wh:v1")).unwrap();
    // Used in this order: wh first (oldest), then b, then a.
    store.resolve("wh:v1").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    store.resolve("b:1").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    store.resolve("a:1").unwrap();
    let full = store.size();
    // Under the cap: nothing happens.
    let r = store.gc(full, &Default::default()).unwrap();
    assert!(r.removed.is_empty() && r.freed == 0);
    // A cap just under: the oldest goes, with its blobs and layers.
    let r = store.gc(full - 1, &Default::default()).unwrap();
    assert_eq!(r.removed, vec!["wh:v1".to_string()]);
    assert!(r.freed > 0 && r.size < full);
    assert!(store.resolve("wh:v1").is_err());
    // `a` and `b` share their bytes: dropping `b` alone frees nothing, so
    // both go below that; unless one is kept (a task still names it).
    let keep: std::collections::HashSet<String> = ["b:1".to_string()].into();
    let r = store.gc(1, &keep).unwrap();
    assert_eq!(r.removed, vec!["a:1".to_string()]);
    let img = store.resolve("b:1").unwrap();
    assert!(img.layers[0].join("bin/busybox").is_file());
    assert!(r.size > 0);
    let r = store.gc(1, &Default::default()).unwrap();
    assert_eq!(r.removed, vec!["b:1".to_string()]);
    assert!(r.size < 1024, "{r:?}");
}
