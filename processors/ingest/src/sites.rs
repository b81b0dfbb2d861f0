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
