//! The few OCI image-spec documents the store reads, parsed leniently (only
//! the fields we use), plus digest helpers.
//!
//! We parse with our own small serde types rather than `oci_spec::image` so
//! that Docker media types and documents with unknown or missing optional
//! fields still import, and so that errors can name the blob involved.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::error::ImageError;

/// The annotation that names an image inside a layout's index.json.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// A content descriptor (index entry, manifest config or layer).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type; may be missing in sloppy layouts.
    #[serde(default)]
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Annotations, e.g. the ref name in index.json.
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    /// The platform of an index entry.
    #[serde(default)]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// The `org.opencontainers.image.ref.name` annotation, if any.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations
            .as_ref()
            .and_then(|a| a.get(REF_NAME_ANNOTATION))
            .map(String::as_str)
    }
}

/// The platform of an index entry.
#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    /// e.g. `amd64`.
    #[serde(default)]
    pub architecture: String,
    /// e.g. `linux`.
    #[serde(default)]
    pub os: String,
}

/// An image index (index.json or a nested index blob).
#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    /// The entries.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    /// The config blob.
    pub config: Descriptor,
    /// The layers, bottom first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// An image config blob (only the parts we use).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigFile {
    /// The runtime defaults.
    #[serde(default)]
    pub config: Option<RunConfig>,
    /// The uncompressed layer digests.
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

/// The `config` object of an image config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// `KEY=value` pairs.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// The entrypoint.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// The default arguments.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// The working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// The user (`uid`, `uid:gid`, `name`...).
    #[serde(default)]
    pub user: Option<String>,
}

/// The `rootfs` object of an image config.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    /// sha256 digests of the uncompressed layer tars, bottom first.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// Whether a JSON blob is an index or a manifest.
pub enum Document {
    /// An image index (OCI index or Docker manifest list).
    Index(Index),
    /// An image manifest.
    Manifest(Manifest),
}

/// Parses a manifest-or-index blob, telling them apart by shape.
pub fn parse_document(bytes: &[u8], what: &str) -> Result<Document, ImageError> {
    let json_err = |source| ImageError::Json {
        what: what.to_string(),
        source,
    };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(json_err)?;
    if value.get("manifests").is_some() {
        Ok(Document::Index(
            serde_json::from_value(value).map_err(json_err)?,
        ))
    } else if value.get("config").is_some() {
        Ok(Document::Manifest(
            serde_json::from_value(value).map_err(json_err)?,
        ))
    } else {
        Err(ImageError::Unsupported(format!(
            "{what} is neither an image manifest nor an image index \
             (it has no `config` and no `manifests`)"
        )))
    }
}

/// Checks that `digest` is `sha256:<64 lowercase hex>` and returns the hex
/// part. Everything that turns a digest into a path goes through here, so a
/// digest like `sha256:../../etc` can never name a file.
pub fn digest_hex(digest: &str) -> Result<&str, ImageError> {
    match digest.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        _ => Err(ImageError::BadDigest(digest.to_string())),
    }
}

/// The OCI architecture name of the machine we run on.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "arm" => "arm",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_hex_accepts_only_sha256() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(digest_hex(&good).unwrap(), "a".repeat(64));
        for bad in [
            "sha256:../../etc/passwd",
            "sha512:abcd",
            "sha256:ABCDEF",
            "nocolon",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}/x", "a".repeat(62)),
        ] {
            assert!(digest_hex(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn documents_are_told_apart() {
        let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            parse_document(idx, "x").unwrap(),
            Document::Index(_)
        ));
        let m = br#"{"schemaVersion":2,"config":{"digest":"sha256:00","size":1},"layers":[]}"#;
        assert!(matches!(
            parse_document(m, "x").unwrap(),
            Document::Manifest(_)
        ));
        assert!(parse_document(b"{}", "x").is_err());
    }
}
