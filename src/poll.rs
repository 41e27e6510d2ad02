//! The poll: the options people vote for, as configured.
//!
//! Every service builds the same [`Poll`] from the same configuration
//! (`OPTION_A`, `OPTION_B`, `EXTRA_OPTIONS`), so an option id the vote service
//! accepts is one the result service can label.

use thiserror::Error;

use crate::{
    ballot::{MAX_OPTION_ID_LEN, check_option_id},
    proto::v1,
};

/// One option of the poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollOption {
    /// Short stable id that votes refer to, such as `a`.
    pub id: String,
    /// What voters see, such as `Cats`.
    pub label: String,
}

/// The poll's options, in configuration order; ids are unique.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Poll {
    options: Vec<PollOption>,
}

/// A poll configuration that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PollError {
    /// An option id is empty, too long, or has characters other than
    /// ASCII letters, digits, `-` and `_`.
    #[error("option id {0:?} must be 1..={MAX_OPTION_ID_LEN} ASCII letters, digits, '-' or '_'")]
    BadId(String),
    /// An option has an empty label.
    #[error("option {0:?} has an empty label")]
    EmptyLabel(String),
    /// Two options share an id.
    #[error("option id {0:?} is configured twice")]
    DuplicateId(String),
    /// An `id=label` pair without the `=`.
    #[error("extra option {0:?} is not of the form id=label")]
    NotAPair(String),
}

impl PollOption {
    /// An option from its id and label (checked when the poll is built).
    pub fn new(id: impl Into<String>, label: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            label: label.into(),
        }
    }

    /// Parses `id=label`, the form of `EXTRA_OPTIONS` entries.
    pub fn parse_pair(pair: &str) -> Result<Self, PollError> {
        let (id, label) = pair
            .split_once('=')
            .ok_or_else(|| PollError::NotAPair(pair.to_owned()))?;
        Ok(Self::new(id.trim(), label.trim()))
    }
}

impl Poll {
    /// A poll of these options, in this order.
    pub fn new(options: Vec<PollOption>) -> Result<Self, PollError> {
        let mut seen = std::collections::HashSet::new();
        for option in &options {
            if check_option_id(&option.id).is_err() {
                return Err(PollError::BadId(option.id.clone()));
            }
            if option.label.trim().is_empty() {
                return Err(PollError::EmptyLabel(option.id.clone()));
            }
            if !seen.insert(option.id.as_str()) {
                return Err(PollError::DuplicateId(option.id.clone()));
            }
        }
        Ok(Self { options })
    }

    /// The options, in configuration order.
    pub fn options(&self) -> &[PollOption] {
        &self.options
    }

    /// The option with this id, if the poll has one.
    pub fn option(&self, id: &str) -> Option<&PollOption> {
        self.options.iter().find(|option| option.id == id)
    }

    /// The options as `id=label` pairs, comma-separated, for logs.
    pub fn labels(&self) -> String {
        let pairs: Vec<String> = self
            .options
            .iter()
            .map(|o| format!("{}={}", o.id, o.label))
            .collect();
        pairs.join(", ")
    }

    /// The ids, comma-separated, for error messages.
    pub fn ids(&self) -> String {
        let ids: Vec<&str> = self.options.iter().map(|o| o.id.as_str()).collect();
        ids.join(", ")
    }
}

impl From<&PollOption> for v1::PollOption {
    fn from(option: &PollOption) -> Self {
        Self {
            id: option.id.clone(),
            label: option.label.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_ids_empty_labels_and_duplicates() {
        assert_eq!(
            Poll::new(vec![PollOption::new("a b", "x")]),
            Err(PollError::BadId("a b".into()))
        );
        assert_eq!(
            Poll::new(vec![PollOption::new("", "x")]),
            Err(PollError::BadId(String::new()))
        );
        assert_eq!(
            Poll::new(vec![PollOption::new("a", " ")]),
            Err(PollError::EmptyLabel("a".into()))
        );
        assert_eq!(
            Poll::new(vec![PollOption::new("a", "x"), PollOption::new("a", "y")]),
            Err(PollError::DuplicateId("a".into()))
        );
    }

    #[test]
    fn finds_options_by_id_and_parses_pairs() {
        let poll = Poll::new(vec![
            PollOption::new("a", "Cats"),
            PollOption::parse_pair("c = Birds").unwrap(),
        ])
        .unwrap();
        assert_eq!(poll.option("c").map(|o| o.label.as_str()), Some("Birds"));
        assert_eq!(poll.option("b"), None);
        assert_eq!(poll.ids(), "a, c");
        assert_eq!(
            PollOption::parse_pair("nolabel"),
            Err(PollError::NotAPair("nolabel".into()))
        );
    }
}
