//! Tenant API keys for the read side. A key is `fbk_<id>_<secret>`: shown once when it is
//! created, stored only as a keyed hash (HMAC-SHA256 under a key derived from the master key), so
//! authenticating a request is one GetItem of `APIKEY#<hash>` and a leaked table holds nothing
//! that authenticates. A key covers the tenants listed on it (an agency key covers several) and
//! nothing else. Keys rotate with a grace period, are revoked at once, and every change writes an
//! audit event for each tenant it covers, in the same transaction.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde::Serialize;
use time::OffsetDateTime;
use ulid::Ulid;

use crate::attrs::{self, Attrs};
use crate::audit::AuditEvent;
use crate::ids::TenantId;
use crate::keys;
use crate::secrets::Keyring;
use crate::store::{failed_conditions, tx_put, DataStore, StoreError};

pub const PREFIX: &str = "fbk_";
/// Tenants one key may cover: its items, and an audit event per tenant, fit one transaction.
pub const MAX_TENANTS: usize = 40;
const PURPOSE: &str = "api-key";
const SECRET_BYTES: usize = 32;

/// Attribute names of an API key item (`APIKEY#<hash>` / `APIKEY`) and of its listings
/// (`TENANT#<t>` / `APIKEY#<id>`).
mod ak {
    pub const ID: &str = "key_id";
    pub const NAME: &str = "name";
    pub const TENANTS: &str = "tenants";
    pub const CREATED_MS: &str = "created_ms";
    /// Set when the key was rotated: it keeps working until then.
    pub const EXPIRES_MS: &str = "expires_ms";
    pub const REVOKED_MS: &str = "revoked_ms";
    /// The master key whose lookup key made the hash.
    pub const MASTER_KEY: &str = "master_key";
    /// On a listing: the hash, to find the key item.
    pub const HASH: &str = "hash";
    /// On a rotated key: the id of the key that replaced it.
    pub const REPLACED_BY: &str = "replaced_by";
}

/// A presented or freshly made API key. Its `Debug` never shows the secret part.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id() {
            Some(id) => write!(f, "ApiKey({PREFIX}{id}_<redacted>)"),
            None => f.write_str("ApiKey(<malformed>)"),
        }
    }
}

impl ApiKey {
    fn generate(id: Ulid) -> Self {
        let mut secret = [0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut secret);
        Self(format!("{PREFIX}{id}_{}", URL_SAFE_NO_PAD.encode(secret)))
    }

    /// A key as presented (`Authorization: Bearer fbk_...`). Only its shape is checked here.
    pub fn parse(s: &str) -> Result<Self, ApiKeyError> {
        let k = Self(s.trim().to_owned());
        let secret_ok = |s: &str| URL_SAFE_NO_PAD.decode(s).is_ok_and(|b| b.len() == SECRET_BYTES);
        match k.0.strip_prefix(PREFIX).and_then(|rest| rest.split_once('_')) {
            Some((id, secret)) if Ulid::from_string(id).is_ok() && secret_ok(secret) => Ok(k),
            _ => Err(ApiKeyError::Malformed),
        }
    }

    /// The key's public id (the part before the secret).
    pub fn id(&self) -> Option<Ulid> {
        let rest = self.0.strip_prefix(PREFIX)?;
        Ulid::from_string(rest.split_once('_')?.0).ok()
    }

    /// The whole key, to show once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// What is known of a key: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyInfo {
    pub id: String,
    pub name: String,
    pub tenants: Vec<TenantId>,
    pub created_ms: u64,
    /// A rotated key works until then.
    pub expires_ms: Option<u64>,
    pub revoked_ms: Option<u64>,
    pub replaced_by: Option<String>,
}

impl ApiKeyInfo {
    pub fn active_at(&self, now_ms: u64) -> bool {
        self.revoked_ms.is_none() && self.expires_ms.is_none_or(|e| e > now_ms)
    }
}

/// Who a request authenticated as: the key's id and the tenants it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub name: String,
    pub tenants: Vec<TenantId>,
}

impl Principal {
    pub fn covers(&self, tenant: &TenantId) -> bool {
        self.tenants.contains(tenant)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error("an API key is fbk_<id>_<secret>")]
    Malformed,
    /// Unknown, revoked or past its rotation grace: one answer for all three, so a caller cannot
    /// tell a revoked key from one that never existed.
    #[error("the API key is not valid")]
    Invalid,
    #[error("tenant {0} does not exist")]
    TenantMissing(TenantId),
    #[error("no API key {0} covers this tenant")]
    NotFound(String),
    #[error("a key covers 1 to {MAX_TENANTS} tenants")]
    TenantCount,
    #[error("a key's name is 1 to 100 characters")]
    Name,
    #[error("API key {0} changed concurrently; try again")]
    Conflict(String),
    #[error("stored API key is unreadable: {0}")]
    Corrupt(#[from] attrs::AttrError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn dynamo<E>(e: E) -> ApiKeyError
where
    aws_sdk_dynamodb::Error: From<E>,
{
    ApiKeyError::Store(StoreError::Dynamo(e.into()))
}

fn ms(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

fn info_from_item(item: &HashMap<String, AttributeValue>) -> Result<ApiKeyInfo, ApiKeyError> {
    let a = Attrs(item);
    let tenants = a
        .string_set(ak::TENANTS)?
        .iter()
        .map(|t| TenantId::parse(t).map_err(|_| attrs::AttrError::Invalid(ak::TENANTS)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ApiKeyInfo {
        id: a.s(ak::ID)?.to_owned(),
        name: a.s(ak::NAME)?.to_owned(),
        tenants,
        created_ms: a.n(ak::CREATED_MS)?,
        expires_ms: a.opt_n(ak::EXPIRES_MS)?,
        revoked_ms: a.opt_n(ak::REVOKED_MS)?,
        replaced_by: a.opt_s(ak::REPLACED_BY)?.map(str::to_owned),
    })
}

impl DataStore {
    /// The transaction items that create a key: its item, a listing per tenant, an audit event
    /// per tenant. Returns them with the key (shown once) and what is stored of it.
    fn new_key_items(
        &self,
        tenants: &[TenantId],
        name: &str,
        keyring: &Keyring,
        now: OffsetDateTime,
        audit_kind: &'static str,
        audit_detail: serde_json::Value,
    ) -> (Vec<TransactWriteItem>, ApiKey, ApiKeyInfo) {
        let id = Ulid::new();
        let key = ApiKey::generate(id);
        let hashes = keyring.lookup_hashes(PURPOSE, key.expose().as_bytes());
        let (master, hash) = hashes.first().cloned().expect("a keyring has at least one key");
        let info = ApiKeyInfo {
            id: id.to_string(),
            name: name.to_owned(),
            tenants: tenants.to_vec(),
            created_ms: ms(now),
            expires_ms: None,
            revoked_ms: None,
            replaced_by: None,
        };
        let k = keys::api_key(&hash);
        let item = HashMap::from([
            (keys::PK.to_owned(), attrs::s(k.pk)),
            (keys::SK.to_owned(), attrs::s(k.sk)),
            (ak::ID.to_owned(), attrs::s(&info.id)),
            (ak::NAME.to_owned(), attrs::s(name)),
            (ak::TENANTS.to_owned(), AttributeValue::Ss(tenants.iter().map(ToString::to_string).collect())),
            (ak::CREATED_MS.to_owned(), attrs::n(info.created_ms)),
            (ak::MASTER_KEY.to_owned(), attrs::s(master)),
        ]);
        let mut items = vec![tx_put(self.table(), item, Some("attribute_not_exists(PK)"))];
        for t in tenants {
            let l = keys::tenant_api_key(t, &id);
            let listing = HashMap::from([
                (keys::PK.to_owned(), attrs::s(l.pk)),
                (keys::SK.to_owned(), attrs::s(l.sk)),
                (ak::ID.to_owned(), attrs::s(&info.id)),
                (ak::HASH.to_owned(), attrs::s(&hash)),
            ]);
            items.push(tx_put(self.table(), listing, None));
            let mut detail = audit_detail.clone();
            detail["key_id"] = serde_json::json!(info.id);
            detail["name"] = serde_json::json!(name);
            detail["tenants"] = serde_json::json!(tenants);
            items.push(tx_put(self.table(), AuditEvent::admin(t, now, audit_kind, detail).to_item(), None));
        }
        (items, key, info)
    }

    async fn check_tenants(&self, tenants: &[TenantId]) -> Result<(), ApiKeyError> {
        if tenants.is_empty() || tenants.len() > MAX_TENANTS {
            return Err(ApiKeyError::TenantCount);
        }
        for t in tenants {
            if self.get_tenant(t).await?.is_none() {
                return Err(ApiKeyError::TenantMissing(t.clone()));
            }
        }
        Ok(())
    }

    /// Creates a key covering `tenants`. The key is returned once and never stored.
    pub async fn create_api_key(
        &self,
        tenants: &[TenantId],
        name: &str,
        keyring: &Keyring,
        now: OffsetDateTime,
    ) -> Result<(ApiKey, ApiKeyInfo), ApiKeyError> {
        let mut tenants = tenants.to_vec();
        tenants.sort();
        tenants.dedup();
        if name.trim().is_empty() || name.chars().count() > 100 {
            return Err(ApiKeyError::Name);
        }
        self.check_tenants(&tenants).await?;
        let (items, key, info) =
            self.new_key_items(&tenants, name.trim(), keyring, now, "api_key.created", serde_json::json!({}));
        self.transact(items).await.map_err(StoreError::Dynamo)?;
        Ok((key, info))
    }

    /// Who `presented` authenticates as at `now_ms`: one GetItem (one per configured master
    /// key at worst, while keys made under an older one are still in use).
    pub async fn authenticate_api_key(
        &self,
        presented: &str,
        keyring: &Keyring,
        now_ms: u64,
    ) -> Result<Principal, ApiKeyError> {
        let key = ApiKey::parse(presented)?;
        let id = key.id().ok_or(ApiKeyError::Malformed)?.to_string();
        for (_, hash) in keyring.lookup_hashes(PURPOSE, key.expose().as_bytes()) {
            if let Some(item) = self.get_item(&keys::api_key(&hash), false).await.map_err(dynamo)? {
                let info = info_from_item(&item)?;
                if info.id != id || !info.active_at(now_ms) {
                    return Err(ApiKeyError::Invalid);
                }
                return Ok(Principal { key_id: info.id, name: info.name, tenants: info.tenants });
            }
        }
        Err(ApiKeyError::Invalid)
    }

    /// The keys that cover `tenant`, newest first (revoked and rotated ones included, marked).
    pub async fn list_api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyInfo>, ApiKeyError> {
        let listings = self
            .client()
            .query()
            .table_name(self.table())
            .key_condition_expression("PK = :pk AND begins_with(SK, :p)")
            .expression_attribute_values(":pk", attrs::s(keys::tenant_pk(tenant)))
            .expression_attribute_values(":p", attrs::s(keys::TENANT_API_KEY_SK_PREFIX))
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(dynamo)?;
        let wanted = listings
            .iter()
            .map(|i| Ok(keys::api_key(Attrs(i).s(ak::HASH)?)))
            .collect::<Result<Vec<_>, attrs::AttrError>>()?;
        let mut out =
            self.batch_get(&wanted, false).await?.iter().map(info_from_item).collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| b.id.cmp(&a.id));
        Ok(out)
    }

    /// The stored key `id`, as listed for `tenant` (a key that does not cover it is not found).
    async fn api_key_for(&self, tenant: &TenantId, id: &str) -> Result<(String, ApiKeyInfo), ApiKeyError> {
        let not_found = || ApiKeyError::NotFound(id.to_owned());
        let ulid = Ulid::from_string(id).map_err(|_| not_found())?;
        let listing = self.get_item(&keys::tenant_api_key(tenant, &ulid), true).await.map_err(dynamo)?;
        let hash = Attrs(&listing.ok_or_else(not_found)?).s(ak::HASH)?.to_owned();
        let item = self.get_item(&keys::api_key(&hash), true).await.map_err(dynamo)?;
        Ok((hash, info_from_item(&item.ok_or_else(not_found)?)?))
    }

    /// An update of the key item `hash`, conditioned on it being live (not revoked, not already
    /// rotated out).
    fn live_key_update(&self, hash: &str) -> aws_sdk_dynamodb::types::builders::UpdateBuilder {
        let k = keys::api_key(hash);
        Update::builder()
            .table_name(self.table())
            .key(keys::PK, attrs::s(k.pk))
            .key(keys::SK, attrs::s(k.sk))
            .condition_expression("attribute_exists(PK) AND attribute_not_exists(#r) AND attribute_not_exists(#e)")
            .expression_attribute_names("#r", ak::REVOKED_MS)
            .expression_attribute_names("#e", ak::EXPIRES_MS)
    }

    /// Revokes key `id` (which must cover `tenant`) at once, for every tenant it covers.
    pub async fn revoke_api_key(&self, tenant: &TenantId, id: &str, now: OffsetDateTime) -> Result<(), ApiKeyError> {
        let (hash, info) = self.api_key_for(tenant, id).await?;
        if info.revoked_ms.is_some() {
            return Ok(());
        }
        let k = keys::api_key(&hash);
        // A rotated key in its grace period can be revoked too: only "not yet revoked" matters.
        let update = Update::builder()
            .table_name(self.table())
            .key(keys::PK, attrs::s(k.pk))
            .key(keys::SK, attrs::s(k.sk))
            .condition_expression("attribute_exists(PK) AND attribute_not_exists(#r)")
            .expression_attribute_names("#r", ak::REVOKED_MS)
            .update_expression("SET #r = :now")
            .expression_attribute_values(":now", attrs::n(ms(now)))
            .build()
            .expect("table, key and expression set");
        let mut items = vec![TransactWriteItem::builder().update(update).build()];
        for t in &info.tenants {
            let detail = serde_json::json!({ "key_id": info.id, "name": info.name, "by_tenant": tenant });
            items.push(tx_put(self.table(), AuditEvent::admin(t, now, "api_key.revoked", detail).to_item(), None));
        }
        match self.transact(items).await {
            Ok(()) => Ok(()),
            Err(e) if failed_conditions(&e).is_some_and(|f| f.contains(&0)) => Ok(()), // revoked meanwhile
            Err(e) => Err(StoreError::Dynamo(e).into()),
        }
    }

    /// Replaces key `id` (which must cover `tenant`) with a new one for the same tenants and
    /// name, returned once. The old key keeps working for `grace`, then stops.
    pub async fn rotate_api_key(
        &self,
        tenant: &TenantId,
        id: &str,
        grace: Duration,
        keyring: &Keyring,
        now: OffsetDateTime,
    ) -> Result<(ApiKey, ApiKeyInfo), ApiKeyError> {
        let (hash, old) = self.api_key_for(tenant, id).await?;
        if !old.active_at(ms(now)) || old.expires_ms.is_some() {
            return Err(ApiKeyError::NotFound(id.to_owned()));
        }
        let detail = serde_json::json!({ "replaces": old.id, "grace_seconds": grace.as_secs() });
        let (mut items, key, info) =
            self.new_key_items(&old.tenants, &old.name, keyring, now, "api_key.rotated", detail);
        let until = ms(now) + u64::try_from(grace.as_millis()).unwrap_or(u64::MAX / 4);
        let update = self
            .live_key_update(&hash)
            .update_expression("SET #e = :until, #b = :new")
            .expression_attribute_names("#b", ak::REPLACED_BY)
            .expression_attribute_values(":until", attrs::n(until))
            .expression_attribute_values(":new", attrs::s(&info.id))
            .build()
            .expect("table, key and expression set");
        let old_at = items.len();
        items.push(TransactWriteItem::builder().update(update).build());
        match self.transact(items).await {
            Ok(()) => Ok((key, info)),
            Err(e) if failed_conditions(&e).is_some_and(|f| f.contains(&old_at)) => Err(ApiKeyError::Conflict(old.id)),
            Err(e) => Err(StoreError::Dynamo(e).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_by_shape_and_never_show_their_secret() {
        let k = ApiKey::generate(Ulid::new());
        assert!(k.expose().starts_with(PREFIX));
        assert_eq!(ApiKey::parse(k.expose()).unwrap(), k);
        assert!(!format!("{k:?}").contains(k.expose().rsplit('_').next().unwrap()));
        for bad in ["", "fbk_", "fbk_notaulid_AAAA", "whsec_abc", &k.expose()[..k.expose().len() - 2]] {
            assert!(matches!(ApiKey::parse(bad), Err(ApiKeyError::Malformed)), "{bad}");
        }
    }

    #[test]
    fn a_lookup_hash_depends_on_the_master_key_and_the_purpose() {
        let a = Keyring::parse(&Keyring::generate_spec("a"), "K").unwrap();
        let b = Keyring::parse(&Keyring::generate_spec("b"), "K").unwrap();
        let ha = a.lookup_hashes(PURPOSE, b"fbk_x");
        assert_eq!(ha, a.lookup_hashes(PURPOSE, b"fbk_x"), "stable");
        assert_ne!(ha[0].1, b.lookup_hashes(PURPOSE, b"fbk_x")[0].1);
        assert_ne!(ha[0].1, a.lookup_hashes("other", b"fbk_x")[0].1);
        assert_ne!(ha[0].1, a.lookup_hashes(PURPOSE, b"fbk_y")[0].1);
    }
}
