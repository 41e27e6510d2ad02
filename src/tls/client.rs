//! The client side of mutual TLS: a connector for tonic channels that
//! opens a TCP connection to the address in the URI and handshakes with
//! the client configuration current at that moment (so a rotated
//! certificate is presented on the next connection). The server's
//! certificate is verified against the CA and against `server_name`, the
//! name the caller asked for (`vote` in `http://vote:5000`), not the
//! address it resolved to: certificates name Services, not pod addresses.

use std::{future::Future, io, pin::Pin, task::Poll};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::codegen::http::Uri;

use super::Tls;

/// Connects to a URI's host and port over TLS, verifying `server_name`.
#[derive(Clone, Debug)]
pub struct TlsConnector {
    tls: Tls,
    server_name: ServerName<'static>,
}

impl TlsConnector {
    /// A connector presenting `tls`'s identity and expecting a server
    /// certificate that names `server_name` (a DNS name or an IP address).
    pub fn new(tls: Tls, server_name: &str) -> io::Result<Self> {
        let server_name = ServerName::try_from(server_name.to_owned()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{server_name:?} is not a DNS name or IP address"),
            )
        })?;
        Ok(Self { tls, server_name })
    }
}

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.tls.client_config());
        let server_name = self.server_name.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .map(|host| host.trim_start_matches('[').trim_end_matches(']'))
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}"))
                })?;
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            Ok(TokioIo::new(connector.connect(server_name, tcp).await?))
        })
    }
}
