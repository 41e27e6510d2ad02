//! Admission by waiting time ([`votemesh::admission`]) through the vote
//! service as it is served (`votemesh::grpc::serve`): calls that arrive
//! while the server is stalled wait for capacity instead of failing;
//! sustained overload is refused at once with UNAVAILABLE and a pushback
//! that votemesh's clients honour by not retrying, while the line that
//! stood when it began is served; a line that grows while it is served
//! is an overload before `OVERLOAD_AFTER`, a stall and its line draining
//! are not; an overload ends only after windows in a row in which most
//! calls found capacity, not after one quiet window; a wait never
//! outlives half the caller's deadline; health checks always get in.
//!
//! The tests hold the server's permits themselves (through the same
//! [`Admission`] the server uses): for the server that is exactly a stall,
//! every permit taken by calls that do not finish. The tests of when an
//! overload is seen drive [`Admission`] directly with a load whose arrival
//! and service rates they set ([`offer_load`]).

use std::time::Duration;

use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;
use votemesh::{
    admission::{Admission, AdmissionArgs, ENDING_WINDOWS, Refusal},
    client::Transport,
    grpc::{Listener, RETRY_PUSHBACK},
    proto::v1::{CastVoteRequest, vote_service_client::VoteServiceClient},
    queue::{VoteSource, memory::MemoryQueue},
};
use votemesh_testing::{
    ANY_PORT, TestServer,
    metrics::{parse, value},
    probe,
};
use votemesh_testing_services::{PROBE_INTERVAL, SERVED_BY, cats_and_dogs};

fn cast(voter_id: &str) -> Request<CastVoteRequest> {
    let mut request = Request::new(CastVoteRequest {
        voter_id: voter_id.into(),
        option: "a".into(),
    });
    request.set_timeout(Duration::from_secs(10));
    request
}

/// How many calls may wait for a permit in these tests.
const LINE: usize = 16;

fn admission(max_in_flight: usize, max_queue_wait_ms: u64, overload_after_ms: u64) -> Admission {
    Admission::new(&AdmissionArgs {
        max_in_flight,
        max_waiting: LINE,
        max_queue_wait_ms,
        overload_after_ms,
        ..AdmissionArgs::default()
    })
}

/// The vote service over an in-process queue, admitting through `admission`.
async fn start_vote(admission: Admission, queue: MemoryQueue) -> TestServer {
    TestServer::spawn(ANY_PORT, move |listener, shutdown| {
        votemesh_vote::run(
            Listener::from(listener).with_admission(admission),
            queue,
            cats_and_dogs(),
            SERVED_BY.to_owned(),
            PROBE_INTERVAL,
            shutdown,
        )
    })
    .await
    .ready()
    .await
}

/// A client with no retries: every refusal reaches the test.
async fn plain_client(server: &TestServer) -> VoteServiceClient<tonic::transport::Channel> {
    VoteServiceClient::new(votemesh::client::connect(server.addr).await.unwrap())
}

/// Takes every one of `admission`'s `count` permits: a stalled server.
async fn stall(admission: &Admission, count: usize) -> Vec<tokio::sync::OwnedSemaphorePermit> {
    let mut permits = Vec::new();
    for _ in 0..count {
        permits.push(admission.admit(None).await.expect("a free server admits"));
    }
    permits
}

fn refused(reason: &str) -> f64 {
    let scrape = parse(&votemesh::metrics::render()).unwrap();
    value(
        &scrape,
        "votemesh_admission_refused_total",
        &[("reason", reason)],
    )
}

/// Asserts that a call is refused as overloaded within milliseconds, not
/// after half its deadline.
async fn refused_at_once(client: &VoteServiceClient<tonic::transport::Channel>, voter_id: &str) {
    let arrived = std::time::Instant::now();
    let status = client.clone().cast_vote(cast(voter_id)).await.unwrap_err();
    assert!(status.message().contains("overloaded"), "{status:?}");
    assert!(
        arrived.elapsed() < Duration::from_secs(1),
        "{:?}",
        arrived.elapsed()
    );
}

/// `count` calls 400 ms apart that find the permit free: with windows of
/// 300 ms, the first closes the window open now and each of the next ends
/// a window in which nobody waited.
async fn calls_finding_the_permit_free(
    client: &VoteServiceClient<tonic::transport::Channel>,
    label: &str,
    count: u64,
) {
    for n in 0..count {
        tokio::time::sleep(Duration::from_millis(400)).await;
        client
            .clone()
            .cast_vote(cast(&format!("{label}-{n}")))
            .await
            .unwrap();
    }
}

/// As many windows in which nobody waited as end an overload
/// ([`ENDING_WINDOWS`]), after the one open now (what it counted may
/// still end overloaded).
async fn windows_of_free_permits(
    client: &VoteServiceClient<tonic::transport::Channel>,
    label: &str,
) {
    calls_finding_the_permit_free(client, label, ENDING_WINDOWS + 1).await;
}

/// The vote service with one permit, overloaded once none has been free
/// for 3 s (windows of 300 ms), brought into overload: the test held the
/// permit past that, and a call was refused at once. The permit is free
/// again.
async fn overloaded_vote_service() -> (
    Admission,
    TestServer,
    VoteServiceClient<tonic::transport::Channel>,
) {
    let admission = admission(1, 10_000, 3_000);
    let server = start_vote(admission.clone(), MemoryQueue::new()).await;
    let client = plain_client(&server).await;
    let held = stall(&admission, 1).await;
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    refused_at_once(&client, "refused").await;
    drop(held);
    (admission, server, client)
}

/// What one request of [`offer_load`] met: when it was answered (admitted
/// or refused), from the load's start, and how.
type Outcome = (Duration, Result<(), Refusal>);

/// Offers `admission` a request every `every` for `offered_for`, each one
/// holding its permit for `hold` once admitted: a load whose arrival rate
/// and service rate the test sets (two permits held 5 ms each serve at
/// most 400 a second). Returns every request's outcome once all are
/// answered and done.
async fn offer_load(
    admission: &Admission,
    every: Duration,
    hold: Duration,
    offered_for: Duration,
) -> Vec<Outcome> {
    let started = std::time::Instant::now();
    let mut arrivals = tokio::time::interval(every);
    let mut requests = Vec::new();
    while started.elapsed() < offered_for {
        arrivals.tick().await;
        let admission = admission.clone();
        requests.push(tokio::spawn(async move {
            let admitted = admission.admit(None).await;
            let answered = started.elapsed();
            if let Ok(_permit) = &admitted {
                tokio::time::sleep(hold).await;
            }
            (answered, admitted.map(drop))
        }));
    }
    let mut outcomes = Vec::new();
    for request in requests {
        outcomes.push(request.await.unwrap());
    }
    outcomes
}

#[tokio::test]
async fn calls_arriving_during_a_stall_wait_for_capacity_and_all_succeed() {
    // As many calls as may wait.
    const CALLS: usize = LINE;
    // Four permits, and a stall shorter than the overload threshold.
    let admission = admission(4, 2_000, 5_000);
    let queue = MemoryQueue::new();
    let server = start_vote(admission.clone(), queue.clone()).await;
    let client = plain_client(&server).await;

    let held = stall(&admission, 4).await;
    let calls: Vec<_> = (0..CALLS)
        .map(|n| {
            let mut client = client.clone();
            tokio::spawn(async move { client.cast_vote(cast(&format!("stalled-{n}"))).await })
        })
        .collect();
    probe::wait_for("every call waiting", Duration::from_secs(10), || async {
        admission.waiting() == CALLS
    })
    .await;
    // /metrics shows them waiting (other tests of this binary share the
    // process's registry, hence at least).
    let scrape = parse(&votemesh::metrics::render()).unwrap();
    assert!(value(&scrape, "votemesh_admission_waiting", &[]) >= CALLS as f64);
    // The stall goes on a little, then ends.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(held);

    for call in calls {
        let answer = call.await.unwrap();
        assert!(answer.is_ok(), "a call that waited out a stall: {answer:?}");
    }
    assert_eq!(queue.backlog().await.unwrap().depth, CALLS as u64);
    let scrape = parse(&votemesh::metrics::render()).unwrap();
    assert!(value(&scrape, "votemesh_admission_waited_seconds", &[]) >= CALLS as f64);
}

#[tokio::test]
async fn sustained_overload_is_refused_at_once_with_a_pushback_and_not_retried() {
    // Two permits; overloaded once none has been free for 200 ms.
    let admission = admission(2, 2_000, 200);
    let server = start_vote(admission.clone(), MemoryQueue::new()).await;
    let mut client = plain_client(&server).await;

    let held = stall(&admission, 2).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = refused("overloaded");
    let status = client.cast_vote(cast("overloaded")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("overloaded"), "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get(RETRY_PUSHBACK)
            .and_then(|value| value.to_str().ok()),
        Some("1000"),
        "{status:?}"
    );
    // Refused without waiting: counted as overloaded, not as a wait that
    // ran out, and nothing was left waiting.
    assert_eq!(refused("overloaded") - before, 1.0);
    assert_eq!(admission.waiting(), 0);

    // Probes get in: a busy server is not a dead one.
    assert_eq!(
        probe::health(server.addr, "").await,
        Ok(ServingStatus::Serving)
    );

    // votemesh's own client (with its retry layer) does not retry an
    // overloaded server's refusal: one call, one refusal.
    let channel =
        votemesh::client::channel(&format!("http://{}", server.addr), Transport::Plaintext)
            .unwrap();
    let before = refused("overloaded");
    let status = VoteServiceClient::new(channel)
        .cast_vote(cast("not-retried"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        refused("overloaded") - before,
        1.0,
        "the refusal was retried"
    );

    // The load drops: the next call is served at once.
    drop(held);
    client.cast_vote(cast("after")).await.unwrap();
}

#[tokio::test]
async fn when_overload_begins_the_standing_line_keeps_its_waits_and_is_served() {
    // One permit; overloaded once none has been free for 300 ms; until
    // then a call may wait up to half its 10 s deadline.
    let admission = admission(1, 10_000, 300);
    let server = start_vote(admission.clone(), MemoryQueue::new()).await;
    let client = plain_client(&server).await;

    let held = stall(&admission, 1).await;
    // Calls that arrive in the first 300 ms wait (leaving room in the line
    // for one more): as far as anyone can tell yet, this is a stall.
    const EARLY: usize = LINE - 1;
    let early: Vec<_> = (0..EARLY)
        .map(|n| {
            let mut client = client.clone();
            tokio::spawn(async move { client.cast_vote(cast(&format!("early-{n}"))).await })
        })
        .collect();
    probe::wait_for(
        "the early calls waiting",
        Duration::from_secs(10),
        || async { admission.waiting() == EARLY },
    )
    .await;
    // It lasts: the next arrival finds the server overloaded and a line
    // longer than its one permit, and is refused at once.
    tokio::time::sleep(Duration::from_millis(400)).await;
    refused_at_once(&client, "late").await;
    // The line that stood when overload began keeps the waits it was
    // given (5 s), far past the overloaded wait (5 ms)...
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        admission.waiting(),
        EARLY,
        "the standing line was refused when overload began"
    );
    // ...and is served once capacity comes.
    drop(held);
    for call in early {
        call.await.unwrap().unwrap();
    }
    assert_eq!(admission.waiting(), 0);
}

#[tokio::test]
async fn overload_ends_when_most_calls_find_capacity_not_at_the_first_free_permit() {
    // One permit; overloaded once none has been free for 3 s; overload
    // ends at the end of two 300 ms windows (a tenth of that) in a row in
    // which more calls found a permit free than had to wait.
    let admission = admission(1, 10_000, 3_000);
    let server = start_vote(admission.clone(), MemoryQueue::new()).await;
    let client = plain_client(&server).await;

    let held = stall(&admission, 1).await;
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    // Four calls find the server overloaded and are refused.
    for n in 0..4 {
        let status = client
            .clone()
            .cast_vote(cast(&format!("refused-{n}")))
            .await
            .unwrap_err();
        assert!(status.message().contains("overloaded"), "{status:?}");
    }
    // A permit is free for an instant, as on any saturated core, and a
    // call takes it (and the test, the next)...
    drop(held);
    client.clone().cast_vote(cast("in-the-gap")).await.unwrap();
    let held = stall(&admission, 1).await;
    // ...but the server is still overloaded (two found a permit free, four
    // waited, whenever the window closes): the next call that has to wait
    // is refused within milliseconds, not after half its deadline.
    refused_at_once(&client, "still").await;

    // The load drops: calls find permits free, and the overload ends.
    drop(held);
    windows_of_free_permits(&client, "after").await;
    // A stall now is absorbed again: the call waits for it to end.
    let held = stall(&admission, 1).await;
    let call = tokio::spawn({
        let mut client = client.clone();
        async move { client.cast_vote(cast("in-a-stall")).await }
    });
    probe::wait_for("the call waiting", Duration::from_secs(10), || async {
        admission.waiting() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(held);
    call.await.unwrap().unwrap();
}

#[tokio::test]
async fn one_quiet_window_in_an_overload_does_not_end_it() {
    let (admission, _server, client) = overloaded_vote_service().await;
    // A window in which the few calls that got through all found the
    // permit free, as on a saturated core whose arrivals are still in
    // the kernel's queues: the first call closes the window of the
    // refusal, the second the quiet one.
    calls_finding_the_permit_free(&client, "quiet", 2).await;
    // The next calls find no permit free again: the server is still
    // overloaded, and refuses them at once rather than letting them
    // wait half their deadline.
    let _held = stall(&admission, 1).await;
    refused_at_once(&client, "after-the-quiet-window").await;
}

#[tokio::test]
async fn right_after_an_overload_a_stall_shorter_than_overload_after_is_absorbed() {
    let (admission, _server, client) = overloaded_vote_service().await;
    // The load drops: calls find the permit free, the overload is over.
    windows_of_free_permits(&client, "free").await;
    // What the overload left behind holds the permit for a while (more
    // than a window, far less than OVERLOAD_AFTER): calls arriving then
    // wait, the first at once and the next half a second on, and both
    // are served. Not refused as a new overload.
    let held = stall(&admission, 1).await;
    let call = |voter_id: &'static str| {
        let mut client = client.clone();
        tokio::spawn(async move { client.cast_vote(cast(voter_id)).await })
    };
    let first = call("in-the-aftermath");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let next = call("later-in-the-aftermath");
    probe::wait_for("both calls waiting", Duration::from_secs(5), || async {
        admission.waiting() == 2
    })
    .await;
    drop(held);
    first.await.unwrap().unwrap();
    next.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_line_that_grows_while_it_is_served_is_an_overload_before_overload_after() {
    // Two permits; overloaded once none has been free for 4 s, or for
    // two windows of 400 ms in a row in which the line grew while it was
    // served.
    let admission = Admission::new(&AdmissionArgs {
        max_in_flight: 2,
        max_waiting: 4_096,
        max_queue_wait_ms: 30_000,
        overload_after_ms: 4_000,
        ..AdmissionArgs::default()
    });
    // 400 arrivals a second where at most 250 can be served (each holds
    // its permit 8 ms): the line grows by 150 a second while it is served.
    let outcomes = offer_load(
        &admission,
        Duration::from_micros(2_500),
        Duration::from_millis(8),
        Duration::from_secs(3),
    )
    .await;
    let first_refused = outcomes
        .iter()
        .filter(|(_, outcome)| outcome.is_err())
        .map(|(answered, _)| *answered)
        .min();
    // Seen after two windows and a bit, long before OVERLOAD_AFTER.
    assert!(
        first_refused.is_some_and(|answered| answered < Duration::from_millis(3_000)),
        "no refusal within 3 s (first at {first_refused:?}): the growing line was not seen as an overload"
    );
    // Every refusal is the overload's, at once: nothing ran out of time
    // in the line, and the line standing when the overload was seen was
    // served.
    for (answered, outcome) in &outcomes {
        if let Err(refusal) = outcome {
            assert_eq!(*refusal, Refusal::Overloaded, "answered at {answered:?}");
        }
    }
    assert_eq!(admission.waiting(), 0);
}

#[tokio::test]
async fn a_stall_and_then_its_line_served_at_full_rate_are_not_an_overload() {
    // Two permits; overloaded once none has been free for 7 s, or for
    // two windows of 700 ms in a row in which the line grew while it was
    // served.
    let admission = Admission::new(&AdmissionArgs {
        max_in_flight: 2,
        max_waiting: 4_096,
        max_queue_wait_ms: 30_000,
        overload_after_ms: 7_000,
        ..AdmissionArgs::default()
    });
    // A stall of 2.5 s (over three windows in which the line grows and
    // nothing is served)...
    let held = stall(&admission, 2).await;
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        drop(held);
    });
    // ...under 200 arrivals a second, then served at up to 400 a second
    // (each holds its permit 5 ms): the 500 lined up drain over three
    // windows or more, with no permit free.
    let outcomes = offer_load(
        &admission,
        Duration::from_millis(5),
        Duration::from_millis(5),
        Duration::from_millis(5_500),
    )
    .await;
    for (answered, outcome) in &outcomes {
        assert!(
            outcome.is_ok(),
            "refused at {answered:?}: {outcome:?}; a stall's line taken for an overload"
        );
    }
}

#[tokio::test]
async fn a_call_waits_at_most_half_its_deadline() {
    let admission = admission(1, 60_000, 60_000);
    let server = start_vote(admission.clone(), MemoryQueue::new()).await;
    let mut client = plain_client(&server).await;

    let _held = stall(&admission, 1).await;
    let before = refused("wait_exceeded");
    let mut request = cast("in-a-hurry");
    request.set_timeout(Duration::from_secs(1));
    let status = client.cast_vote(request).await.unwrap_err();
    // Refused by admission (UNAVAILABLE, with half the deadline left to
    // its caller), not run into the caller's deadline.
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("500ms"), "{status:?}");
    assert_eq!(refused("wait_exceeded") - before, 1.0);
}

#[tokio::test]
async fn while_overloaded_a_line_as_long_as_the_permits_waits_and_the_rest_are_refused_at_once() {
    // Two permits; overloaded once none has been free for 300 ms; then a
    // call may wait 2 s for a permit (long, to tell a wait from a refusal).
    let admission = Admission::new(&AdmissionArgs {
        max_in_flight: 2,
        max_waiting: LINE,
        max_queue_wait_ms: 10_000,
        overload_after_ms: 300,
        overloaded_queue_wait_ms: 2_000,
    });
    let server = start_vote(admission.clone(), MemoryQueue::new()).await;
    let client = plain_client(&server).await;

    let held = stall(&admission, 2).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The server is overloaded now: the first two arrivals line up, as
    // many as there are permits, ready for the next that comes free.
    let lined_up: Vec<_> = (0..2)
        .map(|n| {
            let mut client = client.clone();
            tokio::spawn(async move { client.cast_vote(cast(&format!("lined-up-{n}"))).await })
        })
        .collect();
    probe::wait_for("two calls waiting", Duration::from_secs(1), || async {
        admission.waiting() == 2
    })
    .await;
    // The next is refused at once, not after its 2 s.
    refused_at_once(&client, "past-the-line").await;
    // The line was worth keeping: both calls in it are served once the
    // permits come free.
    drop(held);
    for call in lined_up {
        call.await.unwrap().unwrap();
    }
}
