//! Client-side checks tests make against a running server: health status
//! and its changes, what reflection lists and describes, and waiting for a condition.
//!
//! Channels come from [`votemesh::client::connect`], the same function
//! `--health-check` uses: tests see a server the way its probes do.

use std::{future::Future, net::SocketAddr, time::Duration};

use tokio::time::Instant;
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
    health_client::HealthClient,
};
use votemesh::client;

/// The health status `service` reports, or the gRPC code it answers with
/// (NOT_FOUND for an unknown name, UNAVAILABLE when it cannot be reached).
pub async fn health(addr: SocketAddr, service: &str) -> Result<ServingStatus, tonic::Code> {
    client::check_health(addr, service)
        .await
        .map_err(|status| status.code())
}

/// A health Watch stream on `service` at `addr`: every readiness change,
/// the current status first.
pub async fn watch_health(
    addr: SocketAddr,
    service: &str,
) -> Result<tonic::Streaming<HealthCheckResponse>, tonic::Status> {
    let channel = client::connect(addr)
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    Ok(HealthClient::new(channel)
        .watch(request)
        .await?
        .into_inner())
}

/// Reads `updates` until one says `wanted`; fails the test if none does
/// within `timeout` or the stream ends first.
pub async fn watch_until(
    updates: &mut tonic::Streaming<HealthCheckResponse>,
    wanted: ServingStatus,
    timeout: Duration,
) {
    let seen = tokio::time::timeout(timeout, async {
        while let Some(update) = updates.message().await.expect("the Watch stream failed") {
            if update.status == wanted as i32 {
                return;
            }
        }
        panic!("the Watch stream ended before readiness turned {wanted:?}");
    })
    .await;
    assert!(
        seen.is_ok(),
        "readiness never turned {wanted:?} within {timeout:?}"
    );
}

/// A reflection protocol version a server offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reflection {
    /// `grpc.reflection.v1` (grpcurl 1.9 and later).
    V1,
    /// `grpc.reflection.v1alpha` (what older grpcurl speaks).
    V1Alpha,
}

/// A reflection client for one protocol version: `exchange` sends one
/// request and gathers the answers, `list_services` names what the server
/// offers. Both versions share this one definition; only the generated
/// module differs.
macro_rules! reflection_client {
    ($version:ident) => {
        mod $version {
            use std::net::SocketAddr;

            use tonic_reflection::pb::$version::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse,
            };
            use votemesh::client;

            pub async fn exchange(
                addr: SocketAddr,
                request: MessageRequest,
            ) -> Result<Vec<MessageResponse>, tonic::Status> {
                let channel = client::connect(addr)
                    .await
                    .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
                let request = ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(request),
                };
                let mut responses = ServerReflectionClient::new(channel)
                    .server_reflection_info(tokio_stream::once(request))
                    .await?
                    .into_inner();
                let mut answers = Vec::new();
                while let Some(response) = responses.message().await? {
                    answers.extend(response.message_response);
                }
                Ok(answers)
            }

            pub async fn list_services(addr: SocketAddr) -> Result<Vec<String>, tonic::Status> {
                let answers = exchange(addr, MessageRequest::ListServices(String::new())).await?;
                let mut names: Vec<String> = answers
                    .into_iter()
                    .filter_map(|answer| match answer {
                        MessageResponse::ListServicesResponse(list) => Some(list.service),
                        _ => None,
                    })
                    .flatten()
                    .map(|service| service.name)
                    .collect();
                names.sort();
                Ok(names)
            }
        }
    };
}

reflection_client!(v1);
reflection_client!(v1alpha);

/// The services `version` of reflection lists on `addr`, sorted.
pub async fn reflected_services(
    addr: SocketAddr,
    version: Reflection,
) -> Result<Vec<String>, tonic::Status> {
    match version {
        Reflection::V1 => v1::list_services(addr).await,
        Reflection::V1Alpha => v1alpha::list_services(addr).await,
    }
}

/// Asks reflection v1 for the file `filename` and the files it imports, as
/// grpcurl does to describe a service; returns how many files came back.
pub async fn reflected_file(addr: SocketAddr, filename: &str) -> Result<usize, tonic::Status> {
    use tonic_reflection::pb::v1::{
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let answers = v1::exchange(addr, MessageRequest::FileByFilename(filename.to_owned())).await?;
    match answers.into_iter().next() {
        Some(MessageResponse::FileDescriptorResponse(files)) => {
            Ok(files.file_descriptor_proto.len())
        }
        Some(MessageResponse::ErrorResponse(error)) => {
            Err(tonic::Status::not_found(error.error_message))
        }
        _ => Err(tonic::Status::internal("unexpected reflection answer")),
    }
}

/// Polls `check` every 50 ms until it answers a value, and returns it;
/// panics with `what` after `timeout` (a bound on a hang, not a
/// performance assertion).
pub async fn wait_for_value<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` every 50 ms until it answers true; panics with `what`
/// after `timeout`. The timeout bounds a hang; it is not a performance
/// assertion.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
