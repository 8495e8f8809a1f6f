//! TLS with rustls: the certificate the webhook listener presents, and the roots the client for
//! each target trusts (the platform's, plus a target's own CA when it has a private one).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} from {path}: {detail}")]
    Pem { what: &'static str, path: PathBuf, detail: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("the certificate and key do not make a TLS server: {0}")]
    Server(rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |detail: String| TlsError::Pem { what: "certificates", path: path.to_owned(), detail };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

/// The webhook listener's TLS config: HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Pem {
        what: "a private key",
        path: files.key.clone(),
        detail: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Server)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Server)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What an outbound client trusts: the platform's roots plus `extra_ca` if given.
pub fn client_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    if let Some(e) = native.errors.first() {
        tracing::warn!("some platform CA roots could not be loaded: {e}");
    }
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra_ca {
        for cert in certificates(path)? {
            roots.add(cert).map_err(|e| TlsError::Pem {
                what: "a CA",
                path: path.to_owned(),
                detail: e.to_string(),
            })?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Server)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
