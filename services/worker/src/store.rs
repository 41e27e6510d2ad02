//! Applies a batch of votes to the database in one transaction:
//!
//! 1. keep each voter's newest vote of the batch;
//! 2. lock the rows of those voters that already have one (in voter order);
//! 3. insert new voters, update voters whose stored vote is older, skip
//!    votes that are not newer than the stored one (so replaying a batch
//!    after a crash changes nothing);
//! 4. move the tally by the net change per option;
//! 5. commit.
//!
//! Two workers racing to insert the same new voter: the loser inserts
//! fewer rows than it expected, rolls back with
//! [`ApplyError::ConcurrentInsert`] and retries, then sees the row.

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait, TryInsertResult,
    sea_query::{Expr, ExprTrait, OnConflict},
};
use thiserror::Error;
use votemesh::{
    queue::QueuedVote,
    store::entity::{tally, vote},
};

use crate::batch::newest_per_voter;

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
    let transaction = db.begin().await?;
    let voter_ids: Vec<&str> = newest.keys().copied().collect();
    let stored: HashMap<String, vote::Model> = vote::Entity::find()
        .filter(vote::Column::VoterId.is_in(voter_ids))
        .order_by_asc(vote::Column::VoterId)
        .lock_exclusive()
        .all(&transaction)
        .await?
        .into_iter()
        .map(|row| (row.voter_id.clone(), row))
        .collect();

    let counted_at = Utc::now();
    let mut tally_change: BTreeMap<&str, i64> = BTreeMap::new();
    let mut new_rows = Vec::new();
    for (voter_id, queued) in &newest {
        match stored.get(*voter_id) {
            None => {
                new_rows.push(row_of(queued, counted_at));
                *tally_change.entry(queued.option_id.as_str()).or_default() += 1;
                applied.inserted += 1;
            }
            Some(row) if row.sequence < queued.sequence => {
                if row.option_id != queued.option_id {
                    *tally_change.entry(row.option_id.as_str()).or_default() -= 1;
                    *tally_change.entry(queued.option_id.as_str()).or_default() += 1;
                }
                row_of(queued, counted_at).update(&transaction).await?;
                applied.updated += 1;
            }
            Some(_) => applied.superseded += 1,
        }
    }

    if !new_rows.is_empty() {
        let expected = new_rows.len() as u64;
        let inserted = match vote::Entity::insert_many(new_rows)
            .on_conflict_do_nothing_on([vote::Column::VoterId])
            .exec_without_returning(&transaction)
            .await?
        {
            TryInsertResult::Inserted(count) => count,
            TryInsertResult::Empty | TryInsertResult::Conflicted => 0,
        };
        if inserted != expected {
            transaction.rollback().await?;
            return Err(ApplyError::ConcurrentInsert);
        }
    }

    for (option_id, change) in tally_change.into_iter().filter(|(_, change)| *change != 0) {
        tally::Entity::insert(tally::ActiveModel {
            option_id: Set(option_id.to_owned()),
            count: Set(change),
        })
        .on_conflict(
            OnConflict::column(tally::Column::OptionId)
                .value(
                    tally::Column::Count,
                    Expr::col((tally::Entity, tally::Column::Count)).add(change),
                )
                .to_owned(),
        )
        .exec_without_returning(&transaction)
        .await?;
    }
    transaction.commit().await?;
    Ok(applied)
}

/// The `votes` row a queued vote sets.
fn row_of(queued: &QueuedVote, counted_at: chrono::DateTime<Utc>) -> vote::ActiveModel {
    vote::ActiveModel {
        voter_id: Set(queued.voter_id.clone()),
        option_id: Set(queued.option_id.clone()),
        vote_id: Set(queued.vote_id),
        sequence: Set(queued.sequence),
        cast_at: Set(queued.cast_at),
        counted_at: Set(counted_at),
    }
}
