//! A gRPC call's deadline as it travels: the `grpc-timeout` header (the
//! time the caller still gives the call, such as `300m` or `5000000u`),
//! read and written here once for the layers that need it: the client's
//! retries ([`crate::client::retry`]), which give each attempt the time
//! left, the RPC metrics ([`crate::metrics`]), which tell a call whose
//! deadline passed from one whose caller went away, and the vote service,
//! which sizes an idempotency key's repeat window by it
//! ([`crate::idempotency`]).

use std::time::Duration;

use tonic::codegen::http::HeaderMap;

/// The header that carries a call's timeout.
pub const HEADER: &str = "grpc-timeout";

/// The timeout `headers` carry in [`HEADER`], if any (and well-formed).
pub fn of(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(parse)
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m,
/// u, n).
pub fn parse(value: &str) -> Option<Duration> {
    if !value.is_ascii() {
        return None;
    }
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
pub fn encode(left: Duration) -> String {
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
        assert_eq!(parse("5000000u"), Some(Duration::from_secs(5)));
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse("x"), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse("1é"), None);
        let left = Duration::from_millis(1234);
        assert_eq!(parse(&encode(left)), Some(left));
        let long = Duration::from_secs(500);
        assert_eq!(parse(&encode(long)), Some(long));
    }
}
