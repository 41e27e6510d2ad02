//! The gateway over HTTP, in front of the real vote and result services
//! (real Redis and PostgreSQL): pages, JSON, cookies, errors, SSE fan-out.

mod support;

use std::io::Read;

use support::{EventStream, System, cookie_pair, get, request, total};
use votemesh_testing::probe;

const FORM: Option<&str> = Some("application/x-www-form-urlencoded");
const JSON: Option<&str> = Some("application/json");

#[tokio::test]
async fn a_form_vote_sets_the_cookie_redirects_and_a_changed_vote_counts_once() {
    let system = System::start(true).await;

    let page = get(&system.url("/"), &[]).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("Cats") && page.body.contains("Dogs"),
        "options come from the vote service"
    );
    let set_cookie = page.header("set-cookie").unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=31536000"] {
        assert!(
            set_cookie.contains(attribute),
            "{set_cookie} has {attribute}"
        );
    }
    let cookie = cookie_pair(&set_cookie);
    assert!(cookie.starts_with("voter_id=") && cookie.len() > "voter_id=".len() + 16);

    let voted = request(
        "POST",
        &system.url("/vote"),
        FORM,
        "vote=a",
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(voted.status, 303);
    let location = voted.header("location").unwrap().to_owned();
    assert_eq!(location, "/?voted=a&served_by=vote-under-test");
    let confirmation = get(&system.url(&location), &[("cookie", &cookie)]).await;
    assert!(
        confirmation
            .body
            .contains("You voted for <strong>Cats</strong>"),
        "{}",
        confirmation.body
    );
    assert!(confirmation.body.contains("vote-under-test"));
    assert!(
        confirmation.header("set-cookie").is_none(),
        "a known browser keeps its cookie"
    );

    // A hand-edited cookie the vote service would refuse is replaced, not
    // turned into a browser that can never vote.
    let bad_cookie = format!("voter_id={}", "x".repeat(200));
    let fresh = request(
        "POST",
        &system.url("/vote"),
        FORM,
        "vote=a",
        &[("cookie", &bad_cookie)],
    )
    .await;
    assert_eq!(fresh.status, 303);
    let replaced = fresh.header("set-cookie").unwrap_or_default();
    assert!(
        replaced.starts_with("voter_id=") && !replaced.contains("xxx"),
        "{replaced}"
    );

    let changed = request(
        "POST",
        &system.url("/vote"),
        FORM,
        "vote=b",
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(changed.status, 303);
    probe::wait_for("the changed vote counted once", support::WAIT, || async {
        let results = get(&system.url("/api/results"), &[]).await.json();
        results["total"] == 2
            && results["options"][1]["count"] == 1
            && results["options"][0]["count"] == 1
    })
    .await;
    system.stop().await;
}

#[tokio::test]
async fn json_votes_by_cookie_or_explicit_voter_id() {
    let system = System::start(true).await;
    let first = request(
        "POST",
        &system.url("/api/vote"),
        JSON,
        r#"{"option":"a"}"#,
        &[],
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let body = first.json();
    assert_eq!(body["option"], "a");
    assert_eq!(body["served_by"], "vote-under-test");
    let cookie = cookie_pair(first.header("set-cookie").unwrap());
    assert_eq!(
        cookie,
        format!("voter_id={}", body["voter_id"].as_str().unwrap())
    );

    let again = request(
        "POST",
        &system.url("/api/vote"),
        JSON,
        r#"{"option":"b"}"#,
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(
        again.json()["voter_id"],
        body["voter_id"],
        "the cookie names the voter"
    );
    let explicit = request(
        "POST",
        &system.url("/api/vote"),
        JSON,
        r#"{"option":"a","voter_id":"api-voter"}"#,
        &[],
    )
    .await;
    assert_eq!(explicit.status, 200);
    assert!(explicit.header("set-cookie").is_none());

    probe::wait_for("two voters counted", support::WAIT, || async {
        let results = get(&system.url("/api/results"), &[]).await.json();
        results["total"] == 2
            && results["options"][0]["count"] == 1
            && results["options"][1]["count"] == 1
    })
    .await;
    let results = get(&system.url("/api/results"), &[]).await.json();
    assert_eq!(results["options"][0]["percent"], 50.0);
    system.stop().await;
}

#[tokio::test]
async fn every_bad_input_gets_a_clear_4xx_and_queues_nothing() {
    let system = System::start(false).await;
    let big = format!(r#"{{"option":"a","voter_id":"{}"}}"#, "x".repeat(20_000));
    // (method, path, content type, body, expected status, expected message)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, String, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/vote",
            FORM,
            String::new(),
            400,
            "no option chosen",
        ),
        (
            "POST",
            "/vote",
            FORM,
            "vote=zebra".into(),
            400,
            "not an option of this poll",
        ),
        (
            "POST",
            "/vote",
            Some("text/plain"),
            "vote=a".into(),
            415,
            "Form requests must have",
        ),
        (
            "POST",
            "/api/vote",
            JSON,
            r#"{"option":"zebra"}"#.into(),
            400,
            "not an option of this poll; the options are: a, b",
        ),
        (
            "POST",
            "/api/vote",
            JSON,
            r#"{"option":""}"#.into(),
            400,
            "option is empty",
        ),
        (
            "POST",
            "/api/vote",
            JSON,
            r#"{"voter_id":"v"}"#.into(),
            422,
            "missing field `option`",
        ),
        (
            "POST",
            "/api/vote",
            JSON,
            r#"{"option":"a""#.into(),
            400,
            "Failed to parse the request body as JSON",
        ),
        (
            "POST",
            "/api/vote",
            JSON,
            r#"{"option":"a","voter_id":""}"#.into(),
            400,
            "voter_id is empty",
        ),
        (
            "POST",
            "/api/vote",
            Some("text/plain"),
            r#"{"option":"a"}"#.into(),
            415,
            "Expected request with `Content-Type: application/json`",
        ),
        ("POST", "/api/vote", JSON, big, 413, "length limit exceeded"),
        (
            "GET",
            "/nowhere",
            None,
            String::new(),
            404,
            "There is no page here.",
        ),
        ("GET", "/api/vote", None, String::new(), 405, ""),
    ];
    for (method, path, content_type, body, status, message) in cases {
        let answer = request(method, &system.url(path), content_type, body, &[]).await;
        assert_eq!(answer.status, status, "{method} {path}: {}", answer.body);
        assert!(
            answer.body.contains(message),
            "{method} {path}: {:?} should say {message:?}",
            answer.body
        );
        if path.starts_with("/api/") && status != 405 {
            assert!(
                answer.json()["error"].is_string(),
                "{path}: JSON error body"
            );
        }
    }
    assert_eq!(system.queued().await, ":0\r\n", "nothing was queued");
    system.stop().await;
}

#[tokio::test]
async fn vote_service_down_degrades_only_voting_and_the_gateway_stays_ready() {
    let mut system = System::start(false).await;
    assert_eq!(get(&system.url("/readyz"), &[]).await.status, 200);

    system.stop_vote().await;
    let refused = request(
        "POST",
        &system.url("/api/vote"),
        JSON,
        r#"{"option":"a"}"#,
        &[],
    )
    .await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.header("retry-after"), Some("2"));
    let form = request("POST", &system.url("/vote"), FORM, "vote=a", &[]).await;
    assert_eq!(form.status, 503);
    // The results need no vote service: they still load.
    assert_eq!(get(&system.url("/api/results"), &[]).await.status, 200);
    assert_eq!(get(&system.url("/results"), &[]).await.status, 200);
    // Still ready (an upstream's outage must not empty the gateway's
    // Service), with the outage named in the body.
    let degraded = get(&system.url("/readyz"), &[]).await;
    assert_eq!(degraded.status, 200);
    assert_eq!(degraded.json()["status"], "degraded");
    assert_eq!(degraded.json()["vote"], "UNREACHABLE");
    assert_eq!(degraded.json()["result"], "SERVING");
    assert!(
        binary_health_check(system.gateway.addr)
            .await
            .status
            .success()
    );
    assert_eq!(
        get(&system.url("/healthz"), &[]).await.status,
        200,
        "the gateway itself is alive"
    );

    system.restart_vote().await;
    probe::wait_for(
        "the gateway reaches the vote service again",
        support::WAIT,
        || async {
            request(
                "POST",
                &system.url("/api/vote"),
                JSON,
                r#"{"option":"a"}"#,
                &[],
            )
            .await
            .status
                == 200
        },
    )
    .await;
    let ready = get(&system.url("/readyz"), &[]).await;
    assert_eq!(
        (ready.status, ready.json()["status"].as_str()),
        (200, Some("ok"))
    );
    let healthy = binary_health_check(system.gateway.addr).await;
    assert!(healthy.status.success(), "{healthy:?}");
    system.stop().await;
}

/// `votemesh-gateway --health-check` (Docker's HEALTHCHECK) against `addr`.
async fn binary_health_check(addr: std::net::SocketAddr) -> std::process::Output {
    votemesh_testing::process::run_health_check(env!("CARGO_BIN_EXE_votemesh-gateway"), addr).await
}

#[tokio::test]
async fn many_sse_clients_share_one_upstream_stream_which_survives_a_result_restart() {
    let mut system = System::start(true).await;
    let mut clients = Vec::new();
    for _ in 0..25 {
        let mut client = EventStream::open(&system.url("/api/results/stream")).await;
        assert_eq!(
            client.next_tally().await["total"],
            0,
            "the current tally comes at once"
        );
        clients.push(client);
    }
    for voter in 0..3 {
        let body = format!(r#"{{"option":"a","voter_id":"sse-{voter}"}}"#);
        assert_eq!(
            request("POST", &system.url("/api/vote"), JSON, body, &[])
                .await
                .status,
            200
        );
    }
    for client in &mut clients {
        let tally = client.until_total(3).await;
        assert_eq!(tally["options"][0]["count"], 3);
        assert_eq!(tally["options"][0]["percent"], 100.0);
    }
    assert_eq!(
        results_stream(&system).await,
        serde_json::json!({"open": true, "opened": 1}),
        "25 browsers, one gRPC stream"
    );

    // The result service restarts: the gateway reconnects by itself and the
    // browsers' streams carry on.
    system.restart_result().await;
    let body = r#"{"option":"b","voter_id":"after-restart"}"#;
    assert_eq!(
        request("POST", &system.url("/api/vote"), JSON, body, &[])
            .await
            .status,
        200
    );
    let tally = clients[0].until_total(4).await;
    assert_eq!(tally["options"][1]["count"], 1);
    assert_eq!(
        results_stream(&system).await,
        serde_json::json!({"open": true, "opened": 2}),
        "one reconnection"
    );
    assert_eq!(total(&system).await, 4);
    drop(clients);
    system.stop().await;
}

#[tokio::test]
async fn pages_carry_security_headers_assets_are_built_in_and_compressed() {
    let system = System::start(false).await;
    let page = get(&system.url("/results"), &[]).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("No votes yet"),
        "no misleading 50/50 before any vote"
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("style-src 'self'"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert!(
        !page.body.contains("<script>") && !page.body.contains("style="),
        "nothing inline for the CSP to block"
    );
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "nothing fetched from elsewhere"
    );

    let css = get(
        &system.url("/static/style.css"),
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(css.header("content-encoding"), Some("gzip"));
    let plain = get(&system.url("/static/style.css"), &[]).await;
    assert_eq!(plain.header("content-encoding"), None);
    let compressed = gzip_body(&system.url("/static/style.css")).await;
    assert!(compressed.len() < plain.body.len());
    let mut decoded = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut decoded)
        .unwrap();
    assert_eq!(decoded, plain.body);
    let js = get(&system.url("/static/results.js"), &[]).await;
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(js.body.contains("EventSource"));
    assert_eq!(get(&system.url("/healthz"), &[]).await.status, 200);
    system.stop().await;
}

/// The body of a gzip response, still compressed.
async fn gzip_body(url: &str) -> Vec<u8> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::{client::legacy::Client, rt::TokioExecutor};
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let request = axum::http::Request::get(url)
        .header("accept-encoding", "gzip")
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec()
}

/// The upstream results stream as `GET /readyz` reports it.
async fn results_stream(system: &System) -> serde_json::Value {
    get(&system.url("/readyz"), &[]).await.json()["results_stream"].clone()
}
