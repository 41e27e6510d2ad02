//! CPU affinity for runs that must not let the load generator and the
//! system under test share cores.
//!
//! On a 2-core machine the generator competes with the services for the
//! same CPU: at 1.5 x capacity it spends 1.5 x the CPU it spent at
//! capacity, taken from the system it loads, so "served at overload" would
//! drop for a reason that is not the system's. Pinning puts the system on
//! one set of cores and the generator on the rest:
//!
//! ```text
//! services, Redis, PostgreSQL (every thread; PostgreSQL's backends too) ─► system CPUs
//! each votemesh-loadgen started while pinned (set before exec)          ─► generator CPUs
//! ```

use std::io;

/// The CPUs this process may run on (what it inherited), in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills the set it is given.
    let set = unsafe {
        let mut set = std::mem::zeroed::<libc::cpu_set_t>();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        set
    };
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads the set within its size.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes within it.
    unsafe {
        let mut set = std::mem::zeroed::<libc::cpu_set_t>();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        set
    }
}

fn set_thread_affinity(tid: libc::pid_t, set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: sched_setaffinity only reads the set.
    if unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), set) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Pins every thread of `pid` to `cpus`, and with `children` every thread
/// of the processes whose parent it is (PostgreSQL's backends; new ones
/// fork from the pinned parent and inherit its set).
pub fn pin(pid: u32, children: bool, cpus: &[usize]) -> io::Result<()> {
    let set = cpu_set(cpus);
    let mut pids = vec![pid];
    if children {
        pids.extend(super::cpu::children_of(pid));
    }
    for pid in pids {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))?;
        for task in tasks.flatten() {
            if let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) {
                // A thread that ended meanwhile is not an error.
                match set_thread_affinity(tid, &set) {
                    Err(error) if error.raw_os_error() == Some(libc::ESRCH) => {}
                    other => other?,
                }
            }
        }
    }
    Ok(())
}

/// Makes `command`'s process start on `cpus` (its threads inherit them).
pub fn pin_on_start(command: &mut tokio::process::Command, cpus: &[usize]) {
    let set = cpu_set(cpus);
    // SAFETY: the closure runs in the forked child before exec and only
    // makes one async-signal-safe system call on a set built beforehand.
    unsafe {
        command.pre_exec(move || set_thread_affinity(0, &set));
    }
}
