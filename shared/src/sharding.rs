//! Write sharding: a submission's partition is `hash(submission id) mod shard count`, where the
//! count is the tenant's at the time the submission was accepted. Counts only grow and their
//! history is kept, so a reader can still find an item written under an older, smaller count.

use serde::{Deserialize, Serialize};

use crate::ids::SubmissionId;

/// Upper bound on a tenant's shards: 256 partitions take ~256,000 writes/s, far past any tenant.
pub const MAX_SHARDS: u16 = 256;

/// The shard of `id` among `count` shards. Stable across releases and platforms (XXH3-64 of the
/// canonical id string), which the persister's idempotency relies on.
pub fn shard_of(id: &SubmissionId, count: u16) -> u16 {
    let count = count.clamp(1, MAX_SHARDS);
    let h = xxhash_rust::xxh3::xxh3_64(id.to_string().as_bytes());
    (h % u64::from(count)) as u16
}

/// How long after a growth is recorded it takes effect. Every cache of the tenant profile (ingest
/// keeps one for at most 60 s) has seen the new count by then, so the count a submission is written
/// under follows from its id alone, whichever ingest instance takes it or its retries.
pub const GROWTH_DELAY_MS: u64 = 120_000;

/// One era of a tenant's shard count, effective from `since_ms` (epoch milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEpoch {
    pub since_ms: u64,
    pub count: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardHistoryError {
    #[error("shard count must be between 1 and {MAX_SHARDS}, got {0}")]
    OutOfRange(u16),
    #[error("shard count can only grow (current {current}, asked {asked}): readers rely on it")]
    Shrink { current: u16, asked: u16 },
    #[error("shard history is empty")]
    Empty,
}

/// The append-only history of a tenant's shard count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardHistory(Vec<ShardEpoch>);

impl ShardHistory {
    pub fn new(count: u16, since_ms: u64) -> Result<Self, ShardHistoryError> {
        check(count)?;
        Ok(Self(vec![ShardEpoch { since_ms, count }]))
    }

    /// Rebuilds a stored history, checking it is non-empty and never shrinks.
    pub fn from_epochs(mut epochs: Vec<ShardEpoch>) -> Result<Self, ShardHistoryError> {
        epochs.sort_by_key(|e| e.since_ms);
        let first = epochs.first().ok_or(ShardHistoryError::Empty)?;
        check(first.count)?;
        for w in epochs.windows(2) {
            check(w[1].count)?;
            if w[1].count < w[0].count {
                return Err(ShardHistoryError::Shrink { current: w[0].count, asked: w[1].count });
            }
        }
        Ok(Self(epochs))
    }

    pub fn epochs(&self) -> &[ShardEpoch] {
        &self.0
    }

    /// The count in force at `ts_ms`: what a submission whose id carries that time is written with.
    pub fn count_at(&self, ts_ms: u64) -> u16 {
        self.0.iter().rev().find(|e| e.since_ms <= ts_ms).map_or(self.0[0].count, |e| e.count)
    }

    /// The newest count (in force now, or from its `since_ms` on).
    pub fn current(&self) -> u16 {
        self.0.last().map_or(1, |e| e.count)
    }

    /// Appends a larger count effective from `since_ms`.
    pub fn grow(&mut self, count: u16, since_ms: u64) -> Result<(), ShardHistoryError> {
        check(count)?;
        let current = self.current();
        if count < current {
            return Err(ShardHistoryError::Shrink { current, asked: count });
        }
        if count > current {
            self.0.push(ShardEpoch { since_ms, count });
        }
        Ok(())
    }

    /// Every shard that may hold items: a full read gathers across these.
    pub fn read_shards(&self) -> std::ops::Range<u16> {
        0..self.current()
    }

    /// The shards that may hold submission `id`: one per distinct historical count, the count in
    /// force at the id's timestamp first. A point read tries them in order.
    pub fn candidate_shards(&self, id: &SubmissionId) -> Vec<u16> {
        let mut out = vec![shard_of(id, self.count_at(id.timestamp_ms()))];
        for e in self.0.iter().rev() {
            let s = shard_of(id, e.count);
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }
}

fn check(count: u16) -> Result<(), ShardHistoryError> {
    if count == 0 || count > MAX_SHARDS {
        Err(ShardHistoryError::OutOfRange(count))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn history_only_grows() {
        let mut h = ShardHistory::new(4, 0).unwrap();
        assert!(matches!(h.grow(2, 10), Err(ShardHistoryError::Shrink { .. })));
        h.grow(8, 10).unwrap();
        h.grow(8, 20).unwrap();
        assert_eq!(h.epochs().len(), 2);
        assert_eq!(h.read_shards(), 0..8);
        assert!(ShardHistory::new(0, 0).is_err());
        assert!(ShardHistory::new(MAX_SHARDS + 1, 0).is_err());
        assert!(ShardHistory::from_epochs(vec![]).is_err());
        assert!(ShardHistory::from_epochs(vec![
            ShardEpoch { since_ms: 0, count: 8 },
            ShardEpoch { since_ms: 5, count: 4 }
        ])
        .is_err());
    }

    proptest! {
        #[test]
        fn shard_is_deterministic_and_in_range(n in any::<u128>(), count in 1u16..=MAX_SHARDS) {
            let id = SubmissionId::from_ulid(ulid::Ulid(n));
            let s = shard_of(&id, count);
            prop_assert!(s < count);
            prop_assert_eq!(s, shard_of(&id, count));
        }

        /// Items written under any historical count are found among the candidates.
        #[test]
        fn candidates_cover_every_historical_count(n in any::<u128>(), counts in proptest::collection::vec(1u16..=64, 1..5)) {
            let mut sorted = counts.clone();
            sorted.sort_unstable();
            let mut h = ShardHistory::new(sorted[0], 0).unwrap();
            for (i, c) in sorted.iter().enumerate().skip(1) {
                h.grow(*c, i as u64 * 1000).unwrap();
            }
            let id = SubmissionId::from_ulid(ulid::Ulid(n));
            let cands = h.candidate_shards(&id);
            for c in &sorted {
                prop_assert!(cands.contains(&shard_of(&id, *c)));
            }
            prop_assert!(cands.iter().all(|s| *s < h.current()));
        }

        /// Ids spread evenly: with 10,000 ids over `count` shards, every shard is within 25% of
        /// the mean (a chi-square-style bound loose enough never to flake, tight enough to catch
        /// a hash that clusters, e.g. one using only the ULID's time part).
        #[test]
        fn ids_spread_evenly_over_shards(seed in any::<u64>(), count in 2u16..=16) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let n = 10_000u32;
            let mut buckets = vec![0u32; usize::from(count)];
            // Same millisecond for all ids: the worst case, a burst from one tenant.
            let ms = 1_764_000_000_000u64;
            for _ in 0..n {
                let id = SubmissionId::from_ulid(ulid::Ulid::from_parts(ms, rng.random()));
                buckets[usize::from(shard_of(&id, count))] += 1;
            }
            let mean = f64::from(n) / f64::from(count);
            for b in buckets {
                prop_assert!((f64::from(b) - mean).abs() < mean * 0.25, "bucket {b} vs mean {mean}");
            }
        }
    }
}
