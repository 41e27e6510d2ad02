//! JSON and SSE handlers, and the probes.

use std::{convert::Infallible, time::Duration};

use axum::{
    Json,
    extract::{State, rejection::JsonRejection},
    http::StatusCode,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use axum_extra::extract::cookie::CookieJar;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::WatchStream;

use crate::{
    AppState,
    error::{ApiError, HttpFailure},
    view::TallyView,
    voter,
};

/// How long a browser waits before reconnecting a broken SSE stream.
const SSE_RETRY: Duration = Duration::from_secs(2);

/// `POST /api/vote` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoteBody {
    /// The option id, such as `"a"`.
    pub option: String,
    /// Who votes; default: the `voter_id` cookie (set on first use).
    #[serde(default)]
    pub voter_id: Option<String>,
}

/// `POST /api/vote` answer.
#[derive(Debug, Serialize)]
pub struct VoteAccepted {
    /// The vote's id.
    pub vote_id: String,
    /// Who voted.
    pub voter_id: String,
    /// The option voted for.
    pub option: String,
    /// The vote service instance that took it.
    pub served_by: String,
}

/// `POST /api/vote`: casts a vote for the cookie's voter, or for an
/// explicit `voter_id`.
pub async fn cast_vote(
    State(state): State<AppState>,
    jar: CookieJar,
    body: Result<Json<VoteBody>, JsonRejection>,
) -> Result<(CookieJar, Json<VoteAccepted>), ApiError> {
    let Json(body) = body?;
    let (jar, voter_id) = match body.voter_id {
        Some(explicit) => (jar, explicit),
        None => voter::voter_id(jar),
    };
    let accepted = state.upstream.cast_vote(&voter_id, &body.option).await?;
    Ok((
        jar,
        Json(VoteAccepted {
            vote_id: accepted.vote_id,
            voter_id,
            option: body.option,
            served_by: accepted.served_by,
        }),
    ))
}

/// `GET /api/results`: the current tally (the last known one, marked
/// `"stale": true`, while the result service does not answer).
pub async fn results(State(state): State<AppState>) -> Result<Json<TallyView>, ApiError> {
    Ok(Json(state.tally().await?))
}

/// One option as `GET /api/options` lists it.
#[derive(Debug, Serialize)]
pub struct OptionJson {
    /// Option id.
    pub id: String,
    /// Option label.
    pub label: String,
}

/// `GET /api/options`: the poll's options.
pub async fn options(State(state): State<AppState>) -> Result<Json<Vec<OptionJson>>, ApiError> {
    let options = state.upstream.options().await?;
    Ok(Json(
        options
            .into_iter()
            .map(|option| OptionJson {
                id: option.id,
                label: option.label,
            })
            .collect(),
    ))
}

/// `GET /api/results/stream`: server-sent events, one `tally` event with
/// the current tally (once known), then one per change, until the client
/// leaves or the gateway shuts down. `X-Accel-Buffering: no` asks an
/// nginx-based proxy in front (NGINX Gateway Fabric, F5 NGINX Ingress) to
/// pass each event on at once instead of buffering the response.
pub async fn results_stream(
    State(state): State<AppState>,
) -> Result<
    (
        [(&'static str, &'static str); 1],
        Sse<impl Stream<Item = Result<Event, Infallible>>>,
    ),
    ApiError,
> {
    let permit = state
        .event_streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            HttpFailure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many live results streams are open; please retry",
            )
            .with_retry_after()
        })?;
    let open = OpenStream::new(permit);
    let events = WatchStream::new(state.fanout.subscribe())
        .filter_map(move |tally| {
            // The stream holds its permit (and its place in the gauge)
            // until it ends.
            let _open = &open;
            let event = Event::default().event("tally").retry(SSE_RETRY);
            std::future::ready(tally.and_then(|tally| event.json_data(&tally).ok()).map(Ok))
        })
        .take_until(state.shutdown.clone().cancelled_owned());
    Ok((
        [("x-accel-buffering", "no")],
        Sse::new(events).keep_alive(KeepAlive::default()),
    ))
}

/// `GET /metrics`: every metric of this gateway, Prometheus text format.
pub async fn metrics() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            votemesh::metrics::CONTENT_TYPE,
        )],
        votemesh::metrics::render(),
    )
        .into_response()
}

/// One open SSE stream: holds its permit and counts in the
/// `votemesh_sse_clients` gauge while it lives.
struct OpenStream {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl OpenStream {
    fn new(permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        metrics::gauge!("votemesh_sse_clients").increment(1.0);
        Self { _permit: permit }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!("votemesh_sse_clients").decrement(1.0);
    }
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 while the gateway can serve, whatever its upstreams
/// do: an upstream that is down degrades only the routes that need it, so
/// it must not empty the gateway's Service (Redis down would otherwise take
/// the results page with it). 503 only once the gateway is shutting down.
/// The body names each upstream's state: `"status"` is `ok` or `degraded`,
/// `vote` and `result` their health (`SERVING`, `NOT_SERVING`,
/// `UNREACHABLE`), `results_stream` the shared live stream.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let (vote, result) = state.upstream.health().await;
    let stream = state.fanout.status();
    let serving = |health: &Option<String>| health.as_deref() == Some("SERVING");
    let status = if state.shutdown.is_cancelled() {
        "shutting down"
    } else if serving(&vote) && serving(&result) && stream.open {
        "ok"
    } else {
        "degraded"
    };
    let body = Json(serde_json::json!({
        "status": status,
        "vote": vote.as_deref().unwrap_or("UNREACHABLE"),
        "result": result.as_deref().unwrap_or("UNREACHABLE"),
        "results_stream": stream,
    }));
    if state.shutdown.is_cancelled() {
        let mut response = (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
        HttpFailure::new(StatusCode::SERVICE_UNAVAILABLE, "")
            .with_retry_after()
            .add_retry_after(&mut response);
        response
    } else {
        (StatusCode::OK, body).into_response()
    }
}
