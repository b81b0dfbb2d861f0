//! Domain → tenant resolution for the hot path, with an in-process cache.
//!
//! Entries (hits and misses alike) live for `site_cache_ttl` (30 s by default, at most 60 s):
//! that is the documented bound for a site added, removed or rotated to take effect. Secrets are
//! opened once per cache fill, not per request. A secret's grace-period end is checked on every
//! request, so an expired secret stops verifying on time even while cached.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use moka::future::Cache;
use standardwebhooks::Webhook;

use formbridge_shared::secrets::Keyring;
use formbridge_shared::site::SiteRecord;
use formbridge_shared::store::DataStore;
use formbridge_shared::tenant::TenantProfile;
use formbridge_shared::SiteDomain;

/// A registered site, ready to verify requests.
pub struct ResolvedSite {
    pub tenant: TenantProfile,
    /// Verifiers of the site's secrets with their expiry (epoch ms), newest first.
    pub verifiers: Vec<(Webhook, Option<u64>)>,
}

impl ResolvedSite {
    /// Whether `body` is signed by one of the site's secrets still valid at `now_ms`, checked by
    /// the official Standard Webhooks verifier (timestamp tolerance included), which accepts any
    /// one of several space-separated signatures and compares in constant time.
    pub fn verifies(&self, body: &[u8], headers: &HeaderMap, now_ms: u64) -> bool {
        // The official verifier subtracts the timestamp from its clock unchecked: one this far in
        // the past overflows there (a panic with overflow checks; without, the difference can
        // wrap round into its tolerance). Nothing near it can be fresh.
        let ts = headers.get("webhook-timestamp").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i64>().ok());
        if ts.is_some_and(|ts| ts < i64::MIN / 2) {
            return false;
        }
        self.verifiers
            .iter()
            .filter(|(_, expires)| expires.is_none_or(|e| e > now_ms))
            .any(|(w, _)| w.verify(body, headers).is_ok())
    }
}

impl std::fmt::Debug for ResolvedSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedSite")
            .field("tenant", &self.tenant.tenant_id)
            .field("secrets", &self.verifiers.len())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("site lookup failed: {0}")]
    Lookup(String),
}

#[derive(Clone)]
pub struct SiteResolver {
    store: DataStore,
    keyring: Keyring,
    cache: Cache<SiteDomain, Option<Arc<ResolvedSite>>>,
}

impl std::fmt::Debug for SiteResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteResolver").field("cached", &self.cache.entry_count()).finish()
    }
}

impl SiteResolver {
    pub fn new(store: DataStore, keyring: Keyring, ttl: Duration) -> Self {
        Self { store, keyring, cache: Cache::builder().max_capacity(100_000).time_to_live(ttl).build() }
    }

    /// The site, or `None` when the domain is not registered (or its tenant is gone).
    pub async fn resolve(&self, domain: &SiteDomain) -> Result<Option<Arc<ResolvedSite>>, ResolveError> {
        let store = self.store.clone();
        let keyring = self.keyring.clone();
        let d = domain.clone();
        self.cache
            .try_get_with(domain.clone(), async move { load(&store, &keyring, &d).await })
            .await
            .map_err(|e: Arc<ResolveError>| ResolveError::Lookup(e.to_string()))
    }
}

async fn load(
    store: &DataStore,
    keyring: &Keyring,
    domain: &SiteDomain,
) -> Result<Option<Arc<ResolvedSite>>, ResolveError> {
    let Some(site) = store.get_site(domain, false).await.map_err(|e| ResolveError::Lookup(e.to_string()))? else {
        return Ok(None);
    };
    let Some(tenant) = store.get_tenant(&site.tenant).await.map_err(|e| ResolveError::Lookup(e.to_string()))? else {
        tracing::warn!(site = %domain, tenant = %site.tenant, "site points at a missing tenant");
        return Ok(None);
    };
    let owner = SiteRecord::owner(domain);
    let mut verifiers = Vec::new();
    for s in &site.secrets {
        match keyring.open_secret(&s.sealed, &owner).map(|secret| Webhook::new(secret.expose())) {
            Ok(Ok(w)) => verifiers.push((w, s.expires_ms)),
            // A secret we cannot open (e.g. a master key not configured here) is skipped, loudly.
            Ok(Err(_)) | Err(_) => {
                tracing::error!(site = %domain, "a site secret does not open with the configured master keys")
            }
        }
    }
    Ok(Some(Arc::new(ResolvedSite { tenant, verifiers })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use formbridge_shared::sharding::ShardHistory;
    use formbridge_shared::TenantId;

    /// Found by the `webhook_headers` fuzz target: the official verifier computes
    /// `now - timestamp` unchecked, so a timestamp near `i64::MIN` overflowed inside it.
    #[test]
    fn a_timestamp_near_the_minimum_is_refused_not_overflowed() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let site = ResolvedSite {
            tenant: TenantProfile {
                tenant_id: TenantId::parse("acme").unwrap(),
                name: "Acme".into(),
                created_at: "2026-01-01T00:00:00Z".into(),
                retention_days: 30,
                form_retention: Default::default(),
                shards: ShardHistory::new(1, 0).unwrap(),
            },
            verifiers: vec![(Webhook::new(secret).unwrap(), None)],
        };
        let now_s = time::OffsetDateTime::now_utc().unix_timestamp();
        let now_ms = u64::try_from(now_s).unwrap() * 1000;
        let signed = |ts: i64| {
            let signature = Webhook::new(secret).unwrap().sign("msg_1", ts, b"{}").unwrap();
            let mut h = HeaderMap::new();
            h.insert("webhook-id", "msg_1".parse().unwrap());
            h.insert("webhook-timestamp", ts.to_string().parse().unwrap());
            h.insert("webhook-signature", signature.parse().unwrap());
            h
        };
        for ts in [i64::MIN, i64::MIN + 1, i64::MIN + now_s, i64::MIN / 2 - 1] {
            assert!(!site.verifies(b"{}", &signed(ts), now_ms), "{ts}");
        }
        assert!(site.verifies(b"{}", &signed(now_s), now_ms), "a fresh, signed request still verifies");
    }
}
