//! Trace export that never costs a vote: bounded, batched, and lossy on
//! purpose when the collector is down or slow.
//!
//! ```text
//! span ends ─► BoundedProcessor::on_end ─► (queue full? drop, count) ─► SDK batch queue
//!                                                                          │ its own thread
//!                    OTLP collector ◄── CountingExporter::export ◄── batches of spans
//!                                         (failed? drop the batch, count)
//! ```
//!
//! OpenTelemetry's `BatchSpanProcessor` already exports from its own thread
//! and never blocks the caller: a span enters a bounded queue with a
//! non-blocking send. What it does not give is a number to watch, so the two
//! wrappers here keep count, as `/metrics` shows:
//!
//! - `votemesh_trace_spans_exported_total`: spans the collector accepted;
//! - `votemesh_trace_spans_dropped_total{reason="queue_full"}`: spans
//!   dropped at once because [`ExportSettings::queue_size`] spans already
//!   wait (the collector is slower than the services, or each export waits
//!   for its timeout);
//! - `votemesh_trace_spans_dropped_total{reason="export_failed"}`: spans of
//!   batches the collector refused or did not answer in time
//!   (`OTEL_EXPORTER_OTLP_TIMEOUT`, 10 s by default).
//!
//! Each kind of loss is logged once when it starts, with the reason, and
//! once when export works again: a collector that is down for an hour is
//! two log lines, not one a batch. (The SDK's own per-batch error log is
//! turned off in [`super::DEFAULT_LOG_FILTER`] for that reason.)
//!
//! The queue bound is enforced here, at the size of the SDK's own queue, so
//! the SDK never drops a span uncounted: a span counts as queued from
//! [`BoundedProcessor::on_end`] until the export of its batch returns,
//! which is at least as long as it sits in the SDK's queue.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use opentelemetry::Context;
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{BatchConfigBuilder, BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor},
};

/// Spans waiting for export, at most, by default (the SDK's default).
pub const DEFAULT_QUEUE_SIZE: usize = 2048;

/// How spans are batched (the standard `OTEL_BSP_*` variables also apply:
/// `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
#[derive(Clone, Copy, Debug)]
pub struct ExportSettings {
    /// Most spans waiting for export; more are dropped (and counted).
    pub queue_size: usize,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            queue_size: DEFAULT_QUEUE_SIZE,
        }
    }
}

/// The span processor of every component: the SDK's batch processor over
/// `exporter`, with drops bounded, counted and logged once.
pub fn processor<E>(exporter: E, settings: ExportSettings) -> BoundedProcessor
where
    E: SpanExporter + 'static,
{
    let queue_size = settings.queue_size.max(1);
    let state = Arc::new(ExportState {
        queued: AtomicUsize::new(0),
        limit: queue_size,
        dropping_queue_full: AtomicBool::new(false),
        export_failing: AtomicBool::new(false),
    });
    let exporter = CountingExporter {
        inner: exporter,
        state: state.clone(),
    };
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(queue_size)
        .build();
    BoundedProcessor {
        inner: BatchSpanProcessor::new(exporter, config),
        state,
    }
}

/// Creates the export counters at zero, so every process exports them from
/// the start, whether it exports traces or not, and `rate()` over them
/// works before the first loss ([`crate::metrics::install`] calls it).
pub fn register_metrics() {
    metrics::counter!("votemesh_trace_spans_exported_total").increment(0);
    for reason in ["queue_full", "export_failed"] {
        metrics::counter!("votemesh_trace_spans_dropped_total", "reason" => reason).increment(0);
    }
}

/// What the processor and the exporter share.
#[derive(Debug)]
struct ExportState {
    /// Spans handed to the SDK whose export has not returned yet.
    queued: AtomicUsize,
    /// Most spans queued at once.
    limit: usize,
    /// Set while spans are dropped because the queue is full (logged once).
    dropping_queue_full: AtomicBool,
    /// Set while exports fail (logged once).
    export_failing: AtomicBool,
}

impl ExportState {
    /// Records `count` spans dropped for `reason`.
    fn dropped(&self, reason: &'static str, count: usize) {
        metrics::counter!("votemesh_trace_spans_dropped_total", "reason" => reason)
            .increment(count as u64);
    }
}

/// The SDK's batch processor behind a counted queue bound (see the module
/// documentation).
#[derive(Debug)]
pub struct BoundedProcessor {
    inner: BatchSpanProcessor,
    state: Arc<ExportState>,
}

impl SpanProcessor for BoundedProcessor {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        let state = &self.state;
        if state.queued.fetch_add(1, Ordering::AcqRel) >= state.limit {
            state.queued.fetch_sub(1, Ordering::AcqRel);
            state.dropped("queue_full", 1);
            if !state.dropping_queue_full.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    queue_size = state.limit,
                    "trace export is behind: dropping spans until the collector catches up \
                     (counted in votemesh_trace_spans_dropped_total)"
                );
            }
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// An exporter that counts what it exports and what it loses.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    state: Arc<ExportState>,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let count = batch.len();
        let result = self.inner.export(batch).await;
        let state = &self.state;
        state.queued.fetch_sub(count, Ordering::AcqRel);
        match &result {
            Ok(()) => {
                metrics::counter!("votemesh_trace_spans_exported_total").increment(count as u64);
                let recovered = state.export_failing.swap(false, Ordering::Relaxed);
                let caught_up = state.dropping_queue_full.swap(false, Ordering::Relaxed);
                if recovered || caught_up {
                    tracing::info!("trace export works again");
                }
            }
            Err(error) => {
                state.dropped("export_failed", count);
                if !state.export_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        %error,
                        "cannot export traces: dropping them until the collector answers \
                         (counted in votemesh_trace_spans_dropped_total)"
                    );
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
