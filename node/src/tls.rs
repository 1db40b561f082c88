//! TLS for listeners whose security protocol is SSL (rustls, with ring's primitives): the
//! node's certificate chain and key, and optionally the CAs whose certificates clients must
//! present (mutual TLS), all from PEM files.
//!
//! The files are read once at start (`load` in the main thread, before any shard serves:
//! a bad file stops the node with its name) and again on SIGHUP, where the main thread
//! reads them to check them and, if they are good, bumps `GENERATION`. Shards share no
//! lock: each listener keeps its own acceptor (`ShardTls`) and reads the files again when
//! it sees a new generation at its next connection; so does the cluster link
//! (`ClusterTls`, with the cluster CA). Connections already open keep the
//! configuration they started with. A reload that fails (in the main thread, or later in
//! a shard) keeps the previous configuration and says why.

use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_rustls::TlsAcceptor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::TlsFiles;

/// How many times the TLS files were read again successfully (SIGHUP).
static GENERATION: AtomicU64 = AtomicU64::new(0);

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

/// Mutual TLS on the cluster link (`--cluster-tls-ca`): nodes accept only nodes whose
/// certificate the cluster CA signed, and connect only to such nodes, each presenting its
/// own `--tls-cert`. Read at start and again after a SIGHUP (`reload`): the connections
/// made after it use the new files, the open ones keep theirs.
pub struct ClusterTls {
    files: TlsFiles,
    ca: std::path::PathBuf,
    /// The ends read at start, and the generation then. After a SIGHUP (`reload`) the
    /// next connection in either direction reads the files again, into the thread's
    /// `RELOADED` (the link runs on shard 0, and shards share no lock); a failed read
    /// keeps the ends before it.
    started: (u64, ClusterEnds),
}

thread_local! {
    /// The cluster link's ends read after a reload, by cluster CA file, with their generation.
    static RELOADED: RefCell<Vec<(std::path::PathBuf, u64, ClusterEnds)>> = const { RefCell::new(Vec::new()) };
}

/// The two ends of the cluster link's TLS.
#[derive(Clone)]
struct ClusterEnds {
    acceptor: TlsAcceptor,
    connector: futures_rustls::TlsConnector,
}

impl ClusterTls {
    /// The acceptor for a peer's connection, of the current generation.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current_ends().acceptor
    }

    /// The connector for a connection to a peer, of the current generation.
    pub fn connector(&self) -> futures_rustls::TlsConnector {
        self.current_ends().connector
    }

    fn current_ends(&self) -> ClusterEnds {
        let generation = GENERATION.load(Ordering::Acquire);
        if generation == self.started.0 {
            return self.started.1.clone();
        }
        RELOADED.with(|reloaded| {
            let mut reloaded = reloaded.borrow_mut();
            let at = match reloaded.iter().position(|(ca, _, _)| *ca == self.ca) {
                Some(at) => at,
                None => {
                    reloaded.push((self.ca.clone(), self.started.0, self.started.1.clone()));
                    reloaded.len() - 1
                }
            };
            let entry = &mut reloaded[at];
            if entry.1 != generation {
                match cluster_ends(&self.files, &self.ca) {
                    Ok(ends) => {
                        tracing::info!("the cluster link's TLS files were read again (SIGHUP)");
                        entry.2 = ends;
                    }
                    Err(e) => {
                        tracing::error!(
                            "reading the cluster link's TLS files again failed, the previous ones stay: {e}"
                        );
                    }
                }
                entry.1 = generation;
            }
            entry.2.clone()
        })
    }
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterTls")
    }
}

/// The cluster link's TLS from `files` and the cluster CA `ca`; every error names the file.
/// Whoever holds a certificate the cluster CA signed is a node (the cluster link carries
/// replication and controller traffic, and nodes' requests of each other as the
/// cluster's own principal), so the cluster CA may not be the CA of Kafka clients'
/// certificates (`tls-client-ca`): the same file, or the same certificates, is refused.
pub fn cluster(files: &TlsFiles, ca: &Path) -> Result<ClusterTls, String> {
    let ends = cluster_ends(files, ca)?;
    let generation = GENERATION.load(Ordering::Acquire);
    Ok(ClusterTls { files: files.clone(), ca: ca.to_path_buf(), started: (generation, ends) })
}

/// The cluster link's acceptor and connector, read from the files.
fn cluster_ends(files: &TlsFiles, ca: &Path) -> Result<ClusterEnds, String> {
    if let Some(client_ca) = &files.client_ca {
        let same = std::fs::read(client_ca).ok().zip(std::fs::read(ca).ok()).is_some_and(|(a, b)| a == b);
        if same || client_ca == ca {
            return Err(format!(
                "cluster-tls-ca {} is also tls-client-ca: a Kafka client's certificate would admit it to the \
                 cluster link as a node; give the nodes a CA of their own",
                ca.display()
            ));
        }
    }
    let (Some(cert_path), Some(key_path)) = (&files.cert, &files.key) else {
        return Err("cluster-tls-ca needs tls-cert and tls-key (the node's certificate)".to_string());
    };
    let certs = certificates("tls-cert", cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("tls-key {}: no PEM private key read ({e})", key_path.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in certificates("cluster-tls-ca", ca)? {
        roots.add(cert).map_err(|e| format!("cluster-tls-ca {}: {e}", ca.display()))?;
    }
    let roots = Arc::new(roots);
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| format!("cluster-tls-ca {}: {e}", ca.display()))?;
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocol versions: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(|e| format!("tls-cert {} with tls-key {}: {e}", cert_path.display(), key_path.display()))?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocol versions: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| format!("tls-cert {} as a client certificate: {e}", cert_path.display()))?;
    Ok(ClusterEnds {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        connector: futures_rustls::TlsConnector::from(Arc::new(client)),
    })
}

/// Reads `files` again (SIGHUP, in the main thread), with the cluster CA `cluster_ca`
/// when the cluster link uses TLS; when they are good, the shards' listeners and the
/// cluster link read them too at their next connection. On an error nothing changes.
pub fn reload(files: &TlsFiles, cluster_ca: Option<&Path>) -> Result<(), String> {
    load(files)?;
    if let Some(ca) = cluster_ca {
        cluster_ends(files, ca)?;
    }
    GENERATION.fetch_add(1, Ordering::AcqRel);
    Ok(())
}

/// One listener's TLS acceptor on a shard, read from the files again after each reload.
pub struct ShardTls {
    files: TlsFiles,
    /// The acceptor and the generation it was read at.
    current: RefCell<Option<(u64, TlsAcceptor)>>,
}

impl ShardTls {
    #[must_use]
    pub fn new(files: TlsFiles) -> ShardTls {
        ShardTls { files, current: RefCell::new(None) }
    }

    /// The acceptor of the current generation; if reading the files for it fails, the
    /// previous one with the error to log (once per reload), or only the error when there
    /// is none.
    pub fn acceptor(&self) -> (Option<TlsAcceptor>, Option<String>) {
        let generation = GENERATION.load(Ordering::Acquire);
        let mut current = self.current.borrow_mut();
        if let Some((read_at, acceptor)) = current.as_ref() {
            if *read_at == generation {
                return (Some(acceptor.clone()), None);
            }
        }
        match load(&self.files) {
            Ok(config) => {
                let acceptor = TlsAcceptor::from(config);
                *current = Some((generation, acceptor.clone()));
                (Some(acceptor), None)
            }
            Err(e) => {
                // The previous acceptor stays, now for this generation too: the files are
                // not read again (nor the error logged again) before the next reload.
                if let Some((read_at, _)) = current.as_mut() {
                    *read_at = generation;
                }
                (current.as_ref().map(|(_, acceptor)| acceptor.clone()), Some(e))
            }
        }
    }
}
