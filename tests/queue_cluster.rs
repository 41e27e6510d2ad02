//! The vote queue's producer side on a Redis Cluster of 3 primaries and 3
//! replicas (real `redis-server --cluster-enabled yes` nodes, formed by the
//! harness with `redis-cli --cluster create`), and the shard layout's
//! guard on a single Redis.
//!
//! ```text
//! RedisQueue::cluster ─► pusher ─► one script call (+ WAIT) per shard ─► the shard's primary
//!                                                                        └─► its replica
//! test ─► reads every shard's list through its own cluster client
//! ```

use std::{collections::HashMap, num::NonZeroU16, time::Duration};

use bb8_redis::redis::{AsyncCommands, cluster::ClusterClient};
use chrono::{SubsecRound, Utc};
use futures_util::future::join_all;
use uuid::Uuid;
use votemesh::{
    config::QueueLayout,
    idempotency::{Idempotency, IdempotencyKey},
    queue::{NewVote, QueueError, QueuedVote, VoteSink, redis::RedisQueue, shard::Shards},
};
use votemesh_testing::{RedisCluster, RedisServer};

const SHARDS: u16 = 8;

fn shards() -> Shards {
    Shards::new(NonZeroU16::new(SHARDS).unwrap())
}

fn layout(replica_acks: u8) -> QueueLayout {
    QueueLayout {
        shards: shards(),
        replica_acks,
    }
}

fn seeds(cluster: &RedisCluster) -> Vec<String> {
    cluster.seeds().split(',').map(str::to_owned).collect()
}

fn vote(voter: &str) -> NewVote {
    NewVote {
        vote_id: Uuid::new_v4(),
        voter_id: voter.into(),
        option_id: "a".into(),
        // To the microsecond, as the queue keeps time (a repeat's answer
        // is read back from its marker).
        cast_at: Utc::now().trunc_subsecs(6),
        trace_context: HashMap::new(),
        idempotency: None,
    }
}

/// Every shard's queued votes, read through a cluster client of the test's
/// own, oldest first.
async fn queued(cluster: &RedisCluster) -> HashMap<u16, Vec<QueuedVote>> {
    let client = ClusterClient::new(
        seeds(cluster)
            .iter()
            .map(|seed| format!("redis://{seed}/"))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let mut connection = client.get_async_connection().await.unwrap();
    let mut contents = HashMap::new();
    for shard in shards().all() {
        let messages: Vec<String> = connection.lrange(shard.queue_key(), 0, -1).await.unwrap();
        let votes = messages
            .iter()
            .rev()
            .map(|message| QueuedVote::parse(message).unwrap())
            .collect();
        contents.insert(shard.index(), votes);
    }
    contents
}

/// Votes of 64 voters, four rounds, each round pushed at once and then
/// again with the same idempotency keys: every acknowledged vote is queued
/// exactly once (the repeats answered as the first attempts), in its voter's shard
/// (`crc32(voter) mod 8`), as it was answered; a voter's later vote has a
/// higher sequence; the shards sit on more than one primary; and the queue
/// recorded its layout.
#[tokio::test]
async fn votes_land_in_their_voters_shards_in_order_across_the_primaries() {
    let cluster = RedisCluster::start(3, 1).await.unwrap();
    // No replica acknowledgement: a replica slow to confirm on a busy
    // machine would refuse a vote here, and this test is about placement
    // and order (the next one is about replicas).
    let queue = RedisQueue::cluster(&seeds(&cluster), layout(0)).unwrap();
    let voters: Vec<String> = (0..64).map(|n| format!("voter-{n}")).collect();
    let mut acknowledged: Vec<QueuedVote> = Vec::new();
    let mut last_round = Vec::new();
    for _round in 0..4 {
        // Each call with a key, as the retry layer makes them: its marker
        // is a field of the shard's marker hash, in the shard's slot.
        let votes: Vec<NewVote> = voters
            .iter()
            .map(|voter| NewVote {
                idempotency: Some(Idempotency {
                    key: IdempotencyKey::generate(),
                    window: Duration::from_secs(30),
                }),
                ..vote(voter)
            })
            .collect();
        last_round.clear();
        for answer in join_all(votes.iter().map(|vote| queue.push(vote))).await {
            last_round.push(answer.unwrap());
        }
        acknowledged.extend(last_round.iter().cloned());
        // The round again, as retries: each answered as its first attempt.
        let repeats = join_all(votes.iter().map(|vote| queue.push(vote))).await;
        let repeats: Vec<QueuedVote> = repeats.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            repeats, last_round,
            "repeats are answered as the first attempts"
        );
    }

    let contents = queued(&cluster).await;
    let total: usize = contents.values().map(Vec::len).sum();
    assert_eq!(total, acknowledged.len(), "each vote queued once");
    for vote in &acknowledged {
        let shard = shards().of(&vote.voter_id).index();
        assert!(
            contents[&shard].contains(vote),
            "{vote:?} is not in shard {shard} as it was answered"
        );
    }
    for voter in &voters {
        let sequences: Vec<i64> = acknowledged
            .iter()
            .filter(|vote| &vote.voter_id == voter)
            .map(|vote| vote.sequence)
            .collect();
        assert!(
            sequences.windows(2).all(|pair| pair[0] < pair[1]),
            "{voter}: {sequences:?}"
        );
    }
    let mut primaries = Vec::new();
    for shard in shards().all() {
        primaries.push(cluster.primary_of(shard.queue_key()).await.unwrap().port);
    }
    primaries.sort_unstable();
    primaries.dedup();
    assert!(
        primaries.len() > 1,
        "8 shards on one primary: {primaries:?}"
    );
    let recorded = cluster
        .command_for_key("votes:layout", &["GET", "votes:layout"])
        .await
        .unwrap();
    assert!(recorded.ends_with("8\r\n"), "{recorded:?}");
}

/// The primary of a shard dies while its replica lags (frozen): votes
/// pushed meanwhile get no OK, because the replica never confirmed them
/// (`REDIS_REPLICA_ACKS=1`). The replica takes over; until it has a
/// replica of its own (the old primary, restarted) its votes get no OK
/// either; then they do, and every vote that ever got an OK is there.
/// With no replica acknowledgement the votes of the lag would have been
/// answered OK and lost.
#[tokio::test]
async fn a_dead_primary_with_a_lagging_replica_loses_no_acknowledged_vote() {
    let mut cluster = RedisCluster::start(3, 1).await.unwrap();
    let queue = RedisQueue::cluster(&seeds(&cluster), layout(1)).unwrap();
    let victim = shards().shard(0);
    let voters: Vec<String> = (0..400)
        .map(|n| format!("voter-{n}"))
        .filter(|voter| shards().of(voter) == victim)
        .take(10)
        .collect();
    let primary = cluster.primary_of(victim.queue_key()).await.unwrap().port;
    let replica = cluster.replicas_of(primary).await.unwrap()[0].port;

    let mut acknowledged = Vec::new();
    // Some votes while all is well (on a busy machine a replica may be too
    // slow to confirm a few: those get no OK, and are not counted).
    push_round(&queue, &voters, &mut acknowledged).await;

    cluster.node_mut(replica).unwrap().freeze();
    let refused_while_lagging = push_round(&queue, &voters, &mut acknowledged).await;
    assert_eq!(
        refused_while_lagging,
        voters.len(),
        "a vote its replica never confirmed got an OK"
    );
    cluster.node_mut(primary).unwrap().stop().await;
    cluster.node_mut(replica).unwrap().thaw();
    let new_primary = cluster
        .wait_for_failover(victim.queue_key(), primary)
        .await
        .unwrap();
    assert_eq!(new_primary, replica);

    // The new primary has no replica yet: nothing it takes can be
    // confirmed, so nothing gets an OK.
    assert_eq!(
        push_round(&queue, &voters, &mut acknowledged).await,
        voters.len(),
        "a vote no replica holds got an OK"
    );
    // The old primary comes back as the new one's replica; once it has
    // synced, votes are taken again (the pusher found the new primary).
    cluster.node_mut(primary).unwrap().restart().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while push_round(&queue, &voters, &mut acknowledged).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no vote accepted after the failover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let contents = queued(&cluster).await;
    for vote in &acknowledged {
        assert!(
            contents[&victim.index()]
                .iter()
                .any(|queued| queued.vote_id == vote.vote_id),
            "acknowledged vote {vote:?} was lost with its primary"
        );
    }
}

/// A busy shard's slot moves to another primary, one key at a time, while
/// its voters keep voting: every vote that got an OK is in the shard on
/// its new primary, once, and each voter's votes are stamped and queued in
/// the order they were acknowledged.
#[tokio::test]
async fn a_shard_whose_slot_moves_while_votes_flow_loses_and_reorders_nothing() {
    let cluster = RedisCluster::start(3, 1).await.unwrap();
    let queue = RedisQueue::cluster(&seeds(&cluster), layout(1)).unwrap();
    let shard = shards().shard(3);
    let voters: Vec<String> = (0..1000)
        .map(|n| format!("voter-{n}"))
        .filter(|voter| shards().of(voter) == shard)
        .take(20)
        .collect();
    let slot = cluster.slot_of(shard.queue_key()).await.unwrap();
    let from = cluster.primary_of(shard.queue_key()).await.unwrap().port;
    let to = cluster
        .topology()
        .await
        .unwrap()
        .into_iter()
        .find(|node| node.primary && node.port != from)
        .unwrap()
        .port;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let voting = tokio::spawn({
        let (queue, voters, stop) = (queue.clone(), voters.clone(), stop.clone());
        async move {
            let mut acknowledged = Vec::new();
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                push_round(&queue, &voters, &mut acknowledged).await;
                rounds += 1;
            }
            (acknowledged, rounds)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster
        .migrate_slot(slot, to, 1, Duration::from_millis(150))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acknowledged, rounds) = voting.await.unwrap();
    assert!(rounds > 10, "only {rounds} rounds of votes met the move");
    assert_eq!(
        cluster.primary_of(shard.queue_key()).await.unwrap().port,
        to
    );

    let queued = &queued(&cluster).await[&shard.index()];
    for vote in &acknowledged {
        assert_eq!(
            queued
                .iter()
                .filter(|queued| queued.vote_id == vote.vote_id)
                .count(),
            1,
            "acknowledged {vote:?} is not in its shard once"
        );
    }
    for voter in &voters {
        let in_acknowledgement_order: Vec<i64> = acknowledged
            .iter()
            .filter(|vote| &vote.voter_id == voter)
            .map(|vote| vote.sequence)
            .collect();
        assert!(
            in_acknowledgement_order
                .windows(2)
                .all(|pair| pair[0] < pair[1]),
            "{voter}'s votes were stamped out of order: {in_acknowledgement_order:?}"
        );
        let in_queue_order: Vec<i64> = queued
            .iter()
            .filter(|vote| &vote.voter_id == voter)
            .map(|vote| vote.sequence)
            .collect();
        assert!(
            in_queue_order.windows(2).all(|pair| pair[0] < pair[1]),
            "{voter}'s votes were queued out of order: {in_queue_order:?}"
        );
    }
}

/// Pushes one vote of each of `voters` at once; keeps those acknowledged
/// and returns how many were refused as unavailable or unconfirmed.
async fn push_round(
    queue: &RedisQueue,
    voters: &[String],
    acknowledged: &mut Vec<QueuedVote>,
) -> usize {
    let votes: Vec<NewVote> = voters.iter().map(|voter| vote(voter)).collect();
    let answers = join_all(votes.iter().map(|vote| queue.push(vote))).await;
    let mut refused = 0;
    for answer in answers {
        match answer {
            Ok(queued) => acknowledged.push(queued),
            Err(QueueError::Unconfirmed(_) | QueueError::Unavailable(_)) => refused += 1,
            Err(other) => panic!("unexpected {other}"),
        }
    }
    refused
}

/// A queue set up with one shard count is refused, with the reason, to a
/// component started with another; and a first sharded use of a Redis
/// whose unsharded queue still holds votes is refused too.
#[tokio::test]
async fn another_shard_count_than_the_queue_was_set_up_with_is_refused() {
    let redis = RedisServer::start().await.unwrap();
    let unsharded = RedisQueue::new(&redis.url()).unwrap();
    unsharded.push(&vote("v1")).await.unwrap();
    // Queued by a release that recorded no layout.
    redis.command(&["DEL", "votes:layout"]).await.unwrap();

    let sharded = RedisQueue::single(&redis.url(), None, layout(0)).unwrap();
    let refused = sharded.push(&vote("v2")).await.unwrap_err();
    assert!(
        matches!(&refused, QueueError::Failed(reason) if reason.contains("still holds 1 votes")),
        "{refused}"
    );
    assert!(sharded.ping().await.is_err(), "ready while refusing votes");

    redis
        .command(&["DEL", "votes", "votes:layout"])
        .await
        .unwrap();
    sharded.push(&vote("v2")).await.unwrap();
    let other_count = RedisQueue::single(
        &redis.url(),
        None,
        QueueLayout {
            shards: Shards::new(NonZeroU16::new(4).unwrap()),
            replica_acks: 0,
        },
    )
    .unwrap();
    let refused = other_count.push(&vote("v3")).await.unwrap_err();
    assert!(
        matches!(&refused, QueueError::Failed(reason)
            if reason.contains("set up with 8 shards") && reason.contains("QUEUE_SHARDS=4")),
        "{refused}"
    );
    assert!(other_count.ping().await.is_err());
    sharded.ping().await.unwrap();
}
