//! A component's mutual TLS: its identity files ([`TlsArgs`], used as
//! server and as client) and, for a gRPC server, who may call it and where
//! its plaintext health listener is ([`TlsServerArgs`]). [`crate::tls`]
//! turns them into a TLS configuration.

use std::{
    net::{Ipv6Addr, SocketAddr, SocketAddrV6},
    path::PathBuf,
};

use clap::Args;

use super::parse_listen_addr;

/// Default listen address of the plaintext health listener a gRPC server
/// opens when mutual TLS is on (the kubelet's gRPC probes speak no TLS):
/// every address, dual-stack, as the components' own (see `addr.rs`).
pub const DEFAULT_HEALTH_LISTEN: SocketAddr =
    SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 8081, 0, 0));

/// This component's identity for mutual TLS: its certificate and key (used
/// as server and as client) and the CA it trusts. All three or none: unset
/// means plaintext. See [`crate::tls`].
#[derive(Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// This component's certificate chain (PEM), as server and as client.
    #[arg(long = "tls-cert-file", env = "TLS_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// The private key of that certificate (PEM).
    #[arg(long = "tls-key-file", env = "TLS_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// The CA certificates this component trusts for its peers (PEM).
    #[arg(long = "tls-ca-file", env = "TLS_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

/// A gRPC server's mutual TLS: its identity, who may call its API, and the
/// plaintext health listener for the kubelet.
#[derive(Args, Clone, Debug)]
pub struct TlsServerArgs {
    /// Certificate, key and CA.
    #[command(flatten)]
    pub identity: TlsArgs,
    /// Identities (DNS or URI SANs, e.g. spiffe://votemesh/gateway) allowed
    /// to call this component's API, comma-separated; empty: any
    /// certificate from the CA. Health and reflection stay open.
    #[arg(
        long = "tls-allowed-clients",
        env = "TLS_ALLOWED_CLIENTS",
        value_delimiter = ','
    )]
    pub allowed_clients: Vec<String>,
    /// With TLS on: address of the plaintext listener that serves only
    /// gRPC health (and /metrics) for the kubelet's probes.
    #[arg(long = "health-listen", env = "HEALTH_LISTEN_ADDR", default_value_t = DEFAULT_HEALTH_LISTEN, value_parser = parse_listen_addr)]
    pub health_listen: SocketAddr,
}

impl Default for TlsServerArgs {
    fn default() -> Self {
        Self {
            identity: TlsArgs::default(),
            allowed_clients: Vec::new(),
            health_listen: DEFAULT_HEALTH_LISTEN,
        }
    }
}

impl TlsServerArgs {
    /// The allowed identities, blanks (a trailing comma) left out.
    pub fn allowed(&self) -> Vec<String> {
        self.allowed_clients
            .iter()
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .collect()
    }
}
