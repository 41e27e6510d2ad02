//! SeaORM entities of the two tables. See [`super`] for what each holds.

pub mod tally;
pub mod vote;
