//! Registries (the OCI distribution API), through `oci-client`.
//!
//! [`Registry::resolve`] asks a registry which manifest a tag names now
//! (the servers do this once per deployment and commit the digest);
//! [`Registry::pull`] brings a pinned image into the node's
//! [`ImageStore`]: layers already there are not fetched again, concurrent
//! pulls of one blob are one download, every blob is verified against its
//! digest, and each layer is unpacked as soon as it arrives.
//! [`Registry::push`] uploads an OCI image layout.
//!
//! TLS uses the system's roots plus an operator-given CA; plain HTTP only
//! for registries listed as insecure. Errors are sorted into the causes a
//! person acts on ([`RegistryError`]).

mod pull;
mod push;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_model::image::ImageRef;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::ImageError;

/// Biggest manifest or index accepted from a registry.
pub const MAX_MANIFEST: usize = 4 << 20;

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// PEM certificates trusted besides the system's roots
    /// (`--registry-ca`).
    pub ca_pem: Option<Vec<u8>>,
    /// `host[:port]`s spoken to over plain HTTP (`--insecure-registry`).
    pub insecure: Vec<String>,
}

/// User name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

/// Why talking to a registry failed, sorted by what a person does about it.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference is not a registry reference.
    #[error("{0}")]
    Invalid(String),
    /// The registry refused the credentials (or asked for some).
    #[error("unauthorized at {registry}: {detail} (check `berth registry login {registry}`)")]
    Unauthorized {
        /// `host[:port]`.
        registry: String,
        /// What the registry said.
        detail: String,
    },
    /// The repository, tag or blob does not exist there.
    #[error("not found: {0}")]
    NotFound(String),
    /// What arrived does not hash to the digest asked for.
    #[error("digest mismatch: {0}")]
    DigestMismatch(String),
    /// The registry could not be reached (connection, TLS, timeout).
    #[error("registry {registry} unreachable: {detail}")]
    Unreachable {
        /// `host[:port]`.
        registry: String,
        /// The cause.
        detail: String,
    },
    /// The registry answered with something else that is wrong.
    #[error("registry error: {0}")]
    Other(String),
    /// The image store failed (disk, unpacking, a bad layer).
    #[error(transparent)]
    Store(#[from] ImageError),
}

/// How far a pull got; read while it runs to show progress.
#[derive(Debug, Default)]
pub struct PullProgress {
    /// Layers the image has (0 until the manifest is read).
    pub layers: AtomicU64,
    /// Layers in the store so far (fetched or already there).
    pub layers_done: AtomicU64,
    /// Bytes downloaded so far.
    pub bytes: AtomicU64,
    /// Bytes the missing blobs add up to.
    pub bytes_total: AtomicU64,
}

impl PullProgress {
    /// `pulling 3/5 layers, 42 MiB`.
    pub fn line(&self) -> String {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let total = self.bytes_total.load(Ordering::Relaxed);
        format!(
            "pulling {}/{} layers, {:.0} of {:.0} MiB",
            self.layers_done.load(Ordering::Relaxed),
            self.layers.load(Ordering::Relaxed),
            mib(self.bytes.load(Ordering::Relaxed)),
            mib(total)
        )
    }
}

/// A registry client shared by every pull of a node (or resolution of a
/// server): one connection pool, one token cache, one download per blob.
pub struct Registry {
    opts: RegistryOptions,
    /// A client per registry and credentials: oci-client keeps the first
    /// credentials it sees for a registry, so each login gets its own
    /// (with its own connections and token cache).
    clients: Mutex<HashMap<(String, String, String), Arc<Client>>>,
    /// Downloads in flight by blob digest: a second pull of the same blob
    /// waits for the first instead of fetching it again.
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registry")
    }
}

impl Registry {
    /// A client with `opts`. Fails when the CA is not PEM.
    pub fn new(opts: &RegistryOptions) -> Result<Registry, RegistryError> {
        // reqwest is built without a bundled crypto provider; use ring,
        // which the rest of Berth's TLS uses too.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let reg = Registry {
            opts: opts.clone(),
            clients: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
        };
        // Check the options once, up front.
        reg.build_client()?;
        Ok(reg)
    }

    fn build_client(&self) -> Result<Client, RegistryError> {
        let mut extra = Vec::new();
        if let Some(pem) = &self.opts.ca_pem {
            if !String::from_utf8_lossy(pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(RegistryError::Invalid(
                    "registry CA: not a PEM certificate (no BEGIN CERTIFICATE line)".into(),
                ));
            }
            extra.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem.clone(),
            });
        }
        let insecure = &self.opts.insecure;
        let config = ClientConfig {
            protocol: if insecure.is_empty() {
                ClientProtocol::Https
            } else {
                ClientProtocol::HttpsExcept(insecure.clone())
            },
            extra_root_certificates: extra,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            max_concurrent_download: 4,
            user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        Client::try_from(config)
            .map_err(|e| RegistryError::Invalid(format!("registry client: {e}")))
    }

    /// The client for `registry` with `creds`.
    fn client_for(
        &self,
        registry: &str,
        creds: Option<&Credentials>,
    ) -> Result<Arc<Client>, RegistryError> {
        let key = (
            registry.to_string(),
            creds.map(|c| c.username.clone()).unwrap_or_default(),
            creds.map(|c| c.password.clone()).unwrap_or_default(),
        );
        let mut map = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        if map.len() >= 64 {
            map.clear();
        }
        let c = Arc::new(self.build_client()?);
        map.insert(key, c.clone());
        Ok(c)
    }

    /// The digest of the manifest (or index) `image` names now. A
    /// reference that already carries a digest is returned as it is.
    pub async fn resolve(
        &self,
        image: &ImageRef,
        creds: Option<&Credentials>,
    ) -> Result<String, RegistryError> {
        if let Some(d) = &image.digest {
            return Ok(d.clone());
        }
        let r = reference(image)?;
        let client = self.client_for(r.registry(), creds)?;
        let digest = client
            .fetch_manifest_digest(&r, &auth(creds))
            .await
            .map_err(|e| classify(e, image))?;
        if berth_model::image::ImageRef::parse(&format!("x@{digest}")).is_err() {
            return Err(RegistryError::Other(format!(
                "{image}: the registry gave an unusable digest {digest:?}"
            )));
        }
        Ok(digest)
    }

    /// The lock that makes concurrent downloads of `digest` one.
    fn blob_lock(&self, digest: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        // Forget finished downloads so the map stays small.
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(digest.to_string()).or_default().clone()
    }
}

/// The oci-client reference of a registry image.
fn reference(image: &ImageRef) -> Result<Reference, RegistryError> {
    let Some(registry) = image.registry.clone() else {
        return Err(RegistryError::Invalid(format!(
            "{image} names no registry (expected host[:port]/repo:tag)"
        )));
    };
    let repo = image.repo.clone();
    Ok(match (&image.tag, &image.digest) {
        (Some(t), Some(d)) => Reference::with_tag_and_digest(registry, repo, t.clone(), d.clone()),
        (None, Some(d)) => Reference::with_digest(registry, repo, d.clone()),
        (Some(t), None) => Reference::with_tag(registry, repo, t.clone()),
        (None, None) => Reference::with_tag(registry, repo, "latest".into()),
    })
}

fn auth(creds: Option<&Credentials>) -> RegistryAuth {
    match creds {
        Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
        None => RegistryAuth::Anonymous,
    }
}

/// Sorts an oci-client error into what the person acts on.
fn classify(e: OciDistributionError, image: &ImageRef) -> RegistryError {
    let registry = image.registry.clone().unwrap_or_default();
    let not_found = |what: String| RegistryError::NotFound(format!("{image}: {what}"));
    match e {
        OciDistributionError::AuthenticationFailure(d) => RegistryError::Unauthorized {
            registry,
            detail: d,
        },
        OciDistributionError::UnauthorizedError { url } => RegistryError::Unauthorized {
            registry,
            detail: format!("401 for {url}"),
        },
        OciDistributionError::ImageManifestNotFoundError(d) => not_found(d),
        OciDistributionError::DigestError(d) => {
            RegistryError::DigestMismatch(format!("{image}: {d}"))
        }
        OciDistributionError::RegistryError { envelope, url } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let text = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                RegistryError::Unauthorized {
                    registry,
                    detail: text,
                }
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::ManifestBlobUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                not_found(text)
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::DigestInvalid))
            {
                RegistryError::DigestMismatch(format!("{image}: {text}"))
            } else {
                RegistryError::Other(format!("{url}: {text}"))
            }
        }
        OciDistributionError::ServerError { code, url, message } => match code {
            401 | 403 => RegistryError::Unauthorized {
                registry,
                detail: format!("{code} for {url}"),
            },
            404 => not_found(format!("404 for {url}")),
            _ => RegistryError::Other(format!("{code} for {url}: {message}")),
        },
        OciDistributionError::RequestError(r) => match r.status().map(|s| s.as_u16()) {
            Some(401 | 403) => RegistryError::Unauthorized {
                registry,
                detail: chain(&r),
            },
            Some(404) => not_found(chain(&r)),
            Some(_) => RegistryError::Other(chain(&r)),
            None => {
                let mut detail = chain(&r);
                if detail.contains("certificate") {
                    detail.push_str(
                        " (TLS: give the CA that signed the registry's certificate with \
                         --registry-ca, or list a plain-HTTP registry with --insecure-registry)",
                    );
                }
                RegistryError::Unreachable { registry, detail }
            }
        },
        OciDistributionError::IoError(io) => {
            RegistryError::Store(ImageError::io(format!("writing a blob of {image}"), io))
        }
        other => RegistryError::Other(format!("{image}: {other}")),
    }
}

/// An error with its causes, `a: b: c` (reqwest hides the TLS reason in
/// the chain).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}
