//! The tenant profile item: display name, retention and the write-shard history. Ingest reads it
//! to stamp each queue message with the shard count and expiry in force.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;

use crate::attrs::tenant as tn;
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
                    (tn::SINCE_MS.to_owned(), AttributeValue::N(e.since_ms.to_string())),
                    (tn::COUNT.to_owned(), AttributeValue::N(e.count.to_string())),
                ]))
            })
            .collect();
        HashMap::from([
            (keys::PK.to_owned(), AttributeValue::S(key.pk)),
            (keys::SK.to_owned(), AttributeValue::S(key.sk)),
            (keys::GSI1PK.to_owned(), AttributeValue::S(dir.pk)),
            (keys::GSI1SK.to_owned(), AttributeValue::S(dir.sk)),
            (tn::NAME.to_owned(), AttributeValue::S(self.name.clone())),
            (tn::CREATED_AT.to_owned(), AttributeValue::S(self.created_at.clone())),
            (tn::RETENTION_DAYS.to_owned(), AttributeValue::N(self.retention_days.to_string())),
            (tn::SHARD_COUNT.to_owned(), AttributeValue::N(self.shards.current().to_string())),
            (tn::SHARD_HISTORY.to_owned(), AttributeValue::L(epochs)),
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
            .get(tn::SHARD_HISTORY)?
            .as_l()
            .ok()?
            .iter()
            .map(|e| {
                let m = e.as_m().ok()?;
                Some(ShardEpoch {
                    since_ms: n(m.get(tn::SINCE_MS)?)?,
                    count: u16::try_from(n(m.get(tn::COUNT)?)?).ok()?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(TenantProfile {
            tenant_id,
            name: s(tn::NAME)?,
            created_at: s(tn::CREATED_AT)?,
            retention_days: u32::try_from(n(item.get(tn::RETENTION_DAYS)?)?).ok()?,
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
