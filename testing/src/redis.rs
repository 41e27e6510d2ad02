//! A throwaway `redis-server` for one test, and raw commands against it.
//!
//! In TLS mode ([`RedisServer::start_tls`]) the server also listens with
//! TLS on a second port (Redis' `tls-port`), with a certificate from a test
//! CA; the plaintext port stays open on loopback for the harness' own raw
//! commands, and services under test are given [`RedisServer::tls_url`].

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use tempfile::TempDir;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::{Child, Command},
};
use votemesh::config::ConnectionUrl;

use crate::{
    HarnessError, START_TIMEOUT,
    process::{
        PortServer, find_binary, free_port, restart_on_same_ports, signal, start_failure,
        start_on_free_ports,
    },
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
    /// Whether it runs as a node of a Redis Cluster ([`crate::RedisCluster`]):
    /// its port then leaves port + 10000 free for the cluster bus.
    cluster_node: bool,
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

    /// A server in cluster mode (`--cluster-enabled yes`), not yet part of
    /// a cluster: [`crate::RedisCluster`] forms one from several. Its
    /// port is below 55535 and port + 10000 (the cluster bus) was free.
    pub(crate) async fn start_cluster_node() -> Result<Self, HarnessError> {
        let mut server = Self {
            port: 0,
            dir: temp_dir()?,
            child: None,
            tls_port: None,
            auth_clients: false,
            append_only: false,
            cluster_node: true,
        };
        start_on_free_ports(&mut server).await?;
        Ok(server)
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
            port: 0,
            dir,
            child: None,
            tls_port,
            auth_clients,
            append_only,
            cluster_node: false,
        };
        start_on_free_ports(&mut server).await?;
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
        // Port 0 for now: both ports are picked as the server starts.
        Self::launch(dir, Some(0), clients == ClientAuth::Required, false).await
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

    /// Starts the server again on the same ports (empty, unless started
    /// with an append-only file); a port another process took meanwhile
    /// is waited for a few seconds, then the restart fails.
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop().await;
        restart_on_same_ports(self).await
    }

    /// How many clients Redis holds in a blocking command (`INFO
    /// clients` → `blocked_clients`): a BLMOVE or BLPOP waiting for a
    /// value, or a write held by `CLIENT PAUSE WRITE`.
    pub async fn blocked_clients(&self) -> Result<u64, HarnessError> {
        let info = self.command(&["INFO", "clients"]).await?;
        info.lines()
            .find_map(|line| line.strip_prefix("blocked_clients:"))
            .and_then(|count| count.trim().parse().ok())
            .ok_or_else(|| {
                HarnessError::Failed(format!("no blocked_clients in INFO clients: {info}"))
            })
    }

    /// Waits until at least `n` clients are held in a blocking command
    /// ([`RedisServer::blocked_clients`]): what a test awaits to know that
    /// a blocking command it started is waiting in Redis now, not still on
    /// its way, as Redis' own tests do. Fails after [`START_TIMEOUT`].
    pub async fn wait_for_blocked_clients(&self, n: u64) -> Result<(), HarnessError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let blocked = self.blocked_clients().await?;
            if blocked >= n {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Failed(format!(
                    "{blocked} clients blocked in Redis after {START_TIMEOUT:?}, not {n}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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

    /// The cluster options of a cluster node (none otherwise): a node
    /// presumed failed after 2 s, so a test sees a replica take over soon.
    fn cluster_args(&self) -> Vec<String> {
        if !self.cluster_node {
            return Vec::new();
        }
        let config = self.dir.path().join("nodes.conf").display().to_string();
        [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &config,
            "--cluster-node-timeout",
            "2000",
            // A replica's first sync at once, not after the default 5 s.
            "--repl-diskless-sync-delay",
            "0",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The exit status of our redis-server, if it has exited.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    /// Whether the server answering on our port is ours (its
    /// `process_id` is our child's) and ready (PING answers PONG, not
    /// LOADING): another test's Redis may hold the port ours lost.
    async fn ours_and_ready(&self) -> bool {
        let Some(pid) = self.pid() else {
            return false;
        };
        let ours = Self::command_on(self.port, &["INFO", "server"])
            .await
            .is_ok_and(|info| info.contains(&format!("\r\nprocess_id:{pid}\r\n")));
        ours && Self::command_on(self.port, &["PING"])
            .await
            .is_ok_and(|reply| reply.starts_with("+PONG"))
    }
}

/// A free loopback port below 55535 whose cluster bus port (+ 10000) is
/// free too.
async fn free_port_with_bus() -> Result<u16, HarnessError> {
    for _ in 0..100 {
        let port = free_port().await?;
        if port < 55535 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return Ok(port);
        }
    }
    Err(HarnessError::Failed(
        "no free port below 55535 with a free cluster bus port in 100 tries".into(),
    ))
}

impl PortServer for RedisServer {
    async fn pick_ports(&mut self) -> Result<(), HarnessError> {
        self.port = if self.cluster_node {
            free_port_with_bus().await?
        } else {
            free_port().await?
        };
        if self.tls_port.is_some() {
            self.tls_port = Some(free_port().await?);
        }
        Ok(())
    }

    /// Starts redis-server on its port(s) and waits until it answers.
    async fn start_process(&mut self) -> Result<(), HarnessError> {
        let binary = find_binary("redis-server", &[], INSTALL)?;
        // A new log for each start: what it says is about this one.
        std::fs::File::create(self.log_path())
            .map_err(HarnessError::io("creating the Redis log"))?;
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
            .args(self.cluster_args())
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(HarnessError::io(format!("starting {}", binary.display())))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let failure = loop {
            if let Some(status) = self.exited() {
                break format!("redis-server exited ({status}) before it was ready");
            }
            if self.ours_and_ready().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                break format!("redis-server did not become ready within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Err(start_failure("redis-server", &self.log_path(), failure).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A redis-server that finds its port held by another Redis exits; the
    /// other one's answers must not pass for its own.
    #[tokio::test]
    async fn a_redis_that_lost_its_port_to_another_redis_does_not_pass_for_it() {
        let holder = RedisServer::start().await.unwrap();
        let mut loser = RedisServer {
            port: holder.port(),
            dir: temp_dir().unwrap(),
            child: None,
            tls_port: None,
            auth_clients: false,
            append_only: false,
            cluster_node: false,
        };
        let error = loser.start_process().await.unwrap_err();
        assert!(matches!(error, HarnessError::PortTaken { .. }), "{error}");
    }
}
