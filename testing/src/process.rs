//! Server processes: finding their binaries, starting them on a port
//! without losing a race for it, waiting until they accept work, and
//! reading what a binary prints as it starts.
//!
//! A free port is only free until someone binds it: [`free_port`] binds,
//! drops and hands the number on, and before the server binds it another
//! test's server, or any client's outgoing connection (which draws from
//! the same range), may take it. So a [`PortServer`] is started through
//! [`start_on_free_ports`], which picks new ports when the server reports
//! [`HarnessError::PortTaken`], and restarted through
//! [`restart_on_same_ports`], which keeps its ports (the services under
//! test were given its address) and waits for them to come free.

use std::{
    future::Future,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpStream},
    time::Instant,
};

use crate::{HarnessError, START_TIMEOUT};

/// Ports tried before giving up on starting a server.
const PORT_ATTEMPTS: u32 = 5;
/// How long a restart waits for its old ports to come free.
const RESTART_PORT_WAIT: Duration = Duration::from_secs(5);
/// Pause between two attempts at a restart's old ports.
const RESTART_PORT_PAUSE: Duration = Duration::from_millis(100);

/// A server process the harness starts on ports it picks.
pub(crate) trait PortServer {
    /// Picks new free ports for the next start.
    async fn pick_ports(&mut self) -> Result<(), HarnessError>;
    /// Starts the process on the ports it holds and waits until it is
    /// ready; [`HarnessError::PortTaken`] when another process holds one.
    async fn start_process(&mut self) -> Result<(), HarnessError>;
}

/// Starts `server` on free ports, picking new ones (up to
/// [`PORT_ATTEMPTS`] times) when another process took one first.
pub(crate) async fn start_on_free_ports(server: &mut impl PortServer) -> Result<(), HarnessError> {
    let mut attempt = 1;
    loop {
        server.pick_ports().await?;
        match server.start_process().await {
            Err(HarnessError::PortTaken { .. }) if attempt < PORT_ATTEMPTS => attempt += 1,
            started => return started,
        }
    }
}

/// Starts `server` again on the ports it had, which tests rely on: the
/// services under test were given its address. A port momentarily held
/// by another process (a client's outgoing connection, say) is tried
/// again for up to [`RESTART_PORT_WAIT`]; after that the restart fails
/// and says so.
pub(crate) async fn restart_on_same_ports(
    server: &mut impl PortServer,
) -> Result<(), HarnessError> {
    let deadline = Instant::now() + RESTART_PORT_WAIT;
    loop {
        match server.start_process().await {
            Err(HarnessError::PortTaken { server, detail }) => {
                if Instant::now() >= deadline {
                    return Err(HarnessError::Failed(format!(
                        "{server} cannot restart on the port it had, which the code under \
                         test was given: another process has held it for \
                         {RESTART_PORT_WAIT:?} ({detail})"
                    )));
                }
                tokio::time::sleep(RESTART_PORT_PAUSE).await;
            }
            started => return started,
        }
    }
}

/// A port on 127.0.0.1 that was free a moment ago (and may not be by the
/// time it is bound: see [`start_on_free_ports`]).
pub async fn free_port() -> Result<u16, HarnessError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(HarnessError::io("binding a free port"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(HarnessError::io("reading a free port"))
}

/// Finds `binary` on PATH or in one of `extra_dirs`; a missing binary is an
/// error that says how to `install` it.
pub fn find_binary(
    binary: &'static str,
    extra_dirs: &[PathBuf],
    install: &'static str,
) -> Result<PathBuf, HarnessError> {
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let dirs: Vec<&Path> = path_dirs
        .iter()
        .chain(extra_dirs)
        .map(PathBuf::as_path)
        .collect();
    dirs.iter()
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| HarnessError::MissingBinary {
            binary,
            looked_in: dirs
                .iter()
                .map(|dir| dir.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
            install,
        })
}

/// Waits until `ready` answers true, or fails after [`START_TIMEOUT`].
pub async fn wait_until<F, Fut>(what: &str, mut ready: F) -> Result<(), HarnessError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if ready().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(HarnessError::Failed(format!(
        "{what} did not become ready within {START_TIMEOUT:?}"
    )))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub async fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

/// Sends `signal` (such as `libc::SIGINT`) to the process `pid`.
pub fn signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) only sends a signal; it touches no memory of ours.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// The CPU time (user and system) the process `pid` has used, in seconds,
/// from `/proc/<pid>/stat`; 0 when it cannot be read (the process is gone).
/// Benchmarks read it before and after a run.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = stat_seconds(pid);
    stat.utime + stat.stime
}

/// The CPU time of `pid` and all its children, living or gone, in seconds:
/// its own, its children's that ended (`cutime`, `cstime`: waited for), and
/// each living child's. For a server that forks a process per connection
/// (PostgreSQL's postmaster): read before and after a run, the difference
/// is what the server spent on it.
pub fn cpu_seconds_with_children(pid: u32) -> f64 {
    let stat = stat_seconds(pid);
    let living_children: f64 = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|child| child.parse::<u32>().ok())
        .map(cpu_seconds_with_children)
        .sum();
    stat.utime + stat.stime + stat.cutime + stat.cstime + living_children
}

/// The CPU times of `/proc/<pid>/stat`, in seconds (0 when unreadable).
struct StatSeconds {
    utime: f64,
    stime: f64,
    cutime: f64,
    cstime: f64,
}

fn stat_seconds(pid: u32) -> StatSeconds {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which may itself hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // SAFETY: sysconf only reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let seconds = |i: usize| {
        fields
            .get(i)
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0)
            / per_second
    };
    StatSeconds {
        utime: seconds(11),
        stime: seconds(12),
        cutime: seconds(13),
        cstime: seconds(14),
    }
}

/// Runs `binary --health-check --listen addr`, as Docker's HEALTHCHECK
/// does in the images, and returns what it printed and its exit status.
pub async fn run_health_check(binary: &str, addr: std::net::SocketAddr) -> std::process::Output {
    tokio::process::Command::new(binary)
        .args(["--health-check", "--listen", &addr.to_string()])
        .output()
        .await
        .unwrap_or_else(|error| panic!("cannot run {binary}: {error}"))
}

/// What a process printed (stdout and stderr, colours removed) until it
/// printed `until`, exited, or [`START_TIMEOUT`] passed; and its exit code
/// if it exited by itself. A process still running is killed.
pub async fn output_until(
    mut command: tokio::process::Command,
    until: &str,
) -> (Option<i32>, String) {
    use tokio::io::AsyncReadExt;
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        panic!("no pipes to {command:?}");
    };
    let (mut raw, mut text) = (String::new(), String::new());
    let (mut out_buf, mut err_buf) = ([0u8; 4096], [0u8; 4096]);
    let (mut out_open, mut err_open) = (true, true);
    let deadline = Instant::now() + START_TIMEOUT;
    while (out_open || err_open) && !text.contains(until) && Instant::now() < deadline {
        tokio::select! {
            read = stdout.read(&mut out_buf), if out_open => match read {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => raw.push_str(&String::from_utf8_lossy(&out_buf[..n])),
            },
            read = stderr.read(&mut err_buf), if err_open => match read {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => raw.push_str(&String::from_utf8_lossy(&err_buf[..n])),
            },
            () = tokio::time::sleep_until(deadline) => {}
        }
        text = strip_colours(&raw);
    }
    let code = if text.contains(until) {
        let _ = child.kill().await;
        None
    } else {
        tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|status| status.code())
    };
    (code, text)
}

/// `text` without ANSI colour sequences (`ESC [ ... m`).
fn strip_colours(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// A command for `binary` as a settings test runs it: none of `settings`
/// (the variables the binary reads) inherited from this process, then
/// `env` set in order (later pairs win), and `RUST_LOG=info`.
pub fn settings_command<'a>(
    binary: &str,
    settings: Vec<String>,
    env: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary);
    command.env("RUST_LOG", "info");
    for name in settings {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// `output` up to the end of the first line holding `marker` (all of it if
/// none does): what a binary printed while starting, without what its
/// running later adds (a dependency's retry warnings, say).
pub fn through_line<'a>(output: &'a str, marker: &str) -> &'a str {
    output
        .find(marker)
        .map(|start| {
            output[start..]
                .find('\n')
                .map_or(output, |end| &output[..start + end])
        })
        .unwrap_or(output)
}

/// What a server's own log says a failed start ended on: the port was taken
/// ([`HarnessError::PortTaken`], which [`start_on_free_ports`] retries on
/// other ports), or anything else, with `failure` and the whole log.
pub async fn start_failure(server: &'static str, log_path: &Path, failure: String) -> HarnessError {
    const ADDRESS_IN_USE: &str = "Address already in use";
    let log = tokio::fs::read_to_string(log_path)
        .await
        .unwrap_or_default();
    match log.lines().find(|line| line.contains(ADDRESS_IN_USE)) {
        Some(line) => HarnessError::PortTaken {
            server,
            detail: line.trim().to_owned(),
        },
        None => HarnessError::Failed(format!("{failure}; {server} log:\n{log}")),
    }
}

/// The jemalloc options `binary` runs with, as jemalloc prints them at
/// exit (`opt.narenas: 1`, one a line), after `--help`; empty when the
/// binary does not run on jemalloc. `_RJEM_MALLOC_CONF=stats_print:true`
/// only adds the printing: the binary's own settings stay in force.
pub async fn jemalloc_options(binary: &str) -> Result<Vec<String>, HarnessError> {
    let output = tokio::process::Command::new(binary)
        .arg("--help")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .await
        .map_err(HarnessError::io("running a binary with --help"))?;
    Ok(String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("opt."))
        .map(str::to_owned)
        .collect())
}

/// Checks that `binary` runs on jemalloc with every option of `conf`
/// (jemalloc's `key:value,...` form, such as
/// `votemesh::allocator::MALLOC_CONF`, a trailing NUL allowed) in force.
pub async fn assert_runs_on_jemalloc(binary: &str, conf: &[u8]) {
    let options = jemalloc_options(binary)
        .await
        .unwrap_or_else(|error| panic!("cannot run {binary}: {error}"));
    assert!(
        !options.is_empty(),
        "{binary} does not run on jemalloc (no statistics printed at exit)"
    );
    let conf = String::from_utf8_lossy(conf);
    for setting in conf.trim_end_matches('\0').split(',') {
        let (key, value) = setting
            .split_once(':')
            .unwrap_or_else(|| panic!("{setting:?} is not key:value"));
        let expected = format!("opt.{key}: {value}");
        assert!(
            options
                .iter()
                .any(|option| option == &expected || option.starts_with(&format!("{expected} "))),
            "{binary} runs without {setting}: its options are {options:#?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server whose first `taken` starts find their port taken.
    struct Contested {
        taken: u32,
        picks: u32,
        starts: u32,
    }

    impl PortServer for Contested {
        async fn pick_ports(&mut self) -> Result<(), HarnessError> {
            self.picks += 1;
            Ok(())
        }

        async fn start_process(&mut self) -> Result<(), HarnessError> {
            self.starts += 1;
            if self.starts <= self.taken {
                return Err(HarnessError::PortTaken {
                    server: "contested",
                    detail: "Address already in use".into(),
                });
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_start_that_lost_the_race_for_its_port_picks_another() {
        let mut server = Contested {
            taken: 2,
            picks: 0,
            starts: 0,
        };
        start_on_free_ports(&mut server).await.unwrap();
        assert_eq!((server.picks, server.starts), (3, 3));
    }

    #[tokio::test]
    async fn a_start_that_keeps_losing_gives_up_after_its_attempts() {
        let mut server = Contested {
            taken: u32::MAX,
            picks: 0,
            starts: 0,
        };
        let error = start_on_free_ports(&mut server).await.unwrap_err();
        assert!(matches!(error, HarnessError::PortTaken { .. }), "{error}");
        assert_eq!(server.starts, PORT_ATTEMPTS);
    }
}
