//! Limits at the edge, through a real gateway in front of real services:
//! votes per client address (429 with Retry-After; X-Forwarded-For
//! believed only from trusted proxies) and cross-site form posts refused.

mod support;

use support::{System, request};
use votemesh::shutdown::CancellationToken;
use votemesh_gateway::{
    AppState,
    edge::{Edge, EdgeArgs},
};
use votemesh_testing::{ANY_PORT, TestServer};

/// A gateway in front of `system`'s services with `edge`'s limits.
async fn gateway_with(system: &System, edge: EdgeArgs) -> TestServer {
    let (vote, result) = (system.vote_addr, system.result_addr);
    TestServer::spawn(ANY_PORT, |listener, shutdown: CancellationToken| {
        let state = AppState::connect(
            &format!("http://{vote}"),
            &format!("http://{result}"),
            shutdown,
        )
        .unwrap()
        .with_edge(Edge::new(&edge));
        votemesh_gateway::serve(listener, state)
    })
    .await
}

async fn vote_as(gateway: &TestServer, forwarded_for: &str) -> support::Answer {
    request(
        "POST",
        &format!("http://{}/api/vote", gateway.addr),
        Some("application/json"),
        r#"{"option":"a","voter_id":"edge-test"}"#,
        &[("x-forwarded-for", forwarded_for)],
    )
    .await
}

#[tokio::test]
async fn a_burst_from_one_client_gets_429_while_another_client_votes() {
    let system = System::start(false).await;
    let limits = EdgeArgs {
        vote_rate_limit: 3,
        vote_rate_burst: Some(3),
        // The test plays an ingress on loopback that forwards two clients.
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
    };
    let gateway = gateway_with(&system, limits.clone()).await;

    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(vote_as(&gateway, "203.0.113.10").await);
    }
    let accepted = statuses
        .iter()
        .filter(|answer| answer.status == 200)
        .count();
    assert_eq!(
        accepted, 3,
        "the burst allowance, then refusals: {statuses:?}"
    );
    let refused = statuses.last().unwrap();
    assert_eq!(refused.status, 429, "{refused:?}");
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(
        retry_after >= 1,
        "Retry-After in whole seconds: {retry_after}"
    );

    let other = vote_as(&gateway, "203.0.113.20").await;
    assert_eq!(
        other.status, 200,
        "another client is not limited: {other:?}"
    );

    // Without trusted proxies, X-Forwarded-For is the client's own claim
    // and is ignored: every request counts against the peer's address.
    let untrusting = gateway_with(
        &system,
        EdgeArgs {
            trusted_proxies: Vec::new(),
            ..limits
        },
    )
    .await;
    let mut last = None;
    for n in 0..4 {
        last = Some(
            vote_as(&untrusting, &format!("198.51.100.{n}"))
                .await
                .status,
        );
    }
    assert_eq!(
        last,
        Some(429),
        "fresh X-Forwarded-For values do not reset the limit"
    );

    gateway.stop().await;
    untrusting.stop().await;
    system.stop().await;
}

#[tokio::test]
async fn a_cross_site_form_post_is_refused_and_a_same_site_one_is_taken() {
    let system = System::start(false).await;
    let url = system.url("/vote");
    let host = system.gateway.addr.to_string();
    let form = Some("application/x-www-form-urlencoded");
    let post = |headers: Vec<(&'static str, String)>| {
        let url = url.clone();
        async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(name, value)| (*name, value.as_str()))
                .collect();
            request("POST", &url, form, "vote=a", &headers).await
        }
    };

    let forged = post(vec![("sec-fetch-site", "cross-site".into())]).await;
    assert_eq!(forged.status, 403, "{forged:?}");
    let forged = post(vec![("origin", "https://evil.example".into())]).await;
    assert_eq!(forged.status, 403, "{forged:?}");
    let forged_json = request(
        "POST",
        &system.url("/api/vote"),
        Some("application/json"),
        r#"{"option":"a"}"#,
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(forged_json.status, 403, "{forged_json:?}");
    assert_eq!(system.queued().await, ":0\r\n", "no forged vote was queued");

    let own_page = post(vec![
        ("sec-fetch-site", "same-origin".into()),
        ("origin", format!("http://{host}")),
    ])
    .await;
    assert_eq!(own_page.status, 303, "{own_page:?}");
    let no_browser = post(Vec::new()).await;
    assert_eq!(
        no_browser.status, 303,
        "curl sends neither header: {no_browser:?}"
    );
    assert_eq!(system.queued().await, ":2\r\n");
    system.stop().await;
}
