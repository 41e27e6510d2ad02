//! Schema migrations, one per file, applied in order by [`Migrator`].

mod m20261127_000001_create_votes_and_tally;

use sea_orm_migration::{MigrationTrait, MigratorTrait};

/// All migrations of the votemesh schema.
#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261127_000001_create_votes_and_tally::Migration)]
    }
}
