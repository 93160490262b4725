//! Reading an import source (an OCI image layout directory, or a plain or
//! gzipped tar of one), choosing the image in it, and image names.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::error::{ImageError, IoContext};
use super::fsutil::{TempPath, unique_name};
use super::oci::{self, Descriptor, Index};
use super::unpack::{self, Compression, UnpackOptions};

/// The largest JSON document (index, manifest, config) we read into memory.
pub(crate) const MAX_JSON: u64 = 16 << 20;

/// An opened import source. An archive is extracted into a temporary
/// directory that is removed when this is dropped.
pub(crate) struct Layout {
    /// The layout directory (the source itself, or where it was extracted).
    pub dir: PathBuf,
    /// What the user passed, for messages.
    pub src: PathBuf,
    _extracted: Option<TempPath>,
}

impl Layout {
    /// Opens `src`; archives are extracted under `tmp_dir`.
    pub fn open(src: &Path, tmp_dir: &Path) -> Result<Layout, ImageError> {
        let meta = fs::metadata(src).ctx("open import source", src)?;
        let (dir, extracted) = if meta.is_dir() {
            (src.to_path_buf(), None)
        } else {
            let tmp = TempPath::new(tmp_dir.join(unique_name("import")));
            fs::create_dir(tmp.path()).ctx("create", tmp.path())?;
            extract(src, tmp.path())?;
            (find_root(tmp.path()), Some(tmp))
        };
        let layout = Layout {
            dir,
            src: src.to_path_buf(),
            _extracted: extracted,
        };
        layout.check()?;
        Ok(layout)
    }

    fn invalid(&self, reason: impl Into<String>) -> ImageError {
        ImageError::InvalidLayout {
            path: self.src.clone(),
            reason: reason.into(),
        }
    }

    fn check(&self) -> Result<(), ImageError> {
        let marker = self.dir.join("oci-layout");
        match fs::read(&marker) {
            Ok(bytes) => {
                let v: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|e| self.invalid(format!("oci-layout is not JSON: {e}")))?;
                let version = v
                    .get("imageLayoutVersion")
                    .and_then(|v| v.as_str())
                    .unwrap_or("");
                if !version.starts_with("1.") {
                    return Err(self.invalid(format!(
                        "unsupported imageLayoutVersion `{version}` in oci-layout (want 1.x)"
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(src = %self.src.display(), "no oci-layout file; reading index.json anyway");
            }
            Err(e) => return Err(ImageError::io(format!("read {}", marker.display()), e)),
        }
        if !self.dir.join("index.json").is_file() {
            return Err(self.invalid(
                "index.json is missing (expected an OCI image layout: oci-layout, index.json, blobs/)",
            ));
        }
        Ok(())
    }

    /// Parses index.json.
    pub fn index(&self) -> Result<Index, ImageError> {
        let path = self.dir.join("index.json");
        let bytes = fs::read(&path).ctx("read", &path)?;
        serde_json::from_slice(&bytes).map_err(|source| ImageError::Json {
            what: format!("index.json of {}", self.src.display()),
            source,
        })
    }

    /// Where the layout keeps a blob (which may be missing).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.dir.join("blobs/sha256").join(oci::digest_hex(digest)?))
    }
}

/// Extracts an archived layout (plain or gzipped tar) into `dest`.
fn extract(src: &Path, dest: &Path) -> Result<(), ImageError> {
    let file = fs::File::open(src).ctx("open", src)?;
    let mut reader = BufReader::new(file);
    let head = reader.fill_buf().ctx("read", src)?.to_vec();
    let opts = UnpackOptions {
        layer: false,
        label: src.display().to_string(),
    };
    match unpack::sniff_compression(&head) {
        Compression::None => unpack::unpack_tar(reader, dest, &opts),
        Compression::Gzip => unpack::unpack_tar(MultiGzDecoder::new(reader), dest, &opts),
        Compression::Zstd => Err(ImageError::Unsupported(format!(
            "{} is zstd-compressed; pass a plain or gzipped tar (or the layout directory)",
            src.display()
        ))),
        Compression::Other(kind) => Err(ImageError::Unsupported(format!(
            "{} is {kind}-compressed; pass a plain or gzipped tar (or the layout directory)",
            src.display()
        ))),
    }
}

/// An archive may hold the layout at its top or inside one directory.
fn find_root(dir: &Path) -> PathBuf {
    if dir.join("index.json").exists() {
        return dir.to_path_buf();
    }
    let subdirs: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    match subdirs.as_slice() {
        [only] if only.join("index.json").exists() => only.clone(),
        _ => dir.to_path_buf(),
    }
}

/// Splits `repo:tag`, checking both parts.
pub(crate) fn parse_name(name: &str) -> Result<(&str, &str), ImageError> {
    let bad = |reason: &str| ImageError::InvalidName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let (repo, tag) = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => return Err(bad("expected repo:tag, e.g. busybox:latest")),
    };
    if repo.is_empty() || tag.is_empty() {
        return Err(bad("expected repo:tag, e.g. busybox:latest"));
    }
    if tag.len() > 128
        || tag.starts_with(['.', '-'])
        || !tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(bad(
            "the tag may hold letters, digits, `_`, `.` and `-` (not first), at most 128",
        ));
    }
    if repo.starts_with('/')
        || repo.ends_with('/')
        || repo.contains("//")
        || !repo
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/:".contains(&b))
    {
        return Err(bad(
            "the repository may hold lowercase letters, digits, `.`, `_`, `-`, `/` (and `:port` after a registry host)",
        ));
    }
    Ok((repo, tag))
}

fn label(d: &Descriptor) -> String {
    match d.ref_name() {
        Some(r) => format!("`{r}`"),
        None => format!("<unnamed {}>", d.digest),
    }
}

fn is_host_platform(d: &Descriptor) -> bool {
    d.platform
        .as_ref()
        .is_some_and(|p| p.os == "linux" && p.architecture == oci::host_arch())
}

/// Chooses the index.json entry to import: one whose ref name is `name` or
/// its tag; else the only entry; among several equal candidates the one for
/// this machine's platform.
pub(crate) fn select_entry<'a>(
    index: &'a Index,
    name: Option<&str>,
    src: &Path,
) -> Result<&'a Descriptor, ImageError> {
    if index.manifests.is_empty() {
        return Err(ImageError::InvalidLayout {
            path: src.to_path_buf(),
            reason: "index.json lists no images".into(),
        });
    }
    let by_ref = |want: &str| -> Vec<&'a Descriptor> {
        index
            .manifests
            .iter()
            .filter(|d| d.ref_name() == Some(want))
            .collect()
    };
    let mut candidates = Vec::new();
    if let Some(name) = name {
        candidates = by_ref(name);
        if candidates.is_empty()
            && let Ok((_, tag)) = parse_name(name)
        {
            candidates = by_ref(tag);
        }
    }
    if candidates.is_empty() {
        candidates = index.manifests.iter().collect();
    }
    if candidates.len() > 1 {
        // Several platforms under one ref name: take ours.
        let first_ref = candidates[0].ref_name();
        if candidates.iter().all(|d| d.ref_name() == first_ref)
            && let Some(d) = candidates.iter().find(|d| is_host_platform(d))
        {
            return Ok(d);
        }
        let refs: Vec<String> = index.manifests.iter().map(label).collect();
        return Err(ImageError::AmbiguousManifest {
            path: src.to_path_buf(),
            refs: refs.join(", "),
        });
    }
    Ok(candidates[0])
}

/// The name to store an image under when the user gave none: the layout's
/// ref name, if it is a full `repo:tag`.
pub(crate) fn name_from_ref(entry: &Descriptor, src: &Path) -> Result<String, ImageError> {
    match entry.ref_name() {
        None => Err(ImageError::NameRequired(format!(
            "the image in {} has no {} annotation in index.json; name it with --name <repo:tag>",
            src.display(),
            oci::REF_NAME_ANNOTATION
        ))),
        Some(r) if !r.contains(':') => Err(ImageError::NameRequired(format!(
            "the image in {} is named only by the tag `{r}`; name it with --name <repo>:{r}",
            src.display()
        ))),
        Some(r) => match parse_name(r) {
            Ok(_) => Ok(r.to_string()),
            Err(e) => Err(ImageError::NameRequired(format!(
                "the ref name in {} cannot be used as an image name ({e}); name it with --name <repo:tag>",
                src.display()
            ))),
        },
    }
}

/// Picks this machine's platform (linux/<arch>) from an image index.
pub(crate) fn pick_platform<'a>(
    index: &'a Index,
    what: &str,
) -> Result<&'a Descriptor, ImageError> {
    if let Some(d) = index.manifests.iter().find(|d| is_host_platform(d)) {
        return Ok(d);
    }
    if let [only] = index.manifests.as_slice()
        && only.platform.is_none()
    {
        return Ok(only);
    }
    let available: Vec<String> = index
        .manifests
        .iter()
        .map(|d| match &d.platform {
            Some(p) => format!("{}/{}", p.os, p.architecture),
            None => "unspecified".to_string(),
        })
        .collect();
    Err(ImageError::NoPlatform {
        digest: what.to_string(),
        platform: format!("linux/{}", oci::host_arch()),
        available: available.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_name("busybox:latest").unwrap(), ("busybox", "latest"));
        assert_eq!(
            parse_name("localhost:5000/a/b:v1.2").unwrap(),
            ("localhost:5000/a/b", "v1.2")
        );
        for bad in [
            "latest",
            "busybox",
            ":x",
            "x:",
            "localhost:5000/a",
            "Up:per",
            "a:b c",
            "a@sha256:x",
        ] {
            assert!(parse_name(bad).is_err(), "{bad} accepted");
        }
    }

    fn entry(r: Option<&str>, arch: &str) -> Descriptor {
        let mut v = serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", "0".repeat(64)),
            "size": 1,
            "platform": {"os": "linux", "architecture": arch},
        });
        if let Some(r) = r {
            v["annotations"] = serde_json::json!({ oci::REF_NAME_ANNOTATION: r });
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn selection() {
        let src = Path::new("/src");
        let idx = Index {
            manifests: vec![entry(Some("a:1"), "amd64"), entry(Some("latest"), "amd64")],
        };
        let pick = |n| select_entry(&idx, n, src).map(|d| d.ref_name().unwrap());
        assert_eq!(pick(Some("a:1")).unwrap(), "a:1");
        assert_eq!(pick(Some("busybox:latest")).unwrap(), "latest");
        let err = pick(None).unwrap_err().to_string();
        assert!(err.contains("`a:1`") && err.contains("`latest`"), "{err}");
        assert!(pick(Some("x:nope")).is_err());

        let single = Index {
            manifests: vec![entry(Some("latest"), "amd64")],
        };
        assert!(select_entry(&single, Some("other:v1"), src).is_ok());
        let e = name_from_ref(&single.manifests[0], src)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--name"), "{e}");
        assert_eq!(
            name_from_ref(&entry(Some("b:2"), "amd64"), src).unwrap(),
            "b:2"
        );

        let multi_arch = Index {
            manifests: vec![
                entry(Some("m:1"), "s390x"),
                entry(Some("m:1"), oci::host_arch()),
            ],
        };
        let d = select_entry(&multi_arch, None, src).unwrap();
        assert_eq!(d.platform.as_ref().unwrap().architecture, oci::host_arch());
        assert!(pick_platform(&multi_arch, "x").is_ok());
        let foreign = Index {
            manifests: vec![entry(None, "s390x-nope")],
        };
        assert!(pick_platform(&foreign, "x").is_err());
    }
}
