//! TLS for the ext_proc port: GIE serves TLS by default with a certificate it makes at start, and
//! gateways connect without verifying it; `--cert-path` loads `tls.crt` and `tls.key` instead.

use std::path::Path;

use tonic::transport::{Identity, ServerTlsConfig};

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
}

/// PEM certificate and key.
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

pub fn server_config(pair: &CertPair) -> ServerTlsConfig {
    ServerTlsConfig::new().identity(Identity::from_pem(&pair.cert_pem, &pair.key_pem))
}
