//! Limits on abuse at the public edge, for the routes that cast votes
//! (`POST /vote`, `POST /api/vote`):
//!
//! - [`refuse_cross_site`]: a vote posted by another site's page (a forged
//!   form or fetch) is refused with 403. Browsers say where a request comes
//!   from: `Sec-Fetch-Site` (every current browser) and `Origin` (on every
//!   POST); a request with neither is not a browser's cross-site post
//!   (curl, scripts, the load generator) and goes through. This is on top
//!   of the `SameSite=Lax` voter cookie.
//! - [`limit_votes`]: each client address may cast `VOTE_RATE_LIMIT` votes
//!   a minute (bursts of `VOTE_RATE_BURST`), with governor's GCRA keyed by
//!   address; over it the answer is 429 with `Retry-After`. The client
//!   address is the connection's peer, or, when that peer is a trusted
//!   proxy (`TRUSTED_PROXIES`), the last address in `X-Forwarded-For` that
//!   is not one: a client cannot pick its own key by sending the header.
//!   Off by default (local runs, speed tests); on in the prod overlay.

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use ipnet::IpNet;

use crate::{AppState, error::HttpFailure};

/// How often addresses that have not voted lately are forgotten.
const FORGET_INTERVAL: Duration = Duration::from_secs(60);

/// The edge's settings.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct EdgeArgs {
    /// Votes a minute each client address may cast; 0 turns the limit off.
    #[arg(long, env = "VOTE_RATE_LIMIT", default_value_t = 0)]
    pub vote_rate_limit: u32,
    /// Votes a client may cast at once before the per-minute rate applies
    /// (default: the per-minute limit).
    #[arg(long, env = "VOTE_RATE_BURST")]
    pub vote_rate_burst: Option<u32>,
    /// Proxies whose X-Forwarded-For is believed (IP addresses or CIDR
    /// ranges, comma-separated), such as the ingress controller's pods.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<IpNet>,
}

/// Parses one entry of `TRUSTED_PROXIES`: an address or a CIDR range.
fn parse_net(raw: &str) -> Result<IpNet, String> {
    let raw = raw.trim();
    raw.parse::<IpNet>()
        .or_else(|_| raw.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{raw:?} is not an IP address or CIDR range such as 10.0.0.0/8"))
}

/// The edge's limits, built once; shared by every request.
#[derive(Debug, Default)]
pub struct Edge {
    /// Votes per client address; `None`: no limit.
    limiter: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    /// Peers whose `X-Forwarded-For` is believed.
    trusted_proxies: Vec<IpNet>,
}

impl Edge {
    /// The limits `args` describe. With a limit, starts the task that
    /// forgets idle addresses (so call inside a tokio runtime).
    pub fn new(args: &EdgeArgs) -> Self {
        let limiter = NonZeroU32::new(args.vote_rate_limit).map(|per_minute| {
            let burst = args
                .vote_rate_burst
                .and_then(NonZeroU32::new)
                .unwrap_or(per_minute);
            let limiter = Arc::new(RateLimiter::keyed(
                Quota::per_minute(per_minute).allow_burst(burst),
            ));
            tokio::spawn(forget_idle(Arc::downgrade(&limiter)));
            limiter
        });
        Self {
            limiter,
            trusted_proxies: args.trusted_proxies.clone(),
        }
    }

    /// The address a request comes from (see the module's doc).
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusted(peer) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|hop| hop.trim().parse().ok())
            .collect();
        forwarded
            .iter()
            .rev()
            .find(|hop| !self.trusted(**hop))
            .or(forwarded.first())
            .copied()
            .unwrap_or(peer)
    }

    fn trusted(&self, addr: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&addr))
    }
}

/// Forgets addresses whose allowance is full again, every
/// [`FORGET_INTERVAL`], so memory follows the recent voters only.
async fn forget_idle(limiter: std::sync::Weak<DefaultKeyedRateLimiter<IpAddr>>) {
    loop {
        tokio::time::sleep(FORGET_INTERVAL).await;
        let Some(limiter) = limiter.upgrade() else {
            return;
        };
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}

/// Middleware: 429 with `Retry-After` for a client over its vote limit.
pub async fn limit_votes(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (Some(limiter), Some(ConnectInfo(peer))) = (
        &state.edge.limiter,
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .copied(),
    ) else {
        return next.run(request).await;
    };
    let client = state.edge.client_address(peer.ip(), request.headers());
    match limiter.check_key(&client) {
        Ok(()) => next.run(request).await,
        Err(not_until) => {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            tracing::info!(%client, retry_after = seconds, "vote refused: over the rate limit");
            metrics::counter!("votemesh_gateway_votes_limited_total").increment(1);
            let mut response = HttpFailure::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many votes from this address; please wait",
            )
            .into_json_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            response
        }
    }
}

/// Middleware: 403 for a vote a browser says another site sent.
pub async fn refuse_cross_site(request: Request, next: Next) -> Response {
    if let Some(reason) = cross_site(&request) {
        tracing::info!(reason, "vote refused: cross-site post");
        return HttpFailure::new(
            StatusCode::FORBIDDEN,
            "votes are only taken from this site's own pages",
        )
        .into_json_response()
        .into_response();
    }
    next.run(request).await
}

/// Why `request` is a cross-site post, or `None` when it is not one.
fn cross_site(request: &Request) -> Option<&'static str> {
    let headers = request.headers();
    if let Some(site) = headers.get("sec-fetch-site") {
        // `none`: the user's own action (typed, bookmarked).
        return match site.as_bytes() {
            b"same-origin" | b"none" => None,
            _ => Some("Sec-Fetch-Site is not same-origin"),
        };
    }
    let origin = headers.get(header::ORIGIN)?;
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .or_else(|| {
            request
                .uri()
                .authority()
                .map(|authority| authority.as_str())
        });
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|origin| url::Url::parse(origin).ok())
        .and_then(|url| {
            url.host_str().map(|host| match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            })
        });
    match (origin_host, host) {
        (Some(origin), Some(host)) if origin.eq_ignore_ascii_case(host) => None,
        _ => Some("Origin is not this host"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(trusted: &[&str]) -> Edge {
        Edge {
            limiter: None,
            trusted_proxies: trusted.iter().map(|net| parse_net(net).unwrap()).collect(),
        }
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let headers = forwarded("6.6.6.6, 203.0.113.7, 10.0.0.9");
        assert_eq!(edge(&[]).client_address(peer, &headers), peer);
        assert_eq!(
            edge(&["10.0.0.0/8"]).client_address(peer, &headers),
            "203.0.113.7".parse::<IpAddr>().unwrap(),
            "the last hop no trusted proxy added is the client; what it sent itself is not believed"
        );
        assert_eq!(
            edge(&["10.0.0.5"]).client_address(peer, &HeaderMap::new()),
            peer
        );
    }

    fn post(headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::post("/vote");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn cross_site_posts_are_told_apart() {
        assert!(cross_site(&post(&[])).is_none(), "no browser headers: curl");
        assert!(cross_site(&post(&[("sec-fetch-site", "same-origin")])).is_none());
        assert!(cross_site(&post(&[("sec-fetch-site", "cross-site")])).is_some());
        assert!(cross_site(&post(&[("sec-fetch-site", "same-site")])).is_some());
        let same = [
            ("host", "vote.example:8080"),
            ("origin", "https://vote.example:8080"),
        ];
        assert!(cross_site(&post(&same)).is_none());
        let other = [("host", "vote.example"), ("origin", "https://evil.example")];
        assert!(cross_site(&post(&other)).is_some());
        assert!(cross_site(&post(&[("host", "vote.example"), ("origin", "null")])).is_some());
    }
}
