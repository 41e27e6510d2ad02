//! Prometheus metrics: one process-wide registry, the tower layers that
//! measure every RPC and every HTTP request, and the `/metrics` text.
//!
//! Code anywhere records through the `metrics` facade (`counter!`,
//! `gauge!`, `histogram!`); [`install`] puts the Prometheus recorder behind
//! it once per process, and [`render`] writes the Prometheus text format.
//! Why this crate pair: the facade keeps instrumentation a one-line call at
//! the place something happens, with no registry to thread through, and the
//! exporter renders the standard text format without an HTTP server of its
//! own (votemesh serves `/metrics` itself: on the gateway's port, and on
//! each gRPC server's own port over HTTP/1.1, see [`MetricsEndpointLayer`]).
//!
//! Names follow the OpenTelemetry semantic conventions for RPC and HTTP,
//! in Prometheus form (`_total`, `_seconds`). Every metric votemesh
//! records, with its labels, is in the table of record in
//! `docs/OBSERVABILITY.md` ("Every metric"): a metric added, renamed or
//! relabelled here or anywhere else changes that table in the same commit.

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock, PoisonError, RwLock},
    task::{Context, Poll},
    time::Instant,
};

use http_body_util::Full;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tonic::{
    body::Body,
    codegen::http::{self, HeaderValue, header},
};
use tower::{Layer, Service};

/// Where every process serves its metrics.
pub const METRICS_PATH: &str = "/metrics";
/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Histogram buckets of every `_seconds` metric: 1 ms to 10 s.
const SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Histogram buckets of every `_size` metric (batch sizes): 1 to 4096.
const SIZE_BUCKETS: [f64; 13] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls do
/// nothing). Until it is installed, recording is a no-op.
pub fn install() {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
            .and_then(|builder| {
                builder.set_buckets_for_metric(Matcher::Suffix("_size".into()), &SIZE_BUCKETS)
            })
            .and_then(|builder| builder.set_buckets(&SECONDS_BUCKETS));
        match builder.map(PrometheusBuilder::install_recorder) {
            Ok(Ok(handle)) => {
                crate::telemetry::export::register_metrics();
                Some(handle)
            }
            Ok(Err(error)) | Err(error) => {
                tracing::warn!(%error, "cannot install the metrics recorder; /metrics stays empty");
                None
            }
        }
    });
}

/// Every metric recorded so far, in the Prometheus text format.
pub fn render() -> String {
    install();
    HANDLE
        .get()
        .and_then(Option::as_ref)
        .map(|handle| {
            handle.run_upkeep();
            handle.render()
        })
        .unwrap_or_default()
}

/// Which side of a call a layer measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Calls a server answers.
    Server,
    /// Calls a client makes.
    Client,
}

impl Side {
    fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Server => (
                "rpc_server_requests_total",
                "rpc_server_duration_seconds",
                "rpc_server_active_requests",
            ),
            Self::Client => (
                "rpc_client_requests_total",
                "rpc_client_duration_seconds",
                "rpc_client_active_requests",
            ),
        }
    }
}

/// The label value of a service or method votemesh does not know (the
/// OpenTelemetry convention): any caller can send any path, and a label
/// value per path would let it grow the registry without end.
pub const OTHER: &str = "_OTHER";

/// The service and method of a gRPC path (`/votemesh.v1.VoteService/CastVote`),
/// or [`OTHER`] twice for a path that names no method votemesh serves or
/// calls ([`known_methods`]).
pub fn rpc_labels(path: &str) -> (String, String) {
    match known_methods().get(path) {
        Some((service, method)) => (service.clone(), method.clone()),
        None => (OTHER.to_owned(), OTHER.to_owned()),
    }
}

/// Every gRPC method votemesh serves or calls, by path, with its service
/// and method names: read once from the compiled descriptors (votemesh's
/// contracts, health, reflection v1 and v1alpha).
fn known_methods() -> &'static HashMap<String, (String, String)> {
    static KNOWN: OnceLock<HashMap<String, (String, String)>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let mut known = HashMap::new();
        for encoded in [
            crate::proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            let Ok(set) = <prost_types::FileDescriptorSet as prost::Message>::decode(encoded)
            else {
                continue;
            };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let service_name = match (package.as_str(), service.name) {
                        (_, None) => continue,
                        ("", Some(name)) => name,
                        (package, Some(name)) => format!("{package}.{name}"),
                    };
                    for method in service.method.into_iter().filter_map(|m| m.name) {
                        known.insert(
                            format!("/{service_name}/{method}"),
                            (service_name.clone(), method),
                        );
                    }
                }
            }
        }
        known
    })
}

/// The handles one method's calls update on one side, made once: a call
/// then costs a few atomic updates, not label strings and registry
/// lookups.
#[derive(Debug)]
struct MethodMetrics {
    labels: [(&'static str, String); 2],
    active: metrics::Gauge,
    duration: metrics::Histogram,
    answered_ok: metrics::Counter,
}

/// The [`MethodMetrics`] of each method seen on one side, made on first
/// use (bounded: known methods and [`OTHER`]).
#[derive(Debug, Default)]
struct MethodTable {
    by_path: RwLock<HashMap<String, Arc<MethodMetrics>>>,
}

impl MethodTable {
    fn of(side: Side) -> &'static Self {
        static SERVER: OnceLock<MethodTable> = OnceLock::new();
        static CLIENT: OnceLock<MethodTable> = OnceLock::new();
        match side {
            Side::Server => SERVER.get_or_init(Self::default),
            Side::Client => CLIENT.get_or_init(Self::default),
        }
    }

    fn get(&self, side: Side, path: &str) -> Arc<MethodMetrics> {
        let key = if known_methods().contains_key(path) {
            path
        } else {
            OTHER
        };
        if let Some(found) = self
            .by_path
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return found.clone();
        }
        let (requests, duration, active) = side.names();
        let (service, method) = rpc_labels(path);
        let labels = [("rpc_service", service), ("rpc_method", method)];
        let with_ok = [
            labels[0].clone(),
            labels[1].clone(),
            ("rpc_grpc_status_code", "0".to_owned()),
        ];
        let made = Arc::new(MethodMetrics {
            active: metrics::gauge!(active, &labels),
            duration: metrics::histogram!(duration, &labels),
            answered_ok: metrics::counter!(requests, &with_ok),
            labels,
        });
        self.by_path
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.to_owned())
            .or_insert(made)
            .clone()
    }
}

/// Measures every gRPC call through a server or a client.
#[derive(Clone, Copy, Debug)]
pub struct RpcMetricsLayer {
    side: Side,
}

impl RpcMetricsLayer {
    /// A layer measuring calls on `side`.
    pub fn new(side: Side) -> Self {
        install();
        Self { side }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            side: self.side,
        }
    }
}

/// See [`RpcMetricsLayer`].
#[derive(Clone, Debug)]
pub struct RpcMetrics<S> {
    inner: S,
    side: Side,
}

impl<S, B, ResponseBody> Service<http::Request<B>> for RpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    ResponseBody: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let side = self.side;
        let method = MethodTable::of(side).get(side, request.uri().path());
        method.active.increment(1.0);
        let started = Instant::now();
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = call.await;
            method.active.decrement(1.0);
            method.duration.record(started.elapsed().as_secs_f64());
            // A failed call's status travels in the response headers
            // (trailers-only); an answered one's in its trailers, as 0.
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|code| code.to_str().ok())
                    .unwrap_or("0"),
                Err(_) => "14",
            };
            if code == "0" {
                method.answered_ok.increment(1);
            } else {
                let [service, name] = method.labels.clone();
                let (requests, _, _) = side.names();
                metrics::counter!(
                    requests,
                    &[service, name, ("rpc_grpc_status_code", code.to_owned())]
                )
                .increment(1);
            }
            result
        })
    }
}

/// Answers `GET /metrics` on a gRPC server's own port (HTTP/1.1 or h2),
/// so Prometheus scrapes each server where it already listens; every
/// other request goes through to gRPC.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetricsEndpointLayer;

impl<S> Layer<S> for MetricsEndpointLayer {
    type Service = MetricsEndpoint<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsEndpoint { inner }
    }
}

/// See [`MetricsEndpointLayer`].
#[derive(Clone, Debug)]
pub struct MetricsEndpoint<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for MetricsEndpoint<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.method() == http::Method::GET && request.uri().path() == METRICS_PATH {
            let mut response = http::Response::new(Body::new(Full::from(render())));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            return Box::pin(std::future::ready(Ok(response)));
        }
        Box::pin(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_grpc_paths_become_labels_and_any_other_path_is_other() {
        assert_eq!(
            rpc_labels("/votemesh.v1.VoteService/CastVote"),
            ("votemesh.v1.VoteService".into(), "CastVote".into())
        );
        assert_eq!(
            rpc_labels("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health".into(), "Check".into())
        );
        assert_eq!(
            rpc_labels("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            (
                "grpc.reflection.v1.ServerReflection".into(),
                "ServerReflectionInfo".into()
            )
        );
        for unknown in [
            "/",
            "/votemesh.v1.VoteService/Nope",
            "/made.Up/CastVote",
            "/votemesh.v1.VoteService/CastVote/extra",
        ] {
            assert_eq!(
                rpc_labels(unknown),
                (OTHER.into(), OTHER.into()),
                "{unknown}"
            );
        }
    }
}
