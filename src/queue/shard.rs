//! Queue shards: which shard a voter's votes go to, and the Redis keys of
//! each shard.
//!
//! ```text
//! voter id ──crc32──► mod QUEUE_SHARDS ──► shard s ──► votes:{s}, votes:{s}:clock,
//!                                                      votes:{s}:dead, votes:{s}:processing:<worker>,
//!                                                      votes:{s}:request:<key>:<voter>, votes:{s}:markers:<n>,
//!                                                      votes:{s}:lease, ...
//! ```
//!
//! A voter's shard is `crc32(voter id as UTF-8) mod QUEUE_SHARDS`, with the
//! CRC-32 of zlib, gzip and PNG (IEEE 802.3, reflected, `0xEDB88320`): in
//! Python `zlib.crc32(voter_id.encode()) % shards`, in Go
//! `crc32.ChecksumIEEE([]byte(voterID)) % shards`. The tests pin it with
//! vectors, so every release puts a voter in the same shard. One voter is in
//! one shard, whose one clock stamps all of that voter's votes: their order
//! is kept however many shards there are.
//!
//! Every key of shard `s` carries the hash tag `{s}`, so Redis Cluster
//! keeps the whole shard in one slot and each script touches one slot.
//! With one shard the keys are those of an unsharded queue (`votes`,
//! `votes:clock`, ...), exactly as before shards existed, so a single
//! Redis deployment reads the queue it wrote.
//!
//! Nothing finds a shard's keys by scanning: the shards are numbered
//! `0..QUEUE_SHARDS`, and each shard lists the workers that hold a
//! processing list in it (`votes:{s}:workers`).

use std::num::NonZeroU16;

use super::{DEAD_LETTER_KEY, QUEUE_KEY};

/// The key that records how many shards the queue was set up with
/// ([`Shards::layout_key`]).
pub const LAYOUT_KEY: &str = "votes:layout";

/// How many shards the queue has (`QUEUE_SHARDS`): fixed for the queue's
/// life, since it decides where every voter's votes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shards(NonZeroU16);

/// One shard of the queue, and the names of its keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Shard {
    index: u16,
    /// `votes` for the unsharded queue, `votes:{s}` for shard `s` of
    /// several: every other key of the shard starts with it.
    queue_key: String,
}

impl Shards {
    /// One shard: the unsharded queue of a single Redis.
    pub const ONE: Self = Self(NonZeroU16::MIN);

    /// `count` shards.
    pub fn new(count: NonZeroU16) -> Self {
        Self(count)
    }

    /// How many shards there are.
    pub fn count(self) -> u16 {
        self.0.get()
    }

    /// The shard of `voter_id`: `crc32(voter id) mod count`.
    pub fn of(self, voter_id: &str) -> Shard {
        self.shard(self.index_of(voter_id))
    }

    /// The number of [`Shards::of`]'s shard, without naming its keys.
    pub fn index_of(self, voter_id: &str) -> u16 {
        let index = crc32fast::hash(voter_id.as_bytes()) % u32::from(self.count());
        // The remainder is below a u16.
        index as u16
    }

    /// Shard number `index` (below [`Shards::count`]).
    pub fn shard(self, index: u16) -> Shard {
        debug_assert!(index < self.count(), "shard {index} of {}", self.count());
        let queue_key = if self.count() == 1 {
            QUEUE_KEY.to_owned()
        } else {
            format!("{QUEUE_KEY}:{{{index}}}")
        };
        Shard { index, queue_key }
    }

    /// Every shard, in order.
    pub fn all(self) -> impl Iterator<Item = Shard> {
        (0..self.count()).map(move |index| self.shard(index))
    }

    /// The key that records the shard count the queue was set up with, so
    /// a component started with another count can tell and refuse.
    pub fn layout_key() -> &'static str {
        LAYOUT_KEY
    }
}

impl Shard {
    /// This shard's number.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// The list of queued votes, newest at the left.
    pub fn queue_key(&self) -> &str {
        &self.queue_key
    }

    /// The last sequence this shard gave out.
    pub fn clock_key(&self) -> String {
        format!("{}:clock", self.queue_key)
    }

    /// Messages the worker could not parse.
    pub fn dead_letter_key(&self) -> String {
        if self.queue_key == QUEUE_KEY {
            DEAD_LETTER_KEY.to_owned()
        } else {
            format!("{}:dead", self.queue_key)
        }
    }

    /// The processing list of worker `worker_id` in this shard.
    pub fn processing_key(&self, worker_id: &str) -> String {
        format!("{}:processing:{worker_id}", self.queue_key)
    }

    /// The marker of `voter_id`'s vote pushed with idempotency key `key`
    /// ([`super::request_key`] in the unsharded queue).
    pub fn request_key(&self, key: &crate::idempotency::IdempotencyKey, voter_id: &str) -> String {
        format!("{}:request:{key}:{voter_id}", self.queue_key)
    }

    /// Where the marker of `voter_id`'s vote pushed with idempotency key
    /// `key` is kept: a field of the shard's marker hash for the 100 ms
    /// the key was made in, when the key tells ([`super::MarkerPlace`]),
    /// or else a key of its own ([`Shard::request_key`]).
    pub fn marker_place(
        &self,
        key: &crate::idempotency::IdempotencyKey,
        voter_id: &str,
    ) -> super::MarkerPlace {
        match key.minted_at_ms() {
            Some(minted) => super::MarkerPlace::Field {
                bucket: format!(
                    "{}:markers:{}",
                    self.queue_key,
                    minted / super::MARKER_BUCKET_MS
                ),
                field: format!("{key}:{voter_id}"),
            },
            None => super::MarkerPlace::Key(self.request_key(key, voter_id)),
        }
    }

    /// Who holds this shard's lease, and until when.
    pub fn lease_key(&self) -> String {
        format!("{}:lease", self.queue_key)
    }

    /// The workers that have a processing list in this shard.
    pub fn workers_key(&self) -> String {
        format!("{}:workers", self.queue_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards(count: u16) -> Shards {
        Shards::new(NonZeroU16::new(count).unwrap())
    }

    /// Test vectors of the shard hash. They pin where every voter's votes
    /// go: a change here moves voters between shards and must not happen.
    /// Computed independently with Python: `zlib.crc32(v.encode()) % n`.
    #[test]
    fn a_voters_shard_is_crc32_of_the_voter_id_mod_the_count() {
        for (voter, crc, of_64, of_16, of_3) in [
            ("v1", 1_768_082_613_u32, 53, 5, 0),
            ("voter-1", 3_445_432_373, 53, 5, 2),
            ("alice", 663_665_735, 7, 7, 2),
            ("Ω-voter", 2_208_413_565, 61, 13, 0),
        ] {
            assert_eq!(crc32fast::hash(voter.as_bytes()), crc, "{voter}");
            assert_eq!(shards(64).of(voter).index(), of_64, "{voter} of 64");
            assert_eq!(shards(16).of(voter).index(), of_16, "{voter} of 16");
            assert_eq!(shards(3).of(voter).index(), of_3, "{voter} of 3");
            assert_eq!(Shards::ONE.of(voter).index(), 0);
        }
    }

    #[test]
    fn one_shard_keeps_the_unsharded_keys() {
        let shard = Shards::ONE.of("v1");
        assert_eq!(shard.queue_key(), "votes");
        assert_eq!(shard.clock_key(), "votes:clock");
        assert_eq!(shard.dead_letter_key(), "votes:dead");
        assert_eq!(shard.processing_key("w1"), "votes:processing:w1");
        let key = crate::idempotency::IdempotencyKey::parse("k1").unwrap();
        assert_eq!(
            shard.request_key(&key, "v1"),
            super::super::request_key(&key, "v1")
        );
        assert_eq!(
            shard.marker_place(&key, "v1"),
            super::super::MarkerPlace::Key(super::super::request_key(&key, "v1"))
        );
        let minted = time_ordered_key(1_733_500_000_123);
        assert_eq!(
            shard.marker_place(&minted, "v1"),
            super::super::MarkerPlace::Field {
                bucket: format!("{}17335000001", super::super::MARKER_BUCKET_PREFIX),
                field: format!("{minted}:v1"),
            }
        );
    }

    /// A v7 UUID made at `millis` (ms since the epoch), as a key.
    fn time_ordered_key(millis: u64) -> crate::idempotency::IdempotencyKey {
        let uuid = uuid::Builder::from_unix_timestamp_millis(millis, &[7; 10]).into_uuid();
        crate::idempotency::IdempotencyKey::parse(&uuid.simple().to_string()).unwrap()
    }

    #[test]
    fn every_key_of_a_shard_carries_its_hash_tag() {
        let shard = shards(64).shard(17);
        let key = crate::idempotency::IdempotencyKey::parse("k1").unwrap();
        for name in [
            shard.queue_key().to_owned(),
            shard.clock_key(),
            shard.dead_letter_key(),
            shard.processing_key("w1"),
            shard.request_key(&key, "v1"),
            match shard.marker_place(&time_ordered_key(1), "v1") {
                super::super::MarkerPlace::Field { bucket, .. } => bucket,
                super::super::MarkerPlace::Key(key) => panic!("{key} is not a bucket"),
            },
            shard.lease_key(),
            shard.workers_key(),
        ] {
            assert!(name.starts_with("votes:{17}"), "{name}");
        }
        assert_eq!(shards(64).all().count(), 64);
        assert_eq!(shards(64).all().last().unwrap().queue_key(), "votes:{63}");
    }
}
