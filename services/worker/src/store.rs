//! Applies a batch of votes to the database in one transaction, in a
//! constant number of round trips whatever the batch's size:
//!
//! 1. keep each voter's newest vote of the batch (in memory);
//! 2. lock the rows of those voters that already have one, in voter order,
//!    and read their current option (one `SELECT ... FOR UPDATE`);
//! 3. one bulk upsert, `INSERT ... ON CONFLICT (voter_id) DO UPDATE ...
//!    WHERE votes.sequence < excluded.sequence RETURNING voter_id`: new
//!    voters are inserted, voters whose stored vote is older are updated,
//!    and votes that are not newer than the stored one change nothing (so
//!    replaying a batch after a crash changes nothing); what it returns is
//!    exactly what changed;
//! 4. one statement moves the tally by the net change per option;
//! 5. on PostgreSQL, `NOTIFY` the result services (delivered only if the
//!    transaction commits), then commit.
//!
//! Two workers racing on a voter that was new to both: the one that comes
//! second finds, on PostgreSQL, that its upsert updated a row it had not
//! locked (`xmax <> 0` on a row it did not insert), rolls back with
//! [`ApplyError::ConcurrentInsert`] and retries, then sees the row. SQLite
//! (the all-in-one run) has one worker and one writer at a time.

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
    sea_query::{Alias, Expr, ExprTrait, InsertStatement, OnConflict, Query},
};
use thiserror::Error;
use votemesh::{
    queue::QueuedVote,
    store::entity::{tally, vote},
};

use crate::batch::newest_per_voter;

/// Most rows in one upsert: 6 parameters a row stays below SQLite's limit
/// of 32,766 bound parameters (PostgreSQL's is 65,535). A larger batch
/// takes one more statement per this many voters.
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
    /// Another worker inserted one of the batch's new voters first.
    #[error("another worker inserted a voter of this batch first; retrying")]
    ConcurrentInsert,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbErr),
}

impl ApplyError {
    /// Whether retrying may help (always true for a race; for a database
    /// error, when it is about reaching the database).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::ConcurrentInsert => true,
            Self::Db(error) => votemesh::store::is_transient(error),
        }
    }
}

/// Applies `votes` in one transaction and returns what changed.
pub async fn apply_batch(
    db: &DatabaseConnection,
    votes: &[QueuedVote],
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
    let voter_ids: Vec<&str> = newest.keys().copied().collect();
    let stored: HashMap<String, String> = vote::Entity::find()
        .select_only()
        .column(vote::Column::VoterId)
        .column(vote::Column::OptionId)
        .filter(vote::Column::VoterId.is_in(voter_ids))
        .order_by_asc(vote::Column::VoterId)
        .lock_exclusive()
        .into_tuple::<(String, String)>()
        .all(&transaction)
        .await?
        .into_iter()
        .collect();

    let rows: Vec<&QueuedVote> = newest.values().copied().collect();
    let mut changed = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(MAX_ROWS_PER_STATEMENT) {
        changed.extend(
            transaction
                .query_all_raw(backend.build(&upsert(chunk, backend)?))
                .await?,
        );
    }
    let mut tally_change: BTreeMap<&str, i64> = BTreeMap::new();
    for row in &changed {
        let voter_id: String = row.try_get_by_index(0)?;
        let Some(queued) = newest.get(voter_id.as_str()) else {
            return Err(DbErr::Custom(format!(
                "the upsert returned a voter not in the batch: {voter_id}"
            ))
            .into());
        };
        match stored.get(&voter_id) {
            Some(old_option) => {
                if *old_option != queued.option_id {
                    *tally_change.entry(old_option.as_str()).or_default() -= 1;
                    *tally_change.entry(queued.option_id.as_str()).or_default() += 1;
                }
                applied.updated += 1;
            }
            None => {
                if backend == DbBackend::Postgres && !row.try_get_by_index::<bool>(1)? {
                    // Another worker inserted this voter after our lock and
                    // we updated its row: we do not know its option.
                    transaction.rollback().await?;
                    return Err(ApplyError::ConcurrentInsert);
                }
                *tally_change.entry(queued.option_id.as_str()).or_default() += 1;
                applied.inserted += 1;
            }
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
/// workers lock new rows in the same order). It returns the voters whose
/// row it inserted or updated and, on PostgreSQL, whether it inserted it
/// (`xmax = 0`: no earlier version of the row).
fn upsert(rows: &[&QueuedVote], backend: DbBackend) -> Result<InsertStatement, DbErr> {
    use vote::Column;
    let counted_at = Utc::now();
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
    let returning = Query::returning();
    insert.returning(if backend == DbBackend::Postgres {
        returning.exprs([Expr::col(Column::VoterId), Expr::cust("xmax = 0")])
    } else {
        returning.column(Column::VoterId)
    });
    Ok(insert.to_owned())
}

/// One statement that moves each option's count by its change.
fn move_tally(change: &BTreeMap<&str, i64>) -> Result<InsertStatement, DbErr> {
    let mut insert = Query::insert();
    insert
        .into_table(tally::Entity)
        .columns([tally::Column::OptionId, tally::Column::Count]);
    for (option_id, change) in change {
        insert
            .values([(*option_id).into(), (*change).into()])
            .map_err(|error| DbErr::Custom(error.to_string()))?;
    }
    insert.on_conflict(
        OnConflict::column(tally::Column::OptionId)
            .value(
                tally::Column::Count,
                Expr::col((tally::Entity, tally::Column::Count))
                    .add(Expr::col((Alias::new("excluded"), tally::Column::Count))),
            )
            .to_owned(),
    );
    Ok(insert.to_owned())
}
