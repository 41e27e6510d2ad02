//! A throwaway `redis-server` for one test, and raw commands against it.

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
    process::{find_binary, free_port, wait_until},
};

const INSTALL: &str = "apt-get install -y redis-server";
/// Longest a raw command waits for its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `redis-server` without persistence, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free loopback port.
    pub async fn start() -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("votemesh-redis-")
            .tempdir()
            .map_err(HarnessError::io("creating a Redis directory"))?;
        let mut server = Self {
            port: free_port().await?,
            dir,
            child: None,
        };
        server.start_process().await?;
        Ok(server)
    }

    /// The server's URL.
    pub fn url(&self) -> ConnectionUrl {
        ConnectionUrl::new(format!("redis://127.0.0.1:{}/", self.port))
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server at once (SIGKILL), as a crash or network loss would.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
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

    async fn start_process(&mut self) -> Result<(), HarnessError> {
        let binary = find_binary("redis-server", &[], INSTALL)?;
        let child = Command::new(&binary)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
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
