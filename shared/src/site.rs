//! Sites: the domain reverse lookup (`SITE#<domain>` → tenant and sealed signing secrets), and the
//! admin operations on it. Writes are transactional and conditional, so a domain can never be
//! taken from another tenant, a removal can only touch the caller's own domains, and two
//! concurrent rotations cannot lose a secret. Each change writes its audit event in the same
//! transaction.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, Delete, TransactWriteItem};
use serde::Serialize;
use time::OffsetDateTime;

use crate::attrs::{site as st, AttrError, Attrs};
use crate::audit::AuditEvent;
use crate::ids::{SiteDomain, TenantId};
use crate::keys;
use crate::secrets::{Keyring, SigningSecret};
use crate::store::{failed_conditions, tx_put, DataStore, StoreError};

/// At most this many domains per add/remove command: one transaction of sites plus its audit event.
pub const MAX_DOMAINS_PER_CHANGE: usize = 50;

/// One signing secret of a site, sealed. `expires_ms` is set on a secret that was rotated out
/// and stays valid until then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteSecret {
    pub sealed: String,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRecord {
    pub domain: SiteDomain,
    pub tenant: TenantId,
    pub created_at: String,
    pub secrets: Vec<SiteSecret>,
    /// Bumped by every change; the condition of the next one.
    pub version: u64,
}

/// What the admin CLI shows of a site: never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteStatus {
    pub domain: SiteDomain,
    pub tenant_id: TenantId,
    pub created_at: String,
    pub active_secrets: usize,
    /// When the previous secret stops verifying, if one is in its grace period (epoch ms).
    pub previous_secret_expires_ms: Option<u64>,
}

impl SiteRecord {
    /// Secrets that verify at `now_ms`, newest first.
    pub fn active_secrets(&self, now_ms: u64) -> impl Iterator<Item = &SiteSecret> {
        self.secrets.iter().filter(move |s| s.expires_ms.is_none_or(|e| e > now_ms))
    }

    pub fn status(&self, now_ms: u64) -> SiteStatus {
        SiteStatus {
            domain: self.domain.clone(),
            tenant_id: self.tenant.clone(),
            created_at: self.created_at.clone(),
            active_secrets: self.active_secrets(now_ms).count(),
            previous_secret_expires_ms: self.active_secrets(now_ms).filter_map(|s| s.expires_ms).max(),
        }
    }

    /// The AAD a site's secrets are sealed with: binds each ciphertext to its domain.
    pub fn owner(domain: &SiteDomain) -> String {
        keys::site(domain).pk
    }

    pub fn to_item(&self) -> HashMap<String, AttributeValue> {
        let key = keys::site(&self.domain);
        let idx = keys::site_by_tenant(&self.tenant, &self.domain);
        let secrets = self
            .secrets
            .iter()
            .map(|s| {
                let mut m = HashMap::from([
                    (st::SEALED.to_owned(), AttributeValue::S(s.sealed.clone())),
                    (st::CREATED_MS.to_owned(), AttributeValue::N(s.created_ms.to_string())),
                ]);
                if let Some(e) = s.expires_ms {
                    m.insert(st::EXPIRES_MS.to_owned(), AttributeValue::N(e.to_string()));
                }
                AttributeValue::M(m)
            })
            .collect();
        HashMap::from([
            (keys::PK.to_owned(), AttributeValue::S(key.pk)),
            (keys::SK.to_owned(), AttributeValue::S(key.sk)),
            (keys::GSI2PK.to_owned(), AttributeValue::S(idx.pk)),
            (keys::GSI2SK.to_owned(), AttributeValue::S(idx.sk)),
            (st::TENANT.to_owned(), AttributeValue::S(self.tenant.to_string())),
            (st::CREATED_AT.to_owned(), AttributeValue::S(self.created_at.clone())),
            (st::SECRETS.to_owned(), AttributeValue::L(secrets)),
            (st::VERSION.to_owned(), AttributeValue::N(self.version.to_string())),
        ])
    }

    /// Decodes a site; the error names the attribute that is missing or unreadable.
    pub fn from_item(item: &HashMap<String, AttributeValue>) -> Result<SiteRecord, AttrError> {
        let a = Attrs(item);
        let domain = match keys::Entity::classify(a.s(keys::PK)?, a.s(keys::SK)?) {
            keys::Entity::Site { domain } => domain,
            _ => return Err(AttrError::Key("site")),
        };
        let list = item.get(st::SECRETS).ok_or(AttrError::Missing(st::SECRETS))?;
        let secrets = list
            .as_l()
            .map_err(|_| AttrError::Invalid(st::SECRETS))?
            .iter()
            .map(|v| {
                let m = Attrs(v.as_m().map_err(|_| AttrError::Invalid(st::SECRETS))?);
                Ok(SiteSecret {
                    sealed: m.s(st::SEALED)?.to_owned(),
                    created_ms: m.n(st::CREATED_MS)?,
                    expires_ms: m.opt_n(st::EXPIRES_MS)?,
                })
            })
            .collect::<Result<Vec<_>, AttrError>>()?;
        Ok(SiteRecord {
            domain,
            tenant: a.parsed(st::TENANT, |t| TenantId::parse(t).ok())?,
            created_at: a.s(st::CREATED_AT)?.to_owned(),
            secrets,
            version: a.n(st::VERSION)?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("between 1 and {MAX_DOMAINS_PER_CHANGE} domains per command")]
    Count,
    #[error("domain {0} is registered already")]
    Taken(SiteDomain),
    #[error("domain {0} is not a site of this tenant")]
    NotOwned(SiteDomain),
    #[error("site {0} changed concurrently; try again")]
    Conflict(SiteDomain),
    #[error("site {0} has an unreadable item: {1}")]
    Corrupt(SiteDomain, AttrError),
    #[error("the site item {0} is unreadable: {1}")]
    CorruptItem(String, AttrError),
}

fn dynamo<E, R>(e: aws_sdk_dynamodb::error::SdkError<E, R>) -> StoreError
where
    aws_sdk_dynamodb::Error: From<aws_sdk_dynamodb::error::SdkError<E, R>>,
{
    StoreError::Dynamo(e.into())
}

impl DataStore {
    /// Registers domains for a tenant, each with a fresh signing secret, returned once. All or
    /// nothing: if any domain is taken, none is added.
    pub async fn add_sites(
        &self,
        tenant: &TenantId,
        domains: &[SiteDomain],
        keyring: &Keyring,
        now: OffsetDateTime,
    ) -> Result<Vec<(SiteDomain, SigningSecret)>, SiteError> {
        if domains.is_empty() || domains.len() > MAX_DOMAINS_PER_CHANGE {
            return Err(SiteError::Count);
        }
        let now_ms = ms(now);
        let created_at = now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let mut out = Vec::new();
        let mut items = Vec::new();
        for d in domains {
            let secret = SigningSecret::generate();
            let record = SiteRecord {
                domain: d.clone(),
                tenant: tenant.clone(),
                created_at: created_at.clone(),
                secrets: vec![SiteSecret {
                    sealed: keyring.seal_secret(&secret, &SiteRecord::owner(d)),
                    created_ms: now_ms,
                    expires_ms: None,
                }],
                version: 1,
            };
            items.push(tx_put(self.table(), record.to_item(), Some("attribute_not_exists(PK)")));
            out.push((d.clone(), secret));
        }
        let audit = AuditEvent::admin(tenant, now, "site.added", serde_json::json!({ "domains": domains }));
        items.push(tx_put(self.table(), audit.to_item(), None));
        match self.transact(items).await {
            Ok(()) => Ok(out),
            Err(e) => match failed_conditions(&e).and_then(|f| f.first().copied()) {
                Some(i) if i < domains.len() => Err(SiteError::Taken(domains[i].clone())),
                _ => Err(StoreError::Dynamo(e).into()),
            },
        }
    }

    /// Removes domains of a tenant. All or nothing: a domain of another tenant (or none) fails it.
    pub async fn remove_sites(
        &self,
        tenant: &TenantId,
        domains: &[SiteDomain],
        now: OffsetDateTime,
    ) -> Result<(), SiteError> {
        if domains.is_empty() || domains.len() > MAX_DOMAINS_PER_CHANGE {
            return Err(SiteError::Count);
        }
        let mut items: Vec<_> = domains
            .iter()
            .map(|d| {
                let k = keys::site(d);
                let del = Delete::builder()
                    .table_name(self.table())
                    .key(keys::PK, AttributeValue::S(k.pk))
                    .key(keys::SK, AttributeValue::S(k.sk))
                    .condition_expression(format!("{} = :t", st::TENANT))
                    .expression_attribute_values(":t", AttributeValue::S(tenant.to_string()))
                    .build()
                    .expect("set");
                TransactWriteItem::builder().delete(del).build()
            })
            .collect();
        let audit = AuditEvent::admin(tenant, now, "site.removed", serde_json::json!({ "domains": domains }));
        items.push(tx_put(self.table(), audit.to_item(), None));
        match self.transact(items).await {
            Ok(()) => Ok(()),
            Err(e) => match failed_conditions(&e).and_then(|f| f.first().copied()) {
                Some(i) if i < domains.len() => Err(SiteError::NotOwned(domains[i].clone())),
                _ => Err(StoreError::Dynamo(e).into()),
            },
        }
    }

    /// Gives a site a new secret, returned once. Secrets that were active keep verifying for
    /// `grace`; expired ones are dropped.
    pub async fn rotate_site_secret(
        &self,
        tenant: &TenantId,
        domain: &SiteDomain,
        grace: Duration,
        keyring: &Keyring,
        now: OffsetDateTime,
    ) -> Result<SigningSecret, SiteError> {
        let mut record = self.get_site(domain, true).await?.ok_or_else(|| SiteError::NotOwned(domain.clone()))?;
        if &record.tenant != tenant {
            return Err(SiteError::NotOwned(domain.clone()));
        }
        let now_ms = ms(now);
        let until = now_ms + u64::try_from(grace.as_millis()).unwrap_or(u64::MAX / 2);
        let secret = SigningSecret::generate();
        let mut secrets = vec![SiteSecret {
            sealed: keyring.seal_secret(&secret, &SiteRecord::owner(domain)),
            created_ms: now_ms,
            expires_ms: None,
        }];
        for mut s in record.active_secrets(now_ms).cloned().collect::<Vec<_>>() {
            s.expires_ms = Some(s.expires_ms.map_or(until, |e| e.min(until)));
            secrets.push(s);
        }
        let before = record.version;
        record.secrets = secrets;
        record.version += 1;
        let mut put = tx_put(self.table(), record.to_item(), Some(&format!("{} = :v", st::VERSION)));
        if let Some(p) = put.put.as_mut() {
            p.expression_attribute_values =
                Some(HashMap::from([(":v".to_owned(), AttributeValue::N(before.to_string()))]));
        }
        let audit = AuditEvent::admin(
            tenant,
            now,
            "site.secret_rotated",
            serde_json::json!({ "domain": domain, "grace_seconds": grace.as_secs() }),
        );
        match self.transact(vec![put, tx_put(self.table(), audit.to_item(), None)]).await {
            Ok(()) => Ok(secret),
            Err(e) if failed_conditions(&e).is_some_and(|f| f.contains(&0)) => Err(SiteError::Conflict(domain.clone())),
            Err(e) => Err(StoreError::Dynamo(e).into()),
        }
    }

    /// One site by domain (the ingest hot path uses an eventually consistent read; admin
    /// changes read consistently).
    pub async fn get_site(&self, domain: &SiteDomain, consistent: bool) -> Result<Option<SiteRecord>, SiteError> {
        let k = keys::site(domain);
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .key(keys::PK, AttributeValue::S(k.pk))
            .key(keys::SK, AttributeValue::S(k.sk))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(dynamo)?;
        match out.item {
            None => Ok(None),
            Some(item) => SiteRecord::from_item(&item).map(Some).map_err(|e| SiteError::Corrupt(domain.clone(), e)),
        }
    }

    /// Many sites at once with BatchGetItem (100 keys a call, unprocessed keys retried).
    pub async fn get_sites(&self, domains: &[SiteDomain]) -> Result<Vec<SiteRecord>, SiteError> {
        let wanted: Vec<_> = domains.iter().map(keys::site).collect();
        self.batch_get(&wanted, false)
            .await?
            .iter()
            .map(|item| {
                // An unreadable site is an error naming it, never a site silently left out.
                SiteRecord::from_item(item).map_err(|e| {
                    let d = item.get(keys::PK).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
                    SiteError::CorruptItem(d, e)
                })
            })
            .collect()
    }

    /// A tenant's domains, from GSI2 (keys only).
    pub async fn list_sites(&self, tenant: &TenantId) -> Result<Vec<SiteDomain>, SiteError> {
        let items = self
            .client()
            .query()
            .table_name(self.table())
            .index_name("GSI2")
            .key_condition_expression("GSI2PK = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(keys::tenant_sites_pk(tenant)))
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(dynamo)?;
        Ok(items
            .iter()
            .filter_map(|i| {
                match keys::Entity::classify(i.get(keys::PK)?.as_s().ok()?, i.get(keys::SK)?.as_s().ok()?) {
                    keys::Entity::Site { domain } => Some(domain),
                    _ => None,
                }
            })
            .collect())
    }
}

pub fn ms(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_items_round_trip_and_rotation_windows_are_respected() {
        let r = SiteRecord {
            domain: SiteDomain::parse("a.example").unwrap(),
            tenant: TenantId::parse("acme").unwrap(),
            created_at: "2026-11-25T08:00:00Z".into(),
            secrets: vec![
                SiteSecret { sealed: "v1:k1:new".into(), created_ms: 10, expires_ms: None },
                SiteSecret { sealed: "v1:k1:old".into(), created_ms: 5, expires_ms: Some(100) },
            ],
            version: 3,
        };
        assert_eq!(SiteRecord::from_item(&r.to_item()), Ok(r.clone()));
        assert_eq!(r.active_secrets(99).count(), 2);
        assert_eq!(r.active_secrets(100).count(), 1);
        assert_eq!(r.status(50).previous_secret_expires_ms, Some(100));
        let json = serde_json::to_string(&r.status(50)).unwrap();
        assert!(!json.contains("v1:k1"), "status must never carry a secret: {json}");
    }
}
