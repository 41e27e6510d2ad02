//! Idempotency keys: how a repeated call is recognised as the same call, so
//! a retry can never become a second, later vote.
//!
//! ```text
//! client: CollectBody stamps `idempotency-key: <uuid>` once per call
//!         └─ Retry sends the same bytes and headers on every attempt
//! vote service: reads the key and the call's deadline → NewVote.idempotency
//!         └─ the queue pushes a vote only if no vote of that voter was
//!            pushed with that key within the repeat window; a repeat is
//!            answered with the first attempt's vote id, time and sequence
//! ```
//!
//! Why: a CastVote whose answer is lost (a connection reset after Redis
//! took the vote, an UNAVAILABLE "may have been queued") is retried. Had
//! the retry been stamped anew, this could happen: vote A is queued and
//! its answer lost, the same voter's vote B is queued, A's retry is queued
//! after B and wins. With the key, A's retry finds A's marker and is not
//! queued again, so B stays the voter's vote (docs/DESIGN.md, "Retries are
//! the same vote").
//!
//! The key travels as gRPC metadata, as the `Idempotency-Key` header does in
//! HTTP APIs, so any client can set one (`grpcurl -H 'idempotency-key: …'`)
//! and no message changes. A call without one is not deduplicated: every
//! attempt is a vote of its own.

use std::time::Duration;

use thiserror::Error;
use tonic::metadata::MetadataMap;

/// The metadata key (and HTTP/2 header) carrying a call's idempotency key.
pub const METADATA_KEY: &str = "idempotency-key";

/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 64;

/// Longest a repeat is recognised for: the repeat window of a call with no
/// deadline, and the cap of any other. The client's retry layer sends no
/// retry past its call's deadline, nor later than this (less
/// [`REPEAT_WINDOW_MARGIN`]) after the first attempt.
pub const MAX_REPEAT_WINDOW: Duration = Duration::from_secs(30);

/// Added to a call's deadline: a retry sent just before the deadline may
/// reach the server a little after it (network and queueing delay).
pub const REPEAT_WINDOW_MARGIN: Duration = Duration::from_secs(1);

/// A validated idempotency key: 1 to [`MAX_KEY_LEN`] ASCII letters, digits,
/// `-`, `_` or `.` (a UUID fits, and no byte needs escaping in a Redis key
/// or a log line).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// Why a call's idempotency key was refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    /// Empty, too long, not text, or with a character outside the allowed set.
    #[error(
        "the idempotency-key metadata must be 1 to {MAX_KEY_LEN} ASCII letters, digits, '-', '_' or '.'"
    )]
    Malformed,
}

impl IdempotencyKey {
    /// A new key: a time-ordered UUID (v7, RFC 9562) without hyphens, so
    /// the queue can file its marker by the time it was made
    /// ([`IdempotencyKey::minted_at_ms`]).
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().simple().to_string())
    }

    /// Checks `text` against the rules.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let ok = !text.is_empty()
            && text.len() <= MAX_KEY_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(KeyError::Malformed)
        }
    }

    /// The key a call carries, if any: `Ok(None)` when it carries none.
    pub fn from_metadata(metadata: &MetadataMap) -> Result<Option<Self>, KeyError> {
        match metadata.get(METADATA_KEY) {
            None => Ok(None),
            Some(value) => value
                .to_str()
                .map_err(|_| KeyError::Malformed)
                .and_then(Self::parse)
                .map(Some),
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// When the key was made, in ms since the Unix epoch, if it is a
    /// time-ordered UUID (v7, with or without hyphens): what
    /// [`IdempotencyKey::generate`] makes. `None` for any other key.
    ///
    /// The time is the key's own, written by whoever made it; nothing
    /// trusts it as a clock. The queue only uses it to choose where a
    /// marker is kept, the same place for every attempt of a call.
    pub fn minted_at_ms(&self) -> Option<u64> {
        let uuid = uuid::Uuid::try_parse(&self.0).ok()?;
        (uuid.get_version_num() == 7).then(|| {
            let bytes = uuid.as_bytes();
            bytes[..6]
                .iter()
                .fold(0, |millis, &byte| (millis << 8) | u64::from(byte))
        })
    }
}

impl std::fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A call's idempotency key and how long a repeat of it is recognised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idempotency {
    /// The caller's key.
    pub key: IdempotencyKey,
    /// How long the first attempt's marker is kept ([`repeat_window`]).
    pub window: Duration,
}

impl Idempotency {
    /// The idempotency of a call with these `metadata` (its key and its
    /// `grpc-timeout`), or `None` when the call carries no key.
    pub fn of_call(metadata: &MetadataMap) -> Result<Option<Self>, KeyError> {
        let Some(key) = IdempotencyKey::from_metadata(metadata)? else {
            return Ok(None);
        };
        let deadline = metadata
            .get(crate::deadline::HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(crate::deadline::parse);
        Ok(Some(Self {
            key,
            window: repeat_window(deadline),
        }))
    }
}

/// How long a call's first attempt is remembered: its deadline plus
/// [`REPEAT_WINDOW_MARGIN`], at most [`MAX_REPEAT_WINDOW`]; a call with no
/// deadline gets the most.
pub fn repeat_window(deadline: Option<Duration>) -> Duration {
    deadline
        .map(|deadline| deadline.saturating_add(REPEAT_WINDOW_MARGIN))
        .unwrap_or(MAX_REPEAT_WINDOW)
        .min(MAX_REPEAT_WINDOW)
}

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataValue;

    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(IdempotencyKey::parse("0f8e2c1d-aa").is_ok());
        assert!(IdempotencyKey::parse(IdempotencyKey::generate().as_str()).is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(MAX_KEY_LEN)).is_ok());
        for bad in ["", "a b", "a:b", "é", &"k".repeat(MAX_KEY_LEN + 1)] {
            assert_eq!(
                IdempotencyKey::parse(bad),
                Err(KeyError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_generated_key_tells_when_it_was_made_and_others_do_not() {
        let before = chrono::Utc::now().timestamp_millis() as u64;
        let key = IdempotencyKey::generate();
        let after = chrono::Utc::now().timestamp_millis() as u64;
        let minted = key.minted_at_ms().expect("a generated key is time-ordered");
        assert!(
            (before..=after).contains(&minted),
            "{before} <= {minted} <= {after}"
        );
        let hyphenated = uuid::Uuid::try_parse(key.as_str()).unwrap().hyphenated();
        let hyphenated = IdempotencyKey::parse(&hyphenated.to_string()).unwrap();
        assert_eq!(hyphenated.minted_at_ms(), Some(minted));
        let random = uuid::Uuid::new_v4().simple().to_string();
        for other in ["k1", random.as_str()] {
            assert_eq!(IdempotencyKey::parse(other).unwrap().minted_at_ms(), None);
        }
    }

    #[test]
    fn a_call_without_a_key_has_no_idempotency() {
        assert_eq!(Idempotency::of_call(&MetadataMap::new()), Ok(None));
    }

    #[test]
    fn the_window_follows_the_deadline_within_bounds() {
        let mut metadata = MetadataMap::new();
        metadata.insert(METADATA_KEY, MetadataValue::from_static("k1"));
        metadata.insert("grpc-timeout", MetadataValue::from_static("2S"));
        let found = Idempotency::of_call(&metadata).unwrap().unwrap();
        assert_eq!(found.key.as_str(), "k1");
        assert_eq!(found.window, Duration::from_secs(3));
        assert_eq!(repeat_window(None), MAX_REPEAT_WINDOW);
        assert_eq!(
            repeat_window(Some(Duration::from_secs(3600))),
            MAX_REPEAT_WINDOW
        );
    }
}
