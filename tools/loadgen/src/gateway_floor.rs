//! The gateway floor: the least an HTTP-to-gRPC gateway does for a vote,
//! with the libraries the gateway uses (hyper for HTTP/1.1, tonic for the
//! call) and nothing else: no router, layers, tracing, metrics, retries,
//! balancing, limits or cookies of its own.
//!
//! ```text
//! POST /api/vote {"option","voter_id"} ─► JSON ─► CastVote ─► 200 {"vote_id","voter_id","option","served_by"}
//! POST /vote  vote=a, cookie voter_id   ─► form ─► CastVote ─► 303 Location: /?voted=a&served_by=...
//! GET /api/options                      ─► ListOptions ─► 200 [{"id","label"}]
//! ```
//!
//! Driven by the same generator as the gateway, on the same vote service,
//! its CPU per vote is what translating one vote costs on this machine:
//! the floor of issue 21's gateway goal (docs/BENCHMARKS.md, "CPU per
//! vote"), as the no-op VoteService ([`crate::noop`]) is the vote
//! service's. Bare on purpose, like [`crate::refusal_floor`].

use std::convert::Infallible;

use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use votemesh::proto::v1::{
    CastVoteRequest, ListOptionsRequest, vote_service_client::VoteServiceClient,
};

use crate::accept;

/// `POST /api/vote`'s body, as the gateway reads it.
#[derive(Deserialize)]
struct VoteBody {
    option: String,
    voter_id: String,
}

/// `POST /api/vote`'s answer, as the gateway writes it.
#[derive(Serialize)]
struct VoteAccepted {
    vote_id: String,
    voter_id: String,
    option: String,
    served_by: String,
}

/// One option, as `GET /api/options` lists it.
#[derive(Serialize)]
struct OptionJson {
    id: String,
    label: String,
}

/// Serves on `listener` until `shutdown`, calling the vote service at
/// `vote_addr` (such as `http://127.0.0.1:5000`) over one lazily made
/// HTTP/2 connection.
pub async fn serve(
    listener: TcpListener,
    vote_addr: &str,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let channel = Endpoint::from_shared(vote_addr.to_owned())?
        .tcp_nodelay(true)
        .connect_lazy();
    let votes = VoteServiceClient::new(channel);
    let http = http1::Builder::new();
    accept::each_connection(listener, shutdown, |stream| {
        let votes = votes.clone();
        let service = service_fn(move |request| answer(votes.clone(), request));
        let connection = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            // A client that goes away mid-request ends its connection; nothing to report.
            let _ = connection.await;
        });
    })
    .await;
    Ok(())
}

/// Every request's answer.
async fn answer(
    votes: VoteServiceClient<Channel>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let route = (request.method().clone(), request.uri().path().to_owned());
    let cookie = request
        .headers()
        .get(header::COOKIE)
        .and_then(|value| value.to_str().ok())
        .and_then(|cookies| {
            cookies
                .split(';')
                .find_map(|pair| pair.trim().strip_prefix("voter_id="))
        })
        .map(str::to_owned);
    let Ok(body) = request.into_body().collect().await else {
        return Ok(plain(StatusCode::BAD_REQUEST, "body cut short"));
    };
    let body = body.to_bytes();
    Ok(match (route.0, route.1.as_str()) {
        (Method::POST, "/api/vote") => match serde_json::from_slice::<VoteBody>(&body) {
            Ok(vote) => json_vote(votes, vote).await,
            Err(_) => plain(StatusCode::BAD_REQUEST, "not a vote"),
        },
        (Method::POST, "/vote") => {
            let option = body
                .split(|byte| *byte == b'&')
                .find_map(|pair| pair.strip_prefix(b"vote="))
                .and_then(|option| std::str::from_utf8(option).ok());
            match (option, cookie) {
                (Some(option), Some(voter_id)) => form_vote(votes, voter_id, option).await,
                _ => plain(StatusCode::BAD_REQUEST, "not a vote"),
            }
        }
        (Method::GET, "/api/options") => options(votes).await,
        _ => plain(StatusCode::NOT_FOUND, "not found"),
    })
}

async fn json_vote(mut votes: VoteServiceClient<Channel>, vote: VoteBody) -> Response<Full<Bytes>> {
    let request = CastVoteRequest {
        voter_id: vote.voter_id.clone(),
        option: vote.option.clone(),
    };
    match votes.cast_vote(request).await {
        Ok(accepted) => {
            let accepted = accepted.into_inner();
            json(&VoteAccepted {
                vote_id: accepted.vote_id,
                voter_id: vote.voter_id,
                option: vote.option,
                served_by: accepted.served_by,
            })
        }
        Err(status) => plain(StatusCode::SERVICE_UNAVAILABLE, status.message()),
    }
}

async fn form_vote(
    mut votes: VoteServiceClient<Channel>,
    voter_id: String,
    option: &str,
) -> Response<Full<Bytes>> {
    let request = CastVoteRequest {
        voter_id,
        option: option.to_owned(),
    };
    match votes.cast_vote(request).await {
        Ok(accepted) => {
            let location = format!(
                "/?voted={option}&served_by={}",
                accepted.into_inner().served_by
            );
            let mut response = Response::new(Full::default());
            *response.status_mut() = StatusCode::SEE_OTHER;
            if let Ok(location) = header::HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        Err(status) => plain(StatusCode::SERVICE_UNAVAILABLE, status.message()),
    }
}

async fn options(mut votes: VoteServiceClient<Channel>) -> Response<Full<Bytes>> {
    match votes.list_options(ListOptionsRequest {}).await {
        Ok(listed) => {
            let options: Vec<OptionJson> = listed
                .into_inner()
                .options
                .into_iter()
                .map(|option| OptionJson {
                    id: option.id,
                    label: option.label,
                })
                .collect();
            json(&options)
        }
        Err(status) => plain(StatusCode::SERVICE_UNAVAILABLE, status.message()),
    }
}

fn json(value: &impl Serialize) -> Response<Full<Bytes>> {
    let Ok(body) = serde_json::to_vec(value) else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot write JSON");
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn plain(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(message.to_owned())));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use http_body_util::Full;
    use hyper::{Method, Request, StatusCode, body::Bytes, header};
    use tokio::net::TcpListener;
    use tokio_util::sync::CancellationToken;

    /// One request on a fresh connection: its status, `Location` and body.
    async fn ask(
        addr: SocketAddr,
        method: Method,
        path: &str,
        content_type: &str,
        cookie: Option<&str>,
        body: &'static [u8],
    ) -> (StatusCode, Option<String>, Bytes) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "floor")
            .header(header::CONTENT_TYPE, content_type);
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        let request = request.body(Full::new(Bytes::from_static(body))).unwrap();
        let (status, headers, body) = crate::floor_client::exchange(addr, request).await;
        let location = headers
            .get(header::LOCATION)
            .map(|value| value.to_str().unwrap().to_owned());
        (status, location, body)
    }

    #[tokio::test]
    async fn votes_are_translated_into_cast_vote_calls_as_the_gateway_answers_them() {
        let shutdown = CancellationToken::new();
        // The no-op VoteService stands for the vote service.
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let vote_addr = format!("http://{}", upstream.local_addr().unwrap());
        tokio::spawn(crate::noop::serve(upstream, shutdown.clone()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let floor = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { super::serve(listener, &vote_addr, shutdown).await }
        });

        let json = "application/json";
        let vote = br#"{"voter_id":"v1","option":"a"}"#;
        let (status, _, body) = ask(addr, Method::POST, "/api/vote", json, None, vote).await;
        assert_eq!(status, StatusCode::OK);
        let accepted: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(accepted["voter_id"], "v1");
        assert_eq!(accepted["option"], "a");
        assert_eq!(accepted["served_by"], crate::noop::SERVED_BY);

        let form = "application/x-www-form-urlencoded";
        let cookie = Some("voter_id=v2");
        let (status, location, _) = ask(addr, Method::POST, "/vote", form, cookie, b"vote=b").await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(location.as_deref(), Some("/?voted=b&served_by=noop"));

        let (status, _, body) = ask(addr, Method::GET, "/api/options", json, None, b"").await;
        assert_eq!(status, StatusCode::OK);
        let options: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        assert_eq!(options.len(), 2);
        assert_eq!(options[0]["id"], "a");

        let (status, _, _) = ask(addr, Method::POST, "/api/vote", json, None, b"{}").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _, _) = ask(addr, Method::POST, "/vote", form, None, b"vote=a").await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "a form vote needs its cookie"
        );

        shutdown.cancel();
        floor.await.unwrap().unwrap();
    }
}
