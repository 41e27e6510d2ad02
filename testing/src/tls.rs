//! Certificates for mutual TLS tests, made in the test with rcgen: a
//! throwaway CA, identities it issues (DNS and URI names, server and
//! client use, valid or already expired), and the three files a component
//! reads (`TLS_CERT_FILE`, `TLS_KEY_FILE`, `TLS_CA_FILE`), laid out as a
//! Kubernetes Secret volume is (`..data` a symlink to a versioned
//! directory) so a test can rotate them the way the kubelet does.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, date_time_ymd,
};
use votemesh::tls::TlsFiles;

/// A CA that exists only for one test.
pub struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    /// The CA certificate (PEM).
    pub cert_pem: String,
}

/// A certificate and its key, issued by a [`TestCa`].
#[derive(Clone, Debug)]
pub struct Identity {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PEM, PKCS#8).
    pub key_pem: String,
}

impl TestCa {
    /// A new CA called `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap_or_else(|error| panic!("a CA key: {error}"));
        let cert = params
            .self_signed(&key)
            .unwrap_or_else(|error| panic!("the CA certificate: {error}"));
        Self {
            cert_pem: cert.pem(),
            params,
            key,
        }
    }

    /// An identity named by `names`: each either a DNS name (`vote`,
    /// `localhost`) or a URI (`spiffe://votemesh/gateway`).
    pub fn issue(&self, names: &[&str]) -> Identity {
        self.issue_with(names, false)
    }

    /// An identity like [`TestCa::issue`]'s whose validity ended in 2020.
    pub fn issue_expired(&self, names: &[&str]) -> Identity {
        self.issue_with(names, true)
    }

    fn issue_with(&self, names: &[&str], expired: bool) -> Identity {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("votemesh"),
        );
        params.subject_alt_names = names
            .iter()
            .map(|name| {
                let value = || {
                    (*name)
                        .try_into()
                        .unwrap_or_else(|error| panic!("{name:?} as a SAN: {error}"))
                };
                if let Ok(ip) = name.parse() {
                    SanType::IpAddress(ip)
                } else if name.contains("://") {
                    SanType::URI(value())
                } else {
                    SanType::DnsName(value())
                }
            })
            .collect();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            params.not_before = date_time_ymd(2019, 1, 1);
            params.not_after = date_time_ymd(2020, 1, 1);
        }
        let key = KeyPair::generate().unwrap_or_else(|error| panic!("a key: {error}"));
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params
            .signed_by(&key, &issuer)
            .unwrap_or_else(|error| panic!("signing {names:?}: {error}"));
        Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// The certificate the TLS server at `addr` presents to a new connection
/// made with `tls`'s identity, verified for `server_name`.
pub async fn server_certificate(
    addr: std::net::SocketAddr,
    tls: &votemesh::tls::Tls,
    server_name: &str,
) -> std::io::Result<Vec<u8>> {
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let stream = tokio_rustls::TlsConnector::from(tls.client_config())
        .connect(name, tcp)
        .await?;
    let (_, session) = stream.get_ref();
    session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.to_vec())
        .ok_or_else(|| std::io::Error::other("no server certificate"))
}

/// The DER bytes of a PEM certificate, to compare with what a server
/// presents.
pub fn der_of(cert_pem: &str) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .unwrap_or_else(|error| panic!("not a PEM certificate: {error}"))
        .to_vec()
}

/// Counts versions of mounted identities, so each has its own directory.
static VERSION: AtomicU32 = AtomicU32::new(0);

/// An identity and a CA written in `dir` the way Kubernetes mounts a
/// Secret: `dir/tls.crt -> ..data/tls.crt`, `..data -> ..<version>`.
#[derive(Debug)]
pub struct MountedIdentity {
    dir: PathBuf,
}

impl MountedIdentity {
    /// Writes `identity` and `ca_pem` into `dir` (created if needed).
    pub fn write(dir: &Path, identity: &Identity, ca_pem: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap_or_else(|error| panic!("creating {dir:?}: {error}"));
        let mounted = Self {
            dir: dir.to_owned(),
        };
        mounted.rotate(identity, ca_pem);
        for file in ["tls.crt", "tls.key", "ca.crt"] {
            let link = dir.join(file);
            if !link.exists() {
                std::os::unix::fs::symlink(Path::new("..data").join(file), &link)
                    .unwrap_or_else(|error| panic!("linking {link:?}: {error}"));
            }
        }
        mounted
    }

    /// Replaces the files at once, as the kubelet does: a new version
    /// directory, then `..data` swapped to it with one rename.
    pub fn rotate(&self, identity: &Identity, ca_pem: &str) {
        let version = format!("..v{}", VERSION.fetch_add(1, Ordering::SeqCst));
        let versioned = self.dir.join(&version);
        std::fs::create_dir_all(&versioned)
            .unwrap_or_else(|error| panic!("creating {versioned:?}: {error}"));
        for (file, content) in [
            ("tls.crt", identity.cert_pem.as_str()),
            ("tls.key", identity.key_pem.as_str()),
            ("ca.crt", ca_pem),
        ] {
            std::fs::write(versioned.join(file), content)
                .unwrap_or_else(|error| panic!("writing {file}: {error}"));
        }
        let staged = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&staged);
        std::os::unix::fs::symlink(&version, &staged)
            .unwrap_or_else(|error| panic!("linking {staged:?}: {error}"));
        std::fs::rename(&staged, self.dir.join("..data"))
            .unwrap_or_else(|error| panic!("swapping ..data: {error}"));
    }

    /// The three files, for [`votemesh::tls::Tls::load`].
    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.dir.join("tls.crt"),
            key: self.dir.join("tls.key"),
            ca: self.dir.join("ca.crt"),
        }
    }

    /// The environment a binary reads them from.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let files = self.files();
        vec![
            ("TLS_CERT_FILE", files.cert.display().to_string()),
            ("TLS_KEY_FILE", files.key.display().to_string()),
            ("TLS_CA_FILE", files.ca.display().to_string()),
        ]
    }
}
