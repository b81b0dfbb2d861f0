//! Helpers shared by the integration tests.

use formbridge_shared::sharding::ShardHistory;
use formbridge_shared::store::DataStore;
use formbridge_shared::tenant::TenantProfile;
use formbridge_shared::TenantId;

/// Creates one single-shard tenant per name.
pub async fn tenants(store: &DataStore, names: &[&str]) -> Vec<TenantId> {
    let mut out = Vec::new();
    for n in names {
        let p = TenantProfile {
            tenant_id: TenantId::parse(n).unwrap(),
            name: (*n).into(),
            created_at: "2026-11-25T08:00:00Z".into(),
            retention_days: 30,
            form_retention: Default::default(),
            shards: ShardHistory::new(1, 0).unwrap(),
        };
        store.create_tenant(&p).await.unwrap();
        out.push(p.tenant_id);
    }
    out
}
