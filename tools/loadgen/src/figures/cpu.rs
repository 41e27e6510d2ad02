//! Where the CPU goes during one load run: CPU time by process, read from
//! `/proc` (and `getrusage` for the load generator, which has exited by
//! the time its run is read), per thousand calls.
//!
//! ```text
//! before ─► snapshot of utime+stime per process group ─┐
//! load run (votemesh-loadgen, a child of the suite)     ├─► CPU ms per 1000 calls, per group
//! after  ─► snapshot again; getrusage(CHILDREN) delta ─┘    and busy cores (CPU s / wall s)
//! ```
//!
//! On a machine whose cores are all busy during a run, throughput is the
//! cores divided by the CPU time one call costs across every process, so
//! this table says why a figure is below its floor and which process to
//! profile. [`busy_by_second`] reads the same figures every second of a
//! run, to set beside the generator's own timeline.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

/// A set of processes measured as one: a root process, and with
/// `children` every process whose parent it is (PostgreSQL's backends).
#[derive(Clone, Debug)]
pub struct Group {
    pub name: String,
    pub pid: u32,
    pub children: bool,
}

impl Group {
    pub fn one(name: &str, pid: Option<u32>) -> Option<Self> {
        pid.map(|pid| Self {
            name: name.to_owned(),
            pid,
            children: false,
        })
    }

    pub fn tree(name: &str, pid: Option<u32>) -> Option<Self> {
        pid.map(|pid| Self {
            name: name.to_owned(),
            pid,
            children: true,
        })
    }

    /// CPU time (user + system) of the group's living processes, since
    /// they started.
    pub fn cpu(&self) -> Duration {
        ticks_to_duration(self.ticks_by_pid().values().sum())
    }

    /// CPU ticks of each living process of the group, since it started.
    fn ticks_by_pid(&self) -> HashMap<u32, u64> {
        let mut pids = vec![self.pid];
        if self.children {
            pids.extend(children_of(self.pid));
        }
        pids.into_iter()
            .filter_map(|pid| Some((pid, process_ticks(pid)?.1)))
            .collect()
    }

    /// The group's CPU time since `before` ([`Self::ticks_by_pid`] then).
    fn cpu_since(&self, before: &HashMap<u32, u64>) -> Duration {
        cpu_between(before, &self.ticks_by_pid())
    }
}

/// The CPU time from `before` to `now` (each [`Group::ticks_by_pid`]),
/// process by process: one started since counts from its start, and one
/// that exited since (a PostgreSQL backend whose connection was recycled)
/// drops out instead of taking its whole past off the sum.
fn cpu_between(before: &HashMap<u32, u64>, now: &HashMap<u32, u64>) -> Duration {
    let ticks = now
        .iter()
        .map(|(pid, now)| now.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum();
    ticks_to_duration(ticks)
}

/// CPU time of each group, and of the suite's exited children.
pub struct Meter {
    groups: Vec<Group>,
    before: Vec<HashMap<u32, u64>>,
    children_before: Duration,
    started: Instant,
}

/// What one run cost, per group.
pub struct Cost {
    pub wall: Duration,
    /// `(group, CPU time)`, the load generator first.
    pub by_group: Vec<(String, Duration)>,
}

impl Meter {
    /// Starts measuring `groups` (and the load generator, as the suite's
    /// children that exit meanwhile).
    pub fn start(groups: Vec<Group>) -> Self {
        let before = groups.iter().map(Group::ticks_by_pid).collect();
        Self {
            groups,
            before,
            children_before: exited_children_cpu(),
            started: Instant::now(),
        }
    }

    pub fn stop(self) -> Cost {
        let wall = self.started.elapsed();
        let mut by_group = vec![(
            "loadgen".to_owned(),
            exited_children_cpu().saturating_sub(self.children_before),
        )];
        for (group, before) in self.groups.iter().zip(&self.before) {
            by_group.push((group.name.clone(), group.cpu_since(before)));
        }
        Cost { wall, by_group }
    }
}

impl Cost {
    /// Adds a group measured on its own (a process started during the run:
    /// its CPU time since it started).
    pub fn add(&mut self, name: &str, cpu: Duration) {
        self.by_group.push((name.to_owned(), cpu));
    }

    pub fn total(&self) -> Duration {
        self.by_group.iter().map(|(_, cpu)| *cpu).sum()
    }

    /// Cores kept busy on average: all CPU time over the wall time.
    pub fn busy_cores(&self) -> f64 {
        self.total().as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    /// Cores `group` kept busy on average (0 when it was not measured).
    pub fn cores(&self, group: &str) -> f64 {
        self.by_group
            .iter()
            .find(|(name, _)| name == group)
            .map_or(0.0, |(_, cpu)| {
                cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
            })
    }

    /// CPU milliseconds per thousand calls (= µs per call) of `group`.
    pub fn per_thousand(&self, group: &str, calls: u64) -> Option<f64> {
        self.by_group
            .iter()
            .find(|(name, _)| name == group)
            .map(|(_, cpu)| cpu.as_secs_f64() * 1e6 / calls.max(1) as f64)
    }

    pub fn total_per_thousand(&self, calls: u64) -> f64 {
        self.total().as_secs_f64() * 1e6 / calls.max(1) as f64
    }
}

/// The cores each of `groups` kept busy, second by second (in their
/// order), from now until `stop`. The clock's tick (`_SC_CLK_TCK`, 100 a
/// second on Linux) makes each figure good to about 0.01 of a core.
pub async fn busy_by_second(groups: Vec<Group>, stop: CancellationToken) -> Vec<Vec<f64>> {
    let mut seconds = Vec::new();
    let mut before: Vec<HashMap<u32, u64>> = groups.iter().map(Group::ticks_by_pid).collect();
    let mut then = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let wall = then.elapsed().as_secs_f64().max(1e-9);
        then = Instant::now();
        let busy = groups
            .iter()
            .zip(&mut before)
            .map(|(group, before)| {
                // One read of /proc per group and second: the end of this
                // second is the start of the next.
                let now = group.ticks_by_pid();
                let cores = cpu_between(before, &now).as_secs_f64() / wall;
                *before = now;
                cores
            })
            .collect();
        seconds.push(busy);
    }
    seconds
}

/// `(parent pid, utime + stime in ticks)` of a living process.
fn process_ticks(pid: u32) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it are
    // plain numbers: state, ppid, ..., utime (14), stime (15).
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let parent = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((parent, utime + stime))
}

/// The living processes whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&child| process_ticks(child).is_some_and(|(parent, _)| parent == pid))
        .collect()
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(ticks as f64 / per_second)
}

/// User + system time of every child of the suite that has exited and
/// been waited for.
fn exited_children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}
