//! TLS for listeners whose security protocol is SSL (rustls, with ring's primitives): the
//! node's certificate chain and key, and optionally the CAs whose certificates clients must
//! present (mutual TLS), all from PEM files.
//!
//! The files are read once at start (`load`, before any shard serves: a bad file stops
//! the node with its name) and again on SIGHUP (`reload`), so a renewed certificate is
//! served without a restart. The configuration in use is one process-wide value
//! (`install`): every shard's listener takes the current one for each new connection;
//! connections already open keep the one they started with. A reload that fails keeps
//! the previous configuration and says why.

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use futures_rustls::TlsAcceptor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::TlsFiles;

/// The configuration new TLS connections get (`None` until `install`).
static CURRENT: RwLock<Option<Arc<ServerConfig>>> = RwLock::new(None);

/// Reads `files` into a server configuration. Every error names the file and what is wrong
/// with it (unreadable, no PEM item of the kind wanted, a key that does not match the
/// certificate, a CA file without certificates).
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let (Some(cert_path), Some(key_path)) = (&files.cert, &files.key) else {
        return Err("TLS needs tls-cert and tls-key".to_string());
    };
    let certs = certificates("tls-cert", cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("tls-key {}: no PEM private key read ({e})", key_path.display()))?;
    // ring's provider is deprecated in rustls 0.23.48 for lacking post-quantum key
    // exchange; the provider that has it (aws-lc-rs) needs cmake and minutes of C build,
    // and the Kafka clients here (librdkafka on OpenSSL 3.0) do not offer it anyway.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocol versions: {e}"))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca_path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("tls-client-ca", ca_path)? {
                roots.add(cert).map_err(|e| format!("tls-client-ca {}: {e}", ca_path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("tls-client-ca {}: {e}", ca_path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls-cert {} with tls-key {}: {e}", cert_path.display(), key_path.display()))?;
    Ok(Arc::new(config))
}

/// The certificates of a PEM file; at least one.
fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("{key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{key} {}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// Makes `config` the one new connections get.
pub fn install(config: Arc<ServerConfig>) {
    *CURRENT.write().unwrap_or_else(PoisonError::into_inner) = Some(config);
}

/// Reads `files` again and installs them; on an error the configuration in use stays.
pub fn reload(files: &TlsFiles) -> Result<(), String> {
    install(load(files)?);
    Ok(())
}

/// An acceptor with the current configuration (`None` before `install`).
#[must_use]
pub fn acceptor() -> Option<TlsAcceptor> {
    CURRENT.read().unwrap_or_else(PoisonError::into_inner).clone().map(TlsAcceptor::from)
}
