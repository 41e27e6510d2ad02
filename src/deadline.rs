//! The gRPC deadline as it travels: the `grpc-timeout` header, read by the
//! client's retry layer (to keep retries inside the caller's deadline) and
//! by the vote service (to size the repeat window of an idempotency key,
//! [`crate::idempotency`]).

use std::time::Duration;

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m,
/// u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Writes a `grpc-timeout` value (at most 8 digits) for `left`.
pub fn grpc_timeout(left: Duration) -> String {
    let micros = left.as_micros();
    if micros < 100_000_000 {
        format!("{micros}u")
    } else {
        format!("{}m", left.as_millis().min(99_999_999))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_round_trip() {
        assert_eq!(parse_grpc_timeout("5000000u"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
        let left = Duration::from_millis(1234);
        assert_eq!(parse_grpc_timeout(&grpc_timeout(left)), Some(left));
        let long = Duration::from_secs(500);
        assert_eq!(parse_grpc_timeout(&grpc_timeout(long)), Some(long));
    }
}
