//! Where the votes go: the vote service's CastVote over gRPC (through the
//! root crate's generated client and [`votemesh::client::channel`]), or the
//! gateway's `POST /vote` form and `POST /api/vote` JSON routes (over
//! hyper-util's pooled HTTP/1.1 client, one connection per caller).
//!
//! [`Target::connect`] first asks the target for the poll's options
//! (`ListOptions`, or `GET /api/options`), which both tells the voters what
//! to choose and turns a bad target into a clear error before any load:
//! nothing listening, or something that is not a votemesh server.

use std::{fmt, time::Duration};

use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, StatusCode, Uri,
    body::Bytes,
    header::{CONTENT_TYPE, COOKIE},
};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use thiserror::Error;
use tonic::Code;
use votemesh::{
    client::{self, TracedChannel, Transport},
    proto::v1::{
        CastVoteRequest, GetResultsRequest, ListOptionsRequest,
        result_service_client::ResultServiceClient, vote_service_client::VoteServiceClient,
    },
};

/// How long the first check of a target may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one vote may take before it counts as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Which route votes take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `votemesh.v1.VoteService/CastVote` on the vote service.
    Grpc,
    /// The gateway's `POST /vote` (form field `vote`, `voter_id` cookie).
    Form,
    /// The gateway's `POST /api/vote` (`{"option", "voter_id"}`).
    Json,
    /// Not votes: `votemesh.v1.ResultService/GetResults` on the result
    /// service (read load).
    Results,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Grpc => "grpc",
            Self::Form => "form",
            Self::Json => "json",
            Self::Results => "results",
        })
    }
}

/// The target is not one votes can be sent to.
#[derive(Debug, Error)]
pub enum TargetError {
    /// The address is not a URL this mode can use.
    #[error("{address:?} is not a usable address: {reason}")]
    BadAddress {
        /// The address given.
        address: String,
        /// Why.
        reason: String,
    },
    /// Nothing answered.
    #[error("cannot reach {address}: {reason}")]
    Unreachable {
        /// The address given.
        address: String,
        /// What failed.
        reason: String,
    },
    /// Something answered, but not as a votemesh server would.
    #[error("{address} answered, but is not a votemesh {expected}: {reason}")]
    NotVotemesh {
        /// The address given.
        address: String,
        /// What was expected there.
        expected: &'static str,
        /// What it answered.
        reason: String,
    },
}

/// Why one vote failed, short enough to count failures by kind
/// (`UNAVAILABLE`, `HTTP 503`, `timeout`, ...).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CallFailure(pub String);

/// How long an idle pooled HTTP connection is kept: less than the
/// gateway's header-read timeout, after which it closes idle connections.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A connected target, cheap to clone (one per caller).
#[derive(Clone, Debug)]
pub enum Target {
    /// The vote service, over `connections` channels used in turn.
    Grpc(Vec<VoteServiceClient<TracedChannel>>),
    /// The result service, likewise.
    Results(Vec<ResultServiceClient<TracedChannel>>),
    /// The gateway.
    Http {
        /// The pooled client (boxed: it is large, and callers clone the target).
        client: Box<HttpClient>,
        /// `POST` here.
        vote_uri: Uri,
        /// Form or JSON.
        mode: Mode,
    },
}

impl Target {
    /// Connects to `address` for `mode` (gRPC over `connections` HTTP/2
    /// connections), checks it is a votemesh server, and returns it with
    /// the poll's option ids.
    pub async fn connect(
        mode: Mode,
        address: &str,
        connections: usize,
        transport: &Transport,
    ) -> Result<(Self, Vec<String>), TargetError> {
        votemesh::config::parse_endpoint(address).map_err(|reason| TargetError::BadAddress {
            address: address.to_owned(),
            reason,
        })?;
        match mode {
            Mode::Grpc => connect_grpc(address, connections.max(1), transport).await,
            Mode::Results => connect_results(address, connections.max(1), transport).await,
            Mode::Form | Mode::Json => connect_http(mode, address).await,
        }
    }

    /// Casts one vote for `voter_id` (`slot`: which caller, to pick a
    /// connection); in [`Mode::Results`], reads the tally instead.
    pub async fn cast(&self, slot: usize, voter_id: &str, option: &str) -> Result<(), CallFailure> {
        match self {
            Self::Results(clients) => {
                let mut client = clients[slot % clients.len()].clone();
                let mut request = tonic::Request::new(GetResultsRequest {});
                request.set_timeout(CALL_TIMEOUT);
                client
                    .get_results(request)
                    .await
                    .map(drop)
                    .map_err(|status| CallFailure(code_name(status.code()).to_owned()))
            }
            Self::Grpc(clients) => {
                let mut client = clients[slot % clients.len()].clone();
                let mut request = tonic::Request::new(CastVoteRequest {
                    voter_id: voter_id.to_owned(),
                    option: option.to_owned(),
                });
                request.set_timeout(CALL_TIMEOUT);
                client
                    .cast_vote(request)
                    .await
                    .map(drop)
                    .map_err(|status| CallFailure(code_name(status.code()).to_owned()))
            }
            Self::Http {
                client,
                vote_uri,
                mode,
            } => {
                let (content_type, body, cookie, expected) = match mode {
                    Mode::Json => (
                        "application/json",
                        serde_json::json!({ "option": option, "voter_id": voter_id }).to_string(),
                        None,
                        StatusCode::OK,
                    ),
                    _ => (
                        "application/x-www-form-urlencoded",
                        format!("vote={option}"),
                        Some(format!("voter_id={voter_id}")),
                        StatusCode::SEE_OTHER,
                    ),
                };
                let mut request = Request::builder()
                    .method(Method::POST)
                    .uri(vote_uri.clone())
                    .header(CONTENT_TYPE, content_type);
                if let Some(cookie) = cookie {
                    request = request.header(COOKIE, cookie);
                }
                let request = request
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|error| CallFailure(format!("bad request: {error}")))?;
                let exchange = async {
                    let response = client
                        .request(request)
                        .await
                        .map_err(|_| CallFailure("connection failed".into()))?;
                    let status = response.status();
                    // Read the body to the end so the connection is reused.
                    let body = response.into_body().collect().await;
                    if status == expected {
                        Ok(())
                    } else {
                        let body = body.map(|body| body.to_bytes()).unwrap_or_default();
                        Err(CallFailure(http_failure(status, &body)))
                    }
                };
                tokio::time::timeout(CALL_TIMEOUT, exchange)
                    .await
                    .unwrap_or_else(|_| Err(CallFailure("timeout".into())))
            }
        }
    }
}

/// A failed HTTP vote's kind: its status and, when the gateway said why
/// (`{"error": ...}`), the reason up to its first `;` (the gateway's
/// own refusal, `the gateway is busy (the server is overloaded)`, and a
/// refusal or failure of the service behind it read apart). The
/// gateway's reasons are a small fixed set; a long one is cut.
fn http_failure(status: StatusCode, body: &[u8]) -> String {
    let reason = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|body| body.get("error")?.as_str().map(str::to_owned));
    match reason {
        Some(reason) => {
            let reason: String = reason
                .split(';')
                .next()
                .unwrap_or_default()
                .chars()
                .take(80)
                .collect();
            format!("HTTP {}: {}", status.as_u16(), reason.trim())
        }
        None => format!("HTTP {}", status.as_u16()),
    }
}

async fn connect_grpc(
    address: &str,
    connections: usize,
    transport: &Transport,
) -> Result<(Target, Vec<String>), TargetError> {
    let clients = (0..connections)
        .map(|_| client::channel(address, transport.clone()).map(VoteServiceClient::new))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TargetError::BadAddress {
            address: address.to_owned(),
            reason: error.to_string(),
        })?;
    let mut request = tonic::Request::new(ListOptionsRequest {});
    request.set_timeout(CHECK_TIMEOUT);
    let mut first = clients[0].clone();
    let answer = tokio::time::timeout(CHECK_TIMEOUT, first.list_options(request)).await;
    let not_votemesh = |reason: String| TargetError::NotVotemesh {
        address: address.to_owned(),
        expected: "vote service (gRPC votemesh.v1.VoteService)",
        reason,
    };
    let options = match answer {
        Err(_) => {
            return Err(TargetError::Unreachable {
                address: address.to_owned(),
                reason: format!("no answer within {CHECK_TIMEOUT:?}"),
            });
        }
        Ok(Ok(response)) => response.into_inner().options,
        Ok(Err(status)) => {
            return Err(grpc_check_error(
                address,
                "vote service (gRPC votemesh.v1.VoteService)",
                &status,
            ));
        }
    };
    if options.is_empty() {
        return Err(not_votemesh("its poll has no options".into()));
    }
    Ok((
        Target::Grpc(clients),
        options.into_iter().map(|option| option.id).collect(),
    ))
}

async fn connect_results(
    address: &str,
    connections: usize,
    transport: &Transport,
) -> Result<(Target, Vec<String>), TargetError> {
    let clients = (0..connections)
        .map(|_| client::channel(address, transport.clone()).map(ResultServiceClient::new))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TargetError::BadAddress {
            address: address.to_owned(),
            reason: error.to_string(),
        })?;
    let mut request = tonic::Request::new(GetResultsRequest {});
    request.set_timeout(CHECK_TIMEOUT);
    let mut first = clients[0].clone();
    let answer = tokio::time::timeout(CHECK_TIMEOUT, first.get_results(request))
        .await
        .map_err(|_| TargetError::Unreachable {
            address: address.to_owned(),
            reason: format!("no answer within {CHECK_TIMEOUT:?}"),
        })?;
    let tally = answer.map_err(|status| {
        grpc_check_error(
            address,
            "result service (gRPC votemesh.v1.ResultService)",
            &status,
        )
    })?;
    let options = tally
        .into_inner()
        .options
        .into_iter()
        .map(|option| option.id)
        .collect::<Vec<_>>();
    let options = if options.is_empty() {
        vec!["-".to_owned()]
    } else {
        options
    };
    Ok((Target::Results(clients), options))
}

/// What a failed first call says about the target.
fn grpc_check_error(address: &str, expected: &'static str, status: &tonic::Status) -> TargetError {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded => TargetError::Unreachable {
            address: address.to_owned(),
            reason: status.message().to_owned(),
        },
        Code::Unimplemented => TargetError::NotVotemesh {
            address: address.to_owned(),
            expected,
            reason: "it does not serve that service".into(),
        },
        code => TargetError::NotVotemesh {
            address: address.to_owned(),
            expected,
            reason: format!(
                "the first call failed with {}: {}",
                code_name(code),
                status.message()
            ),
        },
    }
}

async fn connect_http(mode: Mode, address: &str) -> Result<(Target, Vec<String>), TargetError> {
    let base = address.trim().trim_end_matches('/');
    let uri = |path: &str| -> Result<Uri, TargetError> {
        format!("{base}{path}")
            .parse()
            .map_err(|error| TargetError::BadAddress {
                address: address.to_owned(),
                reason: format!("{error}"),
            })
    };
    if base.starts_with("https:") {
        return Err(TargetError::BadAddress {
            address: address.to_owned(),
            reason: "the HTTP modes speak plain http:// (put TLS in front of the gateway, not in the load generator)".into(),
        });
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(client::CONNECT_TIMEOUT));
    // Idle pooled connections are dropped well before the gateway closes
    // them (its header-read timeout, 10 s, applies to idle kept-alive
    // connections too): a request sent on a connection the server is
    // closing at that instant fails, the classic keep-alive race.
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(connector);
    let not_votemesh = |reason: String| TargetError::NotVotemesh {
        address: address.to_owned(),
        expected: "gateway (GET /api/options)",
        reason,
    };
    let check = async {
        let request = Request::get(uri("/api/options")?)
            .body(Full::new(Bytes::new()))
            .map_err(|error| not_votemesh(error.to_string()))?;
        let response = client.request(request).await.map_err(|error| {
            if error.is_connect() {
                TargetError::Unreachable {
                    address: address.to_owned(),
                    reason: error_chain(&error),
                }
            } else {
                not_votemesh(format!(
                    "it does not answer HTTP/1.1 ({})",
                    error_chain(&error)
                ))
            }
        })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| not_votemesh(format!("reading its answer: {error}")))?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(not_votemesh(format!("GET /api/options answered {status}")));
        }
        let options: Vec<OptionJson> = serde_json::from_slice(&body).map_err(|_| {
            not_votemesh("GET /api/options did not answer a JSON list of options".into())
        })?;
        Ok(options)
    };
    let options = tokio::time::timeout(CHECK_TIMEOUT, check)
        .await
        .map_err(|_| TargetError::Unreachable {
            address: address.to_owned(),
            reason: format!("no answer within {CHECK_TIMEOUT:?}"),
        })??;
    if options.is_empty() {
        return Err(not_votemesh("its poll has no options".into()));
    }
    let path = if mode == Mode::Json {
        "/api/vote"
    } else {
        "/vote"
    };
    Ok((
        Target::Http {
            client: Box::new(client),
            vote_uri: uri(path)?,
            mode,
        },
        options.into_iter().map(|option| option.id).collect(),
    ))
}

/// One option as `GET /api/options` lists it.
#[derive(serde::Deserialize)]
struct OptionJson {
    id: String,
}

/// An error and its sources, `: `-separated (hyper's own message alone
/// says only "client error (Connect)").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The canonical name of a gRPC status code (`UNAVAILABLE`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_http_vote_is_told_apart_by_the_gateways_reason() {
        let busy = br#"{"error":"the gateway is busy (the server is overloaded); please retry"}"#;
        assert_eq!(
            http_failure(StatusCode::SERVICE_UNAVAILABLE, busy),
            "HTTP 503: the gateway is busy (the server is overloaded)"
        );
        let upstream = br#"{"error":"a votemesh service is unavailable; please retry shortly"}"#;
        assert_eq!(
            http_failure(StatusCode::SERVICE_UNAVAILABLE, upstream),
            "HTTP 503: a votemesh service is unavailable"
        );
        assert_eq!(
            http_failure(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>"),
            "HTTP 502"
        );
        let long = format!(r#"{{"error":"{}"}}"#, "x".repeat(500));
        assert!(http_failure(StatusCode::BAD_REQUEST, long.as_bytes()).len() < 100);
    }
}
