//! Paging through a tenant's submissions, newest first, without a scan.
//!
//! A tenant's submissions are spread over its write shards (and, after a shard-count change, over
//! every shard it has ever written to). A page is a k-way merge: one descending Query per shard,
//! bounded to the id range the filter allows (ULIDs sort by time, so `since`/`until` become key
//! bounds), each shard read lazily in small pages, and the newest head taken until the page is
//! full. The position of a page is the last id returned; the next page reads below it in every
//! shard, so a page costs a Query per shard plus what it returns, however deep it is.
//!
//! Delivery records sort right after their submission (`SUB#<id>#DLV#...`), so a descending read
//! meets them first: the merge attaches their statuses to the submission for free, which is how
//! `status=succeeded` filters. Deliveries waiting on the worklist (`pending`, `retrying`,
//! `failed`) are found through GSI1 instead, which holds only them.

use std::collections::{BTreeMap, HashMap, VecDeque};

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use ulid::Ulid;

use crate::attrs::{delivery as dv, submission as sb, Item};
use crate::delivery::model::{DeliveryRecord, Status};
use crate::delivery::records::RecordError;
use crate::keys::{self, Entity, ItemKey};
use crate::store::{DataStore, StoreError};
use crate::submission::{rfc3339_ms, ItemError, SubmissionFields};
use crate::tenant::TenantProfile;
use crate::{DestinationId, FormId, SubmissionId, TenantId};

/// The most items one page returns.
pub const MAX_PAGE: usize = 100;

/// What a listing may be narrowed to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub form: Option<FormId>,
    /// Inclusive bounds on the receive time (the id's time), epoch ms.
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    /// Submissions with a delivery in this status.
    pub status: Option<Status>,
}

impl ListFilter {
    /// A canonical form of the filter, which a page cursor is bound to.
    pub fn canonical(&self) -> String {
        format!(
            "form={};since={};until={};status={}",
            self.form.as_ref().map(|f| f.as_str()).unwrap_or(""),
            self.since_ms.map(|v| v.to_string()).unwrap_or_default(),
            self.until_ms.map(|v| v.to_string()).unwrap_or_default(),
            self.status.map(Status::as_str).unwrap_or(""),
        )
    }
}

/// One submission in a listing: its attributes without the payload, and where its recorded
/// deliveries stand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubmissionSummary {
    pub submission_id: SubmissionId,
    pub form_id: String,
    pub site: String,
    pub received_at: String,
    pub raw_size: u64,
    /// The stored item's size, when the listing read whole items (exports, status filters); the
    /// plain listing leaves the payload out of its reads, so it cannot know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_size: Option<usize>,
    pub deliveries: BTreeMap<DestinationId, Status>,
    /// The decoded payload, when the listing was asked to decode (exports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

/// A page and the position after it, if there is more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Item(#[from] ItemError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("the position is not one this listing issued")]
    Position,
}

fn sdk<E: Into<aws_sdk_dynamodb::Error>>(e: E) -> ListError {
    ListError::Store(StoreError::Dynamo(e.into()))
}

/// The last millisecond a ULID can hold.
const MAX_ID_MS: u64 = (1 << 48) - 1;

/// The lowest id of a millisecond, and the highest.
fn id_floor(ms: u64) -> Ulid {
    Ulid::from_parts(ms.min(MAX_ID_MS), 0)
}
fn id_ceiling(ms: u64) -> Ulid {
    Ulid::from_parts(ms.min(MAX_ID_MS), u128::MAX)
}

/// One shard's side of the merge.
struct ShardCursor {
    shard: u16,
    ready: VecDeque<SubmissionSummary>,
    /// Delivery statuses met before their submission (they sort after it, so come first).
    pending: BTreeMap<DestinationId, Status>,
    start: Option<HashMap<String, AttributeValue>>,
    done: bool,
    /// Items asked for in the next read; doubles while the shard keeps being needed.
    batch: i32,
    decode: bool,
}

impl DataStore {
    /// A page of `profile`'s submissions matching `filter`, newest first, after `position` (the
    /// `next` of the previous page).
    pub async fn list_submissions(
        &self,
        profile: &TenantProfile,
        filter: &ListFilter,
        position: Option<&str>,
        limit: usize,
    ) -> Result<Page<SubmissionSummary>, ListError> {
        self.list_submissions_with(profile, filter, position, limit, false).await
    }

    /// Like [`DataStore::list_submissions`]; with `decode`, each summary carries its decoded
    /// payload (what an export writes).
    pub async fn list_submissions_with(
        &self,
        profile: &TenantProfile,
        filter: &ListFilter,
        position: Option<&str>,
        limit: usize,
        decode: bool,
    ) -> Result<Page<SubmissionSummary>, ListError> {
        let limit = limit.clamp(1, MAX_PAGE);
        match filter.status {
            Some(s) if s.on_worklist() => self.list_by_worklist(profile, filter, s, position, limit, decode).await,
            _ => self.list_merged(profile, filter, position, limit, decode).await,
        }
    }

    async fn list_merged(
        &self,
        profile: &TenantProfile,
        filter: &ListFilter,
        position: Option<&str>,
        limit: usize,
        decode: bool,
    ) -> Result<Page<SubmissionSummary>, ListError> {
        let tenant = &profile.tenant_id;
        let after = position.map(|p| SubmissionId::parse(p).map_err(|_| ListError::Position)).transpose()?;
        let lo = format!("SUB#{}", id_floor(filter.since_ms.unwrap_or(0)));
        // `~` sorts after `#`, so the newest id's own delivery items stay inside the bound.
        let mut hi = format!("SUB#{}~", id_ceiling(filter.until_ms.unwrap_or(MAX_ID_MS)));
        if let Some(a) = after {
            // Everything of `a` sorts at or above `SUB#<a>`; the item itself is skipped below.
            hi = hi.min(keys::submission_sk(&a));
        }
        let shards: Vec<u16> = profile.shards.read_shards().collect();
        let first_batch = i32::try_from((limit * 2).div_ceil(shards.len().max(1)) + 2).unwrap_or(200).min(200);
        let mut cursors: Vec<ShardCursor> = shards
            .into_iter()
            .map(|shard| ShardCursor {
                shard,
                ready: VecDeque::new(),
                pending: BTreeMap::new(),
                start: None,
                done: false,
                batch: first_batch,
                decode,
            })
            .collect();
        let mut out = Vec::with_capacity(limit);
        loop {
            // Refill every shard whose head is unknown, concurrently.
            let reads = cursors
                .iter_mut()
                .filter(|c| c.ready.is_empty() && !c.done)
                .map(|c| self.read_shard(tenant, c, &lo, &hi, after));
            for r in futures::future::join_all(reads).await {
                r?;
            }
            let Some(best) = cursors
                .iter_mut()
                .filter(|c| !c.ready.is_empty())
                .max_by_key(|c| c.ready.front().map(|s| s.submission_id))
            else {
                if cursors.iter().all(|c| c.done) {
                    return Ok(Page { items: out, next: None });
                }
                continue;
            };
            let s = best.ready.pop_front().expect("non-empty");
            if matches(filter, &s) {
                out.push(s);
                if out.len() == limit {
                    let more = cursors.iter().any(|c| !c.ready.is_empty() || !c.done);
                    let next = more.then(|| out.last().expect("full").submission_id.to_string());
                    return Ok(Page { items: out, next });
                }
            }
        }
    }

    async fn read_shard(
        &self,
        tenant: &TenantId,
        c: &mut ShardCursor,
        lo: &str,
        hi: &str,
        after: Option<SubmissionId>,
    ) -> Result<(), ListError> {
        while c.ready.is_empty() && !c.done {
            let page = self
                .client()
                .query()
                .table_name(self.table())
                .key_condition_expression("PK = :pk AND SK BETWEEN :lo AND :hi")
                .expression_attribute_values(":pk", AttributeValue::S(keys::submission_pk(tenant, c.shard)))
                .expression_attribute_values(":lo", AttributeValue::S(lo.to_owned()))
                .expression_attribute_values(":hi", AttributeValue::S(hi.to_owned()))
                .scan_index_forward(false)
                .limit(c.batch)
                .set_exclusive_start_key(c.start.take());
            // A listing needs no payload: leaving it out of the answer makes the read a fraction
            // of the bytes (DynamoDB bills the same read units either way).
            let page = if c.decode { page } else { project_summary(page) }.send().await.map_err(sdk)?;
            c.batch = (c.batch * 2).min(500);
            for item in page.items() {
                let (Some(pk), Some(sk)) = (item.get(keys::PK), item.get(keys::SK)) else { continue };
                let (Ok(pk), Ok(sk)) = (pk.as_s(), sk.as_s()) else { continue };
                match Entity::classify(pk, sk) {
                    Entity::Delivery { dest, .. } => {
                        let status = item
                            .get(dv::STATUS)
                            .and_then(|v| v.as_s().ok())
                            .and_then(|v| Status::parse(v))
                            .ok_or(RecordError::Decode(crate::attrs::AttrError::Invalid(dv::STATUS)))?;
                        c.pending.insert(dest, status);
                    }
                    Entity::Submission { id, .. } => {
                        let deliveries = std::mem::take(&mut c.pending);
                        if Some(id) == after {
                            continue;
                        }
                        c.ready.push_back(if c.decode {
                            summary(id, item, deliveries, true)?
                        } else {
                            light_summary(id, item, deliveries)?
                        });
                    }
                    _ => {}
                }
            }
            match page.last_evaluated_key {
                Some(k) => c.start = Some(k),
                None => c.done = true,
            }
        }
        Ok(())
    }

    /// Submissions with a delivery waiting in `status`, newest status time first, read through
    /// the worklist index (GSI1) and then by key. A submission with two deliveries in the status
    /// appears once per delivery, each time with that delivery's destination.
    async fn list_by_worklist(
        &self,
        profile: &TenantProfile,
        filter: &ListFilter,
        status: Status,
        position: Option<&str>,
        limit: usize,
        decode: bool,
    ) -> Result<Page<SubmissionSummary>, ListError> {
        let page = self.list_worklist(&profile.tenant_id, status, None, filter, position, limit).await?;
        let keys: Vec<ItemKey> =
            page.items.iter().map(|r| keys::submission(&r.tenant, r.shard, &r.submission)).collect();
        let mut found: HashMap<SubmissionId, Item> = HashMap::new();
        for item in self.batch_get(&keys, false).await? {
            let (Some(pk), Some(sk)) = (item.get(keys::PK).and_then(|v| v.as_s().ok()), item.get(keys::SK)) else {
                continue;
            };
            if let Entity::Submission { id, .. } = Entity::classify(pk, sk.as_s().map(String::as_str).unwrap_or("")) {
                found.insert(id, item);
            }
        }
        let mut items = Vec::new();
        for r in &page.items {
            // A submission gone (erased, expired) while its delivery waits is left out.
            let Some(item) = found.get(&r.submission) else { continue };
            let s = summary(r.submission, item, BTreeMap::from([(r.destination, r.status)]), decode)?;
            if filter.form.as_ref().is_none_or(|f| f.as_str() == s.form_id) {
                items.push(s);
            }
        }
        Ok(Page { items, next: page.next })
    }

    /// A page of a tenant's deliveries waiting in `status` (pending, retrying or failed), newest
    /// status time first, from the worklist index. `since`/`until` of the filter bound the status
    /// time (when it failed, or when it is due).
    pub async fn list_worklist(
        &self,
        tenant: &TenantId,
        status: Status,
        destination: Option<DestinationId>,
        filter: &ListFilter,
        position: Option<&str>,
        limit: usize,
    ) -> Result<Page<DeliveryRecord>, ListError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let lo = format!("{:013}#", filter.since_ms.unwrap_or(0));
        let mut hi = format!("{:013}#~", filter.until_ms.unwrap_or(9_999_999_999_999));
        if let Some(p) = position {
            if p.len() > 120 || !p.as_bytes().first().is_some_and(u8::is_ascii_digit) {
                return Err(ListError::Position);
            }
            hi = hi.min(p.to_owned());
        }
        let mut out: Vec<(String, DeliveryRecord)> = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client()
                .query()
                .table_name(self.table())
                .index_name("GSI1")
                .key_condition_expression("GSI1PK = :pk AND GSI1SK BETWEEN :lo AND :hi")
                .expression_attribute_values(":pk", AttributeValue::S(format!("DLV#{tenant}#{status}")))
                .expression_attribute_values(":lo", AttributeValue::S(lo.clone()))
                .expression_attribute_values(":hi", AttributeValue::S(hi.clone()))
                .scan_index_forward(false)
                .limit(i32::try_from(limit + 1).unwrap_or(101))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk)?;
            for item in page.items() {
                let sk = item.get(keys::GSI1SK).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
                if Some(sk.as_str()) == position {
                    continue;
                }
                let r = DeliveryRecord::from_item(item).map_err(RecordError::from)?;
                let wanted = destination.is_none_or(|d| d == r.destination)
                    && filter.form.as_ref().is_none_or(|f| f.as_str() == r.form_id);
                if wanted {
                    out.push((sk, r));
                }
            }
            if out.len() > limit {
                out.truncate(limit);
                let next = out.last().map(|(sk, _)| sk.clone());
                return Ok(Page { items: out.into_iter().map(|(_, r)| r).collect(), next });
            }
            match page.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok(Page { items: out.into_iter().map(|(_, r)| r).collect(), next: None }),
            }
        }
    }
}

/// Reads only what a summary needs: keys, the submission's own attributes in either layout, and
/// a delivery record's status; never the payload.
fn project_summary(
    q: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
    let names = [
        keys::PK,
        keys::SK,
        keys::TTL,
        sb::SITE,
        sb::FORM,
        sb::RECEIVED_MS,
        sb::RAW_SIZE,
        sb::v1::SITE,
        sb::v1::FORM,
        sb::v1::RECEIVED_AT,
        sb::v1::RAW_SIZE,
        dv::STATUS,
    ];
    let mut q = q;
    let mut refs = Vec::new();
    for (i, n) in names.iter().enumerate() {
        q = q.expression_attribute_names(format!("#a{i}"), *n);
        refs.push(format!("#a{i}"));
    }
    q.projection_expression(refs.join(", "))
}

/// A summary from a projected item (no payload), either layout.
fn light_summary(
    id: SubmissionId,
    item: &Item,
    deliveries: BTreeMap<DestinationId, Status>,
) -> Result<SubmissionSummary, ItemError> {
    let a = crate::attrs::Attrs(item);
    let (site, form, received_ms, raw_size) = if item.contains_key(sb::SITE) {
        (a.s(sb::SITE)?, a.s(sb::FORM)?, a.n::<u64>(sb::RECEIVED_MS)?, a.n::<u64>(sb::RAW_SIZE)?)
    } else {
        let at = a.s(sb::v1::RECEIVED_AT)?;
        let t = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
            .map_err(|_| crate::attrs::AttrError::Invalid(sb::v1::RECEIVED_AT))?;
        (a.s(sb::v1::SITE)?, a.s(sb::v1::FORM)?, crate::submission::epoch_ms(t), a.n::<u64>(sb::v1::RAW_SIZE)?)
    };
    Ok(SubmissionSummary {
        submission_id: id,
        form_id: form.to_owned(),
        site: site.to_owned(),
        received_at: rfc3339_ms(received_ms),
        raw_size,
        stored_size: None,
        deliveries,
        payload: None,
    })
}

fn summary(
    id: SubmissionId,
    item: &Item,
    deliveries: BTreeMap<DestinationId, Status>,
    decode: bool,
) -> Result<SubmissionSummary, ItemError> {
    let f = SubmissionFields::read(item)?;
    let payload = if decode { Some(serde_json::from_slice(&crate::codec::decode(f.codec, f.payload)?)?) } else { None };
    Ok(SubmissionSummary {
        submission_id: id,
        form_id: f.form.to_owned(),
        site: f.site.to_owned(),
        received_at: rfc3339_ms(f.received_ms),
        raw_size: f.raw_size,
        stored_size: Some(crate::capacity::item_size(item)),
        deliveries,
        payload,
    })
}

fn matches(filter: &ListFilter, s: &SubmissionSummary) -> bool {
    filter.form.as_ref().is_none_or(|f| f.as_str() == s.form_id)
        && filter.status.is_none_or(|st| s.deliveries.values().any(|d| *d == st))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_bounds_cover_their_millisecond_and_nothing_else() {
        let id = SubmissionId::from_ulid(Ulid::from_parts(1_700_000_000_123, 42));
        let ms = id.timestamp_ms();
        assert!(id_floor(ms) <= id.ulid() && id.ulid() <= id_ceiling(ms));
        assert!(id_ceiling(ms - 1) < id.ulid() && id.ulid() < id_floor(ms + 1));
        // A delivery item of the newest id sorts inside the `~` bound.
        let dlv = format!("SUB#{}#DLV#{}", id_ceiling(ms), DestinationId::new());
        assert!(dlv < format!("SUB#{}~", id_ceiling(ms)));
        // Without an upper bound, every id is below it.
        assert!(format!("SUB#{id}#DLV#x") < format!("SUB#{}~", id_ceiling(MAX_ID_MS)));
        assert_eq!(id_ceiling(u64::MAX), id_ceiling(MAX_ID_MS));
    }

    #[test]
    fn the_canonical_filter_tells_every_field_apart() {
        let a = ListFilter { form: Some(FormId::parse("contact").unwrap()), ..ListFilter::default() };
        let b = ListFilter { since_ms: Some(1), ..ListFilter::default() };
        let c = ListFilter { status: Some(Status::Failed), ..ListFilter::default() };
        let all = [ListFilter::default(), a, b, c].map(|f| f.canonical());
        let unique: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
    }
}
