//! Mutual TLS between votemesh components, with rustls (ring, the crypto
//! provider sqlx already brings) and no sidecar.
//!
//! Each component has one workload identity: a certificate and key
//! (`TLS_CERT_FILE`, `TLS_KEY_FILE`) used both as server and as client, and
//! the CA bundle it trusts (`TLS_CA_FILE`). [`Tls`] holds the rustls
//! configurations built from those files and re-reads the files every
//! [`RELOAD_INTERVAL`] (with `tokio::fs`, off the runtime's workers): when
//! they change (Kubernetes swaps a mounted Secret's files in place),
//! connections made afterwards use the new ones; connections already open
//! keep theirs. Files that do not make a valid
//! identity (half written, key and certificate not matching) are logged and
//! the previous identity stays in use. The reload task belongs to the
//! [`Tls`] (it ends with the last clone) and is restarted if it panics
//! ([`crate::supervise::restarting`]: the identity in use stays valid
//! meanwhile, so the component goes on serving).
//!
//! ```text
//! files ─► Tls (reloaded) ─► server::incoming: TCP accept ─► TLS handshake
//!                │            (client certificate required, verified
//!                │            against the CA) ─► PeerInfo (SANs) ─► tonic
//!                └─────────► client::TlsConnector: TCP ─► TLS (own
//!                             certificate, server's verified by name)
//! ```
//!
//! - [`server`]: the TLS listener a gRPC server serves on, and the
//!   caller's identity it hands to each request.
//! - [`client`]: the connector of client channels.
//! - [`authorize`]: the tower layer that lets only allowed identities call
//!   a component's API.

pub mod authorize;
pub mod client;
pub mod server;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock, Weak},
    time::Duration,
};

use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use thiserror::Error;

use tokio_util::sync::DropGuard;

use crate::{config::TlsArgs, supervise};

/// How often the certificate files are read again to notice a rotation.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// ALPN protocols a server offers: gRPC needs h2; HTTP/1.1 for `/metrics`.
const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The TLS settings cannot make an identity.
#[derive(Debug, Error)]
pub enum TlsError {
    /// Some of the three files are set and some are not.
    #[error("mutual TLS needs TLS_CERT_FILE, TLS_KEY_FILE and TLS_CA_FILE together; missing: {0}")]
    Incomplete(String),
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no PEM item of the kind expected.
    #[error("{path} holds no {what}")]
    Missing {
        /// The file.
        path: PathBuf,
        /// What was looked for ("PEM certificate", "PEM private key").
        what: &'static str,
    },
    /// A PEM block is malformed (a truncated bundle, say): refused rather
    /// than loaded in part.
    #[error("{path} holds a malformed PEM block: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What the PEM reader said.
        reason: String,
    },
    /// rustls refused the certificate, the key or the CA.
    #[error("{what}: {source}")]
    Rustls {
        /// What was being built.
        what: &'static str,
        /// Why.
        source: rustls::Error,
    },
    /// The client verifier cannot be built (an empty or unusable CA).
    #[error("the CA bundle cannot verify clients: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The three files of one identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificates trusted for peers (PEM).
    pub ca: PathBuf,
}

impl TlsFiles {
    /// The files named by `args`: `None` when none is set (plaintext), an
    /// error naming the missing ones when only some are.
    pub fn from_args(args: &TlsArgs) -> Result<Option<Self>, TlsError> {
        match (&args.cert_file, &args.key_file, &args.ca_file) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(Self {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            })),
            (cert, key, ca) => {
                let missing: Vec<&str> = [
                    (cert.is_none(), "TLS_CERT_FILE"),
                    (key.is_none(), "TLS_KEY_FILE"),
                    (ca.is_none(), "TLS_CA_FILE"),
                ]
                .into_iter()
                .filter_map(|(missing, name)| missing.then_some(name))
                .collect();
                Err(TlsError::Incomplete(missing.join(", ")))
            }
        }
    }
}

/// The PEM text of one version of an identity's files. `Debug` shows no
/// key.
#[derive(Clone)]
pub struct IdentityPem {
    /// The certificate chain, leaf first.
    pub cert: Vec<u8>,
    /// Its private key.
    pub key: Vec<u8>,
    /// The trusted CA certificates.
    pub ca: Vec<u8>,
}

impl std::fmt::Debug for IdentityPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityPem").finish_non_exhaustive()
    }
}

/// A component's TLS identity, kept in step with its files. Cheap to
/// clone; the reload task is owned by the clones together and ends with
/// the last one.
#[derive(Clone, Debug)]
pub struct Tls {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    files: TlsFiles,
    current: RwLock<Arc<Loaded>>,
    /// Ends the reload task when the last [`Tls`] is dropped.
    _reload: DropGuard,
}

/// The configurations built from one version of the files.
#[derive(Debug)]
struct Loaded {
    /// The files' bytes, to notice a change.
    raw: [Vec<u8>; 3],
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// The DNS and URI names of the own certificate.
    names: Vec<String>,
}

impl Tls {
    /// Loads the identity named by `args`, or `None` when TLS is not
    /// configured. Starts the task that reloads it, so call inside a tokio
    /// runtime.
    pub fn from_args(args: &TlsArgs) -> Result<Option<Self>, TlsError> {
        TlsFiles::from_args(args)?.map(Self::load).transpose()
    }

    /// Loads the identity in `files` and starts reloading it.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let loaded = Loaded::read(&files)?;
        let shared = Arc::new_cyclic(|shared: &Weak<Shared>| {
            let shared = shared.clone();
            Shared {
                files,
                current: RwLock::new(Arc::new(loaded)),
                _reload: supervise::restarting("TLS identity reload", move || {
                    reload(shared.clone())
                }),
            }
        });
        Ok(Self { shared })
    }

    /// The server configuration for a connection accepted now.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current().server.clone()
    }

    /// The client configuration for a connection made now.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.current().client.clone()
    }

    /// The names (DNS and URI SANs) of this component's certificate.
    pub fn names(&self) -> Vec<String> {
        self.current().names.clone()
    }

    /// The PEM text of the current files, for clients that are configured
    /// from PEM rather than from a rustls configuration (the Redis client:
    /// [`crate::queue::connect`]).
    pub fn pem(&self) -> IdentityPem {
        let [cert, key, ca] = self.current().raw.clone();
        IdentityPem { cert, key, ca }
    }

    fn current(&self) -> Arc<Loaded> {
        self.shared
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Re-reads the files every [`RELOAD_INTERVAL`] while a [`Tls`] is alive,
/// and swaps in what they hold when it changed and makes an identity.
async fn reload(shared: Weak<Shared>) {
    let mut failing = false;
    loop {
        tokio::time::sleep(RELOAD_INTERVAL).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        // Off the runtime's workers: tokio::fs reads on the blocking pool.
        let Ok(raw) = read_all_async(&shared.files).await else {
            // A file missing for a moment (a swap in progress): next time.
            continue;
        };
        let unchanged = shared
            .current
            .read()
            .map(|current| current.raw == raw)
            .unwrap_or(false);
        if unchanged {
            continue;
        }
        match Loaded::build(&shared.files, raw) {
            Ok(loaded) => {
                tracing::info!(names = %loaded.names.join(" "), "TLS certificate files changed: new connections use them");
                *shared
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
                failing = false;
            }
            Err(error) if !failing => {
                tracing::warn!(%error, "TLS certificate files changed but make no identity; keeping the previous one");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// [`read_all`] for the reload task, without blocking a runtime worker.
async fn read_all_async(files: &TlsFiles) -> Result<[Vec<u8>; 3], TlsError> {
    let read = |path: &Path| {
        let path = path.to_owned();
        async move {
            tokio::fs::read(&path)
                .await
                .map_err(|source| TlsError::Read { path, source })
        }
    };
    Ok([
        read(&files.cert).await?,
        read(&files.key).await?,
        read(&files.ca).await?,
    ])
}

/// The three files' bytes, read at start ([`Tls::load`] is synchronous).
fn read_all(files: &TlsFiles) -> Result<[Vec<u8>; 3], TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    Ok([read(&files.cert)?, read(&files.key)?, read(&files.ca)?])
}

/// The crypto provider of every votemesh TLS connection.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Loaded {
    fn read(files: &TlsFiles) -> Result<Self, TlsError> {
        Self::build(files, read_all(files)?)
    }

    fn build(files: &TlsFiles, raw: [Vec<u8>; 3]) -> Result<Self, TlsError> {
        let [cert_pem, key_pem, ca_pem] = &raw;
        let certs = certificates(&files.cert, cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::Missing {
            path: files.key.clone(),
            what: "PEM private key",
        })?;
        let mut roots = RootCertStore::empty();
        for ca in certificates(&files.ca, ca_pem)? {
            roots.add(ca).map_err(|source| TlsError::Rustls {
                what: "the CA certificate",
                source,
            })?;
        }
        let roots = Arc::new(roots);
        let names = certificate_names(&certs[0]);
        let protocols = |source| TlsError::Rustls {
            what: "TLS versions",
            source,
        };
        let identity = |source| TlsError::Rustls {
            what: "the certificate and key",
            source,
        };

        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider()).build()?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(protocols)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(identity)?;
        server.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();

        let mut client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(protocols)?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(identity)?;
        client.alpn_protocols = vec![b"h2".to_vec()];

        Ok(Self {
            raw,
            server: Arc::new(server),
            client: Arc::new(client),
            names,
        })
    }
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Malformed {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            path: path.to_owned(),
            what: "PEM certificate",
        });
    }
    Ok(certs)
}

/// The DNS and URI subject alternative names of `cert` (none if it does
/// not parse), which are what identities are matched against.
pub fn certificate_names(cert: &CertificateDer<'_>) -> Vec<String> {
    match webpki::EndEntityCert::try_from(cert) {
        Ok(cert) => cert
            .valid_dns_names()
            .chain(cert.valid_uri_names())
            .map(str::to_owned)
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_pem_bundle_is_refused_not_loaded_in_part() {
        let path = Path::new("ca.pem");
        let truncated = b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n";
        assert!(matches!(
            certificates(path, truncated),
            Err(TlsError::Malformed { .. })
        ));
        assert!(matches!(
            certificates(path, b"no PEM here"),
            Err(TlsError::Missing { .. })
        ));
    }
}
