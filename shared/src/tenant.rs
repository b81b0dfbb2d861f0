//! The tenant profile item: display name, retention and the write-shard history. Ingest reads it
//! to stamp each queue message with the shard count and expiry in force.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;

use crate::ids::TenantId;
use crate::keys;
use crate::sharding::{ShardEpoch, ShardHistory};

/// Default retention of stored submissions.
pub const DEFAULT_RETENTION_DAYS: u32 = 365;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantProfile {
    pub tenant_id: TenantId,
    pub name: String,
    pub created_at: String,
    pub retention_days: u32,
    pub shards: ShardHistory,
}

impl TenantProfile {
    pub fn to_item(&self) -> HashMap<String, AttributeValue> {
        let key = keys::tenant_profile(&self.tenant_id);
        let dir = keys::tenant_directory(&self.tenant_id);
        let epochs = self
            .shards
            .epochs()
            .iter()
            .map(|e| {
                AttributeValue::M(HashMap::from([
                    ("since_ms".to_owned(), AttributeValue::N(e.since_ms.to_string())),
                    ("count".to_owned(), AttributeValue::N(e.count.to_string())),
                ]))
            })
            .collect();
        HashMap::from([
            (keys::PK.to_owned(), AttributeValue::S(key.pk)),
            (keys::SK.to_owned(), AttributeValue::S(key.sk)),
            (keys::GSI1PK.to_owned(), AttributeValue::S(dir.pk)),
            (keys::GSI1SK.to_owned(), AttributeValue::S(dir.sk)),
            ("name".to_owned(), AttributeValue::S(self.name.clone())),
            ("created_at".to_owned(), AttributeValue::S(self.created_at.clone())),
            ("retention_days".to_owned(), AttributeValue::N(self.retention_days.to_string())),
            ("shard_count".to_owned(), AttributeValue::N(self.shards.current().to_string())),
            ("shard_history".to_owned(), AttributeValue::L(epochs)),
        ])
    }

    pub fn from_item(item: &HashMap<String, AttributeValue>) -> Option<TenantProfile> {
        let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        let n = |v: &AttributeValue| v.as_n().ok().and_then(|n| n.parse::<u64>().ok());
        let tenant_id = match keys::Entity::classify(&s(keys::PK)?, &s(keys::SK)?) {
            keys::Entity::TenantProfile { tenant } => tenant,
            _ => return None,
        };
        let epochs = item
            .get("shard_history")?
            .as_l()
            .ok()?
            .iter()
            .map(|e| {
                let m = e.as_m().ok()?;
                Some(ShardEpoch { since_ms: n(m.get("since_ms")?)?, count: u16::try_from(n(m.get("count")?)?).ok()? })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(TenantProfile {
            tenant_id,
            name: s("name")?,
            created_at: s("created_at")?,
            retention_days: u32::try_from(n(item.get("retention_days")?)?).ok()?,
            shards: ShardHistory::from_epochs(epochs).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_round_trips() {
        let mut shards = ShardHistory::new(2, 1).unwrap();
        shards.grow(8, 5).unwrap();
        let p = TenantProfile {
            tenant_id: TenantId::parse("acme").unwrap(),
            name: "Acme".into(),
            created_at: "2026-11-25T08:00:00Z".into(),
            retention_days: 30,
            shards,
        };
        assert_eq!(TenantProfile::from_item(&p.to_item()), Some(p));
    }
}
