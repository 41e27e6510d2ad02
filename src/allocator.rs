//! The memory allocator of the binaries on the request path (the gateway,
//! the vote service, the all-in-one): jemalloc, with settings that hand
//! freed memory back to the kernel. A binary opts in with one line in its
//! `main.rs`, behind its default feature `jemalloc` (which turns on this
//! crate's):
//!
//! ```ignore
//! #[cfg(feature = "jemalloc")]
//! votemesh::use_jemalloc!();
//! ```
//!
//! Why jemalloc, not glibc's malloc, measured side by side
//! (docs/BENCHMARKS.md):
//! - **CPU.** glibc's malloc took about a fifth of the vote service's CPU
//!   per CastVote (`_int_malloc`, `_int_free`, `malloc_consolidate`, and
//!   its arena lock contended between the runtime's worker threads, which
//!   the kernel's futex wake-ups show). On jemalloc the vote service spends
//!   about 13 % less CPU per call, the gateway about 12 % less per vote.
//! - **Memory.** The gateway's memory follows its open connections: an
//!   open-loop burst (each vote-service stall holds up hundreds of
//!   requests, each on its own browser connection) took it from 15 to
//!   about 85 MiB, and glibc kept nearly all of that after the connections
//!   closed. With jemalloc and [`MALLOC_CONF`] the same run peaked at
//!   29 MiB and fell back after each burst.
//!
//! The worker and the result service stay on glibc's malloc: jemalloc
//! adds about 1 MiB to an idle process (its metadata, its background
//! thread, its code), which they cannot spare under the 15 MiB idle goal,
//! and the worker's drain CPU moved within the runs' scatter.
//!
//! Built without `jemalloc` (`--no-default-features`), a binary uses the
//! system's malloc, which heap profilers such as heaptrack hook
//! (tools/heap-profile.sh).

/// The allocator [`use_jemalloc!`] installs.
pub use tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read before `main` runs (`_RJEM_MALLOC_CONF` in
/// the environment still overrides them, one by one). With its defaults
/// the gateway never handed back what a stall's burst of connections had
/// used: its RSS climbed by 0.9 MiB a minute at 2,000 votes/s, while a
/// heap profile of the same run showed the memory in use flat (3-16 MiB,
/// no trend). So freed pages go back to the kernel within about a second
/// (`dirty_decay_ms`; `muzzy_decay_ms:0`: purged outright, not lazily
/// freed pages that still count in RSS until the kernel wants them), by a
/// background thread rather than only when an arena next allocates, and
/// all from one arena rather than one per thread (a service runs one
/// worker thread a core, and each thread's cache keeps the arena's lock
/// off the common path). The four were measured together, not one
/// by one (docs/BENCHMARKS.md#the-gateways-allocator).
pub const MALLOC_CONF: &[u8] =
    b"background_thread:true,narenas:1,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Installs jemalloc ([`Jemalloc`]) as the binary's global allocator,
/// with [`MALLOC_CONF`]. Invoke it once, at the top level of a binary's
/// `main.rs`.
#[macro_export]
macro_rules! use_jemalloc {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::allocator::Jemalloc = $crate::allocator::Jemalloc;

        /// jemalloc reads its settings from this symbol before `main` runs.
        #[unsafe(export_name = "_rjem_malloc_conf")]
        static JEMALLOC_CONF: &u8 = &$crate::allocator::MALLOC_CONF[0];
    };
}
