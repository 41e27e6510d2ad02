//! Client-side checks tests make against a running server: health status,
//! the services reflection lists, and waiting for a condition.

use std::{future::Future, net::SocketAddr, time::Duration};

use tokio::time::Instant;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::{v1, v1alpha};

/// A channel to a server on `addr`.
pub async fn channel(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    crate::grpc::connect(addr).await
}

/// The health status `service` reports, or the gRPC code it answers with
/// (NOT_FOUND for an unknown name, UNAVAILABLE when it cannot be reached).
pub async fn health(addr: SocketAddr, service: &str) -> Result<ServingStatus, tonic::Code> {
    crate::health::check(addr, service)
        .await
        .map_err(|status| status.code())
}

/// The services reflection v1 lists on `addr`, sorted.
pub async fn reflected_services_v1(addr: SocketAddr) -> Result<Vec<String>, tonic::Status> {
    use v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let channel = channel(addr)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::once(request))
        .await?
        .into_inner();
    let mut names = Vec::new();
    while let Some(response) = responses.message().await? {
        if let Some(MessageResponse::ListServicesResponse(list)) = response.message_response {
            names.extend(list.service.into_iter().map(|service| service.name));
        }
    }
    names.sort();
    Ok(names)
}

/// The services reflection v1alpha (what older grpcurl speaks) lists, sorted.
pub async fn reflected_services_v1alpha(addr: SocketAddr) -> Result<Vec<String>, tonic::Status> {
    use v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let channel = channel(addr)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::once(request))
        .await?
        .into_inner();
    let mut names = Vec::new();
    while let Some(response) = responses.message().await? {
        if let Some(MessageResponse::ListServicesResponse(list)) = response.message_response {
            names.extend(list.service.into_iter().map(|service| service.name));
        }
    }
    names.sort();
    Ok(names)
}

/// Polls `check` every 50 ms until it answers true; panics with `what`
/// after `timeout`. For tests only: the timeout bounds a hang, it is not a
/// performance assertion.
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

/// Asks reflection v1 for the file `filename` and the files it imports, as
/// grpcurl does to describe a service; returns how many files came back.
pub async fn reflected_file(addr: SocketAddr, filename: &str) -> Result<usize, tonic::Status> {
    use v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let channel = channel(addr)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileByFilename(filename.to_owned())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::once(request))
        .await?
        .into_inner();
    match responses
        .message()
        .await?
        .and_then(|response| response.message_response)
    {
        Some(MessageResponse::FileDescriptorResponse(files)) => {
            Ok(files.file_descriptor_proto.len())
        }
        Some(MessageResponse::ErrorResponse(error)) => {
            Err(tonic::Status::not_found(error.error_message))
        }
        _ => Err(tonic::Status::internal("unexpected reflection answer")),
    }
}
