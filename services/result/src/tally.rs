//! The tally: stored per-option counts, labelled with the poll.

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, DbErr, EntityTrait};
use votemesh::{poll::Poll, proto::v1, store::entity::tally};

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

/// Reads the tally table: one small row per option, whatever the number
/// of votes.
pub async fn read(db: &DatabaseConnection, poll: &Poll) -> Result<Tally, DbErr> {
    let rows = tally::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .map(|row| (row.option_id, row.count))
        .collect();
    Ok(Tally::from_rows(poll, rows, Utc::now()))
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
