//! Logs and traces.
//!
//! [`init`] installs the `tracing` subscriber: logs filtered by `RUST_LOG`
//! ([`LogFormat`]: human-readable, coloured only on a terminal, or one JSON
//! object a line with the trace and span ids, for clusters), and an
//! OpenTelemetry layer that gives every span a trace id (so logs of one
//! vote can be found across services even without a collector) and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, exports spans over OTLP/gRPC.
//! Without an endpoint no exporter runs, so a laptop without a collector
//! stays quiet. Export is bounded and batched, and a collector that is down
//! or slow costs the services nothing but the spans, which are counted
//! ([`export`]).
//!
//! A vote's trace crosses every hop through W3C `traceparent` context:
//! - gRPC clients add it to request metadata ([`inject_trace_context`]);
//! - servers (gRPC and the HTTP gateway) open each request's span under it
//!   ([`server_span`]);
//! - the vote service writes it into the queued vote and the worker links
//!   its batch span to it ([`current_context_carrier`], [`context_from_carrier`]).

pub mod export;

use std::{collections::HashMap, io::IsTerminal, num::NonZeroUsize};

use clap::Args;
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector},
    trace::TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{SdkTracer, SdkTracerProvider},
};
use thiserror::Error;
use tonic::{
    codegen::http,
    metadata::{MetadataKey, MetadataMap, MetadataValue},
};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::{
    EnvFilter, Layer, filter::Targets, fmt::writer::BoxMakeWriter, layer::SubscriberExt,
    registry::LookupSpan, util::SubscriberInitExt,
};

/// The environment variable that sets the log filter.
pub const LOG_FILTER_ENV: &str = "RUST_LOG";

/// The log filter every component starts from: `info`, with the chattiest
/// dependencies at `warn`. `RUST_LOG` adds to it (see [`log_filter`]); this
/// is its one definition, so deployment files set only what they change.
/// The OpenTelemetry SDK and exporter are off: they would log an error for
/// every batch a missing collector refuses, and [`export`] reports that
/// once, with a counter.
pub const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn,sea_orm=warn,sea_orm_migration=warn,\
    h2=warn,hyper=warn,tower=warn,opentelemetry_sdk=off,opentelemetry_otlp=off";

/// The filter directives in force: [`DEFAULT_LOG_FILTER`], then those of
/// `RUST_LOG` (when set and not empty). A later directive for the same
/// target wins, so `RUST_LOG=debug` raises votemesh's own logs and keeps
/// the dependencies quiet, while `RUST_LOG=debug,sqlx=debug` opens sqlx too.
pub fn log_filter(rust_log: Option<&str>) -> String {
    match rust_log
        .map(str::trim)
        .filter(|directives| !directives.is_empty())
    {
        Some(directives) => format!("{DEFAULT_LOG_FILTER},{directives}"),
        None => DEFAULT_LOG_FILTER.to_owned(),
    }
}

/// Most links a span keeps: the SDK's default span limit
/// (`SpanLimits::max_links_per_span`); it drops any past it, so a caller
/// linking many traces (the worker's batch span) stops there instead of
/// decoding contexts for nothing.
pub const MAX_LINKS_PER_SPAN: usize = 128;

/// Trace settings (the standard OpenTelemetry environment names).
#[derive(Args, Clone, Debug, Default)]
pub struct TelemetryArgs {
    /// OTLP/gRPC collector endpoint, e.g. http://otel-collector:4317. Unset: no trace export.
    #[arg(long = "otlp-endpoint", env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_parser = crate::config::parse_endpoint)]
    pub otlp_endpoint: Option<String>,
    /// Service name on exported spans (default: the component's name).
    #[arg(long = "otel-service-name", env = "OTEL_SERVICE_NAME")]
    pub otel_service_name: Option<String>,
    /// Most spans waiting for export (default 2048); more are dropped and
    /// counted in votemesh_trace_spans_dropped_total, never waited for.
    #[arg(long = "otel-queue-size", env = "OTEL_BSP_MAX_QUEUE_SIZE")]
    pub otel_queue_size: Option<NonZeroUsize>,
    /// Log format: `text` (human-readable; coloured only on a terminal) or
    /// `json` (one object a line, with trace and span ids).
    #[arg(long = "log-format", env = "LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,
}

/// How logs are written (to standard output).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: one line an event, coloured when standard output is a
    /// terminal, plain otherwise (a file, a pipe, a pod's log).
    #[default]
    Text,
    /// For log pipelines: one JSON object a line with `timestamp`, `level`,
    /// `target`, `message`, the event's fields, and `openTelemetry`
    /// `traceId`/`spanId` when inside a span.
    Json,
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// Most spans waiting for export, as configured.
fn queue_size(args: &TelemetryArgs) -> usize {
    args.otel_queue_size
        .map_or(export::DEFAULT_QUEUE_SIZE, NonZeroUsize::get)
}

/// Telemetry could not be set up.
#[derive(Debug, Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (bad endpoint).
    #[error("cannot build the OTLP exporter for {endpoint}: {source}")]
    Exporter {
        /// The endpoint configured.
        endpoint: String,
        /// Why.
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// A global subscriber was already installed.
    #[error("a tracing subscriber is already installed: {0}")]
    AlreadyInstalled(#[from] tracing_subscriber::util::TryInitError),
}

/// Keeps the trace exporter alive; dropping it flushes pending spans.
#[must_use = "dropping the guard stops trace export"]
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("flushing traces failed: {error}");
        }
    }
}

/// Installs logging (to stdout) and, if an endpoint is configured, trace
/// export for the component named `component` (such as `vote`). Call
/// once, inside the tokio runtime, before anything logs.
pub fn init(component: &str, args: &TelemetryArgs) -> Result<TelemetryGuard, TelemetryError> {
    init_logging_to(component, args, LogStream::Stdout)
}

/// [`init`] for a command-line tool whose stdout is its result (the load
/// generator's `--json` summary): its logs go to stderr.
pub fn init_for_tool(
    component: &str,
    args: &TelemetryArgs,
) -> Result<TelemetryGuard, TelemetryError> {
    init_logging_to(component, args, LogStream::Stderr)
}

/// Where logs are written.
#[derive(Clone, Copy)]
enum LogStream {
    Stdout,
    Stderr,
}

fn init_logging_to(
    component: &str,
    args: &TelemetryArgs,
    stream: LogStream,
) -> Result<TelemetryGuard, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let rust_log = std::env::var(LOG_FILTER_ENV).ok();
    let log_filter = EnvFilter::builder().parse_lossy(log_filter(rust_log.as_deref()));
    // One writer, chosen once, for either format.
    let (writer, is_terminal) = match stream {
        LogStream::Stdout => (
            BoxMakeWriter::new(std::io::stdout),
            std::io::stdout().is_terminal(),
        ),
        LogStream::Stderr => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
    };
    let logs = match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(is_terminal)
            .with_writer(writer)
            .with_filter(log_filter)
            .boxed(),
        LogFormat::Json => json_subscriber::layer()
            .with_writer(writer)
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_opentelemetry_ids(true)
            .with_filter(log_filter)
            .boxed(),
    };

    let endpoint = args.otlp_endpoint.clone().filter(|e| !e.trim().is_empty());
    let service_name = args
        .otel_service_name
        .clone()
        .unwrap_or_else(|| format!("votemesh-{component}"));
    let mut provider = SdkTracerProvider::builder().with_resource(
        Resource::builder()
            .with_service_name(service_name.clone())
            .build(),
    );
    if let Some(endpoint) = &endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|source| TelemetryError::Exporter {
                endpoint: endpoint.clone(),
                source,
            })?;
        let settings = export::ExportSettings {
            queue_size: queue_size(args),
        };
        provider = provider.with_span_processor(export::processor(exporter, settings));
    }
    let provider = provider.build();
    let tracer = provider.tracer("votemesh");
    // The exporter speaks gRPC itself: keep its own transport out of the traces.
    let traced = Targets::new()
        .with_default(tracing::Level::INFO)
        .with_target("h2", tracing::level_filters::LevelFilter::OFF)
        .with_target("hyper", tracing::level_filters::LevelFilter::OFF)
        .with_target("tonic", tracing::level_filters::LevelFilter::OFF)
        .with_target("tower", tracing::level_filters::LevelFilter::OFF)
        .with_target("opentelemetry", tracing::level_filters::LevelFilter::OFF)
        .with_target(
            "opentelemetry_sdk",
            tracing::level_filters::LevelFilter::OFF,
        )
        .with_target(
            "opentelemetry_otlp",
            tracing::level_filters::LevelFilter::OFF,
        );
    let traces = trace_layer(tracer).with_filter(traced);
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()?;
    if let Some(endpoint) = &endpoint {
        let queue_size = queue_size(args);
        tracing::info!(%endpoint, %service_name, queue_size, "exporting traces over OTLP");
    }
    Ok(TelemetryGuard {
        provider: Some(provider),
    })
}

/// The OpenTelemetry layer as every component installs it, over `tracer`
/// (the standalone tracing test passes one with an in-memory exporter, so
/// it checks these very settings).
///
/// Per span it keeps only what a trace shows: no busy/idle timings (a
/// clock read on every poll of a request's future), no OpenTelemetry
/// context made current on every poll (nothing here reads it: the trace
/// context travels through the tracing span, see
/// [`inject_trace_context`]), no thread attributes (a runtime's worker
/// thread says nothing about a request) and no code location (every
/// request's span would name this file's [`server_span`]; the span's
/// name says what it is). docs/BENCHMARKS.md, run E, has what the first
/// three saved per gateway request.
pub fn trace_layer<S>(tracer: SdkTracer) -> OpenTelemetryLayer<S, SdkTracer>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_threads(false)
        .with_location(false)
}

/// The current span's trace context as a `traceparent` entry, and a
/// `tracestate` one when the trace carries vendor state, to carry inside a
/// message (the queued vote). The propagator writes an empty `tracestate`
/// for every other trace; it is left out, as [`context_from_carrier`]
/// reads a missing one as empty: every queued vote is that much shorter
/// for the vote service to write and for Redis to take.
pub fn current_context_carrier() -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut NonEmptyEntries(&mut carrier));
    });
    carrier
}

/// Writes propagation fields into a carrier, but for empty ones.
struct NonEmptyEntries<'a>(&'a mut HashMap<String, String>);

impl Injector for NonEmptyEntries<'_> {
    fn set(&mut self, key: &str, value: String) {
        if !value.is_empty() {
            self.0.insert(key.to_owned(), value);
        }
    }
}

/// The trace context held in a carrier made by [`current_context_carrier`].
pub fn context_from_carrier(carrier: &HashMap<String, String>) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(carrier))
}

/// tonic client interceptor: adds the current span's trace context to the
/// request metadata, so the server's span continues the caller's trace.
pub fn inject_trace_context(
    mut request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataInjector(request.metadata_mut()));
    });
    Ok(request)
}

/// The span of one inbound request (gRPC or HTTP), continuing the caller's
/// trace when its headers carry a `traceparent`. Health checks and
/// reflection get no span: probes every few seconds would drown the traces
/// that matter.
pub fn server_span<B>(request: &http::Request<B>) -> tracing::Span {
    let path = request.uri().path();
    if path.starts_with("/grpc.health.v1.")
        || path.starts_with("/grpc.reflection.")
        || path == "/healthz"
        || path == "/readyz"
    {
        return tracing::Span::none();
    }
    let is_grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
    let span = if is_grpc {
        tracing::info_span!(
            "grpc.request",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
        )
    } else {
        tracing::info_span!(
            "http.request",
            otel.name = %format!("{} {path}", request.method()),
            otel.kind = "server",
            http.request.method = %request.method(),
            url.path = %path,
        )
    };
    // A request with none of the propagator's headers (a browser, a client
    // that does not trace) starts a trace of its own, which the span
    // already does: extracting would only hand back an empty context to
    // set as its parent.
    let headers = request.headers();
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator
            .fields()
            .any(|field| headers.contains_key(field))
            .then(|| propagator.extract(&HeaderExtractor(headers)))
    });
    if let Some(parent) = parent {
        // Fails only when the span is disabled; then there is nothing to link.
        let _ = span.set_parent(parent);
    }
    span
}

/// Writes propagation fields into gRPC metadata.
struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Reads propagation fields from HTTP headers.
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|key| key.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use opentelemetry::trace::TraceContextExt;
    use tracing::Level;

    use super::*;

    #[test]
    fn a_carrier_holds_the_trace_without_an_empty_tracestate() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry().with(trace_layer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request");
            let _entered = span.enter();
            let carrier = current_context_carrier();
            assert_eq!(
                carrier.keys().collect::<Vec<_>>(),
                ["traceparent"],
                "{carrier:?}"
            );
            let carried = context_from_carrier(&carrier);
            let carried = carried.span();
            let carried = carried.span_context();
            assert!(carried.is_valid() && carried.is_sampled(), "{carried:?}");
            assert_eq!(
                carried.trace_id(),
                span.context().span().span_context().trace_id()
            );
        });
    }

    #[test]
    fn the_link_cap_is_the_sdks_own_limit() {
        assert_eq!(
            MAX_LINKS_PER_SPAN,
            opentelemetry_sdk::trace::SpanLimits::default().max_links_per_span as usize
        );
    }

    /// Counts the events that reach it.
    struct Count(Arc<AtomicUsize>);

    impl<S: tracing::Subscriber> Layer<S> for Count {
        fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Which of these events `filter` lets through: votemesh at debug and
    /// info, sqlx at debug and info.
    fn passes(filter: &str) -> [bool; 4] {
        let count = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry()
            .with(Count(count.clone()).with_filter(EnvFilter::builder().parse_lossy(filter)));
        let mut passed = [false; 4];
        tracing::subscriber::with_default(subscriber, || {
            let mut saw = |index: usize| {
                passed[index] = count.swap(0, Ordering::SeqCst) == 1;
            };
            tracing::event!(target: "votemesh", Level::DEBUG, "x");
            saw(0);
            tracing::event!(target: "votemesh", Level::INFO, "x");
            saw(1);
            tracing::event!(target: "sqlx::query", Level::DEBUG, "x");
            saw(2);
            tracing::event!(target: "sqlx::query", Level::INFO, "x");
            saw(3);
        });
        passed
    }

    #[test]
    fn rust_log_adds_to_the_defaults() {
        assert_eq!(log_filter(None), DEFAULT_LOG_FILTER);
        assert_eq!(log_filter(Some("  ")), DEFAULT_LOG_FILTER);
        // [votemesh debug, votemesh info, sqlx debug, sqlx info]
        assert_eq!(passes(&log_filter(None)), [false, true, false, false]);
        assert_eq!(
            passes(&log_filter(Some("debug"))),
            [true, true, false, false],
            "the dependencies stay quiet"
        );
        assert_eq!(
            passes(&log_filter(Some("debug,sqlx=debug"))),
            [true, true, true, true]
        );
    }
}
