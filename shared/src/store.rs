//! Reads and writes of `FormBridgeData` that more than one process needs. Every function that
//! touches a tenant's items takes the `TenantId` it was given by an authenticated caller; there
//! is no way to list or read a tenant partition without one, and nothing here scans.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, Put, TransactWriteItem};

use crate::audit::AuditEvent;
use aws_sdk_dynamodb::Client;

use crate::ids::{SubmissionId, TenantId};
use crate::keys;
use crate::submission::{ItemError, StoredSubmission};
use crate::tenant::TenantProfile;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("DynamoDB request failed: {0}")]
    Dynamo(#[from] aws_sdk_dynamodb::Error),
    #[error("tenant {0} already exists")]
    TenantExists(TenantId),
    #[error("tenant {0} not found")]
    TenantNotFound(TenantId),
    #[error("tenant {0} changed concurrently; read it again")]
    Conflict(TenantId),
    #[error("stored tenant profile {0} is unreadable: {1}")]
    CorruptTenant(TenantId, crate::attrs::AttrError),
    #[error("stored item is unreadable: {0}")]
    Item(#[from] ItemError),
    #[error(transparent)]
    Shards(#[from] crate::sharding::ShardHistoryError),
    #[error("{0} keys still unprocessed after every retry")]
    Exhausted(usize),
}

impl StoreError {
    /// Whether trying again later may succeed (the SDK has already retried transient errors).
    pub fn is_retryable(&self) -> bool {
        use aws_sdk_dynamodb::Error as E;
        match self {
            StoreError::Dynamo(e) => matches!(
                e,
                E::ProvisionedThroughputExceededException(_)
                    | E::RequestLimitExceeded(_)
                    | E::InternalServerError(_)
                    | E::ThrottlingException(_)
            ),
            StoreError::Conflict(_) | StoreError::Exhausted(_) => true,
            _ => false,
        }
    }
}

fn sdk<E, R>(e: aws_sdk_dynamodb::error::SdkError<E, R>) -> StoreError
where
    aws_sdk_dynamodb::Error: From<aws_sdk_dynamodb::error::SdkError<E, R>>,
{
    StoreError::Dynamo(e.into())
}

pub(crate) fn tx_put(table: &str, item: HashMap<String, AttributeValue>, condition: Option<&str>) -> TransactWriteItem {
    let mut put = Put::builder().table_name(table).set_item(Some(item));
    if let Some(c) = condition {
        put = put.condition_expression(c);
    }
    TransactWriteItem::builder().put(put.build().expect("table and item are set")).build()
}

/// A condition in a transaction that the item at `key` exists (e.g. the tenant a new item
/// belongs to), so the write and the check cannot be separated by a concurrent delete.
pub(crate) fn tx_exists(table: &str, key: &crate::keys::ItemKey) -> TransactWriteItem {
    let check = aws_sdk_dynamodb::types::ConditionCheck::builder()
        .table_name(table)
        .key(crate::keys::PK, AttributeValue::S(key.pk.clone()))
        .key(crate::keys::SK, AttributeValue::S(key.sk.clone()))
        .condition_expression("attribute_exists(PK)")
        .build()
        .expect("table, key and condition are set");
    TransactWriteItem::builder().condition_check(check).build()
}

/// Which of the transaction's items failed its condition, from the cancellation reasons.
pub(crate) fn failed_conditions(e: &aws_sdk_dynamodb::Error) -> Option<Vec<usize>> {
    match e {
        aws_sdk_dynamodb::Error::TransactionCanceledException(t) => Some(
            t.cancellation_reasons()
                .iter()
                .enumerate()
                .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
                .map(|(i, _)| i)
                .collect(),
        ),
        _ => None,
    }
}

/// Handle on the data table.
#[derive(Debug, Clone)]
pub struct DataStore {
    client: Client,
    table: String,
    /// Who the changes made through this handle are audited as.
    actor: std::sync::Arc<str>,
}

impl DataStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into(), actor: "admin".into() }
    }

    /// The same handle, auditing its changes as `actor` (e.g. `api:<key id>`).
    pub fn acting_as(&self, actor: &str) -> DataStore {
        Self { actor: actor.into(), ..self.clone() }
    }

    /// Who changes through this handle are audited as (`admin` unless set).
    pub fn actor(&self) -> &str {
        &self.actor
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// One item by key.
    pub(crate) async fn get_item(
        &self,
        key: &keys::ItemKey,
        consistent: bool,
    ) -> Result<Option<HashMap<String, AttributeValue>>, aws_sdk_dynamodb::Error> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(keys::PK, AttributeValue::S(key.pk.clone()))
            .key(keys::SK, AttributeValue::S(key.sk.clone()))
            .consistent_read(consistent)
            .send()
            .await?;
        Ok(out.item)
    }

    /// Many items by key with BatchGetItem: 100 keys a call, unprocessed keys retried with
    /// back-off. Items that do not exist are simply absent from the answer.
    pub(crate) async fn batch_get(
        &self,
        wanted: &[keys::ItemKey],
        consistent: bool,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let mut out = Vec::new();
        for chunk in wanted.chunks(100) {
            let mut left: Vec<HashMap<String, AttributeValue>> = chunk
                .iter()
                .map(|k| {
                    HashMap::from([
                        (keys::PK.to_owned(), AttributeValue::S(k.pk.clone())),
                        (keys::SK.to_owned(), AttributeValue::S(k.sk.clone())),
                    ])
                })
                .collect();
            let mut backoff = crate::retry::unprocessed_backoff(8);
            while !left.is_empty() {
                let req = KeysAndAttributes::builder()
                    .set_keys(Some(left))
                    .consistent_read(consistent)
                    .build()
                    .expect("keys are set");
                let resp = self.client.batch_get_item().request_items(&self.table, req).send().await.map_err(sdk)?;
                out.extend(resp.responses.and_then(|mut r| r.remove(&self.table)).unwrap_or_default());
                left =
                    resp.unprocessed_keys.and_then(|mut u| u.remove(&self.table)).map(|k| k.keys).unwrap_or_default();
                if !left.is_empty() {
                    match backoff.next() {
                        Some(d) => tokio::time::sleep(d).await,
                        None => return Err(StoreError::Exhausted(left.len())),
                    }
                }
            }
        }
        Ok(out)
    }

    /// Writes puts and deletes 25 at a time, retrying unprocessed ones with back-off. Each is
    /// idempotent on its own, so a retry after a partial failure repeats nothing harmful.
    pub(crate) async fn batch_write(
        &self,
        requests: Vec<aws_sdk_dynamodb::types::WriteRequest>,
    ) -> Result<(), StoreError> {
        for chunk in requests.chunks(25) {
            let mut left = chunk.to_vec();
            let mut backoff = crate::retry::unprocessed_backoff(8);
            while !left.is_empty() {
                let resp = self.client.batch_write_item().request_items(&self.table, left).send().await.map_err(sdk)?;
                left = resp.unprocessed_items.and_then(|mut u| u.remove(&self.table)).unwrap_or_default();
                if !left.is_empty() {
                    match backoff.next() {
                        Some(d) => tokio::time::sleep(d).await,
                        None => return Err(StoreError::Exhausted(left.len())),
                    }
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), aws_sdk_dynamodb::Error> {
        self.client()
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map(|_| ())
            .map_err(aws_sdk_dynamodb::Error::from)
    }

    /// Creates a tenant; fails if it exists.
    /// Creates a tenant, with its audit event; fails if it exists.
    pub async fn create_tenant(&self, profile: &TenantProfile) -> Result<(), StoreError> {
        let audit = AuditEvent::admin(
            &profile.tenant_id,
            time::OffsetDateTime::now_utc(),
            "tenant.created",
            serde_json::json!({ "shards": profile.shards.current(), "retention_days": profile.retention_days }),
        );
        let items = vec![
            tx_put(&self.table, profile.to_item(), Some("attribute_not_exists(PK)")),
            tx_put(&self.table, audit.to_item(), None),
        ];
        match self.transact(items).await {
            Ok(()) => Ok(()),
            Err(e) if failed_conditions(&e).is_some_and(|f| f.contains(&0)) => {
                Err(StoreError::TenantExists(profile.tenant_id.clone()))
            }
            Err(e) => Err(StoreError::Dynamo(e)),
        }
    }

    pub async fn get_tenant(&self, tenant: &TenantId) -> Result<Option<TenantProfile>, StoreError> {
        let key = keys::tenant_profile(tenant);
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(keys::PK, AttributeValue::S(key.pk))
            .key(keys::SK, AttributeValue::S(key.sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk)?;
        match out.item {
            None => Ok(None),
            Some(item) => {
                TenantProfile::from_item(&item).map(Some).map_err(|e| StoreError::CorruptTenant(tenant.clone(), e))
            }
        }
    }

    /// Grows a tenant's shard count, keeping the history. The new count applies to submissions
    /// whose id time is `GROWTH_DELAY_MS` after `now_ms` or later. Conditional on the count read, so two
    /// concurrent changes cannot lose one another.
    pub async fn grow_shards(&self, tenant: &TenantId, count: u16, now_ms: u64) -> Result<TenantProfile, StoreError> {
        let mut profile = self.get_tenant(tenant).await?.ok_or_else(|| StoreError::TenantNotFound(tenant.clone()))?;
        let before = profile.shards.current();
        // Effective only once every ingest cache can have seen it (see `GROWTH_DELAY_MS`).
        profile.shards.grow(count, now_ms + crate::sharding::GROWTH_DELAY_MS)?;
        let mut put =
            tx_put(&self.table, profile.to_item(), Some(&format!("{} = :before", crate::attrs::tenant::SHARD_COUNT)));
        if let Some(p) = put.put.as_mut() {
            p.expression_attribute_values =
                Some(HashMap::from([(":before".to_owned(), AttributeValue::N(before.to_string()))]));
        }
        let audit = AuditEvent::admin(
            tenant,
            time::OffsetDateTime::now_utc(),
            "tenant.shards_grown",
            serde_json::json!({ "from": before, "to": profile.shards.current() }),
        );
        match self.transact(vec![put, tx_put(&self.table, audit.to_item(), None)]).await {
            Ok(()) => Ok(profile),
            Err(e) if failed_conditions(&e).is_some_and(|f| f.contains(&0)) => {
                Err(StoreError::Conflict(tenant.clone()))
            }
            Err(e) => Err(StoreError::Dynamo(e)),
        }
    }

    /// Lists tenants from the GSI1 directory.
    pub async fn list_tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        let pages = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("GSI1")
            .key_condition_expression("GSI1PK = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(keys::TENANT_DIRECTORY_PK.into()))
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(sdk)?;
        Ok(pages
            .iter()
            .filter_map(|i| match keys::Entity::classify(i.get(keys::PK)?.as_s().ok()?, "PROFILE") {
                keys::Entity::TenantProfile { tenant } => Some(tenant),
                _ => None,
            })
            .collect())
    }

    /// Sets (or, with `None`, removes) one form's retention in days. It applies to submissions
    /// received from then on: each submission's expiry is fixed when it is accepted. Conditioned
    /// on the map as read, so two concurrent changes cannot lose one another.
    pub async fn set_form_retention(
        &self,
        tenant: &TenantId,
        form: &crate::FormId,
        days: Option<u32>,
        actor: &str,
        now: time::OffsetDateTime,
    ) -> Result<TenantProfile, StoreError> {
        use crate::attrs::tenant as tn;
        let mut profile = self.get_tenant(tenant).await?.ok_or_else(|| StoreError::TenantNotFound(tenant.clone()))?;
        let before = profile.form_retention.clone();
        match days {
            Some(d) => profile.form_retention.insert(form.to_string(), d),
            None => profile.form_retention.remove(form.as_str()),
        };
        let k = keys::tenant_profile(tenant);
        let mut update = aws_sdk_dynamodb::types::Update::builder()
            .table_name(self.table())
            .key(keys::PK, AttributeValue::S(k.pk))
            .key(keys::SK, AttributeValue::S(k.sk))
            .update_expression("SET #fr = :new")
            .expression_attribute_names("#fr", tn::FORM_RETENTION)
            .expression_attribute_values(":new", crate::tenant::form_retention_attr(&profile.form_retention));
        update = if before.is_empty() {
            update.condition_expression("attribute_exists(PK) AND (attribute_not_exists(#fr) OR #fr = :old)")
        } else {
            update.condition_expression("attribute_exists(PK) AND #fr = :old")
        }
        .expression_attribute_values(":old", crate::tenant::form_retention_attr(&before));
        let audit = crate::audit::AuditEvent::api(
            tenant,
            now,
            "form.retention_set",
            serde_json::json!({ "form": form, "retention_days": days, "actor": actor }),
        );
        let items = vec![
            TransactWriteItem::builder().update(update.build().expect("table, key and expression are set")).build(),
            tx_put(self.table(), audit.to_item(), None),
        ];
        match self.transact(items).await {
            Ok(()) => Ok(profile),
            Err(e) if failed_conditions(&e).is_some_and(|f| f.contains(&0)) => {
                Err(StoreError::Conflict(tenant.clone()))
            }
            Err(e) => Err(StoreError::Dynamo(e)),
        }
    }

    /// The newest `limit` submissions of a tenant, newest first. Gathers across every shard the
    /// tenant has ever written to (one Query each, newest first) and merges by id.
    pub async fn recent_submissions(
        &self,
        tenant: &TenantId,
        profile: &TenantProfile,
        limit: usize,
    ) -> Result<Vec<StoredSubmission>, StoreError> {
        debug_assert_eq!(&profile.tenant_id, tenant);
        let mut all = Vec::new();
        for shard in profile.shards.read_shards() {
            let mut items = self.shard_submissions(tenant, shard, limit).await?;
            all.append(&mut items);
        }
        all.sort_by_key(|s| std::cmp::Reverse(s.submission_id));
        all.truncate(limit);
        Ok(all)
    }

    /// Up to `limit` submissions of one shard, newest first (delivery items are skipped).
    pub async fn shard_submissions(
        &self,
        tenant: &TenantId,
        shard: u16,
        limit: usize,
    ) -> Result<Vec<StoredSubmission>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("PK = :pk AND begins_with(SK, :sub)")
                .expression_attribute_values(":pk", AttributeValue::S(keys::submission_pk(tenant, shard)))
                .expression_attribute_values(":sub", AttributeValue::S("SUB#".into()))
                .scan_index_forward(false)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk)?;
            for item in page.items() {
                match StoredSubmission::from_item(item) {
                    Ok(s) => out.push(s),
                    Err(ItemError::NotASubmission) => {}
                    Err(e) => return Err(e.into()),
                }
                if out.len() >= limit {
                    return Ok(out);
                }
            }
            match page.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok(out),
            }
        }
    }

    /// One submission by id, trying each shard it may have been written to.
    pub async fn get_submission(
        &self,
        profile: &TenantProfile,
        id: &SubmissionId,
    ) -> Result<Option<StoredSubmission>, StoreError> {
        for shard in profile.shards.candidate_shards(id) {
            let key = keys::submission(&profile.tenant_id, shard, id);
            let out = self
                .client
                .get_item()
                .table_name(&self.table)
                .key(keys::PK, AttributeValue::S(key.pk))
                .key(keys::SK, AttributeValue::S(key.sk))
                .send()
                .await
                .map_err(sdk)?;
            if let Some(item) = out.item {
                return Ok(Some(StoredSubmission::from_item(&item)?));
            }
        }
        Ok(None)
    }
}
