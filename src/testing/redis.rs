//! A throwaway `redis-server` for one test.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::Duration,
};

use tempfile::TempDir;

use super::{HarnessError, find_binary, free_port, wait_until};
use crate::config::ConnectionUrl;

const INSTALL: &str = "apt-get install -y redis-server";

/// A running `redis-server` without persistence, stopped when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free loopback port.
    pub fn start() -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("votemesh-redis-")
            .tempdir()
            .map_err(HarnessError::io("creating a Redis directory"))?;
        let mut server = Self {
            port: free_port()?,
            dir,
            child: None,
        };
        server.start_process()?;
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
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: no persistence).
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop();
        self.start_process()
    }

    /// Runs one Redis command given as words and returns the raw reply
    /// text, for tests that inspect keys directly.
    pub fn command(&self, words: &[&str]) -> Result<String, HarnessError> {
        Self::command_on(self.port, words)
    }

    /// [`RedisServer::command`] on the server at `port`, without a handle
    /// (for a command run from another thread, such as a blocking one).
    pub fn command_on(port: u16, words: &[&str]) -> Result<String, HarnessError> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .map_err(HarnessError::io("connecting to Redis"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(HarnessError::io("setting a read timeout"))?;
        let mut request = format!("*{}\r\n", words.len());
        for word in words {
            request.push_str(&format!("${}\r\n{}\r\n", word.len(), word));
        }
        stream
            .write_all(request.as_bytes())
            .map_err(HarnessError::io("writing to Redis"))?;
        let mut reply = vec![0u8; 64 * 1024];
        let read = stream
            .read(&mut reply)
            .map_err(HarnessError::io("reading from Redis"))?;
        Ok(String::from_utf8_lossy(&reply[..read]).into_owned())
    }

    fn start_process(&mut self) -> Result<(), HarnessError> {
        let binary = find_binary("redis-server", &[], INSTALL)?;
        let child = Command::new(&binary)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(HarnessError::io(format!("starting {}", binary.display())))?;
        self.child = Some(child);
        wait_until("redis-server", || {
            Self::command_on(self.port, &["PING"])
                .map(|reply| reply.starts_with("+PONG"))
                .unwrap_or(false)
        })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
