//! Hot partitions: the write rate of each of a tenant's shards, measured from the submissions the
//! stream brings, and the answer when one runs hot: the tenant's shard count raised, with the
//! safe-effective-time rule (`GROWTH_DELAY_MS`), and a `TenantShardsGrown` event.
//!
//! **Measure.** Each submission INSERT adds its write units to its (tenant, shard) at its stream
//! time, in one-second buckets kept for `HOT_WINDOW_SECONDS`. A shard whose units over the window,
//! divided by the window, reach `HOT_SHARD_WCU_PER_S` (default 500: half of a partition's 1,000
//! write units a second) is hot. Records older than the window plus a minute (a replay, a
//! backlog) are not measured: they say nothing of the rate now.
//!
//! **Respond.** The tenant grows to the shards that put its measured rate at a quarter of a
//! partition's at most, at least doubling, up to `MAX_SHARDS`: `grow_shards`, conditional on the
//! count read, effective `GROWTH_DELAY_MS` later, so no submission's partition changes under a
//! sender's retry. A tenant grown less than the delay plus a window ago is left alone (its new
//! count is not in force yet), so several aggregators, or one that sees the same burst twice,
//! grow it once. Then the event; every detection also logs a warning and counts
//! `hot_partitions_total`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use formbridge_shared::capacity::{item_size, write_units};
use formbridge_shared::keys::Entity;
use formbridge_shared::sharding::{GROWTH_DELAY_MS, MAX_SHARDS};
use formbridge_shared::store::{DataStore, StoreError};
use formbridge_shared::stream::{Change, ChangeKind};
use formbridge_shared::TenantId;
use serde_json::json;

/// EventBridge source and detail type of a growth (schema:
/// `schemas/events/tenant-shards-grown.schema.json`).
pub const EVENT_SOURCE: &str = "formbridge.aggregator";
pub const TENANT_SHARDS_GROWN: &str = "TenantShardsGrown";

#[derive(Debug, Clone)]
pub struct HotSettings {
    /// Write units a second, averaged over the window, that make a shard hot.
    pub shard_wcu_per_s: f64,
    pub window: Duration,
    /// Grow hot tenants (else only warn).
    pub auto_grow: bool,
    pub bus: String,
}

/// A shard found hot.
#[derive(Debug, Clone, PartialEq)]
pub struct Hot {
    pub tenant: TenantId,
    pub shard: u16,
    pub shard_wcu_per_s: f64,
    /// The tenant's measured rate over all its shards.
    pub tenant_wcu_per_s: f64,
}

/// Per (tenant, shard): (second, write units) of the window.
type Windows = HashMap<(TenantId, u16), VecDeque<(i64, u64)>>;

#[derive(Debug)]
pub struct HotDetector {
    pub settings: HotSettings,
    windows: Mutex<Windows>,
}

impl HotDetector {
    pub fn new(settings: HotSettings) -> Self {
        Self { settings, windows: Mutex::new(HashMap::new()) }
    }

    fn window_s(&self) -> i64 {
        i64::try_from(self.settings.window.as_secs()).unwrap_or(60).max(1)
    }

    /// Adds a batch's submissions; returns the shards now hot, hottest first.
    pub fn observe(&self, records: &[Change], now_s: i64) -> Vec<Hot> {
        let w = self.window_s();
        let mut windows = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for r in records {
            let (Entity::Submission { tenant, shard, .. }, ChangeKind::Insert, Some(new)) = (&r.entity, r.kind, &r.new)
            else {
                continue;
            };
            let at = r.created_s.unwrap_or(now_s);
            if at < now_s - w - 60 {
                continue;
            }
            let q = windows.entry((tenant.clone(), *shard)).or_default();
            let wcu = write_units(item_size(new));
            match q.back_mut() {
                Some((s, n)) if *s == at => *n += wcu,
                _ => q.push_back((at, wcu)),
            }
        }
        // Forget what left the window, and shards that went quiet.
        windows.retain(|_, q| {
            while q.front().is_some_and(|(s, _)| *s <= now_s - w) {
                q.pop_front();
            }
            !q.is_empty()
        });
        let mut per_tenant: BTreeMap<TenantId, f64> = BTreeMap::new();
        let mut rates = Vec::new();
        for ((t, shard), q) in windows.iter() {
            let rate = q.iter().map(|(_, n)| *n).sum::<u64>() as f64 / w as f64;
            *per_tenant.entry(t.clone()).or_default() += rate;
            rates.push((t.clone(), *shard, rate));
        }
        let mut hot: Vec<Hot> = rates
            .into_iter()
            .filter(|(_, _, r)| *r >= self.settings.shard_wcu_per_s)
            .map(|(tenant, shard, rate)| Hot {
                tenant_wcu_per_s: per_tenant.get(&tenant).copied().unwrap_or(rate),
                tenant,
                shard,
                shard_wcu_per_s: rate,
            })
            .collect();
        hot.sort_by(|a, b| b.shard_wcu_per_s.total_cmp(&a.shard_wcu_per_s));
        hot
    }

    /// Grows each hot tenant once (its hottest shard decides); returns the growths made.
    pub async fn respond(
        &self,
        store: &DataStore,
        events: &aws_sdk_eventbridge::Client,
        hot: &[Hot],
        now_ms: u64,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        let mut done: Vec<&TenantId> = Vec::new();
        let mut out = Vec::new();
        for h in hot {
            if done.contains(&&h.tenant) {
                continue;
            }
            done.push(&h.tenant);
            metrics::counter!("hot_partitions_total").increment(1);
            tracing::warn!(
                tenant = %h.tenant,
                shard = h.shard,
                write_units_per_s = h.shard_wcu_per_s,
                threshold = self.settings.shard_wcu_per_s,
                "a hot partition: a shard's write rate over the window reached the threshold"
            );
            if !self.settings.auto_grow {
                continue;
            }
            let Some(profile) = store.get_tenant(&h.tenant).await? else { continue };
            let latest = profile.shards.epochs().last().map_or(0, |e| e.since_ms);
            let settle = GROWTH_DELAY_MS + u64::try_from(self.settings.window.as_millis()).unwrap_or(60_000);
            if latest + settle > now_ms {
                // Grown a moment ago (here or by another aggregator): not in force yet.
                continue;
            }
            let from = profile.shards.current();
            if from >= MAX_SHARDS {
                continue;
            }
            // A quarter of a partition's 1,000 write units a second per shard, at least double.
            let needed = (h.tenant_wcu_per_s / (self.settings.shard_wcu_per_s / 2.0)).ceil() as u64;
            let to = needed.max(u64::from(from) * 2).min(u64::from(MAX_SHARDS)) as u16;
            match store.grow_shards(&h.tenant, to, now_ms).await {
                Ok(p) => {
                    let effective = p.shards.epochs().last().map_or(now_ms, |e| e.since_ms);
                    let detail = json!({
                        "tenant_id": h.tenant,
                        "from_shards": from,
                        "to_shards": to,
                        "effective_at": formbridge_shared::clock::rfc3339_ms(effective),
                        "hot_shard": h.shard,
                        "shard_write_units_per_s": h.shard_wcu_per_s,
                        "tenant_write_units_per_s": h.tenant_wcu_per_s,
                        "threshold_write_units_per_s": self.settings.shard_wcu_per_s,
                        "grown_at": formbridge_shared::clock::rfc3339_ms(now_ms),
                    });
                    let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                        .event_bus_name(&self.settings.bus)
                        .source(EVENT_SOURCE)
                        .detail_type(TENANT_SHARDS_GROWN)
                        .detail(detail.to_string())
                        .build();
                    if let Err(e) = events.put_events().entries(entry).send().await {
                        tracing::error!(tenant = %h.tenant, error = %aws_sdk_eventbridge::Error::from(e), "could not publish TenantShardsGrown");
                    }
                    tracing::warn!(tenant = %h.tenant, from, to, "a hot tenant's shard count was raised");
                    out.push(detail);
                }
                // Another aggregator changed it first.
                Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}
