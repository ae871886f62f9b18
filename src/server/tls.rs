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

/// Go's names of the TLS 1.2 cipher suites rustls (ring) offers, and the suites. Go's other
/// names (CBC, RSA key exchange, RC4, 3DES) are refused: rustls does not implement them.
const TLS12_SUITES: &[(&str, rustls::CipherSuite)] = &[
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        rustls::CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        rustls::CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// Go's TLS 1.3 suite names: accepted in `--tls-cipher-suites` and, as in Go, without effect
/// (TLS 1.3 suites are not configurable).
const TLS13_NAMES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// The TLS 1.2 suites `--tls-cipher-suites` names (Go's names); empty means rustls' defaults.
pub fn cipher_suites(names: &[String]) -> Result<Vec<rustls::CipherSuite>, String> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        match TLS12_SUITES.iter().find(|(n, _)| *n == name) {
            Some((_, suite)) => out.push(*suite),
            None if TLS13_NAMES.contains(&name) => {}
            None => bad.push(format!("{name:?}")),
        }
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(format!(
            "{} {} not supported (Switchyard offers: {})",
            bad.join(", "),
            if bad.len() > 1 { "are" } else { "is" },
            TLS12_SUITES
                .iter()
                .map(|(n, _)| *n)
                .chain(TLS13_NAMES.iter().copied())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// Which TLS versions and TLS 1.2 suites a port offers (`--tls-min-version`,
/// `--tls-cipher-suites`). The default is rustls' safe defaults: TLS 1.2 and 1.3, AEAD suites.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsPolicy {
    /// Only TLS 1.3 when set.
    pub tls13_only: bool,
    /// TLS 1.2 suites offered; empty means all of rustls' suites.
    pub tls12_suites: Vec<rustls::CipherSuite>,
}

impl TlsPolicy {
    fn provider(&self) -> rustls::crypto::CryptoProvider {
        let mut provider = rustls::crypto::ring::default_provider();
        if !self.tls12_suites.is_empty() {
            provider.cipher_suites.retain(|s| match s {
                rustls::SupportedCipherSuite::Tls13(_) => true,
                rustls::SupportedCipherSuite::Tls12(_) => self.tls12_suites.contains(&s.suite()),
            });
        }
        provider
    }

    fn versions(&self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
        if self.tls13_only {
            TLS13_ONLY
        } else {
            rustls::DEFAULT_VERSIONS
        }
    }
}

/// The certificate served to new connections; replaceable at any time. With client CAs set,
/// only clients presenting a certificate from one of them may connect (mutual TLS).
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
    client_cas: Option<Arc<rustls::RootCertStore>>,
    policy: TlsPolicy,
}

impl CertStore {
    pub fn new(pair: &CertPair) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(pair.certified_key()?),
            client_cas: None,
            policy: TlsPolicy::default(),
        }))
    }

    /// A store for `pair`, requiring client certificates from `ca_pem` when given, offering
    /// what `policy` allows.
    pub fn build(
        pair: &CertPair,
        ca_pem: Option<&str>,
        what_ca: &str,
        policy: TlsPolicy,
    ) -> Result<Arc<Self>, TlsError> {
        let client_cas = match ca_pem {
            Some(pem) => Some(Arc::new(roots(pem, what_ca)?)),
            None => None,
        };
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(pair.certified_key()?),
            client_cas,
            policy,
        }))
    }

    /// Like [`CertStore::new`], requiring client certificates issued by a CA in `ca_pem`
    /// (`--client-ca-file`).
    pub fn with_client_cas(pair: &CertPair, ca_pem: &str) -> Result<Arc<Self>, TlsError> {
        Self::build(pair, Some(ca_pem), "--client-ca-file", TlsPolicy::default())
    }

    /// Serves `pair` to connections that start from now on.
    pub fn replace(&self, pair: &CertPair) -> Result<(), TlsError> {
        self.current.store(Arc::new(pair.certified_key()?));
        Ok(())
    }

    /// The rustls server configuration: this store's certificate, HTTP/2 only (gRPC), client
    /// certificates verified when client CAs are set.
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        self.server_config_for(b"h2")
    }

    /// [`Self::server_config`] offering the ALPN protocol `alpn` (`http/1.1` for /metrics).
    pub fn server_config_for(self: &Arc<Self>, alpn: &[u8]) -> rustls::ServerConfig {
        let provider = Arc::new(self.policy.provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(self.policy.versions())
            .expect("ring supports TLS 1.2 and 1.3 with the suites kept");
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
        cfg.alpn_protocols = vec![alpn.to_vec()];
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

/// The CA certificates in `pem`; `what` names the flag in errors.
fn roots(pem: &str, what: &str) -> Result<rustls::RootCertStore, TlsError> {
    let invalid = |reason: String| TlsError::Invalid {
        what: what.into(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| invalid(e.to_string()))?;
        roots.add(cert).map_err(|e| invalid(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(invalid("no CA certificate in the PEM".into()));
    }
    Ok(roots)
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

/// TLS connections as an axum listener, for `/metrics` over TLS (`--metrics-cert-dir`).
pub struct TlsListener {
    local: std::net::SocketAddr,
    incoming:
        std::pin::Pin<Box<dyn Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send>>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: rustls::ServerConfig) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(Self {
            local,
            incoming: Box::pin(incoming(listener, config)),
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        use futures::StreamExt;
        loop {
            match self.incoming.next().await {
                Some(Ok(tls)) => {
                    let peer = tls.get_ref().0.peer_addr().unwrap_or(self.local);
                    return (tls, peer);
                }
                Some(Err(_)) => continue,
                // The accept loop ended: nothing will ever arrive.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
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
        assert!(served.keys_match().is_ok());
        assert_eq!(
            served.cert[0].as_ref(),
            b.certified_key().unwrap().cert[0].as_ref()
        );
    }
}

#[cfg(test)]
mod policy_tests {
    use super::*;

    #[test]
    fn cipher_suite_names_are_go_names() {
        let names: Vec<String> = [
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            " TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
            "TLS_AES_128_GCM_SHA256",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            cipher_suites(&names).unwrap(),
            vec![
                rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            ]
        );
        let e = cipher_suites(&["TLS_RSA_WITH_AES_128_CBC_SHA".to_string()]).unwrap_err();
        assert!(e.starts_with("\"TLS_RSA_WITH_AES_128_CBC_SHA\" is not supported (Switchyard offers: TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,"), "{e}");
    }

    #[test]
    fn the_policy_limits_versions_and_tls12_suites() {
        let policy = TlsPolicy {
            tls13_only: false,
            tls12_suites: vec![rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384],
        };
        let suites: Vec<_> = policy
            .provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert!(suites.contains(&rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384));
        assert!(!suites.contains(&rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256));
        assert!(suites.contains(&rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
        assert_eq!(policy.versions().len(), 2);
        let only13 = TlsPolicy {
            tls13_only: true,
            ..TlsPolicy::default()
        };
        assert_eq!(only13.versions().len(), 1);
        let store = CertStore::build(&self_signed().unwrap(), None, "x", only13).unwrap();
        let _ = store.server_config_for(b"http/1.1");
    }
}
