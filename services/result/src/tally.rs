//! The tally: stored counts summed per option over the databases' tally
//! rows (one per option and queue shard), labelled with the poll.

use std::{collections::BTreeMap, time::SystemTime};

use chrono::{DateTime, Utc};
use futures_util::future::try_join_all;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, Statement};
use votemesh::{
    poll::Poll,
    proto::v1,
    store::{Databases, StoreError},
};

/// The count of one option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionCount {
    /// Option id.
    pub id: String,
    /// Option label (the id itself for an option no longer configured).
    pub label: String,
    /// Voters whose current vote it is.
    pub count: i64,
}

/// Every option's count at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tally {
    /// The poll's options in order, then unconfigured ids that have votes.
    pub options: Vec<OptionCount>,
    /// Sum of the counts.
    pub total: i64,
    /// When it was read.
    pub as_of: DateTime<Utc>,
}

impl Tally {
    /// Labels stored `(option id, count)` rows with the poll: every
    /// configured option appears (0 if it has no row), then any other id
    /// that still has votes, in id order.
    pub fn from_rows(poll: &Poll, mut rows: Vec<(String, i64)>, as_of: DateTime<Utc>) -> Self {
        rows.sort();
        let count_of = |id: &str| {
            rows.iter()
                .find(|(row_id, _)| row_id == id)
                .map_or(0, |(_, count)| *count)
        };
        let mut options: Vec<OptionCount> = poll
            .options()
            .iter()
            .map(|option| OptionCount {
                id: option.id.clone(),
                label: option.label.clone(),
                count: count_of(&option.id),
            })
            .collect();
        options.extend(
            rows.iter()
                .filter(|(id, count)| poll.option(id).is_none() && *count != 0)
                .map(|(id, count)| OptionCount {
                    id: id.clone(),
                    label: id.clone(),
                    count: *count,
                }),
        );
        let total = options.iter().map(|option| option.count).sum();
        Self {
            options,
            total,
            as_of,
        }
    }

    /// Whether the counts differ (the time of reading aside).
    pub fn counts_differ(&self, other: &Self) -> bool {
        self.options != other.options
    }
}

/// Reads the tally of every database at once and sums it per option: a
/// few small rows per option and shard, whatever the number of votes.
/// Before summing, each database not checked yet must have recorded the
/// place `databases` gives it (`votemesh::store::shard_map`).
pub async fn read(databases: &Databases, poll: &Poll) -> Result<Tally, StoreError> {
    databases.check_places().await?;
    let per_database = try_join_all(databases.connections().map(read_sums)).await?;
    let mut sums: BTreeMap<String, i64> = BTreeMap::new();
    for (option_id, count) in per_database.into_iter().flatten() {
        *sums.entry(option_id).or_default() += count;
    }
    Ok(Tally::from_rows(
        poll,
        sums.into_iter().collect(),
        Utc::now(),
    ))
}

/// One database's count per option, summed over its shards' rows.
async fn read_sums(db: &DatabaseConnection) -> Result<Vec<(String, i64)>, DbErr> {
    const SUMS: &str = "SELECT option_id, CAST(SUM(count) AS BIGINT) FROM tally GROUP BY option_id";
    db.query_all_raw(Statement::from_string(db.get_database_backend(), SUMS))
        .await?
        .iter()
        .map(|row| Ok((row.try_get_by_index(0)?, row.try_get_by_index(1)?)))
        .collect()
}

impl From<&Tally> for v1::Tally {
    fn from(tally: &Tally) -> Self {
        Self {
            options: tally
                .options
                .iter()
                .map(|option| v1::OptionCount {
                    id: option.id.clone(),
                    label: option.label.clone(),
                    count: option.count,
                })
                .collect(),
            total: tally.total,
            as_of: Some(SystemTime::from(tally.as_of).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use votemesh::config::PollArgs;

    use super::*;

    #[test]
    fn every_configured_option_appears_then_leftovers() {
        let poll = PollArgs::default().poll().unwrap();
        let tally = Tally::from_rows(
            &poll,
            vec![("z".into(), 2), ("b".into(), 3), ("old".into(), 0)],
            Utc::now(),
        );
        let summary: Vec<(&str, &str, i64)> = tally
            .options
            .iter()
            .map(|o| (o.id.as_str(), o.label.as_str(), o.count))
            .collect();
        assert_eq!(summary, [("a", "Cats", 0), ("b", "Dogs", 3), ("z", "z", 2)]);
        assert_eq!(tally.total, 5);
    }
}
