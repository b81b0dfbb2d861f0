//! Audit events: security-relevant facts written as items with a TTL (90 days by default).
//! Admin changes write one event each, in the same transaction as the change. Authentication
//! failures are counted per site and minute (`record_auth_failures`), so a flood of forged
//! requests costs one write per site per minute, not one per request.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use time::OffsetDateTime;

use crate::attrs::audit as ad;
use crate::ids::{SiteDomain, TenantId};
use crate::keys::{self, ItemKey};
use crate::store::{DataStore, StoreError};

/// Default retention of audit items.
pub const AUDIT_RETENTION_DAYS: i64 = 90;

#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub key: ItemKey,
    pub kind: &'static str,
    /// `admin` (the CLI), `api:<key id>` or `api:session`, `portal`, ...
    pub actor: String,
    pub at: OffsetDateTime,
    pub detail: serde_json::Value,
}

fn ttl(at: OffsetDateTime) -> i64 {
    at.unix_timestamp() + AUDIT_RETENTION_DAYS * 86_400
}

impl AuditEvent {
    /// An admin change. `detail` must never hold a secret.
    pub fn admin(tenant: &TenantId, at: OffsetDateTime, kind: &'static str, detail: serde_json::Value) -> Self {
        Self::by("admin", tenant, at, kind, detail)
    }

    /// A change made through the tenant API. `detail` names the key or session, never a secret.
    pub fn api(tenant: &TenantId, at: OffsetDateTime, kind: &'static str, detail: serde_json::Value) -> Self {
        Self::by("api", tenant, at, kind, detail)
    }

    /// A change made by `actor`. `detail` must never hold a secret.
    pub fn by(
        actor: &str,
        tenant: &TenantId,
        at: OffsetDateTime,
        kind: &'static str,
        detail: serde_json::Value,
    ) -> Self {
        Self { key: keys::audit_event(tenant, at, ulid::Ulid::new()), kind, actor: actor.to_owned(), at, detail }
    }

    pub fn to_item(&self) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (keys::PK.to_owned(), AttributeValue::S(self.key.pk.clone())),
            (keys::SK.to_owned(), AttributeValue::S(self.key.sk.clone())),
            (ad::KIND.to_owned(), AttributeValue::S(self.kind.to_owned())),
            (ad::ACTOR.to_owned(), AttributeValue::S(self.actor.clone())),
            (
                ad::AT.to_owned(),
                AttributeValue::S(self.at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()),
            ),
            (ad::DETAIL.to_owned(), AttributeValue::S(self.detail.to_string())),
            (keys::TTL.to_owned(), AttributeValue::N(ttl(self.at).to_string())),
        ])
    }
}

/// Why a request failed authentication: recorded in the audit log, never told to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AuthFailure {
    MissingHeaders,
    BadTimestamp,
    StaleTimestamp,
    FutureTimestamp,
    BadSignature,
    UnknownSite,
}

impl AuthFailure {
    pub fn code(self) -> &'static str {
        match self {
            AuthFailure::MissingHeaders => "missing_headers",
            AuthFailure::BadTimestamp => "bad_timestamp",
            AuthFailure::StaleTimestamp => "stale_timestamp",
            AuthFailure::FutureTimestamp => "future_timestamp",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::UnknownSite => "unknown_site",
        }
    }
}

/// Where a minute's failures are filed: the tenant's audit partition for a known site, the
/// daily security partition otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FailureBucket {
    pub tenant: Option<TenantId>,
    pub domain: Option<SiteDomain>,
    /// Start of the minute, epoch seconds.
    pub minute: i64,
}

impl DataStore {
    /// Adds `counts` to one failure bucket: a single UpdateItem whatever the number of failures.
    pub async fn record_auth_failures(
        &self,
        bucket: &FailureBucket,
        counts: &HashMap<AuthFailure, u64>,
    ) -> Result<(), StoreError> {
        let minute = OffsetDateTime::from_unix_timestamp(bucket.minute).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let key = match (&bucket.tenant, &bucket.domain) {
            (Some(t), Some(d)) => keys::auth_failures(t, d, minute),
            _ => keys::unknown_site_failures(bucket.domain.as_ref(), minute),
        };
        // Every name goes through a placeholder: several are DynamoDB reserved words.
        let mut update = "SET #kind = :kind, #ttl = if_not_exists(#ttl, :ttl) ADD #total :total".to_owned();
        let mut req = self
            .client()
            .update_item()
            .table_name(self.table())
            .key(keys::PK, AttributeValue::S(key.pk))
            .key(keys::SK, AttributeValue::S(key.sk))
            .expression_attribute_names("#ttl", keys::TTL)
            .expression_attribute_names("#kind", ad::KIND)
            .expression_attribute_names("#total", ad::TOTAL)
            .expression_attribute_values(":kind", AttributeValue::S("auth.failures".into()))
            .expression_attribute_values(":ttl", AttributeValue::N(ttl(minute).to_string()))
            .expression_attribute_values(":total", AttributeValue::N(counts.values().sum::<u64>().to_string()));
        for (reason, n) in counts {
            update.push_str(&format!(", #{0} :{0}", reason.code()));
            req = req
                .expression_attribute_names(format!("#{}", reason.code()), reason.code())
                .expression_attribute_values(format!(":{}", reason.code()), AttributeValue::N(n.to_string()));
        }
        req.update_expression(update).send().await.map_err(|e| StoreError::Dynamo(e.into()))?;
        Ok(())
    }
}

impl crate::store::DataStore {
    /// Writes one audit event on its own (changes that are not a transaction of ours).
    pub async fn record_audit(&self, event: &AuditEvent) -> Result<(), crate::store::StoreError> {
        self.client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(event.to_item()))
            .send()
            .await
            .map_err(|e| crate::store::StoreError::Dynamo(e.into()))?;
        Ok(())
    }
}
