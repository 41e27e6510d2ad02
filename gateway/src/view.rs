//! The tally as the pages and the JSON API show it.

use serde::Serialize;
use votemesh::proto::v1;

/// One option's line of the results.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OptionView {
    /// Option id.
    pub id: String,
    /// Option label.
    pub label: String,
    /// Voters for it.
    pub count: i64,
    /// Share of all voters, 0 to 100, one decimal (0 when nobody voted).
    pub percent: f64,
}

/// The results at one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TallyView {
    /// Every option, in poll order.
    pub options: Vec<OptionView>,
    /// Voters counted.
    pub total: i64,
    /// When the tally was read (RFC 3339), if the service said.
    pub as_of: Option<String>,
    /// True when the result service did not answer and this is the last
    /// tally the gateway knew.
    pub stale: bool,
}

impl From<v1::Tally> for TallyView {
    fn from(tally: v1::Tally) -> Self {
        let total = tally.total;
        let options = tally
            .options
            .into_iter()
            .map(|option| OptionView {
                percent: percent(option.count, total),
                id: option.id,
                label: option.label,
                count: option.count,
            })
            .collect();
        let as_of = tally.as_of.map(|time| time.to_string());
        Self {
            options,
            total,
            as_of,
            stale: false,
        }
    }
}

/// `count` as a share of `total`, in percent with one decimal.
pub fn percent(count: i64, total: i64) -> f64 {
    if total <= 0 {
        0.0
    } else {
        (count as f64 * 1000.0 / total as f64).round() / 10.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_to_one_decimal_and_survive_no_votes() {
        assert_eq!(percent(1, 3), 33.3);
        assert_eq!(percent(2, 3), 66.7);
        assert_eq!(percent(0, 0), 0.0);
        assert_eq!(percent(5, 5), 100.0);
    }
}
