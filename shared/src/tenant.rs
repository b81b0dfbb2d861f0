//! The tenant profile item: display name, retention and the write-shard history. Ingest reads it
//! to stamp each queue message with the shard count and expiry in force.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;

use crate::attrs::{tenant as tn, AttrError, Attrs};
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
    /// Retention for single forms, in days, overriding `retention_days` for them.
    pub form_retention: BTreeMap<String, u32>,
    pub shards: ShardHistory,
}

/// The longest retention a tenant or form may ask for (ten years).
pub const MAX_RETENTION_DAYS: u32 = 3650;

impl TenantProfile {
    /// The retention of `form`'s submissions: its own, or the tenant's.
    pub fn retention_for(&self, form: &str) -> u32 {
        self.form_retention.get(form).copied().unwrap_or(self.retention_days)
    }

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
        let mut item = HashMap::from([
            (keys::PK.to_owned(), AttributeValue::S(key.pk)),
            (keys::SK.to_owned(), AttributeValue::S(key.sk)),
            (keys::GSI1PK.to_owned(), AttributeValue::S(dir.pk)),
            (keys::GSI1SK.to_owned(), AttributeValue::S(dir.sk)),
            (tn::NAME.to_owned(), AttributeValue::S(self.name.clone())),
            (tn::CREATED_AT.to_owned(), AttributeValue::S(self.created_at.clone())),
            (tn::RETENTION_DAYS.to_owned(), AttributeValue::N(self.retention_days.to_string())),
            (tn::SHARD_COUNT.to_owned(), AttributeValue::N(self.shards.current().to_string())),
            (tn::SHARD_HISTORY.to_owned(), AttributeValue::L(epochs)),
        ]);
        if !self.form_retention.is_empty() {
            item.insert(tn::FORM_RETENTION.to_owned(), form_retention_attr(&self.form_retention));
        }
        item
    }

    /// Decodes a profile; the error names the attribute that is missing or unreadable.
    pub fn from_item(item: &HashMap<String, AttributeValue>) -> Result<TenantProfile, AttrError> {
        let a = Attrs(item);
        let tenant_id = match keys::Entity::classify(a.s(keys::PK)?, a.s(keys::SK)?) {
            keys::Entity::TenantProfile { tenant } => tenant,
            _ => return Err(AttrError::Key("tenant profile")),
        };
        let history = item.get(tn::SHARD_HISTORY).ok_or(AttrError::Missing(tn::SHARD_HISTORY))?;
        let epochs = history
            .as_l()
            .map_err(|_| AttrError::Invalid(tn::SHARD_HISTORY))?
            .iter()
            .map(|e| {
                let m = Attrs(e.as_m().map_err(|_| AttrError::Invalid(tn::SHARD_HISTORY))?);
                Ok(ShardEpoch { since_ms: m.n(tn::SINCE_MS)?, count: m.n(tn::COUNT)? })
            })
            .collect::<Result<Vec<_>, AttrError>>()?;
        Ok(TenantProfile {
            tenant_id,
            name: a.s(tn::NAME)?.to_owned(),
            created_at: a.s(tn::CREATED_AT)?.to_owned(),
            retention_days: a.n(tn::RETENTION_DAYS)?,
            form_retention: match item.get(tn::FORM_RETENTION) {
                None => BTreeMap::new(),
                Some(v) => v
                    .as_m()
                    .map_err(|_| AttrError::Invalid(tn::FORM_RETENTION))?
                    .iter()
                    .map(|(f, d)| {
                        let days = d.as_n().ok().and_then(|n| n.parse().ok());
                        days.map(|d| (f.clone(), d)).ok_or(AttrError::Invalid(tn::FORM_RETENTION))
                    })
                    .collect::<Result<_, _>>()?,
            },
            shards: ShardHistory::from_epochs(epochs).map_err(|_| AttrError::Invalid(tn::SHARD_HISTORY))?,
        })
    }
}

/// The per-form retention map as stored.
pub fn form_retention_attr(m: &BTreeMap<String, u32>) -> AttributeValue {
    AttributeValue::M(m.iter().map(|(f, d)| (f.clone(), AttributeValue::N(d.to_string()))).collect())
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
            form_retention: Default::default(),
            shards,
        };
        assert_eq!(TenantProfile::from_item(&p.to_item()), Ok(p));
    }
}
