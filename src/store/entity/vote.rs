//! `votes`: each voter's current vote (one row per voter).

use sea_orm::entity::prelude::*;

/// A voter's current vote.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "votes")]
pub struct Model {
    /// Who voted.
    #[sea_orm(primary_key, auto_increment = false)]
    pub voter_id: String,
    /// The option id of the voter's current vote.
    pub option_id: String,
    /// Id of the vote that set this row.
    pub vote_id: Uuid,
    /// Sequence of that vote: a queued vote with a sequence not above this
    /// one is older (or the same) and changes nothing.
    pub sequence: i64,
    /// When the vote service accepted that vote.
    pub cast_at: DateTimeUtc,
    /// When the worker wrote this row.
    pub counted_at: DateTimeUtc,
    /// The option this row held before the worker's last update of it;
    /// `None` while the row has never been updated. The upsert returns it
    /// to move the tally.
    pub previous_option_id: Option<String>,
}

/// No relations: the tally is kept by the worker, not by foreign keys.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
