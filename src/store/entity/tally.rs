//! `tally`: the number of voters per option, kept in step with `votes`.

use sea_orm::entity::prelude::*;

/// The count of one option.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tally")]
pub struct Model {
    /// The option id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub option_id: String,
    /// Voters whose current vote is this option.
    pub count: i64,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
