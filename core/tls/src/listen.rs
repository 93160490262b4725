//! The listener's TLS, done here rather than by tonic so that one port
//! serves both HTTP/2 (gRPC, browsers) and HTTP/1.1 (curl, Prometheus,
//! scripts): the handshake offers both through ALPN, where tonic's own
//! offers only `h2` and an HTTP/1.1-only client fails the handshake.
//!
//! Handshakes run concurrently, each under a deadline, so a slow or
//! silent client holds up nobody; what comes out is
//! `tokio_rustls::server::TlsStream`, for which tonic reports the peer's
//! certificates (`TlsConnectInfo`) exactly as with its own TLS.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig, crypto};
use tokio_rustls::server::TlsStream;

use crate::{Credentials, TlsError};

/// How long a client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in flight at once, at most (more wait in the kernel's
/// backlog).
pub const MAX_HANDSHAKES: usize = 1024;

impl Credentials {
    /// The listener's TLS: this certificate, callers' certificates checked
    /// against the CA (with `optional`, a caller may come without one; a
    /// certificate from another CA is always refused at the handshake),
    /// ALPN `h2` and `http/1.1`.
    pub fn acceptor(&self, optional: bool) -> Result<TlsAcceptor, TlsError> {
        let bad = |what: &str, e: &dyn std::fmt::Display| TlsError::Invalid(format!("{what}: {e}"));
        let (cert, key) = self
            .identity
            .as_ref()
            .ok_or_else(|| TlsError::Invalid("cert: a listener needs a certificate".into()))?;
        let provider = Arc::new(crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots
                .add(c.map_err(|e| bad("ca", &e))?)
                .map_err(|e| bad("ca", &e))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone());
        let verifier = if optional {
            verifier.allow_unauthenticated()
        } else {
            verifier
        }
        .build()
        .map_err(|e| bad("ca", &e))?;
        let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("cert", &e))?;
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| bad("key", &e))?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("tls", &e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| bad("cert", &e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// The connections of `listener` once their handshakes succeed (failed
/// ones are logged and dropped), for `serve_with_incoming`.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: pause, go on.
                    tracing::warn!(error = %e, "accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, sender) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = sender.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The connections of `listener` without TLS (benchmarks and in-process
/// tests), with Nagle's algorithm off as on the TLS path.
pub fn plain(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<TcpStream>> + Send + 'static {
    use tokio_stream::StreamExt as _;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|c| {
        c.inspect(|s| {
            let _ = s.set_nodelay(true);
        })
    })
}
