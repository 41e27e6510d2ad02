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
//!   proxy (`TRUSTED_PROXIES`: only what the operator names, nothing by
//!   default), found by walking `X-Forwarded-For` from the right: hops
//!   added by trusted proxies are skipped, and the first one that is not
//!   trusted is the client (if every hop is trusted, the left-most; a hop
//!   that is not an address stops the walk at the proxy that added it). A
//!   client cannot pick its own key by sending the header, nor can a hop
//!   that is not named (a node's SNAT address): it counts as one client.
//!   IPv6 clients are keyed by their /64, which one host or home network
//!   holds whole (else one client would have 2^64 keys). Off by default
//!   (local runs, speed tests); on in the prod overlay.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, Request},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use ipnet::IpNet;
use votemesh::supervise::{self, DropGuard};

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
    /// ranges, comma-separated): the proxy pods in front of the gateway,
    /// named as narrowly as possible. Nothing else is trusted; unset, the
    /// header is ignored from everyone.
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
    /// Ends the task that forgets idle addresses when the `Edge` is
    /// dropped; `None` without a limit.
    _forgetting: Option<DropGuard>,
}

impl Edge {
    /// The limits `args` describe. With a limit, starts the task that
    /// forgets idle addresses (so call inside a tokio runtime): owned by
    /// this `Edge`, which ends it when dropped, and restarted if it panics
    /// (see [`votemesh::supervise`]: the limiter goes on limiting while
    /// it is down, only its memory is not trimmed).
    pub fn new(args: &EdgeArgs) -> Self {
        let limiter = NonZeroU32::new(args.vote_rate_limit).map(|per_minute| {
            let burst = args
                .vote_rate_burst
                .and_then(NonZeroU32::new)
                .unwrap_or(per_minute);
            Arc::new(RateLimiter::keyed(
                Quota::per_minute(per_minute).allow_burst(burst),
            ))
        });
        let forgetting = limiter.as_ref().map(|limiter| {
            let limiter = Arc::downgrade(limiter);
            supervise::restarting("idle rate-limit key sweep", move || {
                forget_idle(limiter.clone())
            })
        });
        Self {
            limiter,
            trusted_proxies: args.trusted_proxies.clone(),
            _forgetting: forgetting,
        }
    }

    /// The address a request comes from (see the module's doc).
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusted(peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        // Right to left; `nearest` is the closest address known so far.
        let mut nearest = peer;
        for hop in hops.iter().rev() {
            let Ok(addr) = hop.parse::<IpAddr>() else {
                // Garbage the next proxy passed on: what lies left of it
                // cannot be believed, so the client is what added it.
                return nearest;
            };
            if !self.trusted(addr) {
                return addr;
            }
            nearest = addr;
        }
        nearest
    }

    /// The key a client's votes are counted under: its IPv4 address, or
    /// its IPv6 /64 (an IPv4-mapped IPv6 address counts as the IPv4 one).
    pub fn rate_key(client: IpAddr) -> IpAddr {
        match client.to_canonical() {
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1_u128 << 64) - 1))),
            v4 => v4,
        }
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
        // A walk over every key, with the map's shards locked in turn: on
        // the blocking pool, so a large map never stalls a runtime worker.
        let _ = tokio::task::spawn_blocking(move || {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        })
        .await;
    }
}

/// 429 with `Retry-After` for a client over its vote limit (a check for
/// [`crate::gate::GateLayer`]); `None` lets the vote through.
pub fn limit_votes(state: &AppState, request: &Request) -> Option<Response> {
    let (Some(limiter), Some(ConnectInfo(peer))) = (
        &state.edge.limiter,
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .copied(),
    ) else {
        return None;
    };
    let client = state.edge.client_address(peer.ip(), request.headers());
    let not_until = limiter.check_key(&Edge::rate_key(client)).err()?;
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
    Some(response)
}

/// 403 for a vote a browser says another site sent (a check for
/// [`crate::gate::GateLayer`]); `None` lets the vote through.
pub fn refuse_cross_site(request: &Request) -> Option<Response> {
    let reason = cross_site(request)?;
    tracing::info!(reason, "vote refused: cross-site post");
    Some(
        HttpFailure::new(
            StatusCode::FORBIDDEN,
            "votes are only taken from this site's own pages",
        )
        .into_json_response(),
    )
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
            _forgetting: None,
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

    #[test]
    fn forwarded_for_is_walked_from_the_right() {
        let ip = |raw: &str| raw.parse::<IpAddr>().unwrap();
        let peer = ip("10.0.0.5");
        let proxies = edge(&["10.0.0.0/8"]);
        // Every hop trusted: the left-most is the client.
        assert_eq!(
            proxies.client_address(peer, &forwarded("10.1.1.1, 10.2.2.2")),
            ip("10.1.1.1")
        );
        // Several headers read as one list, in order.
        let mut headers = forwarded("6.6.6.6");
        headers.append("x-forwarded-for", "198.51.100.4, 10.0.0.9".parse().unwrap());
        assert_eq!(proxies.client_address(peer, &headers), ip("198.51.100.4"));
        // A hop that is no address stops the walk: the proxy right of it
        // is as far as anything can be believed.
        assert_eq!(
            proxies.client_address(peer, &forwarded("6.6.6.6, unknown, 10.0.0.9")),
            ip("10.0.0.9")
        );
        assert_eq!(
            proxies.client_address(peer, &forwarded("6.6.6.6, not-an-ip")),
            peer
        );
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let ip = |raw: &str| raw.parse::<IpAddr>().unwrap();
        assert_eq!(
            Edge::rate_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            Edge::rate_key(ip("2001:db8:1:2::1")),
            Edge::rate_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            Edge::rate_key(ip("2001:db8:1:2::1")),
            Edge::rate_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(Edge::rate_key(ip("203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(Edge::rate_key(ip("::ffff:203.0.113.7")), ip("203.0.113.7"));
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
