//! A throwaway PostgreSQL cluster for one test.
//!
//! PostgreSQL refuses to run as root: when the tests run as root (as CI
//! does), `initdb` and `postgres` run as the `postgres` account that
//! Debian's package creates, in a directory that account owns.
//!
//! In TLS mode ([`PostgresServer::start_tls`]) the server presents a
//! certificate from a test CA and its `pg_hba.conf` admits TLS connections
//! only (`hostssl`): a plaintext connection is refused, so a test that
//! connects knows its connection is encrypted.

use std::{
    path::PathBuf,
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use tempfile::TempDir;
use tokio::process::{Child, Command};
use votemesh::config::ConnectionUrl;

use crate::{
    HarnessError, START_TIMEOUT,
    process::{
        PortServer, find_binary, free_port, port_open, restart_on_same_ports, signal,
        start_failure, start_on_free_ports,
    },
    tls::Identity,
};

const INSTALL: &str = "apt-get install -y postgresql";
/// The account PostgreSQL runs as when the tests run as root.
const POSTGRES_ACCOUNT: &str = "postgres";
/// How long a fast shutdown may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running PostgreSQL server (user `postgres`, trust authentication,
/// database `postgres`), stopped and deleted when dropped.
#[derive(Debug)]
pub struct PostgresServer {
    port: u16,
    bin_dir: PathBuf,
    dir: TempDir,
    /// uid and gid to run as, when the tests run as root.
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
    /// Whether the server runs with `ssl=on` and admits TLS only.
    tls: bool,
}

impl PostgresServer {
    /// Creates a cluster with `initdb` and starts it on a free loopback port.
    pub async fn start() -> Result<Self, HarnessError> {
        Self::start_with(None).await
    }

    /// [`PostgresServer::start`] with TLS on, presenting `identity` (which
    /// should name `127.0.0.1`, the host of [`PostgresServer::url`]), and
    /// TLS connections only.
    pub async fn start_tls(identity: &Identity) -> Result<Self, HarnessError> {
        Self::start_with(Some(identity)).await
    }

    async fn start_with(identity: Option<&Identity>) -> Result<Self, HarnessError> {
        let initdb = find_binary("initdb", &debian_bin_dirs().await, INSTALL)?;
        let bin_dir = tokio::fs::canonicalize(&initdb)
            .await
            .unwrap_or_else(|_| initdb.clone())
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default();
        let dir = tempfile::Builder::new()
            .prefix("votemesh-pg-")
            .tempdir()
            .map_err(HarnessError::io("creating a PostgreSQL directory"))?;
        let run_as = if is_root().await {
            let ids = account_ids(POSTGRES_ACCOUNT).await?;
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1))
                .map_err(HarnessError::io("handing the data directory to postgres"))?;
            Some(ids)
        } else {
            None
        };
        let mut server = Self {
            port: 0,
            bin_dir,
            dir,
            run_as,
            child: None,
            tls: identity.is_some(),
        };
        server.initdb().await?;
        if let Some(identity) = identity {
            server.write_tls_files(identity)?;
        }
        // The port is picked only now, after initdb's seconds, and picked
        // again if something took it before postgres bound it.
        start_on_free_ports(&mut server).await?;
        Ok(server)
    }

    /// The server's URL requiring a verified TLS connection
    /// (`sslmode=verify-full`) with the CA in `ca_file`.
    pub fn verify_full_url(&self, ca_file: &std::path::Path) -> ConnectionUrl {
        ConnectionUrl::new(format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            self.url().expose(),
            ca_file.display()
        ))
    }

    /// Writes the certificate, its key (0600, owned by the account the
    /// server runs as: PostgreSQL refuses a key others can read) and a
    /// `pg_hba.conf` that admits TLS connections only.
    fn write_tls_files(&self, identity: &Identity) -> Result<(), HarnessError> {
        use std::os::unix::fs::PermissionsExt;
        for (file, content, mode) in [
            ("server.crt", identity.cert_pem.as_str(), 0o644),
            ("server.key", identity.key_pem.as_str(), 0o600),
            (
                "pg_hba_tls.conf",
                "hostssl all all 127.0.0.1/32 trust\n",
                0o644,
            ),
        ] {
            let path = self.dir.path().join(file);
            std::fs::write(&path, content)
                .map_err(HarnessError::io(format!("writing PostgreSQL's {file}")))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(HarnessError::io(format!("setting the mode of {file}")))?;
            if let Some((uid, gid)) = self.run_as {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(HarnessError::io(format!("handing {file} to postgres")))?;
            }
        }
        Ok(())
    }

    /// The `-c` settings of TLS mode (none otherwise).
    fn tls_settings(&self) -> Vec<String> {
        if !self.tls {
            return Vec::new();
        }
        let file = |name: &str| self.dir.path().join(name).display().to_string();
        [
            "ssl=on".to_owned(),
            format!("ssl_cert_file={}", file("server.crt")),
            format!("ssl_key_file={}", file("server.key")),
            format!("hba_file={}", file("pg_hba_tls.conf")),
        ]
        .into_iter()
        .flat_map(|setting| ["-c".to_owned(), setting])
        .collect()
    }

    /// The server's URL (database `postgres`, user `postgres`).
    pub fn url(&self) -> ConnectionUrl {
        ConnectionUrl::new(format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.port
        ))
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id while it runs; its backends are its
    /// children (benchmarks read their CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Stops the server with a fast shutdown (open sessions are cut), as
    /// `pg_ctl stop -m fast` does, and waits until it exited.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                signal(pid, libc::SIGINT);
            }
            if tokio::time::timeout(STOP_TIMEOUT, child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }

    /// Starts the server again on the same port, with the same data; a
    /// port another process took meanwhile is waited for a few seconds,
    /// then the restart fails.
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop().await;
        restart_on_same_ports(self).await
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// A command for one of the PostgreSQL binaries, run as the right user.
    fn command(&self, binary: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(binary));
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command.current_dir(self.dir.path());
        command
    }

    async fn initdb(&self) -> Result<(), HarnessError> {
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8"])
            .args(["--locale=C", "--no-sync"])
            .output()
            .await
            .map_err(HarnessError::io("running initdb"))?;
        check("initdb", &output)
    }

    /// The exit status of our postgres, if it has exited.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    /// Whether the server on our port answers as PostgreSQL.
    async fn accepts_connections(&self) -> bool {
        let port = self.port.to_string();
        port_open(self.port).await
            && self
                .command("pg_isready")
                .args(["-h", "127.0.0.1", "-p", &port, "-q"])
                .status()
                .await
                .is_ok_and(|status| status.success())
    }
}

impl PortServer for PostgresServer {
    async fn pick_ports(&mut self) -> Result<(), HarnessError> {
        self.port = free_port().await?;
        Ok(())
    }

    /// Starts postgres on [`PostgresServer::port`] and waits until it
    /// accepts connections.
    async fn start_process(&mut self) -> Result<(), HarnessError> {
        let log = std::fs::File::create(self.log_path())
            .map_err(HarnessError::io("creating the PostgreSQL log"))?;
        if let Some((uid, gid)) = self.run_as {
            let _ = std::os::unix::fs::chown(self.log_path(), Some(uid), Some(gid));
        }
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .args(self.tls_settings())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(HarnessError::io("starting postgres"))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let failure = loop {
            // Whether ours exited is asked first, and again after the
            // answer: a postgres that lost its port exits at once, and
            // another one on that port must not pass for ours.
            if let Some(status) = self.exited() {
                break format!("postgres exited ({status}) before it was ready");
            }
            if self.accepts_connections().await && self.exited().is_none() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                break format!("postgres did not become ready within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Err(start_failure("postgres", &self.log_path(), failure).await)
    }
}

impl Drop for PostgresServer {
    /// Immediate shutdown (SIGQUIT): the postmaster ends its sessions and
    /// releases its shared memory before the directory is deleted. A drop
    /// cannot wait; tests that care stop the server first.
    fn drop(&mut self) {
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            signal(pid, libc::SIGQUIT);
        }
    }
}

/// Where Debian keeps the PostgreSQL server binaries, newest version first.
async fn debian_bin_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(mut entries) = tokio::fs::read_dir("/usr/lib/postgresql").await {
        while let Ok(Some(entry)) = entries.next_entry().await {
            let version = entry
                .file_name()
                .to_str()
                .and_then(|v| v.parse::<u32>().ok());
            dirs.push((version.unwrap_or(0), entry.path().join("bin")));
        }
    }
    dirs.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    dirs.into_iter().map(|(_, dir)| dir).collect()
}

async fn is_root() -> bool {
    // The effective uid of this process, as the kernel reports it.
    tokio::fs::read_to_string("/proc/self/status")
        .await
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(2).map(str::to_owned))
        })
        .is_some_and(|euid| euid == "0")
}

/// The uid and gid of a local account, from /etc/passwd.
async fn account_ids(account: &str) -> Result<(u32, u32), HarnessError> {
    let passwd = tokio::fs::read_to_string("/etc/passwd")
        .await
        .map_err(HarnessError::io("reading /etc/passwd"))?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&account))
        .and_then(|fields| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
        .ok_or_else(|| {
            HarnessError::Failed(format!(
                "running as root, PostgreSQL must run as the `{account}` account, which does not exist; \
                 install PostgreSQL with `{INSTALL}` (it creates the account)"
            ))
        })
}

fn check(what: &str, output: &Output) -> Result<(), HarnessError> {
    if output.status.success() {
        Ok(())
    } else {
        Err(HarnessError::Failed(format!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

/// The tally table as a map from option to count (summed over the
/// shards' rows), without zero counts: what tests compare with the votes
/// they cast.
pub async fn stored_tally(
    db: &sea_orm::DatabaseConnection,
) -> Result<std::collections::BTreeMap<String, i64>, sea_orm::DbErr> {
    use sea_orm::EntityTrait;
    let mut sums = std::collections::BTreeMap::<String, i64>::new();
    for row in votemesh::store::entity::tally::Entity::find()
        .all(db)
        .await?
    {
        *sums.entry(row.option_id).or_default() += row.count;
    }
    sums.retain(|_, count| *count != 0);
    Ok(sums)
}
