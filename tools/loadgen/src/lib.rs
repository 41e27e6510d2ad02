//! # votemesh-loadgen
//!
//! votemesh's load generator, vote bot and gRPC floor, in one crate:
//!
//! ```text
//! Voters (who votes for what) ─► run: closed loop (c callers) or open loop (fixed rate)
//!     ─► Target: CastVote over gRPC | gateway POST /vote (form) | POST /api/vote (JSON)
//!     ─► Recorder: HDR histogram of latencies, counts, errors by kind ─► Summary (text / JSON)
//! ```
//!
//! The same binary runs as a long-lived vote bot at a gentle rate
//! (`run --rate 5 --forever`), and as `noop-server`: a tonic server
//! answering the same `votemesh.v1.VoteService` at once, the ceiling a
//! CastVote figure is compared with (the same generator drives both).
//!
//! ## Layout
//!
//! - [`cli`]: the binary's flags and environment variables.
//! - [`voters`]: the simulated voters: ids, choices, who changes their vote,
//!   and the tally their acknowledged votes add up to.
//! - [`target`]: where votes go (gRPC or the gateway's HTTP routes), with a
//!   check first that it is a votemesh server at all.
//! - [`recorder`]: latencies and counts shared by the callers.
//! - [`run`]: the closed and open loops, and the progress line.
//! - [`summary`]: what a run measured, as text and JSON.
//! - [`noop`]: the no-op VoteService.
//! - [`sse_floor`]: the live results floor: bare SSE streams, one write
//!   per event, read against the gateway's streams.
//! - [`refusal_floor`] and [`gateway_floor`]: hyper alone refusing every
//!   vote, and hyper and tonic alone translating each vote into a
//!   CastVote: what the gateway's refusals and its votes are read against.
//! - `figures` (with the `suite` feature): the benchmark suite, one module
//!   per figure plus the report; it starts real Redis, PostgreSQL and the
//!   services' binaries, and drives them with this crate's binary. The
//!   bench target (`cargo bench -p votemesh-loadgen --bench suite`, `benches/suite.rs`)
//!   and the smoke test (`tests/smoke.rs`) run it; the feature is on for
//!   them (this crate's dev-dependency on itself) and off in the
//!   `votemesh-loadgen` binary, which so does not carry the test harness.

pub mod accept;
pub mod cli;
#[cfg(feature = "suite")]
pub mod figures;
#[cfg(test)]
mod floor_client;
pub mod gateway_floor;
pub mod noop;
pub mod recorder;
pub mod refusal_floor;
pub mod run;
pub mod sse_floor;
pub mod summary;
pub mod target;
pub mod voters;
