//! TLS for Berth's connections: every listener and every caller uses the
//! cluster CA, and both sides show a certificate (mutual TLS).
//!
//! A caller checks the peer's certificate against its role's DNS name
//! ([`crate::role_dns`]): a CLI or an agent dialing a server wants
//! `server.berth`, a server dialing an agent wants `agent.berth`.

use std::fs;
use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::{Role, TlsError, io};

/// Largest PEM file read (a CA, a certificate or a key).
pub const MAX_PEM: u64 = 256 * 1024;

/// The cluster CA and, for a process that has one, its own certificate
/// and key (PEM).
#[derive(Clone)]
pub struct Credentials {
    /// The cluster CA's certificate.
    pub ca_pem: String,
    /// This process's certificate and key.
    pub identity: Option<(String, String)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

/// Reads a PEM file of at most [`MAX_PEM`] bytes that holds `what`.
pub fn read_pem(path: &Path, what: &str) -> Result<String, TlsError> {
    let meta = fs::metadata(path).map_err(io(path))?;
    if meta.len() > MAX_PEM {
        return Err(TlsError::Invalid(format!(
            "{}: {} bytes is too large for a PEM file",
            path.display(),
            meta.len()
        )));
    }
    let text = fs::read_to_string(path).map_err(io(path))?;
    if !text.contains("-----BEGIN ") {
        return Err(TlsError::Invalid(format!(
            "{}: not a PEM file (expected a {what}: no -----BEGIN line)",
            path.display()
        )));
    }
    Ok(text)
}

/// Where a process finds its files: the CA, and its certificate and key.
#[derive(Debug, Clone, Default)]
pub struct Paths {
    /// The CA's certificate.
    pub ca: Option<PathBuf>,
    /// This process's certificate.
    pub cert: Option<PathBuf>,
    /// Its key.
    pub key: Option<PathBuf>,
}

impl Paths {
    /// The files of `role` in a data dir: `ca.pem`, `ROLE.pem`,
    /// `ROLE-key.pem`, each unless given.
    pub fn in_dir(self, dir: &Path, role: Role) -> Paths {
        Paths {
            ca: self.ca.or_else(|| Some(dir.join(crate::CA_CERT))),
            cert: self.cert.or_else(|| Some(dir.join(format!("{role}.pem")))),
            key: self
                .key
                .or_else(|| Some(dir.join(format!("{role}-key.pem")))),
        }
    }
}

impl Credentials {
    /// Loads the CA and, when both exist, the certificate and key.
    pub fn load(p: &Paths) -> Result<Credentials, TlsError> {
        let ca =
            p.ca.as_ref()
                .ok_or_else(|| TlsError::Invalid("ca: no CA certificate given".into()))?;
        let ca_pem = read_pem(ca, "CERTIFICATE")?;
        let identity = match (&p.cert, &p.key) {
            (Some(c), Some(k)) if c.exists() || k.exists() => {
                Some((read_pem(c, "CERTIFICATE")?, read_pem(k, "PRIVATE KEY")?))
            }
            _ => None,
        };
        Ok(Credentials { ca_pem, identity })
    }

    /// Loads the CA and a certificate that must be there.
    pub fn load_identity(p: &Paths) -> Result<Credentials, TlsError> {
        let c = Credentials::load(p)?;
        if c.identity.is_none() {
            return Err(TlsError::Invalid(format!(
                "cert: no certificate at {}",
                p.cert
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )));
        }
        Ok(c)
    }

    /// The caller's side, dialing a peer of role `peer`.
    pub fn client(&self, peer: Role) -> ClientTlsConfig {
        let mut c = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name(crate::role_dns(peer));
        if let Some((cert, key)) = &self.identity {
            c = c.identity(Identity::from_pem(cert, key));
        }
        c
    }

    /// The role and name of this process's certificate.
    pub fn whoami(&self) -> Option<(Role, String)> {
        let (cert, _) = self.identity.as_ref()?;
        let der = x509_parser::pem::parse_x509_pem(cert.as_bytes())
            .ok()?
            .1
            .contents;
        crate::identity(&der)
    }
}
