//! Reads and writes of delivery records and attempt items. Every write is conditional on the
//! state it was decided from, so two workers, a replay or a stale message can never both move a
//! delivery; and every call is metered against its component in [`crate::usage`].

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use crate::attrs::{self, attempt as at, delivery as dv, AttrError, Item};
use crate::capacity::item_size;
use crate::delivery::model::{Attempt, DeliveryRecord, Status};
use crate::keys::{self, ItemKey};
use crate::store::DataStore;
use crate::usage;

type DynErr = aws_sdk_dynamodb::Error;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("DynamoDB: {0}")]
    Dynamo(#[from] DynErr),
    #[error("a delivery record is unreadable: {0}")]
    Decode(#[from] AttrError),
}

fn conditional<T>(r: Result<T, DynErr>) -> Result<Option<T>, DynErr> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(DynErr::ConditionalCheckFailedException(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

#[derive(Debug, Clone)]
pub struct Records {
    pub store: DataStore,
    /// The component writes and reads are metered against (e.g. `"delivery"`).
    pub component: &'static str,
}

impl Records {
    pub fn new(store: DataStore, component: &'static str) -> Self {
        Self { store, component }
    }

    fn key_attrs(k: &ItemKey) -> [(String, AttributeValue); 2] {
        [(keys::PK.to_owned(), attrs::s(&k.pk)), (keys::SK.to_owned(), attrs::s(&k.sk))]
    }

    /// Reads one record. An eventually consistent read costs half, and is what a first attempt
    /// uses to drop a duplicate message.
    pub async fn get(&self, key: &ItemKey, consistent: bool) -> Result<Option<DeliveryRecord>, RecordError> {
        let out = self
            .store
            .client()
            .get_item()
            .table_name(self.store.table())
            .set_key(Some(Self::key_attrs(key).into_iter().collect()))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(DynErr::from)?;
        usage::read(self.component, out.item.as_ref().map_or(0, item_size), consistent);
        Ok(out.item.as_ref().map(DeliveryRecord::from_item).transpose()?)
    }

    /// Writes an item that must not exist yet. False when it exists.
    async fn put_new(&self, item: Item) -> Result<bool, RecordError> {
        usage::write(self.component, item_size(&item));
        let put = self
            .store
            .client()
            .put_item()
            .table_name(self.store.table())
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await
            .map_err(DynErr::from);
        Ok(conditional(put)?.is_some())
    }

    /// Writes a record that must not exist yet (the first attempt's, or a failure before any
    /// send). False when it exists.
    pub async fn create(&self, rec: &DeliveryRecord) -> Result<bool, RecordError> {
        self.put_new(rec.to_item()).await
    }

    /// Replaces a record, on the condition that it is still as `before` was read (attempt count,
    /// status and claim). False when it changed.
    pub async fn replace(&self, before: &DeliveryRecord, after: &DeliveryRecord) -> Result<bool, RecordError> {
        let item = after.to_item();
        usage::write(self.component, item_size(&item));
        let mut put = self
            .store
            .client()
            .put_item()
            .table_name(self.store.table())
            .set_item(Some(item))
            .expression_attribute_names("#a", dv::ATTEMPTS)
            .expression_attribute_names("#s", dv::STATUS)
            .expression_attribute_values(":a", attrs::n(before.attempts))
            .expression_attribute_values(":s", attrs::s(before.status.as_str()));
        put = match before.claim {
            Some((c, _)) => put
                .condition_expression("#a = :a AND #s = :s AND #c = :c")
                .expression_attribute_names("#c", dv::CLAIM)
                .expression_attribute_values(":c", attrs::n(c)),
            None => put
                .condition_expression("#a = :a AND #s = :s AND attribute_not_exists(#c)")
                .expression_attribute_names("#c", dv::CLAIM),
        };
        Ok(conditional(put.send().await.map_err(DynErr::from))?.is_some())
    }

    /// Claims attempt `attempt` for this worker until `until_ms`: only one worker sends a given
    /// attempt, however many messages ask for it. The claim holds while the record is as read
    /// and no live claim for this attempt (or a later one) exists; an expired claim (its worker
    /// died) can be taken over. Returns the record with the claim, or `None` when it was lost.
    pub async fn claim(
        &self,
        rec: &DeliveryRecord,
        attempt: u16,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<Option<DeliveryRecord>, RecordError> {
        let after = DeliveryRecord { claim: Some((attempt, until_ms)), ..rec.clone() };
        usage::write(self.component, item_size(&after.to_item()));
        let r = self
            .store
            .client()
            .update_item()
            .table_name(self.store.table())
            .set_key(Some(Self::key_attrs(&rec.key()).into_iter().collect()))
            .update_expression("SET #c = :c, #cu = :cu")
            .condition_expression("#a = :a AND #s = :s AND (attribute_not_exists(#c) OR #c < :c OR #cu < :now)")
            .expression_attribute_names("#a", dv::ATTEMPTS)
            .expression_attribute_names("#s", dv::STATUS)
            .expression_attribute_names("#c", dv::CLAIM)
            .expression_attribute_names("#cu", dv::CLAIM_UNTIL_MS)
            .expression_attribute_values(":a", attrs::n(rec.attempts))
            .expression_attribute_values(":s", attrs::s(rec.status.as_str()))
            .expression_attribute_values(":c", attrs::n(attempt))
            .expression_attribute_values(":cu", attrs::n(until_ms))
            .expression_attribute_values(":now", attrs::n(now_ms))
            .return_values(ReturnValue::None)
            .send()
            .await
            .map_err(DynErr::from);
        Ok(conditional(r)?.map(|_| after))
    }

    /// Records an attempt from the second on as its own item. The same attempt sent again (after
    /// a crash between sending and recording) overwrites it with the newer outcome and counts
    /// the send, so the item always agrees with the record written after it.
    pub async fn put_attempt(&self, rec: &DeliveryRecord, a: &Attempt) -> Result<(), RecordError> {
        if self.put_new(a.to_item(rec)).await? {
            return Ok(());
        }
        // Sent again: keep the newest outcome, and how many sends there were.
        let existing = self.attempt_sends(rec, a.attempt).await?;
        let again = Attempt { sends: existing.saturating_add(1), ..a.clone() };
        let item = again.to_item(rec);
        usage::write(self.component, item_size(&item));
        self.store
            .client()
            .put_item()
            .table_name(self.store.table())
            .set_item(Some(item))
            .send()
            .await
            .map_err(DynErr::from)?;
        Ok(())
    }

    async fn attempt_sends(&self, rec: &DeliveryRecord, attempt: u16) -> Result<u16, RecordError> {
        let k = keys::delivery_attempt(&rec.tenant, rec.shard, &rec.submission, &rec.destination, attempt);
        let out = self
            .store
            .client()
            .get_item()
            .table_name(self.store.table())
            .set_key(Some(Self::key_attrs(&k).into_iter().collect()))
            .projection_expression("#n")
            .expression_attribute_names("#n", at::SENDS)
            .consistent_read(true)
            .send()
            .await
            .map_err(DynErr::from)?;
        usage::read(self.component, 1024, true);
        Ok(out.item.map(|i| attrs::Attrs(&i).opt_n(at::SENDS)).transpose()?.flatten().unwrap_or(1))
    }

    /// Marks a delivery failed without a send (its destination is gone, the submission expired,
    /// its message was dead-lettered): on the existing record when there is one, else as a new
    /// record. False when the record moved on meanwhile.
    pub async fn fail(&self, existing: Option<&DeliveryRecord>, failed: &DeliveryRecord) -> Result<bool, RecordError> {
        debug_assert_eq!(failed.status, Status::Failed);
        match existing {
            Some(before) => self.replace(before, failed).await,
            None => self.create(failed).await,
        }
    }
}
