//! Server processes: finding their binaries, free ports, and waiting until
//! they accept work.

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

/// A port on 127.0.0.1 that was free a moment ago.
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
