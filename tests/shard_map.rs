//! The shard map each database records (`votemesh::store::shard_map`),
//! against real PostgreSQL servers started by the harness: several
//! databases accept only the map they were set up with (same databases,
//! same order, same shard count), a refused start marks no database, a
//! database without a record among recorded ones is refused, one database
//! accepts any shard count, and the result side's check finds a database
//! out of place.

use std::num::NonZeroU16;

use sea_orm::EntityTrait;
use votemesh::{
    config::ConnectionUrl,
    queue::shard::Shards,
    store::{Databases, StoreError, entity::shard_map},
};
use votemesh_testing::PostgresServer;

fn shards(count: u16) -> Shards {
    Shards::new(NonZeroU16::new(count).unwrap())
}

async fn databases(servers: &[&PostgresServer]) -> Databases {
    let urls: Vec<ConnectionUrl> = servers.iter().map(|server| server.url()).collect();
    Databases::connect(&urls, None).await.unwrap()
}

/// What `db` recorded: (database index, database count, shard count).
async fn recorded_map(db: &sea_orm::DatabaseConnection) -> Option<(i32, i32, i32)> {
    shard_map::Entity::find_by_id(0)
        .one(db)
        .await
        .unwrap()
        .map(|row| (row.database_index, row.database_count, row.shard_count))
}

fn assert_conflict(outcome: Result<(), StoreError>, what: &str) {
    match outcome {
        Err(error @ StoreError::ShardMapConflict { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains("was set up as database"),
                "{what}: {message}"
            );
        }
        other => panic!("{what}: expected a shard map conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn several_databases_accept_only_the_map_they_were_set_up_with() {
    let (first, second, third) = (
        PostgresServer::start().await.unwrap(),
        PostgresServer::start().await.unwrap(),
        PostgresServer::start().await.unwrap(),
    );
    let pair = databases(&[&first, &second]).await;
    pair.migrate(shards(16)).await.unwrap();
    pair.migrate(shards(16))
        .await
        .expect("the same map again (a restart, another worker)");

    assert_conflict(
        databases(&[&second, &first])
            .await
            .migrate(shards(16))
            .await,
        "the order swapped",
    );
    assert_conflict(pair.migrate(shards(8)).await, "another shard count");
    assert_conflict(
        databases(&[&first, &second, &third])
            .await
            .migrate(shards(16))
            .await,
        "a database added",
    );
    assert_conflict(
        databases(&[&first]).await.migrate(shards(16)).await,
        "a database removed",
    );
    // The refused starts left the records as they were, and marked no
    // database that had none.
    let third_alone = databases(&[&third]).await;
    assert!(
        recorded_map(third_alone.get(0).unwrap()).await.is_none(),
        "the added database was not marked"
    );
    // A database without a record among recorded ones (recreated empty,
    // or the wrong host) is refused, by the worker and by the reader.
    let recreated = databases(&[&first, &third]).await;
    assert!(matches!(
        recreated.migrate(shards(16)).await,
        Err(StoreError::UnrecordedDatabase { .. })
    ));
    assert!(matches!(
        databases(&[&first, &third]).await.check_places().await,
        Err(StoreError::UnrecordedDatabase { .. })
    ));
    assert_eq!(recorded_map(pair.get(1).unwrap()).await, Some((1, 2, 16)));

    // The reading side (the result service) checks places only.
    databases(&[&first, &second])
        .await
        .check_places()
        .await
        .unwrap();
    assert_conflict(
        databases(&[&second, &first]).await.check_places().await,
        "read in the swapped order",
    );
}

#[tokio::test]
async fn one_database_holds_every_voter_whatever_the_shard_count() {
    let server = PostgresServer::start().await.unwrap();
    let one = databases(&[&server]).await;
    votemesh::store::migrate(one.get(0).unwrap()).await.unwrap();
    one.migrate(shards(16)).await.unwrap();
    one.migrate(shards(4)).await.unwrap();
    assert_eq!(
        recorded_map(one.get(0).unwrap()).await,
        Some((0, 1, 4)),
        "the record follows the shard count"
    );
    one.check_places().await.unwrap();
    assert!(matches!(
        databases(&[&server, &server])
            .await
            .migrate(shards(1))
            .await,
        Err(StoreError::MoreDatabasesThanShards { .. })
    ));
}

/// A database of the release before the tally per shard, on PostgreSQL
/// and on SQLite: its counts become shard 0's, and every option's sum is
/// what it was.
#[tokio::test]
async fn counts_kept_per_option_become_shard_zeros_on_upgrade() {
    use sea_orm::ConnectionTrait;
    use sea_orm_migration::MigratorTrait;
    use votemesh::store::{self, migration::Migrator};

    let postgres = PostgresServer::start().await.unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    let sqlite = ConnectionUrl::new(format!("sqlite://{}?mode=rwc", file.path().display()));
    for url in [postgres.url(), sqlite] {
        let db = store::connect(&url).await.unwrap();
        // The two migrations of that release, and counts in its tally.
        Migrator::up(&db, Some(2)).await.unwrap();
        db.execute_unprepared("INSERT INTO tally (option_id, count) VALUES ('a', 5), ('b', 2)")
            .await
            .unwrap();
        store::migrate(&db).await.unwrap();
        let mut rows: Vec<(String, i32, i64)> = votemesh::store::entity::tally::Entity::find()
            .all(&db)
            .await
            .unwrap()
            .into_iter()
            .map(|row| (row.option_id, row.shard, row.count))
            .collect();
        rows.sort();
        assert_eq!(rows, [("a".into(), 0, 5), ("b".into(), 0, 2)], "{url}");
    }
}
