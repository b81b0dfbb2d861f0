//! Aggregation of authentication failures for the audit log: counted in memory per site and
//! minute, and written once a minute has ended, with one UpdateItem per bucket (and everything
//! at shutdown).
//!
//! A flood of forged requests naming ever new unknown domains costs a bounded number of writes
//! and bounded memory: each minute keeps its first `UNKNOWN_DOMAINS_PER_MINUTE` unknown domains
//! by name and files the rest together under `-` (the total stays exact). So an instance writes at
//! most that many plus one unknown-site items a minute, and the known sites' buckets are bounded by
//! the registered sites. If writing fails for long, the oldest minutes are dropped beyond
//! `MAX_PENDING_BUCKETS` (counted in `ingest_auth_failures_dropped_total`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use formbridge_shared::audit::{AuthFailure, FailureBucket};
use formbridge_shared::store::DataStore;
use formbridge_shared::{SiteDomain, TenantId};
use tokio_util::sync::CancellationToken;

/// Unknown domains kept by name per minute and instance; later ones are counted under `-`.
pub const UNKNOWN_DOMAINS_PER_MINUTE: usize = 20;
/// Buckets held unwritten at most (the engine unreachable for long): the oldest minutes go first.
pub const MAX_PENDING_BUCKETS: usize = 10_000;

type Counts = HashMap<AuthFailure, u64>;

#[derive(Debug, Default)]
struct Pending {
    buckets: BTreeMap<i64, HashMap<FailureBucket, Counts>>,
    /// The unknown domains named so far in each pending minute.
    unknown_named: HashMap<i64, HashSet<SiteDomain>>,
}

impl Pending {
    fn len(&self) -> usize {
        self.buckets.values().map(HashMap::len).sum()
    }

    fn add(&mut self, bucket: FailureBucket, counts: Counts) {
        let entry = self.buckets.entry(bucket.minute).or_default().entry(bucket).or_default();
        for (r, n) in counts {
            *entry.entry(r).or_default() += n;
        }
        while self.len() > MAX_PENDING_BUCKETS {
            let Some((minute, dropped)) = self.buckets.pop_first() else { break };
            self.unknown_named.remove(&minute);
            let n: u64 = dropped.values().flat_map(HashMap::values).sum();
            metrics::counter!("ingest_auth_failures_dropped_total").increment(n);
            tracing::warn!(minute, failures = n, "auth-failure counts dropped: too many unwritten buckets");
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct FailureLog {
    pending: Arc<Mutex<Pending>>,
    /// When `flush_if_due` last wrote (Lambda).
    last_flush: Arc<Mutex<Option<std::time::Instant>>>,
}

impl FailureLog {
    pub fn record(&self, tenant: Option<TenantId>, domain: Option<SiteDomain>, reason: AuthFailure, now_s: i64) {
        metrics::counter!("ingest_auth_failures_total", "reason" => reason.code()).increment(1);
        let minute = now_s - now_s.rem_euclid(60);
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let domain = match (&tenant, domain) {
            (None, Some(d)) => {
                let named = p.unknown_named.entry(minute).or_default();
                if named.contains(&d) || named.len() < UNKNOWN_DOMAINS_PER_MINUTE {
                    named.insert(d.clone());
                    Some(d)
                } else {
                    metrics::counter!("ingest_unknown_domains_unnamed_total").increment(1);
                    None
                }
            }
            (_, d) => d,
        };
        p.add(FailureBucket { tenant, domain, minute }, HashMap::from([(reason, 1)]));
    }

    /// Buckets waiting to be written (bounded; see the module documentation).
    pub fn pending_buckets(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Takes the buckets of minutes before `before_minute` (all of them for `i64::MAX`).
    fn take(&self, before_minute: i64) -> Vec<(FailureBucket, Counts)> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let keep = p.buckets.split_off(&before_minute);
        let taken = std::mem::replace(&mut p.buckets, keep);
        p.unknown_named.retain(|m, _| *m >= before_minute);
        taken.into_values().flatten().collect()
    }

    async fn write(&self, store: &DataStore, buckets: Vec<(FailureBucket, Counts)>) {
        for (bucket, counts) in buckets {
            if let Err(e) = store.record_auth_failures(&bucket, &counts).await {
                tracing::warn!(error = %e, "could not write auth failures to the audit log; will retry");
                self.pending.lock().unwrap_or_else(|e| e.into_inner()).add(bucket, counts);
            }
        }
    }

    /// Writes the minutes that have ended by `now_s`: each bucket once a minute at most.
    pub async fn flush_ended(&self, store: &DataStore, now_s: i64) {
        let buckets = self.take(now_s - now_s.rem_euclid(60));
        self.write(store, buckets).await;
    }

    /// Writes everything, the running minute included, unless that was done less than `every`
    /// ago: for a Lambda environment, which may be frozen or recycled at any moment, so each of its
    /// buckets is written at most once per `every` (60 / 10 = 6 times a minute by default).
    pub async fn flush_if_due(&self, store: &DataStore, every: Duration) {
        {
            let mut last = self.last_flush.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < every) || self.pending_buckets() == 0 {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        self.flush(store).await;
    }

    /// Writes everything (at shutdown, and in tests).
    pub async fn flush(&self, store: &DataStore) {
        let buckets = self.take(i64::MAX);
        self.write(store, buckets).await;
    }

    /// Writes ended minutes every `every` until cancelled, then everything.
    pub async fn run(self, store: DataStore, every: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => self.flush_ended(&store, now_s()).await,
                _ = shutdown.cancelled() => break,
            }
        }
        self.flush(&store).await;
    }
}

pub fn now_s() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(i: usize) -> Option<SiteDomain> {
        Some(SiteDomain::parse(&format!("forged-{i}.example")).unwrap())
    }

    #[test]
    fn a_flood_of_unknown_domains_keeps_a_bounded_number_of_buckets_and_every_count() {
        let log = FailureLog::default();
        for i in 0..5_000 {
            log.record(None, domain(i), AuthFailure::UnknownSite, 120 + (i as i64 % 60));
        }
        // One minute: the first 20 domains by name, the rest under "-".
        assert_eq!(log.pending_buckets(), UNKNOWN_DOMAINS_PER_MINUTE + 1);
        let taken = log.take(i64::MAX);
        let total: u64 = taken.iter().flat_map(|(_, c)| c.values()).sum();
        assert_eq!(total, 5_000, "every failure is counted");
        let unnamed = taken.iter().find(|(b, _)| b.domain.is_none()).unwrap();
        assert_eq!(unnamed.1[&AuthFailure::UnknownSite], 5_000 - UNKNOWN_DOMAINS_PER_MINUTE as u64);
        // A named domain seen again in the same minute stays named; the next minute starts afresh.
        log.record(None, domain(0), AuthFailure::UnknownSite, 130);
        log.record(None, domain(4_999), AuthFailure::UnknownSite, 180);
        assert!(log.take(i64::MAX).iter().all(|(b, _)| b.domain.is_some()));
    }

    #[test]
    fn only_ended_minutes_are_taken_before_shutdown() {
        let log = FailureLog::default();
        let t = TenantId::parse("t").unwrap();
        log.record(Some(t.clone()), domain(1), AuthFailure::BadSignature, 59);
        log.record(Some(t), domain(1), AuthFailure::BadSignature, 61);
        let ended = log.take(60);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].0.minute, 0);
        assert_eq!(log.pending_buckets(), 1, "the running minute waits");
    }

    #[test]
    fn unwritten_buckets_are_bounded_oldest_first() {
        let mut p = Pending::default();
        for m in 0..(MAX_PENDING_BUCKETS as i64 + 5) {
            p.add(
                FailureBucket { tenant: None, domain: None, minute: m * 60 },
                HashMap::from([(AuthFailure::UnknownSite, 1)]),
            );
        }
        assert_eq!(p.len(), MAX_PENDING_BUCKETS);
        assert_eq!(p.buckets.keys().next(), Some(&(5 * 60)), "the oldest minutes went first");
    }
}
