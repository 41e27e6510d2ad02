//! A throwaway PostgreSQL cluster for one test.

use std::{
    fs,
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
};

use tempfile::TempDir;

use super::{HarnessError, find_binary, free_port, port_open, wait_until};
use crate::config::ConnectionUrl;

const INSTALL: &str = "apt-get install -y postgresql";
/// The account PostgreSQL runs as when the tests run as root.
const POSTGRES_ACCOUNT: &str = "postgres";

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
}

impl PostgresServer {
    /// Creates a cluster with `initdb` and starts it on a free loopback port.
    pub fn start() -> Result<Self, HarnessError> {
        let initdb = find_binary("initdb", &debian_bin_dirs(), INSTALL)?;
        let bin_dir = initdb.parent().map(PathBuf::from).unwrap_or_default();
        let bin_dir = fs::canonicalize(&initdb)
            .ok()
            .and_then(|real| real.parent().map(PathBuf::from))
            .unwrap_or(bin_dir);
        let dir = tempfile::Builder::new()
            .prefix("votemesh-pg-")
            .tempdir()
            .map_err(HarnessError::io("creating a PostgreSQL directory"))?;
        let run_as = if is_root() {
            let ids = account_ids(POSTGRES_ACCOUNT)?;
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1))
                .map_err(HarnessError::io("handing the data directory to postgres"))?;
            Some(ids)
        } else {
            None
        };
        let mut server = Self {
            port: free_port()?,
            bin_dir,
            dir,
            run_as,
            child: None,
        };
        server.initdb()?;
        server.start_process()?;
        Ok(server)
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

    /// Stops the server (fast shutdown: open sessions are cut).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let data_dir = self.data_dir();
            let stopped = self
                .command("pg_ctl")
                .arg("stop")
                .arg("-D")
                .arg(&data_dir)
                .args(["-m", "fast", "-w"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if !stopped {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, with the same data.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop();
        self.start_process()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
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

    fn initdb(&self) -> Result<(), HarnessError> {
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .map_err(HarnessError::io("running initdb"))?;
        check("initdb", &output)
    }

    fn start_process(&mut self) -> Result<(), HarnessError> {
        let log = fs::File::create(self.dir.path().join("postgres.log"))
            .map_err(HarnessError::io("creating the PostgreSQL log"))?;
        if let Some((uid, gid)) = self.run_as {
            let _ = std::os::unix::fs::chown(
                self.dir.path().join("postgres.log"),
                Some(uid),
                Some(gid),
            );
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
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(HarnessError::io("starting postgres"))?;
        self.child = Some(child);
        let port = self.port;
        wait_until("postgres", || {
            port_open(port)
                && self
                    .command("pg_isready")
                    .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
                    .status()
                    .is_ok_and(|status| status.success())
        })
        .map_err(|error| {
            let log = fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default();
            HarnessError::Failed(format!("{error}; postgres log:\n{log}"))
        })
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where Debian keeps the PostgreSQL server binaries, newest version first.
fn debian_bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort_by_key(|dir| {
        std::cmp::Reverse(
            dir.parent()
                .and_then(|version| version.file_name())
                .and_then(|name| name.to_str())
                .and_then(|name| name.parse::<u32>().ok())
                .unwrap_or(0),
        )
    });
    dirs
}

fn is_root() -> bool {
    // The effective uid of this process, as the kernel reports it.
    fs::read_to_string("/proc/self/status")
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
fn account_ids(account: &str) -> Result<(u32, u32), HarnessError> {
    let passwd =
        fs::read_to_string("/etc/passwd").map_err(HarnessError::io("reading /etc/passwd"))?;
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
