//! Aggregation of authentication failures for the audit log: counted in memory per site and
//! minute, written every few seconds with one UpdateItem per bucket, and flushed at shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use formbridge_shared::audit::{AuthFailure, FailureBucket};
use formbridge_shared::store::DataStore;
use formbridge_shared::{SiteDomain, TenantId};
use tokio_util::sync::CancellationToken;

type Counts = HashMap<FailureBucket, HashMap<AuthFailure, u64>>;

#[derive(Debug, Clone, Default)]
pub struct FailureLog {
    pending: Arc<Mutex<Counts>>,
}

impl FailureLog {
    pub fn record(&self, tenant: Option<TenantId>, domain: Option<SiteDomain>, reason: AuthFailure, now_s: i64) {
        metrics::counter!("ingest_auth_failures_total", "reason" => reason.code()).increment(1);
        let bucket = FailureBucket { tenant, domain, minute: now_s - now_s.rem_euclid(60) };
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        *p.entry(bucket).or_default().entry(reason).or_default() += 1;
    }

    fn take(&self) -> Counts {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Writes what has accumulated; what fails to write is kept for the next flush.
    pub async fn flush(&self, store: &DataStore) {
        for (bucket, counts) in self.take() {
            if let Err(e) = store.record_auth_failures(&bucket, &counts).await {
                tracing::warn!(error = %e, "could not write auth failures to the audit log; will retry");
                let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                let entry = p.entry(bucket).or_default();
                for (r, n) in counts {
                    *entry.entry(r).or_default() += n;
                }
            }
        }
    }

    /// Flushes every `every` until cancelled, then once more.
    pub async fn run(self, store: DataStore, every: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => self.flush(&store).await,
                _ = shutdown.cancelled() => break,
            }
        }
        self.flush(&store).await;
    }
}
