//! Cluster: the ingest and drain figures again with the queue on a Redis
//! Cluster of 3 primaries and 3 replicas (the harness's) in 16 shards,
//! each push confirmed by a replica (`REDIS_REPLICA_ACKS` 1, a cluster's
//! default), next to this run's one-Redis figures, as ratios of CPU per
//! vote. On one machine a cluster is not faster (its six nodes share the
//! cores); the point is what each vote costs each part, and that every
//! vote is counted (docs/SCALING.md, "The capacity model").
//!
//! The votes go to a PostgreSQL of their own, and are checked there: a
//! vote a replica did not confirm in time is answered UNAVAILABLE ("may
//! have been queued") and may still be counted, so per option the counts
//! may differ from the acknowledged votes by at most the number of such
//! answers, never more; the suite's exact check keeps to the one-Redis
//! runs.
//!
//! ```text
//! vote (REDIS_CLUSTER_NODES) ─► 3 primaries + 3 replicas ─► worker (16 shards) ─► PostgreSQL
//!   ingest, worker stopped, c=mid      drain of the queued votes, 1 worker
//! ```

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use votemesh::store;
use votemesh_testing::{PostgresServer, RedisCluster, RedisServer};

use super::{Load, Suite, cpu, ratio};

/// The cluster's shard count: the default on a cluster.
const SHARDS: u16 = votemesh::config::DEFAULT_CLUSTER_SHARDS;

/// One queue's CPU per vote, in µs, by part.
#[derive(Clone, Copy, Default)]
struct PerVote {
    calls_per_second: f64,
    vote: f64,
    redis: f64,
    worker: f64,
    postgres: f64,
}

impl Suite {
    /// Writes the cluster table: this run's one-Redis ingest (at `c_mid`)
    /// and one-worker drain against the same on a cluster.
    pub(super) async fn cluster(&mut self, c_mid: usize) {
        let single_ingest = self.per_vote(&format!("ingest c={c_mid}"));
        let single_drain = self.per_vote("drain, 1 worker(s)");
        let (cluster, postgres) = match (
            RedisCluster::start(3, 1).await,
            PostgresServer::start().await,
        ) {
            (Ok(cluster), Ok(postgres)) => (cluster, postgres),
            (Err(error), _) | (_, Err(error)) => {
                self.problems.push(format!(
                    "no Redis Cluster or PostgreSQL for the cluster figure: {error}"
                ));
                return;
            }
        };
        let db = match store::connect(&postgres.url()).await {
            Ok(db) => db,
            Err(error) => {
                self.problems
                    .push(format!("the cluster figure's PostgreSQL: {error}"));
                return;
            }
        };
        let queue = [
            ("REDIS_CLUSTER_NODES", cluster.seeds()),
            ("QUEUE_SHARDS", SHARDS.to_string()),
        ];
        let nodes: Vec<Option<u32>> = cluster.nodes().iter().map(RedisServer::pid).collect();
        let nodes_cpu = || -> f64 {
            nodes
                .iter()
                .filter_map(|pid| cpu::Group::one("redis", *pid))
                .map(|group| group.cpu().as_secs_f64())
                .sum()
        };

        // Ingest: the worker stopped, the same closed loop as the one-Redis
        // figure.
        let mut env = vec![("VOTE_LISTEN_ADDR", "{addr}".to_owned())];
        env.extend(queue.iter().cloned());
        let vote = self
            .start_process("votemesh-vote", "vote-cluster", &env)
            .await
            .ready(true)
            .await;
        let redis_before = nodes_cpu();
        // Named as the one-Redis vote service is, for "Where the CPU goes".
        let vote_group = vote.cpu_group().map(|group| cpu::Group {
            name: "vote".into(),
            ..group
        });
        let meter = cpu::Meter::start(vote_group.into_iter().collect());
        let size = self.size.clone();
        let ingest = self
            .load(Load::closed_loop(
                "grpc",
                vote.url(),
                c_mid,
                size.run,
                size.voters,
                "cluster-ingest".into(),
            ))
            .await;
        let mut ingest_cost = meter.stop();
        ingest_cost.add("redis", Duration::from_secs_f64(nodes_cpu() - redis_before));
        // Then the drain's backlog, through the same vote service.
        let queued = self
            .load(Load {
                mode: "grpc",
                address: vote.url(),
                concurrency: c_mid,
                run: None,
                count: Some(size.drain_votes),
                rate: None,
                voters: size.drain_voters,
                prefix: "cluster-drain".into(),
            })
            .await;
        vote.stop().await;
        let mut expected = std::collections::BTreeMap::<String, i64>::new();
        for (option, count) in ingest.expected_tally.iter().chain(&queued.expected_tally) {
            *expected.entry(option.clone()).or_default() += *count as i64;
        }
        let maybe_queued = (ingest.failed + queued.failed) as i64;

        // Drain: one worker holding every shard.
        let backlog = ingest.ok + queued.ok;
        let redis_before = nodes_cpu();
        let meter = cpu::Meter::start(
            cpu::Group::tree("postgres", postgres.pid())
                .into_iter()
                .collect(),
        );
        let started = Instant::now();
        let mut env = vec![
            ("WORKER_LISTEN_ADDR", "{addr}".to_owned()),
            ("WORKER_ID", "bench-cluster".to_owned()),
            ("DATABASE_URL", postgres.url().expose().to_owned()),
        ];
        env.extend(queue.iter().cloned());
        let worker = self
            .start_process("votemesh-worker", "bench-cluster", &env)
            .await
            .ready(true)
            .await;
        let (counted, drained_at) =
            wait_until_settled(&db, expected.values().sum(), Duration::from_secs(1800)).await;
        let seconds = drained_at.duration_since(started).as_secs_f64();
        let mut drain_cost = meter.stop();
        drain_cost.add("redis", Duration::from_secs_f64(nodes_cpu() - redis_before));
        if let Some(group) = worker.cpu_group() {
            drain_cost.add(&group.name, group.cpu());
        }
        worker.stop().await;
        let off_by = expected
            .iter()
            .map(|(option, count)| (counted.get(option).copied().unwrap_or(0) - count).abs())
            .max()
            .unwrap_or(0);
        if off_by > maybe_queued {
            self.problems.push(format!(
                "cluster: counts {counted:?} differ from the acknowledged votes {expected:?} \
                 by more than the {maybe_queued} votes answered UNAVAILABLE"
            ));
        }

        let cluster_ingest = PerVote {
            calls_per_second: ingest.throughput,
            vote: ingest_cost.per_thousand("vote", ingest.ok).unwrap_or(0.0),
            redis: ingest_cost.per_thousand("redis", ingest.ok).unwrap_or(0.0),
            ..PerVote::default()
        };
        let cluster_drain = PerVote {
            calls_per_second: backlog as f64 / seconds,
            worker: drain_cost
                .per_thousand("bench-cluster", backlog)
                .unwrap_or(0.0),
            redis: drain_cost.per_thousand("redis", backlog).unwrap_or(0.0),
            postgres: drain_cost.per_thousand("postgres", backlog).unwrap_or(0.0),
            ..PerVote::default()
        };
        self.costs.push((
            format!("cluster ingest c={c_mid}"),
            ingest.ok,
            ingest.throughput,
            ingest_cost,
        ));
        self.costs.push((
            "cluster drain, 1 worker".into(),
            backlog,
            cluster_drain.calls_per_second,
            drain_cost,
        ));

        self.line(format!(
            "\n## On a Redis Cluster: ingest and drain next to one Redis\n\n\
             The ingest at c={c_mid} (worker stopped) and a drain by one worker, once on this \
             run's one Redis (the figures above) and once on a Redis Cluster of 3 primaries \
             and 3 replicas in {SHARDS} shards, each push confirmed by a replica. CPU per \
             vote from `/proc`, Redis summed over every node. The six nodes share this \
             machine's cores: read the CPU ratios, not the rates. Votes answered UNAVAILABLE \
             (a replica did not confirm within 200 ms; they may still be counted): {} of {}.\n\n\
             | queue | CastVote calls/s | vote µs/call | Redis µs/call | drained votes/s | worker µs/vote | Redis µs/vote | PostgreSQL µs/vote |\n\
             |---|---|---|---|---|---|---|---|",
            maybe_queued,
            ingest.sent + queued.sent,
        ));
        for (label, ingest, drain) in [
            ("one Redis", single_ingest, single_drain),
            ("cluster", cluster_ingest, cluster_drain),
        ] {
            self.line(format!(
                "| {label} | {:.0} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} |",
                ingest.calls_per_second,
                ingest.vote,
                ingest.redis,
                drain.calls_per_second,
                drain.worker,
                drain.redis,
                drain.postgres,
            ));
        }
        self.line(format!(
            "| cluster / one Redis | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            ratio(
                cluster_ingest.calls_per_second,
                single_ingest.calls_per_second
            ),
            ratio(cluster_ingest.vote, single_ingest.vote),
            ratio(cluster_ingest.redis, single_ingest.redis),
            ratio(
                cluster_drain.calls_per_second,
                single_drain.calls_per_second
            ),
            ratio(cluster_drain.worker, single_drain.worker),
            ratio(cluster_drain.redis, single_drain.redis),
            ratio(cluster_drain.postgres, single_drain.postgres),
        ));
    }

    /// The CPU per call of the metered run labelled `label` (this run's
    /// one-Redis ingest or drain), by part.
    fn per_vote(&self, label: &str) -> PerVote {
        let Some((_, calls, throughput, cost)) = self.costs.iter().find(|(l, ..)| l == label)
        else {
            return PerVote::default();
        };
        let workers: f64 = cost
            .by_group
            .iter()
            .filter(|(name, _)| name.starts_with("bench-"))
            .map(|(name, _)| cost.per_thousand(name, *calls).unwrap_or(0.0))
            .sum();
        PerVote {
            calls_per_second: *throughput,
            vote: cost.per_thousand("vote", *calls).unwrap_or(0.0),
            redis: cost.per_thousand("redis", *calls).unwrap_or(0.0),
            worker: workers,
            postgres: cost.per_thousand("postgres", *calls).unwrap_or(0.0),
        }
    }
}

/// Waits until the tally of `db` holds at least `voters` voters and has
/// stopped moving (votes answered UNAVAILABLE may add more); returns it
/// per option, and when it first held `voters`.
async fn wait_until_settled(
    db: &DatabaseConnection,
    voters: i64,
    within: Duration,
) -> (std::collections::BTreeMap<String, i64>, Instant) {
    let started = Instant::now();
    let mut reached: Option<Instant> = None;
    let mut last: Option<(std::collections::BTreeMap<String, i64>, Instant)> = None;
    loop {
        let now = tally(db).await;
        let total: i64 = now.values().sum();
        if total >= voters {
            let reached = *reached.get_or_insert_with(Instant::now);
            match &last {
                Some((seen, since)) if *seen == now => {
                    if since.elapsed() >= Duration::from_millis(500) {
                        return (now, reached);
                    }
                }
                _ => last = Some((now, Instant::now())),
            }
        }
        assert!(
            started.elapsed() < within,
            "the cluster's votes were not counted within {within:?} ({total} of {voters})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The tally per option (summed over the shards' rows).
async fn tally(db: &DatabaseConnection) -> std::collections::BTreeMap<String, i64> {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT option_id, CAST(SUM(count) AS BIGINT) FROM tally GROUP BY option_id",
        ))
        .await
        .unwrap_or_default();
    rows.iter()
        .filter_map(|row| {
            Some((
                row.try_get_by_index::<String>(0).ok()?,
                row.try_get_by_index::<i64>(1).ok()?,
            ))
        })
        .collect()
}
