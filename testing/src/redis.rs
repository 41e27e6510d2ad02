//! A throwaway `redis-server` for one test, and raw commands against it.
//!
//! In TLS mode ([`RedisServer::start_tls`]) the server also listens with
//! TLS on a second port (Redis' `tls-port`), with a certificate from a test
//! CA; the plaintext port stays open on loopback for the harness' own raw
//! commands, and services under test are given [`RedisServer::tls_url`].

use std::{process::Stdio, time::Duration};

use tempfile::TempDir;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::{Child, Command},
};
use votemesh::config::ConnectionUrl;

use crate::{
    HarnessError,
    process::{find_binary, free_port, signal, wait_until},
    tls::Identity,
};

const INSTALL: &str = "apt-get install -y redis-server";

/// A new directory for one server's files, removed with it.
fn temp_dir() -> Result<TempDir, HarnessError> {
    tempfile::Builder::new()
        .prefix("votemesh-redis-")
        .tempdir()
        .map_err(HarnessError::io("creating a Redis directory"))
}

/// Longest a raw command waits for its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `redis-server`, without persistence unless started with an
/// append-only file ([`RedisServer::start_with_aof`]), killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// The TLS port, in TLS mode.
    tls_port: Option<u16>,
    /// Whether the TLS port requires a client certificate from the CA.
    auth_clients: bool,
    /// Whether every write goes to an append-only file in `dir` (fsync on
    /// each), which a restart reads back.
    append_only: bool,
}

/// Whether a TLS Redis asks its clients for a certificate
/// (`tls-auth-clients`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// `no`: any TLS client.
    None,
    /// `yes`: only clients with a certificate from the CA.
    Required,
}

impl RedisServer {
    /// Starts a server on a free loopback port.
    pub async fn start() -> Result<Self, HarnessError> {
        Self::launch(temp_dir()?, None, false, false).await
    }

    /// [`RedisServer::start`] with persistence as `k8s/` runs Redis: an
    /// append-only file, here written through on every command
    /// (`appendfsync always`), so a [`RedisServer::restart`], even after
    /// a kill, comes back with every acknowledged write.
    pub async fn start_with_aof() -> Result<Self, HarnessError> {
        Self::launch(temp_dir()?, None, false, true).await
    }

    /// A server with these settings, its files in `dir`, started.
    async fn launch(
        dir: TempDir,
        tls_port: Option<u16>,
        auth_clients: bool,
        append_only: bool,
    ) -> Result<Self, HarnessError> {
        let mut server = Self {
            port: free_port().await?,
            dir,
            child: None,
            tls_port,
            auth_clients,
            append_only,
        };
        server.start_process().await?;
        Ok(server)
    }

    /// Starts a server that also speaks TLS on a second port, presenting
    /// `identity` (which should name `127.0.0.1`, the host of
    /// [`RedisServer::tls_url`]) and checking client certificates against
    /// `ca_pem` when `clients` is [`ClientAuth::Required`].
    pub async fn start_tls(
        identity: &Identity,
        ca_pem: &str,
        clients: ClientAuth,
    ) -> Result<Self, HarnessError> {
        let dir = temp_dir()?;
        for (file, content) in [
            ("tls.crt", identity.cert_pem.as_str()),
            ("tls.key", identity.key_pem.as_str()),
            ("ca.crt", ca_pem),
        ] {
            std::fs::write(dir.path().join(file), content)
                .map_err(HarnessError::io(format!("writing Redis' {file}")))?;
        }
        let tls_port = Some(free_port().await?);
        Self::launch(dir, tls_port, clients == ClientAuth::Required, false).await
    }

    /// The `rediss://` URL of the TLS port (TLS mode only).
    pub fn tls_url(&self) -> ConnectionUrl {
        let port = self
            .tls_port
            .unwrap_or_else(|| panic!("this Redis was not started with TLS"));
        ConnectionUrl::new(format!("rediss://127.0.0.1:{port}/"))
    }

    /// The TLS port (TLS mode only).
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// The server's URL.
    pub fn url(&self) -> ConnectionUrl {
        ConnectionUrl::new(format!("redis://127.0.0.1:{}/", self.port))
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id while it runs (benchmarks read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Stops the server at once (SIGKILL), as a crash or network loss would.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Freezes the server (SIGSTOP): it keeps its port and connections but
    /// answers nothing, as a server stuck in a long command or a stalled
    /// host would, until [`RedisServer::thaw`].
    pub fn freeze(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGSTOP);
        }
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGCONT);
        }
    }

    /// Starts the server again on the same port (empty: no persistence).
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop().await;
        self.start_process().await
    }

    /// Runs one Redis command given as words and returns the raw reply
    /// (RESP text), for tests that inspect keys directly.
    pub async fn command(&self, words: &[&str]) -> Result<String, HarnessError> {
        Self::command_on(self.port, words).await
    }

    /// [`RedisServer::command`] on the server at `port`, without a handle
    /// (for a command run from another task, such as a blocking one).
    pub async fn command_on(port: u16, words: &[&str]) -> Result<String, HarnessError> {
        let mut request = format!("*{}\r\n", words.len());
        for word in words {
            request.push_str(&format!("${}\r\n{}\r\n", word.len(), word));
        }
        let exchange = async {
            let mut stream = TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(HarnessError::io("connecting to Redis"))?;
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(HarnessError::io("writing to Redis"))?;
            let mut reply = vec![0u8; 64 * 1024];
            let read = stream
                .read(&mut reply)
                .await
                .map_err(HarnessError::io("reading from Redis"))?;
            Ok(String::from_utf8_lossy(&reply[..read]).into_owned())
        };
        tokio::time::timeout(REPLY_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(HarnessError::Failed(format!(
                    "Redis did not answer {words:?} within {REPLY_TIMEOUT:?}"
                )))
            })
    }

    /// The TLS options of `redis-server` in TLS mode (none otherwise).
    fn tls_args(&self) -> Vec<String> {
        let Some(tls_port) = self.tls_port else {
            return Vec::new();
        };
        let file = |name: &str| self.dir.path().join(name).display().to_string();
        vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            file("tls.crt"),
            "--tls-key-file".into(),
            file("tls.key"),
            "--tls-ca-cert-file".into(),
            file("ca.crt"),
            "--tls-auth-clients".into(),
            if self.auth_clients { "yes" } else { "no" }.into(),
        ]
    }

    async fn start_process(&mut self) -> Result<(), HarnessError> {
        let binary = find_binary("redis-server", &[], INSTALL)?;
        let child = Command::new(&binary)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(if self.append_only {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "everysec"]
            })
            .args(self.tls_args())
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(HarnessError::io(format!("starting {}", binary.display())))?;
        self.child = Some(child);
        let port = self.port;
        wait_until("redis-server", || async move {
            Self::command_on(port, &["PING"])
                .await
                .is_ok_and(|reply| reply.starts_with("+PONG"))
        })
        .await
    }
}
