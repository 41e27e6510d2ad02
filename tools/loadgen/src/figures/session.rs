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
