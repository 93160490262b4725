//! Berth's cluster CA.
//!
//! `berth tls init` makes a CA (`ca.pem`, `ca-key.pem`, ECDSA P-256);
//! `berth tls issue server|agent|client NAME` signs a certificate whose
//! identity is its role and name: the subject's CN is the name, its OU the
//! role, and a URI SAN says both (`berth://agent/node-a`), which
//! [`identity`] reads back so the servers can authorize by certificate,
//! not by what a request claims. Servers and agents also get DNS and IP
//! SANs for the addresses they are reached at.
#![forbid(unsafe_code)]

pub mod listen;
pub mod transport;

pub use transport::{Credentials, Paths};

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The longest a certificate may be valid for: 10 years.
pub const MAX_DAYS: u32 = 3650;
/// The CA's certificate file in a TLS directory.
pub const CA_CERT: &str = "ca.pem";
/// The CA's key file in a TLS directory.
pub const CA_KEY: &str = "ca-key.pem";

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A control-plane server (raft, membership, the APIs).
    Server,
    /// A node agent.
    Agent,
    /// A CLI or API client.
    Client,
}

impl Role {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
            Role::Client => "client",
        }
    }

    /// Parses `server`, `agent` or `client`.
    pub fn parse(s: &str) -> Result<Role, TlsError> {
        match s {
            "server" => Ok(Role::Server),
            "agent" => Ok(Role::Agent),
            "client" => Ok(Role::Client),
            _ => Err(TlsError::Invalid(format!(
                "role: {s:?} is not one of server, agent, client"
            ))),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors of the CA.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Bad input (a name, a role, a SAN, a day count).
    #[error("{0}")]
    Invalid(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// rcgen refused.
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path`, readable by its owner only when `secret`.
fn write(path: &Path, bytes: &str, secret: bool) -> Result<(), TlsError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes.as_bytes()).map_err(io(path))
}

fn validity(params: &mut CertificateParams, days: u32) -> Result<(), TlsError> {
    if days == 0 || days > MAX_DAYS {
        return Err(TlsError::Invalid(format!(
            "days: {days} is out of range (1 to {MAX_DAYS})"
        )));
    }
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(i64::from(days));
    Ok(())
}

/// Makes a CA in `dir` (created if missing); refuses to overwrite one.
pub fn init(dir: &Path, days: u32) -> Result<(), TlsError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let cert_path = dir.join(CA_CERT);
    if cert_path.exists() {
        return Err(TlsError::Invalid(format!(
            "{} exists: a CA is already there",
            cert_path.display()
        )));
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Berth cluster CA");
    dn.push(DnType::OrganizationName, "berth");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, days)?;
    let cert = params.self_signed(&key)?;
    write(&dir.join(CA_KEY), &key.serialize_pem(), true)?;
    write(&cert_path, &cert.pem(), false)
}

/// Whether `name` is a valid identity name (a DNS label, as node names are).
fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Whether `s` is a DNS name: dot-separated labels of letters, digits and
/// '-', 253 characters at most.
fn valid_dns(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

/// A certificate and its key, PEM.
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

/// The DNS name every certificate of `role` carries (`server.berth`,
/// `agent.berth`, `client.berth`): what a caller checks the peer's
/// certificate against, whatever address it dialed (as Nomad's
/// `server.<region>.nomad`), so a certificate is valid for its role, not
/// for one address.
pub fn role_dns(role: Role) -> String {
    format!("{role}.berth")
}

/// The parameters of a certificate for `role` `name`.
fn params_for(
    role: Role,
    name: &str,
    sans: &[String],
    days: u32,
) -> Result<CertificateParams, TlsError> {
    if !valid_name(name) {
        return Err(TlsError::Invalid(format!(
            "name: {name:?} is not a valid name ([a-z0-9-], 1-63 characters)"
        )));
    }
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationalUnitName, role.as_str());
    dn.push(DnType::OrganizationName, "berth");
    params.distinguished_name = dn;
    let uri = format!("berth://{role}/{name}");
    params.subject_alt_names.push(SanType::URI(
        uri.as_str()
            .try_into()
            .map_err(|_| TlsError::Invalid(format!("name: {name:?}")))?,
    ));
    params.subject_alt_names.push(SanType::DnsName(
        role_dns(role)
            .try_into()
            .map_err(|_| TlsError::Invalid(format!("role: {role}")))?,
    ));
    for s in sans {
        let san = match s.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) if valid_dns(s) => {
                SanType::DnsName(s.as_str().try_into().map_err(|_| {
                    TlsError::Invalid(format!("san: {s:?} is not a DNS name or IP"))
                })?)
            }
            Err(_) => {
                return Err(TlsError::Invalid(format!(
                    "san: {s:?} is not a DNS name or IP address"
                )));
            }
        };
        params.subject_alt_names.push(san);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match role {
        // Servers and agents both serve and call.
        Role::Server | Role::Agent => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    validity(&mut params, days)?;
    Ok(params)
}

/// The CA in `dir` as an rcgen issuer.
fn issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>, TlsError> {
    let ca_pem = fs::read_to_string(dir.join(CA_CERT)).map_err(io(&dir.join(CA_CERT)))?;
    let key_pem = fs::read_to_string(dir.join(CA_KEY)).map_err(io(&dir.join(CA_KEY)))?;
    ca_issuer(&ca_pem, &key_pem)
}

fn ca_issuer(ca_pem: &str, key_pem: &str) -> Result<Issuer<'static, KeyPair>, TlsError> {
    let ca_key = KeyPair::from_pem(key_pem)?;
    Ok(Issuer::from_ca_cert_pem(ca_pem, ca_key)?)
}

/// Signs a certificate for `role` `name` with the CA in `dir`; `sans` are
/// extra DNS names or IP addresses it is reached at.
pub fn issue(
    dir: &Path,
    role: Role,
    name: &str,
    sans: &[String],
    days: u32,
) -> Result<Issued, TlsError> {
    let params = params_for(role, name, sans, days)?;
    let issuer = issuer(dir)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A key pair and a certificate signing request for it (PEM), made where
/// the key will live: an agent joining with a token sends only the
/// request.
pub fn request(name: &str) -> Result<Issued, TlsError> {
    let params = params_for(Role::Agent, name, &[], 1)?;
    let key = KeyPair::generate()?;
    let csr = params.serialize_request(&key)?;
    Ok(Issued {
        cert_pem: csr.pem()?,
        key_pem: key.serialize_pem(),
    })
}

/// The longest certificate signing request accepted (PEM bytes).
pub const MAX_REQUEST: usize = 16 * 1024;

/// Signs the public key of a certificate signing request (`csr_pem`) as
/// `role` `name` with the CA given as PEM: only the key is taken from the
/// request; the identity, names and validity are the signer's.
pub fn sign_request(
    ca_pem: &str,
    ca_key_pem: &str,
    role: Role,
    name: &str,
    csr_pem: &str,
    days: u32,
) -> Result<String, TlsError> {
    if csr_pem.len() > MAX_REQUEST {
        return Err(TlsError::Invalid(format!(
            "csr: {} bytes is over the limit of {MAX_REQUEST}",
            csr_pem.len()
        )));
    }
    let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| TlsError::Invalid(format!("csr: not a certificate signing request: {e}")))?;
    csr.params = params_for(role, name, &[], days)?;
    let issuer = ca_issuer(ca_pem, ca_key_pem)?;
    Ok(csr.signed_by(&issuer)?.pem())
}

/// Writes an issued certificate as `<role>-<name>.pem` and
/// `<role>-<name>-key.pem` in `dir`; returns the certificate's path.
/// Refuses to replace an existing one.
pub fn save(dir: &Path, role: Role, name: &str, issued: &Issued) -> Result<PathBuf, TlsError> {
    let stem = format!("{role}-{name}");
    if dir.join(format!("{stem}.pem")).exists() {
        return Err(TlsError::Invalid(format!(
            "{}: a certificate is already there",
            dir.join(format!("{stem}.pem")).display()
        )));
    }
    save_as(dir, &stem, issued)
}

/// Writes an issued certificate as `<stem>.pem` and `<stem>-key.pem` (the
/// key readable by its owner only) in `dir`, replacing what is there;
/// returns the certificate's path.
pub fn save_as(dir: &Path, stem: &str, issued: &Issued) -> Result<PathBuf, TlsError> {
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}-key.pem"));
    for p in [&cert, &key] {
        match fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(TlsError::Io {
                    path: p.clone(),
                    source: e,
                });
            }
        }
    }
    write(&key, &issued.key_pem, true)?;
    write(&cert, &issued.cert_pem, false)?;
    Ok(cert)
}

/// The role and name a certificate (DER) was issued for, from its
/// `berth://ROLE/NAME` SAN; `None` for any other certificate.
pub fn identity(der: &[u8]) -> Option<(Role, String)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|g| match g {
        x509_parser::extensions::GeneralName::URI(u) => {
            let rest = u.strip_prefix("berth://")?;
            let (role, name) = rest.split_once('/')?;
            let role = Role::parse(role).ok()?;
            valid_name(name).then(|| (role, name.to_string()))
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(pem: &str) -> Vec<u8> {
        x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .unwrap()
            .1
            .contents
    }

    #[test]
    fn issued_certificates_carry_their_role_and_name() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), 365).unwrap();
        assert!(init(dir.path(), 365).is_err(), "a CA is not overwritten");
        for role in [Role::Server, Role::Agent, Role::Client] {
            let sans = vec!["127.0.0.1".to_string(), "node-a.example".to_string()];
            let i = issue(dir.path(), role, "node-a", &sans, 30).unwrap();
            assert_eq!(
                identity(&der(&i.cert_pem)),
                Some((role, "node-a".to_string()))
            );
        }
        let ca = fs::read_to_string(dir.path().join(CA_CERT)).unwrap();
        assert_eq!(identity(&der(&ca)), None, "the CA is nobody");
    }

    #[test]
    fn bad_input_names_its_field() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), 365).unwrap();
        let e = |r: Result<Issued, TlsError>| r.err().unwrap().to_string();
        assert!(e(issue(dir.path(), Role::Agent, "Bad_Name", &[], 30)).starts_with("name:"));
        assert!(e(issue(dir.path(), Role::Agent, "a", &[], 0)).starts_with("days:"));
        assert!(
            e(issue(
                dir.path(),
                Role::Agent,
                "a",
                &["bad name!".into()],
                30
            ))
            .starts_with("san:")
        );
        assert!(
            Role::parse("root")
                .unwrap_err()
                .to_string()
                .starts_with("role:")
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(
            issue(empty.path(), Role::Agent, "a", &[], 30).is_err(),
            "no CA"
        );
    }
}
