//! Retry schedules. A destination's schedule is a list of delays (seconds) kept on the
//! destination; the worker asks it for the delay before retry `n` of the current round. It is a
//! `backon` backoff builder, so the same jittered schedule also drives in-process retries.
//!
//! The delays live in data rather than in a running backoff because a retry is not a sleep in
//! this process: it is a message on the delivery queue, picked up by whichever worker is alive
//! when it is due.

use std::time::Duration;

use rand::Rng;

/// ±20% jitter, as Svix does, so a burst of failures does not retry in lockstep.
pub const JITTER: f64 = 0.2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    delays: Vec<u32>,
}

impl Schedule {
    pub fn new(delays: &[u32]) -> Self {
        Self { delays: delays.to_vec() }
    }

    /// Retries this schedule allows after the first attempt.
    pub fn retries(&self) -> usize {
        self.delays.len()
    }

    /// The jittered delay before retry `n` (1-based), or `None` once the schedule is exhausted.
    pub fn delay(&self, n: usize) -> Option<Duration> {
        if n == 0 {
            return None;
        }
        backon::BackoffBuilder::build(self.clone()).nth(n - 1)
    }
}

fn jittered(base: u32) -> Duration {
    let f = rand::rng().random_range((1.0 - JITTER)..=(1.0 + JITTER));
    Duration::from_millis(((f64::from(base) * 1000.0) * f).round().max(1000.0) as u64)
}

/// The jittered delays, in order.
#[derive(Debug)]
pub struct ScheduleIter {
    delays: std::vec::IntoIter<u32>,
}

impl Iterator for ScheduleIter {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        self.delays.next().map(jittered)
    }
}

impl backon::BackoffBuilder for Schedule {
    type Backoff = ScheduleIter;
    fn build(self) -> ScheduleIter {
        ScheduleIter { delays: self.delays.into_iter() }
    }
}

/// The delay to use when the destination sent `Retry-After`: never shorter than the schedule's
/// own delay, never longer than `cap`.
pub fn honour_retry_after(scheduled: Duration, retry_after: Option<Duration>, cap: Duration) -> Duration {
    match retry_after {
        Some(ra) => ra.min(cap).max(scheduled),
        None => scheduled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use formbridge_shared::destination::DEFAULT_RETRY_SCHEDULE;
    use proptest::prelude::*;

    #[test]
    fn the_default_matches_svix_within_jitter() {
        let s = Schedule::new(&DEFAULT_RETRY_SCHEDULE);
        assert_eq!(s.retries(), 7);
        for (n, base) in [(1, 5u64), (2, 300), (3, 1800), (4, 7200), (5, 18_000), (6, 36_000), (7, 36_000)] {
            let d = s.delay(n).unwrap().as_secs_f64();
            assert!(d >= base as f64 * 0.8 - 0.001 && d <= base as f64 * 1.2 + 0.001, "retry {n}: {d}");
        }
        assert_eq!(s.delay(8), None);
        assert_eq!(s.delay(0), None);
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(honour_retry_after(s(5), Some(s(30)), s(3600)), s(30));
        assert_eq!(honour_retry_after(s(5), Some(s(1)), s(3600)), s(5), "never sooner than scheduled");
        assert_eq!(honour_retry_after(s(5), Some(s(99_999)), s(3600)), s(3600), "capped");
        assert_eq!(honour_retry_after(s(5), None, s(3600)), s(5));
    }

    #[test]
    fn delays_are_jittered() {
        let s = Schedule::new(&[100]);
        let delays: std::collections::BTreeSet<u128> = (0..50).map(|_| s.delay(1).unwrap().as_millis()).collect();
        // Without jitter every draw would be 100,000 ms; with ±20% fifty draws spread widely.
        assert!(delays.len() > 40, "{} distinct delays in 50 draws", delays.len());
        let (lo, hi) = (*delays.first().unwrap(), *delays.last().unwrap());
        assert!(hi - lo > 10_000, "spread {lo}..{hi} ms is too narrow for ±20%");
    }

    proptest! {
        #[test]
        fn jitter_stays_within_20_percent(base in 1u32..86_400) {
            let d = Schedule::new(&[base]).delay(1).unwrap().as_millis() as f64;
            let b = f64::from(base) * 1000.0;
            prop_assert!(d >= (b * 0.8).max(1000.0) - 1.0 && d <= (b * 1.2).max(1000.0) + 1.0);
        }
    }
}
