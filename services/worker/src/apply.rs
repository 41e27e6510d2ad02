//! Applies a batch of votes to the database in one transaction, in a
//! constant number of round trips whatever the batch's size:
//!
//! 1. keep each voter's newest vote of the batch (in memory);
//! 2. one bulk upsert, in voter order, `INSERT ... ON CONFLICT (voter_id)
//!    DO UPDATE SET ..., previous_option_id = votes.option_id WHERE
//!    votes.sequence < excluded.sequence RETURNING voter_id,
//!    previous_option_id`: new voters are inserted, voters whose stored
//!    vote is older are updated, and votes that are not newer than the
//!    stored one change nothing (so replaying a batch after a crash changes
//!    nothing). What it returns is exactly what changed, and how: a row it
//!    inserted has no previous option, a row it updated has the option it
//!    replaced, read from the very row version it replaced;
//! 3. one statement moves the tally by the net change per option and
//!    queue shard (the voter's shard: each shard has its own row per
//!    option, so workers holding different shards never wait for each
//!    other's tally rows; docs/SCALING.md, "The tally per shard");
//! 4. on PostgreSQL, `NOTIFY` the result services (delivered only if the
//!    transaction commits), then commit.
//!
//! No step reads rows before writing them, so nothing depends on a plan:
//! the upsert finds each voter through the primary key, whatever the
//! planner knows of the table. (Before, a `SELECT ... FOR UPDATE` with
//! `voter_id IN ($1, ..., $256)` read the stored options first; while a
//! new table was not yet analyzed, PostgreSQL planned it as a scan of the
//! whole table comparing every row with every voter of the batch, up to
//! 200 µs of database CPU a vote: docs/BENCHMARKS.md.)
//!
//! Two workers racing on the same voters: the upsert locks each voter's
//! row (or waits for the other's insert of it) in voter order, so one
//! waits for the other, never both for each other; the one that comes
//! second updates the committed row and returns its option, so both
//! counts stay exact without a retry.
//!
//! On PostgreSQL the upsert passes the batch as one array per column,
//! expanded with `UNNEST`: its text is the same for every batch, so it is
//! parsed once per connection and its plan reused. SQLite (the all-in-one
//! run, one writer at a time) takes the same steps with one parameter per
//! value.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, QueryResult,
    Statement, TransactionTrait,
    sea_query::{Alias, Expr, ExprTrait, InsertStatement, OnConflict, Query},
};
use thiserror::Error;
use uuid::Uuid;
use votemesh::{
    queue::{QueuedVote, shard::Shards},
    store::entity::{tally, vote},
};

use crate::batch::newest_per_voter;

/// Most rows in one SQLite upsert: 6 parameters a row stays below SQLite's
/// limit of 32,766 bound parameters. A larger batch takes one more
/// statement per this many voters. (PostgreSQL's upsert takes 6 arrays.)
const MAX_ROWS_PER_STATEMENT: usize = 4096;

/// What applying a batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Voters counted for the first time.
    pub inserted: usize,
    /// Voters whose stored vote was replaced by a newer one.
    pub updated: usize,
    /// Votes that changed nothing: older than (or the same as) the voter's
    /// stored vote or than another vote of the batch.
    pub superseded: usize,
}

/// Applying a batch failed; the transaction was rolled back.
#[derive(Debug, Error)]
pub enum ApplyError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbErr),
}

impl ApplyError {
    /// Whether retrying may help: the error is about reaching the database
    /// (or a lost race it reports by SQLSTATE), not about the query.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Db(error) => votemesh::store::is_transient(error),
        }
    }
}

impl std::ops::AddAssign for Applied {
    fn add_assign(&mut self, other: Self) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.superseded += other.superseded;
    }
}

/// Applies `votes` in one transaction and returns what changed; the tally
/// moves in the rows of each voter's shard among the queue's `shards`.
pub async fn apply_batch(
    db: &DatabaseConnection,
    votes: &[QueuedVote],
    shards: Shards,
) -> Result<Applied, ApplyError> {
    let newest = newest_per_voter(votes);
    let mut applied = Applied {
        superseded: votes.len() - newest.len(),
        ..Applied::default()
    };
    if newest.is_empty() {
        return Ok(applied);
    }
    let backend = db.get_database_backend();
    let transaction = db.begin().await?;
    let rows: Vec<&QueuedVote> = newest.values().copied().collect();
    let changed = upsert(&transaction, &rows).await?;
    // (option, shard) -> net change.
    let mut tally_change: BTreeMap<(String, u16), i64> = BTreeMap::new();
    for row in &changed {
        let voter_id: String = row.try_get_by_index(0)?;
        let previous_option: Option<String> = row.try_get_by_index(1)?;
        let Some(queued) = newest.get(voter_id.as_str()) else {
            return Err(DbErr::Custom(format!(
                "the upsert returned a voter not in the batch: {voter_id}"
            ))
            .into());
        };
        let shard = shards.index_of(&queued.voter_id);
        *tally_change
            .entry((queued.option_id.clone(), shard))
            .or_default() += 1;
        match previous_option {
            Some(previous_option) => {
                *tally_change.entry((previous_option, shard)).or_default() -= 1;
                applied.updated += 1;
            }
            None => applied.inserted += 1,
        }
    }
    applied.superseded += newest.len() - changed.len();

    tally_change.retain(|_, change| *change != 0);
    if !tally_change.is_empty() {
        transaction
            .execute_raw(backend.build(&move_tally(&tally_change)?))
            .await?;
        if backend == DbBackend::Postgres {
            transaction
                .execute_unprepared(&format!("NOTIFY {}", votemesh::store::TALLY_CHANNEL))
                .await?;
        }
    }
    transaction.commit().await?;
    Ok(applied)
}

/// The bulk upsert of each voter's newest vote, in voter order (so two
/// workers lock rows in the same order). It returns the voters whose row
/// it inserted or updated, each with the option the row held before
/// (`None`: inserted).
async fn upsert(
    transaction: &DatabaseTransaction,
    rows: &[&QueuedVote],
) -> Result<Vec<QueryResult>, DbErr> {
    let counted_at = Utc::now();
    let backend = transaction.get_database_backend();
    if backend == DbBackend::Postgres {
        return transaction
            .query_all_raw(upsert_by_arrays(rows, counted_at))
            .await;
    }
    let mut changed = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(MAX_ROWS_PER_STATEMENT) {
        changed.extend(
            transaction
                .query_all_raw(backend.build(&upsert_by_values(chunk, counted_at)?))
                .await?,
        );
    }
    Ok(changed)
}

/// PostgreSQL's upsert: one array per column, the same text every time.
fn upsert_by_arrays(rows: &[&QueuedVote], counted_at: DateTime<Utc>) -> Statement {
    const UPSERT: &str = "\
        INSERT INTO votes (voter_id, option_id, vote_id, sequence, cast_at, counted_at) \
        SELECT voter_id, option_id, vote_id, sequence, cast_at, $6 \
        FROM UNNEST($1::varchar[], $2::varchar[], $3::uuid[], $4::int8[], $5::timestamptz[]) \
          AS batch (voter_id, option_id, vote_id, sequence, cast_at) \
        ON CONFLICT (voter_id) DO UPDATE SET \
          previous_option_id = votes.option_id, \
          option_id = excluded.option_id, vote_id = excluded.vote_id, \
          sequence = excluded.sequence, cast_at = excluded.cast_at, \
          counted_at = excluded.counted_at \
        WHERE votes.sequence < excluded.sequence \
        RETURNING voter_id, previous_option_id";
    let voter_ids: Vec<String> = rows.iter().map(|vote| vote.voter_id.clone()).collect();
    let option_ids: Vec<String> = rows.iter().map(|vote| vote.option_id.clone()).collect();
    let vote_ids: Vec<Uuid> = rows.iter().map(|vote| vote.vote_id).collect();
    let sequences: Vec<i64> = rows.iter().map(|vote| vote.sequence).collect();
    let cast_at: Vec<DateTime<Utc>> = rows.iter().map(|vote| vote.cast_at).collect();
    Statement::from_sql_and_values(
        DbBackend::Postgres,
        UPSERT,
        [
            voter_ids.into(),
            option_ids.into(),
            vote_ids.into(),
            sequences.into(),
            cast_at.into(),
            counted_at.into(),
        ],
    )
}

/// SQLite's upsert: a row of values per vote.
fn upsert_by_values(
    rows: &[&QueuedVote],
    counted_at: DateTime<Utc>,
) -> Result<InsertStatement, DbErr> {
    use vote::Column;
    let mut insert = Query::insert();
    insert.into_table(vote::Entity).columns([
        Column::VoterId,
        Column::OptionId,
        Column::VoteId,
        Column::Sequence,
        Column::CastAt,
        Column::CountedAt,
    ]);
    for queued in rows {
        insert
            .values([
                queued.voter_id.clone().into(),
                queued.option_id.clone().into(),
                queued.vote_id.into(),
                queued.sequence.into(),
                queued.cast_at.into(),
                counted_at.into(),
            ])
            .map_err(|error| DbErr::Custom(error.to_string()))?;
    }
    insert.on_conflict(
        OnConflict::column(Column::VoterId)
            .value(
                Column::PreviousOptionId,
                Expr::col((vote::Entity, Column::OptionId)),
            )
            .update_columns([
                Column::OptionId,
                Column::VoteId,
                Column::Sequence,
                Column::CastAt,
                Column::CountedAt,
            ])
            .action_and_where(
                Expr::col((vote::Entity, Column::Sequence))
                    .lt(Expr::col((Alias::new("excluded"), Column::Sequence))),
            )
            .to_owned(),
    );
    insert.returning(Query::returning().columns([Column::VoterId, Column::PreviousOptionId]));
    Ok(insert.to_owned())
}

/// One statement that moves each (option, shard) count by its change.
fn move_tally(change: &BTreeMap<(String, u16), i64>) -> Result<InsertStatement, DbErr> {
    let mut insert = Query::insert();
    insert.into_table(tally::Entity).columns([
        tally::Column::OptionId,
        tally::Column::Shard,
        tally::Column::Count,
    ]);
    for ((option_id, shard), change) in change {
        insert
            .values([
                option_id.clone().into(),
                i32::from(*shard).into(),
                (*change).into(),
            ])
            .map_err(|error| DbErr::Custom(error.to_string()))?;
    }
    insert.on_conflict(
        OnConflict::columns([tally::Column::OptionId, tally::Column::Shard])
            .value(
                tally::Column::Count,
                Expr::col((tally::Entity, tally::Column::Count))
                    .add(Expr::col((Alias::new("excluded"), tally::Column::Count))),
            )
            .to_owned(),
    );
    Ok(insert.to_owned())
}
