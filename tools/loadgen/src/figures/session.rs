//! Each service the suite starts runs in a session of its own, so that the
//! kernel shares the CPUs between the services as a deployment's
//! containers share a node's, not between whichever sessions they
//! happen to be in.
//!
//! With the scheduler's autogroups on (`kernel.sched_autogroup_enabled`,
//! the default of most desktop and many server kernels), CPU time is
//! shared first between sessions, then between the processes of each.
//! Started as plain children, every votemesh service shared the suite's
//! session, and so one session's share; PostgreSQL puts each of its
//! backends in a session of its own (`setsid` in every child it forks),
//! and each of those had as large a share as all the services together.
//! When the worker's backends got busy they took about half of the
//! system's core from the services: the vote service stopped for most
//! of a second, the gateway fell behind, and a sixth of the soak's
//! refusals under overload took more than 10 ms (docs/SOAK.md, the
//! sixteenth run). In a deployment each service is a container with a
//! cgroup of its own.
//!
//! ```text
//! suite ─ fork ─► setsid (a session, and an autogroup, of its own)
//!                 PR_SET_PDEATHSIG SIGTERM (ends with the suite's thread that started it)
//!                 ─ exec ─► service
//! ```
//!
//! In a session of its own a service no longer gets the terminal's
//! Ctrl-C with the suite; the parent-death signal stops it instead when
//! the suite dies. That signal follows the thread that forked the
//! service, which for the suite is one of its runtime's worker threads,
//! alive as long as the suite is.

use tokio::process::Command;

/// Makes `command`'s process start in a session of its own, and be sent
/// SIGTERM when the thread that started it ends.
pub fn own_session(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only
    // makes two async-signal-safe system calls.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// The state letter of `pid` in `/proc` (`Z` once it ended and waits to
    /// be reaped), or `None` once it is gone.
    fn state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat[stat.rfind(')')? + 2..].chars().next()
    }

    #[test]
    fn a_service_has_a_session_of_its_own_and_ends_with_the_thread_that_started_it() {
        let (pid, session) = std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut command = Command::new("sleep");
                command.arg("30");
                own_session(&mut command);
                let child = command.spawn().unwrap();
                let pid = child.id().unwrap();
                // SAFETY: getsid only reads the process's session id.
                let session = unsafe { libc::getsid(pid as libc::pid_t) };
                // Not killed on drop: what ends it must be the death signal.
                drop(child);
                (pid, session)
            })
        })
        .join()
        .unwrap();
        assert_eq!(session, pid as libc::pid_t, "not a session of its own");
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(state(pid), Some(state) if state != 'Z') {
            assert!(
                Instant::now() < deadline,
                "still running 10 s after the thread that started it ended"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
