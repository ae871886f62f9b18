//! TLS for the ext_proc port: GIE serves TLS by default with a certificate it makes at start, and
//! gateways connect without verifying it; `--cert-path` loads `tls.crt` and `tls.key` instead,
//! and with `--enable-cert-reload` the files are watched and a renewed pair (cert-manager
//! rotates these Secret files) is served to new connections without a restart.
//!
//! The handshake is ours (tokio-rustls with a certificate resolver that reads the current pair)
//! rather than tonic's fixed `ServerTlsConfig`, which cannot change its certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::Stream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
}

/// PEM certificate chain and key.
#[derive(Debug, Clone)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A fresh self-signed certificate for the EPP.
pub fn self_signed() -> Result<CertPair, TlsError> {
    let ck = rcgen::generate_simple_self_signed(vec![
        "localhost".to_string(),
        "switchyard-epp".to_string(),
    ])?;
    Ok(CertPair {
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
    })
}

/// `<dir>/tls.crt` and `<dir>/tls.key`, as a Kubernetes TLS secret mounts them.
pub fn from_dir(dir: &Path) -> Result<CertPair, TlsError> {
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read_to_string(&p).map_err(|source| TlsError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    Ok(CertPair {
        cert_pem: read("tls.crt")?,
        key_pem: read("tls.key")?,
    })
}

impl CertPair {
    /// The pair as rustls serves it; fails on PEM that holds no certificate or no usable key.
    pub fn certified_key(&self) -> Result<CertifiedKey, TlsError> {
        let invalid = |what: &str, reason: String| TlsError::Invalid {
            what: what.into(),
            reason,
        };
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| invalid("tls.crt", e.to_string()))?;
        if certs.is_empty() {
            return Err(invalid("tls.crt", "no certificate in the PEM".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| invalid("tls.key", e.to_string()))?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| invalid("tls.key", e.to_string()))?;
        let ck = CertifiedKey::new(certs, signing);
        ck.keys_match()
            .map_err(|e| invalid("tls.crt and tls.key", e.to_string()))?;
        Ok(ck)
    }
}

/// The certificate served to new connections; replaceable at any time. With client CAs set,
/// only clients presenting a certificate from one of them may connect (mutual TLS).
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
    client_cas: Option<Arc<rustls::RootCertStore>>,
}

impl CertStore {
    pub fn new(pair: &CertPair) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(pair.certified_key()?),
            client_cas: None,
        }))
    }

    /// Like [`CertStore::new`], requiring client certificates issued by a CA in `ca_pem`
    /// (`--client-ca-file`).
    pub fn with_client_cas(pair: &CertPair, ca_pem: &str) -> Result<Arc<Self>, TlsError> {
        let invalid = |reason: String| TlsError::Invalid {
            what: "--client-ca-file".into(),
            reason,
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| invalid(e.to_string()))?;
            roots.add(cert).map_err(|e| invalid(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(invalid("no CA certificate in the PEM".into()));
        }
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(pair.certified_key()?),
            client_cas: Some(Arc::new(roots)),
        }))
    }

    /// Serves `pair` to connections that start from now on.
    pub fn replace(&self, pair: &CertPair) -> Result<(), TlsError> {
        self.current.store(Arc::new(pair.certified_key()?));
        Ok(())
    }

    /// The rustls server configuration: this store's certificate, HTTP/2 only (gRPC), client
    /// certificates verified when client CAs are set.
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions");
        let builder = match &self.client_cas {
            None => builder.with_no_client_auth(),
            Some(roots) => builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    roots.clone(),
                    provider,
                )
                .build()
                .expect("a non-empty root store builds a verifier"),
            ),
        };
        let mut cfg = builder.with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        cfg
    }

    /// Re-reads `dir`'s `tls.crt` and `tls.key` every `interval` and serves a changed, valid pair
    /// to new connections; an unreadable or invalid pair (a rotation half done) keeps the one
    /// in force and is logged.
    pub async fn watch_dir(
        self: Arc<Self>,
        dir: PathBuf,
        interval: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut last = from_dir(&dir).ok().map(|p| (p.cert_pem, p.key_pem));
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let pair = match from_dir(&dir) {
                Ok(p) => p,
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot read the certificate; serving the one in force");
                    }
                    failing = true;
                    continue;
                }
            };
            let key = (pair.cert_pem.clone(), pair.key_pem.clone());
            if last.as_ref() == Some(&key) {
                failing = false;
                continue;
            }
            match self.replace(&pair) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), "certificate reloaded: new connections get it");
                    last = Some(key);
                    failing = false;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "invalid certificate files; serving the one in force");
                    }
                    failing = true;
                }
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS connections accepted on `listener`: each handshake runs in its own task, so a slow
/// or silent client holds up nobody else; failed handshakes are logged at debug and dropped.
pub fn incoming(
    listener: TcpListener,
    config: rustls::ServerConfig,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "accept failed");
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_checked_before_they_are_served() {
        let a = self_signed().unwrap();
        let b = self_signed().unwrap();
        let store = CertStore::new(&a).unwrap();
        let mixed = CertPair {
            cert_pem: a.cert_pem.clone(),
            key_pem: b.key_pem.clone(),
        };
        assert!(matches!(
            store.replace(&mixed),
            Err(TlsError::Invalid { .. })
        ));
        let garbage = CertPair {
            cert_pem: "not pem".into(),
            key_pem: a.key_pem.clone(),
        };
        let e = store.replace(&garbage).unwrap_err();
        assert_eq!(e.to_string(), "tls.crt: no certificate in the PEM");
        store.replace(&b).unwrap();
        let served = store.current.load();
        assert_eq!(
            served.cert[0].as_ref(),
            b.certified_key().unwrap().cert[0].as_ref()
        );
    }
}
