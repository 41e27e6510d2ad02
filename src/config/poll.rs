//! The poll's options ([`PollArgs`]): `OPTION_A`, `OPTION_B` and any
//! `EXTRA_OPTIONS`, checked as they are read and turned into a [`Poll`].

use clap::Args;

use crate::poll::{Poll, PollError, PollOption};

/// Label of option "a" by default, as in the original voting app.
pub const DEFAULT_OPTION_A: &str = "Cats";
/// Label of option "b" by default, as in the original voting app.
pub const DEFAULT_OPTION_B: &str = "Dogs";

/// The poll's options: `OPTION_A`, `OPTION_B` and any `EXTRA_OPTIONS`.
#[derive(Args, Clone, Debug)]
pub struct PollArgs {
    /// Label of option "a".
    #[arg(long = "option-a", env = "OPTION_A", default_value = DEFAULT_OPTION_A, value_parser = parse_label)]
    pub option_a: String,
    /// Label of option "b".
    #[arg(long = "option-b", env = "OPTION_B", default_value = DEFAULT_OPTION_B, value_parser = parse_label)]
    pub option_b: String,
    /// More options as id=label pairs, comma-separated (e.g. c=Birds,d=Fish).
    #[arg(long = "extra-options", env = "EXTRA_OPTIONS", value_delimiter = ',', value_parser = parse_option_pair)]
    pub extra_options: Vec<String>,
}

impl Default for PollArgs {
    fn default() -> Self {
        Self {
            option_a: DEFAULT_OPTION_A.into(),
            option_b: DEFAULT_OPTION_B.into(),
            extra_options: Vec::new(),
        }
    }
}

impl PollArgs {
    /// The poll these settings describe.
    pub fn poll(&self) -> Result<Poll, PollError> {
        let mut options = vec![
            PollOption::new("a", &self.option_a),
            PollOption::new("b", &self.option_b),
        ];
        for pair in self.extra_options.iter().filter(|p| !p.trim().is_empty()) {
            options.push(PollOption::parse_pair(pair)?);
        }
        Poll::new(options)
    }
}

/// Checks an option's label (`OPTION_A`, `OPTION_B`): not blank.
fn parse_label(raw: &str) -> Result<String, String> {
    if raw.trim().is_empty() {
        return Err("an option's label cannot be blank".into());
    }
    Ok(raw.trim().to_owned())
}

/// Checks one `id=label` pair of `EXTRA_OPTIONS` (a blank one, as after a
/// trailing comma, is skipped later).
fn parse_option_pair(raw: &str) -> Result<String, String> {
    if !raw.trim().is_empty() {
        let option = PollOption::parse_pair(raw).map_err(|error| error.to_string())?;
        Poll::new(vec![option]).map_err(|error| error.to_string())?;
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_from_args_with_extra_options() {
        let args = PollArgs {
            extra_options: vec!["c=Birds".into()],
            ..PollArgs::default()
        };
        let poll = args.poll().unwrap();
        assert_eq!(poll.ids(), "a, b, c");
        assert_eq!(poll.option("a").unwrap().label, DEFAULT_OPTION_A);
    }
}
