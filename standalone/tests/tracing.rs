//! OpenTelemetry follows a vote across every hop: a browser request with a
//! `traceparent` reaches the gateway, whose span continues that trace; the
//! gateway's gRPC call carries it to the vote service, whose span continues
//! it too; the queued vote carries it to the worker, whose batch span links
//! to it. The next request, without a trace, gets a trace of its own,
//! carried the same way: nothing of the first one is left behind. Spans
//! are captured by an in-memory exporter.

use opentelemetry::trace::{TraceId, TracerProvider as _};
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    trace::{InMemorySpanExporter, SdkTracerProvider, SpanData},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing_subscriber::layer::SubscriberExt;
use votemesh_testing::probe;

mod support;

use support::{System, WAIT, cats_and_dogs};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn spans_named(spans: &[SpanData], name_prefix: &str) -> Vec<SpanData> {
    spans
        .iter()
        .filter(|span| span.name.starts_with(name_prefix))
        .cloned()
        .collect()
}

/// Sends a raw HTTP request to the gateway until it answers 200.
async fn send_until_ok(gateway: std::net::SocketAddr, request: &str) {
    probe::wait_for("the vote accepted", WAIT, || async {
        let Ok(mut stream) = tokio::net::TcpStream::connect(gateway).await else {
            return false;
        };
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer.starts_with("HTTP/1.1 200")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_keeps_its_trace_from_the_browser_to_the_worker() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let subscriber = tracing_subscriber::registry()
        .with(votemesh::telemetry::trace_layer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let system = System::embedded(dir.path(), cats_and_dogs()).await;
    let gateway = system.addrs.gateway;

    // A browser (or any HTTP client) that already has a trace.
    let body = r#"{"option":"a","voter_id":"traced-voter"}"#;
    let request = format!(
        "POST /api/vote HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         traceparent: 00-{TRACE_ID}-00f067aa0ba902b7-01\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    send_until_ok(gateway, &request).await;
    let gateway_addr = gateway;

    let trace_id = TraceId::from_hex(TRACE_ID).unwrap();
    probe::wait_for(
        "the worker's batch span linked to the vote's trace",
        WAIT,
        || async {
            let spans = exporter.get_finished_spans().unwrap();
            spans_named(&spans, "worker.apply_batch")
                .iter()
                .any(|span| {
                    span.links
                        .iter()
                        .any(|link| link.span_context.trace_id() == trace_id)
                })
        },
    )
    .await;

    let spans = exporter.get_finished_spans().unwrap();
    let gateway = spans_named(&spans, "POST /api/vote");
    assert!(
        gateway
            .iter()
            .any(|span| span.span_context.trace_id() == trace_id),
        "the gateway's span continues the browser's trace: {gateway:?}"
    );
    let vote = spans_named(&spans, "votemesh.v1.VoteService/CastVote");
    assert!(
        vote.iter()
            .any(|span| span.span_context.trace_id() == trace_id
                && gateway
                    .iter()
                    .any(|parent| parent.span_context.span_id() == span.parent_span_id)),
        "the vote service's span is a child of the gateway's: {vote:?}"
    );
    // A request's span says what the request was, not where in votemesh
    // the span was made (every one would name telemetry's `server_span`).
    let located: Vec<&SpanData> = gateway
        .iter()
        .chain(&vote)
        .filter(|span| {
            span.attributes
                .iter()
                .any(|attribute| attribute.key.as_str().starts_with("code."))
        })
        .collect();
    assert!(
        located.is_empty(),
        "request spans carry no code location: {located:?}"
    );
    // The next request, without a trace, starts its own: nothing of the
    // first trace is left behind in the servers (a context left attached
    // to a runtime thread, or kept by a layer, would show up here), and
    // the new trace is carried to the vote service and the worker too.
    let body = r#"{"option":"b","voter_id":"untraced-voter"}"#;
    let untraced = format!(
        "POST /api/vote HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    assert!(!untraced.contains("traceparent"));
    send_until_ok(gateway_addr, &untraced).await;
    let second = probe::wait_for_value(
        "the second request's spans, the vote service's under the gateway's",
        WAIT,
        || async {
            let spans = exporter.get_finished_spans().unwrap();
            let gateway = spans_named(&spans, "POST /api/vote");
            let vote = spans_named(&spans, "votemesh.v1.VoteService/CastVote");
            gateway
                .iter()
                .filter(|span| span.span_context.trace_id() != trace_id)
                .find(|parent| {
                    vote.iter().any(|child| {
                        child.parent_span_id == parent.span_context.span_id()
                            && child.span_context.trace_id() == parent.span_context.trace_id()
                    })
                })
                .map(|span| span.span_context.trace_id())
        },
    )
    .await;
    probe::wait_for(
        "the worker's batch span linked to the second trace",
        WAIT,
        || async {
            let spans = exporter.get_finished_spans().unwrap();
            spans_named(&spans, "worker.apply_batch")
                .iter()
                .any(|span| {
                    span.links
                        .iter()
                        .any(|link| link.span_context.trace_id() == second)
                })
        },
    )
    .await;
    let spans = exporter.get_finished_spans().unwrap();
    let leaked: Vec<&SpanData> = spans
        .iter()
        .filter(|span| {
            span.span_context.trace_id() == trace_id
                && spans_named(&spans, "POST /api/vote")
                    .iter()
                    .filter(|gateway| gateway.span_context.trace_id() == second)
                    .any(|gateway| gateway.span_context.span_id() == span.parent_span_id)
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "the first trace leaked into the second request: {leaked:?}"
    );

    system.stop().await;
}
