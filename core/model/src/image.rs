//! Image references: `[registry[:port]/]repo[:tag][@sha256:hex]`.
//!
//! A reference whose first path component looks like a host (it has a `.`
//! or a `:`, or is `localhost`) names an image in that registry; anything
//! else names an image in the node's local store (put there by `berth image
//! import`). There is no implicit Docker Hub: the machines Berth targets
//! often cannot reach it, and a silent default would pull the wrong bytes.
//!
//! ```
//! use berth_model::image::ImageRef;
//! let r = ImageRef::parse("localhost:5000/shop/web:1.2").unwrap();
//! assert_eq!(r.registry.as_deref(), Some("localhost:5000"));
//! assert_eq!(r.repo, "shop/web");
//! assert!(r.digest.is_none());
//! let pinned = r.pinned("sha256:".to_string() + &"a".repeat(64));
//! assert!(pinned.to_string().ends_with(&"a".repeat(64)));
//! ```

use std::fmt;

/// Longest image reference, in characters.
pub const MAX_REF_LEN: usize = 512;
/// Longest image tag, in characters.
pub const MAX_TAG_LEN: usize = 128;

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `host[:port]` of the registry; `None` for the node's local store.
    pub registry: Option<String>,
    /// The repository path (`shop/web`).
    pub repo: String,
    /// The tag, if given.
    pub tag: Option<String>,
    /// `sha256:<64 hex>`, if given.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses `s`; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<ImageRef, String> {
        if s.is_empty() {
            return Err("is empty (expected name:tag, e.g. busybox:latest)".into());
        }
        if s.len() > MAX_REF_LEN {
            return Err(format!("is {} characters; at most {MAX_REF_LEN}", s.len()));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => {
                check_digest(d)?;
                (rest, Some(d.to_string()))
            }
            None => (s, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, path)) if looks_like_host(first) => {
                check_host(first)?;
                (Some(first.to_string()), path)
            }
            _ => (None, rest),
        };
        let last_slash = path.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (repo, tag) = match path[last_slash..].rfind(':') {
            Some(i) => (
                &path[..last_slash + i],
                Some(path[last_slash + i + 1..].to_string()),
            ),
            None => (path, None),
        };
        check_repo(repo)?;
        if let Some(t) = &tag {
            check_tag(t)?;
        }
        if tag.is_none() && digest.is_none() {
            return Err(
                "has no tag (expected name:tag or name@sha256:..., e.g. busybox:latest)".into(),
            );
        }
        Ok(ImageRef {
            registry,
            repo: repo.to_string(),
            tag,
            digest,
        })
    }

    /// Whether it names an image in a registry (not the local store).
    pub fn is_remote(&self) -> bool {
        self.registry.is_some()
    }

    /// The same reference with its content pinned to `digest` (the tag
    /// stays, for people to read).
    pub fn pinned(&self, digest: String) -> ImageRef {
        ImageRef {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// `registry/repo`, without tag or digest.
    pub fn repository(&self) -> String {
        match &self.registry {
            Some(r) => format!("{r}/{}", self.repo),
            None => self.repo.clone(),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Whether a reference's first component names a registry host.
fn looks_like_host(first: &str) -> bool {
    first == "localhost" || first.contains('.') || first.contains(':')
}

fn check_host(h: &str) -> Result<(), String> {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (h, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-');
    if !host_ok {
        return Err(format!(
            "has a bad registry host {h:?} (letters, digits, '.', '-', then an optional :port)"
        ));
    }
    if let Some(p) = port
        && !matches!(p.parse::<u16>(), Ok(n) if n > 0)
    {
        return Err(format!("has a bad registry port {p:?} (1-65535)"));
    }
    Ok(())
}

fn check_repo(repo: &str) -> Result<(), String> {
    let ok = !repo.is_empty()
        && repo.split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(&c))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "has a bad repository {repo:?} (path components of a-z, 0-9, '.', '_', '-', \
             separated by '/')"
        ))
    }
}

fn check_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= MAX_TAG_LEN
        && tag
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "has a bad tag {tag:?} (1-{MAX_TAG_LEN} characters of A-Z, a-z, 0-9, '.', '_', '-')"
        ))
    }
}

fn check_digest(d: &str) -> Result<(), String> {
    let ok = d.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "has a bad digest {d:?} (expected sha256: and 64 lowercase hex digits)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex() -> String {
        "0123456789abcdef".repeat(4)
    }

    #[test]
    fn local_and_remote() {
        let l = ImageRef::parse("busybox:latest").unwrap();
        assert!(!l.is_remote());
        assert_eq!(
            (l.repo.as_str(), l.tag.as_deref()),
            ("busybox", Some("latest"))
        );
        let l = ImageRef::parse("berth/demo:1").unwrap();
        assert!(!l.is_remote(), "a path without a host is local");
        let r = ImageRef::parse("registry.example.com/a/b:v2").unwrap();
        assert_eq!(r.registry.as_deref(), Some("registry.example.com"));
        assert_eq!(r.repo, "a/b");
        let r = ImageRef::parse("localhost/demo:1").unwrap();
        assert!(r.is_remote());
        let d = format!("127.0.0.1:5000/demo@sha256:{}", hex());
        let r = ImageRef::parse(&d).unwrap();
        assert_eq!(r.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(r.tag, None);
        assert_eq!(r.to_string(), d);
    }

    #[test]
    fn pinning_keeps_the_tag() {
        let r = ImageRef::parse("localhost:5000/demo:1").unwrap();
        let p = r.pinned(format!("sha256:{}", hex()));
        assert_eq!(
            p.to_string(),
            format!("localhost:5000/demo:1@sha256:{}", hex())
        );
        assert_eq!(ImageRef::parse(&p.to_string()).unwrap(), p);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (bad, says) in [
            ("", "empty"),
            ("busybox", "no tag"),
            ("localhost:5000/demo", "no tag"),
            ("Busybox:1", "repository"),
            ("busybox:", "tag"),
            ("busybox:a b", "tag"),
            ("localhost:0/x:1", "port"),
            ("local_host:5000/x:1", "host"),
            ("x@sha256:abc", "digest"),
            ("x@md5:abc", "digest"),
            ("a//b:1", "repository"),
        ] {
            let e = ImageRef::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        assert!(
            ImageRef::parse(&"a".repeat(600))
                .unwrap_err()
                .contains("at most")
        );
    }
}
