//! JSON and SSE handlers, and the probes.

use axum::{
    Extension, Json,
    body::Body,
    extract::{State, rejection::JsonRejection},
    http::{HeaderName, StatusCode, header},
    response::{IntoResponse, Response},
};
use axum_extra::extract::cookie::CookieJar;
use serde::{Deserialize, Serialize};

use crate::{
    AppState,
    error::{ApiError, HttpFailure},
    events,
    handover::HandOver,
    view::TallyView,
    voter,
};

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

/// `GET /api/results/stream`: server-sent events: a `retry:` hint (its
/// own per stream, see [`events::retry_hint`]) and the current tally at
/// once, then the newest tally at most once per `RESULTS_MIN_INTERVAL_MS`
/// ([`crate::pacing`]), until the client leaves or the gateway shuts
/// down. Past `RESULTS_MAX_STREAMS` open streams: 503 with `Retry-After`.
/// `X-Accel-Buffering: no` asks an nginx-based proxy in front (NGINX
/// Gateway Fabric, F5 NGINX Ingress) to pass each event on at once
/// instead of buffering the response.
pub async fn results_stream(State(state): State<AppState>) -> Result<Response, ApiError> {
    let permit = state.event_streams.try_open().ok_or_else(|| {
        metrics::counter!("votemesh_results_streams_refused_total").increment(1);
        HttpFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live results streams are open; please retry, or poll /api/results",
        )
        .with_retry_after()
    })?;
    let events = events::TallyEvents::new(
        state.pacing.subscribe(),
        state.pacing.counters().clone(),
        permit,
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        // Written past hyper once its head is ready (`handover`): an open
        // stream then holds no HTTP connection's buffers.
        Extension(HandOver),
        Body::from_stream(events),
    )
        .into_response())
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
/// `UNREACHABLE`), `results_stream` the shared live stream,
/// `results_streams` the browsers' open streams and their cap.
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
        "results_streams": state.event_streams.count(),
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
