//! # votemesh
//!
//! The classic voting app rebuilt as a gRPC service mesh. This root crate
//! holds what every votemesh service shares, each piece once: the gRPC
//! contracts, configuration, telemetry, health wiring, the shutdown signal,
//! the vote queue and the database schema. The services themselves live in
//! `services/` (vote, worker, result) and `gateway/`.
//!
//! A vote travels like this:
//!
//! ```text
//! CastVote ──► vote service ──LPUSH──► Redis `votes` ──► worker ──txn──► Postgres
//!                                                                  (votes + tally)
//! GetResults / WatchResults ◄── result service ◄── tally ◄────────────────┘
//! ```
//!
//! ## Layout
//!
//! - [`proto`]: the code generated from `proto/votemesh/v1/*.proto` and the
//!   descriptor set that server reflection serves.
//! - [`config`]: command-line flags and environment variables shared by the
//!   binaries (Redis, database, poll options, TLS, listen addresses, the
//!   flags every component has), one file per group.
//! - [`component`]: the frame of every component binary's `main`
//!   (`--health-check`, telemetry, serve, exit code), and how a component
//!   names its listener in logs.
//! - [`metrics`]: Prometheus metrics: the recorder, the layers measuring
//!   every RPC and HTTP request, and `/metrics`.
//! - [`poll`]: the poll's options and lookups by option id.
//! - [`backoff`]: how long loops wait before retrying a failed dependency.
//! - [`ballot`]: what makes a vote well-formed (voter id and option id rules).
//! - [`queue`]: the queue between the vote service and the worker, with a
//!   Redis implementation (plaintext or TLS, `rediss://`) and an
//!   in-process one behind the same traits.
//! - [`store`]: the database schema (SeaORM entities and migrations) and
//!   connecting to Postgres (verified TLS with `sslmode=verify-full`) or
//!   SQLite.
//! - [`health`]: `grpc.health.v1` wiring: liveness and readiness names.
//! - [`grpc`]: the one place a gRPC server is assembled (health, reflection,
//!   tracing, limits).
//! - [`admission`]: who gets in when a server is busy: requests wait for
//!   capacity within their deadline; sustained overload is refused fast
//!   (the gRPC servers and the gateway).
//! - [`deadline`]: a call's deadline as the `grpc-timeout` header carries
//!   it, read and written once for the client's retries, the metrics and
//!   idempotency windows.
//! - [`idempotency`]: idempotency keys, which make a retried CastVote the
//!   same vote, never a later one.
//! - [`client`]: the client side: traced channels between components, the
//!   health Check a probe makes, and `--health-check`.
//! - [`tls`]: mutual TLS: the identity files (reloaded when they change),
//!   the TLS listener and connector, and authorization by identity.
//! - [`supervise`]: who owns each background task and what its end does:
//!   a critical task that ends stops its component (so it is restarted
//!   instead of serving with nothing behind it); a side job is restarted
//!   (`supervise::restarting`).
//! - [`telemetry`]: logs, OpenTelemetry export and trace-context propagation.
//! - [`shutdown`]: the SIGTERM / Ctrl-C signal as a cancellation token.
//! - `allocator` (feature `jemalloc`): jemalloc and its settings, which
//!   each binary installs with `use_jemalloc!`.
//!
//! Modules depend on each other in one direction only: `grpc` (server) and
//! `client` both use `telemetry`; `health` is server-side and knows no
//! client. The test harness (real Redis and PostgreSQL, services under
//! test) is the separate dev-only crate `votemesh-testing` in `testing/`.
//! The design behind the data path and the health model is written down in
//! `docs/DESIGN.md`.

pub mod admission;
#[cfg(feature = "jemalloc")]
pub mod allocator;
pub mod backoff;
pub mod ballot;
pub mod client;
pub mod component;
pub mod config;
pub mod deadline;
pub mod grpc;
pub mod health;
pub mod idempotency;
pub mod metrics;
pub mod poll;
pub mod proto;
pub mod queue;
pub mod shutdown;
pub mod store;
pub mod supervise;
pub mod telemetry;
pub mod tls;
