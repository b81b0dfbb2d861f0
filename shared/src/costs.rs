//! Cost per tenant: every unit AWS bills, attributed to the tenant that caused it, kept per hour
//! and day in the tenant's metric partition, and priced.
//!
//! **Attribution** happens where the units are metered ([`crate::billing`]), request by
//! request, from what the request names:
//!
//! - **DynamoDB writes and reads**: the partition key of each item written or read
//!   ([`keys::tenant_of`]: `SUB#t#…`, `METRIC#t`, `TENANT#t`, `AUDIT#t#…`, the index keys
//!   `DLV#t#…`); a site item, whose key names a domain, by its `tenant_id`. Writes are split into
//!   lines by what was written (submission, delivery record or attempt, metrics, other), reads by
//!   the process that read (API, delivery, other).
//! - **SQS**: each message's `tenant_id` (ingest queue) or `tenant` (delivery messages; a pack
//!   of several deliveries is shared between their tenants by their number); a request carrying
//!   several messages is shared by their bytes. Deletes and visibility changes name only receipt
//!   handles: the tenant is remembered from the receive. Delivery messages of a second or later
//!   attempt are the `retry` line.
//! - **Streams**: each GetRecords call is shared by its records' tenants.
//! - **EventBridge**: each event by the `tenant` or `tenant_id` in its detail.
//! - What names no tenant (an empty long poll or GetRecords, leases and checkpoints, sites'
//!   lookups that miss) is **unattributed**: it is in the system's totals only.
//!
//! **Storage**: units are counted in thousandths (a request shared three ways is 333 + 333 +
//! 334), in memory, by tenant and hour, and flushed every `FORMBRIDGE_COST_FLUSH_SECONDS`
//! (60 s) by each process ([`spawn_flusher`]) as ADDs to `METRIC#<t>` / `COST#H#<hour>` and
//! `COST#D#<day>`, and to the system's `COSTS` / `COST#H#…`, `COST#D#…` (everything, with the
//! unattributed part again under `u_…`). Each update carries the flushing instance's sequence
//! number under a condition, so a retried write is applied once: a write that fails is sent
//! again, unchanged, with the next flush, and one whose answer was lost after it was applied is
//! refused by the guard. A flush's own
//! writes are counted in the same flush (metric writes of the tenant, unattributed for the
//! system's items), so an idle system stops flushing. A process killed between flushes loses
//! at most one interval of its counts (the bill itself is not affected, only its attribution).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use time::{Date, OffsetDateTime};

use crate::billing::Prices;
use crate::capacity::{item_size, value_size, write_units};
use crate::ids::TenantId;
use crate::keys::{self, ItemKey};

/// A line of a bill. Each is counted in thousandths of its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Line {
    /// Write units of submission items.
    WriteSubmission,
    /// Write units of delivery records and attempt items.
    WriteDelivery,
    /// Write units of metric and cost items (the tenant's share of the aggregator's writes).
    WriteMetric,
    /// Other write units: profile, sites, destinations and their health, audit events.
    WriteOther,
    /// Read units of the tenant API and dashboard.
    ReadApi,
    /// Read units of the delivery processes.
    ReadDelivery,
    /// Other read units (ingest's site lookups, the persister's profile reads, admin).
    ReadOther,
    /// DynamoDB Streams GetRecords requests.
    StreamReads,
    /// SQS requests of ingest (sends to the ingest queue).
    SqsIngest,
    /// SQS requests of the persister (receives and deletes).
    SqsPersister,
    /// SQS requests of the delivery queue for first attempts.
    SqsDelivery,
    /// SQS requests of the delivery queue for second and later attempts.
    SqsRetry,
    /// SQS requests of anything else (admin, load generators, DLQs).
    SqsOther,
    /// EventBridge events (per 64 KiB).
    Events,
}

pub const LINES: usize = 14;

impl Line {
    pub const ALL: [Line; LINES] = [
        Line::WriteSubmission,
        Line::WriteDelivery,
        Line::WriteMetric,
        Line::WriteOther,
        Line::ReadApi,
        Line::ReadDelivery,
        Line::ReadOther,
        Line::StreamReads,
        Line::SqsIngest,
        Line::SqsPersister,
        Line::SqsDelivery,
        Line::SqsRetry,
        Line::SqsOther,
        Line::Events,
    ];

    /// The attribute of the line in cost items.
    pub fn attr(self) -> &'static str {
        match self {
            Line::WriteSubmission => "w_sub",
            Line::WriteDelivery => "w_dlv",
            Line::WriteMetric => "w_met",
            Line::WriteOther => "w_oth",
            Line::ReadApi => "r_api",
            Line::ReadDelivery => "r_dlv",
            Line::ReadOther => "r_oth",
            Line::StreamReads => "s_rd",
            Line::SqsIngest => "q_ing",
            Line::SqsPersister => "q_per",
            Line::SqsDelivery => "q_dlv",
            Line::SqsRetry => "q_rty",
            Line::SqsOther => "q_oth",
            Line::Events => "ev",
        }
    }

    /// The billed unit (`crate::billing::Billed` name) the line counts.
    pub fn unit(self) -> &'static str {
        match self {
            Line::WriteSubmission | Line::WriteDelivery | Line::WriteMetric | Line::WriteOther => "write_units",
            Line::ReadApi | Line::ReadDelivery | Line::ReadOther => "read_units",
            Line::StreamReads => "stream_reads",
            Line::SqsIngest | Line::SqsPersister | Line::SqsDelivery | Line::SqsRetry | Line::SqsOther => {
                "sqs_requests"
            }
            Line::Events => "events",
        }
    }

    fn index(self) -> usize {
        Line::ALL.iter().position(|l| *l == self).expect("every line is in ALL")
    }

    /// Dollars per million units of the line.
    pub fn price(self, p: &Prices) -> f64 {
        match self.unit() {
            "write_units" => p.per_million_write_units,
            "read_units" => p.per_million_read_units,
            "stream_reads" => p.per_million_stream_reads,
            "sqs_requests" => p.per_million_sqs_requests,
            _ => p.per_million_events,
        }
    }
}

/// Thousandths of a unit, by line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Units(pub [u64; LINES]);

impl Units {
    pub fn get(&self, l: Line) -> u64 {
        self.0[l.index()]
    }

    pub fn add(&mut self, l: Line, milli: u64) {
        self.0[l.index()] += milli;
    }

    pub fn merge(&mut self, o: &Units) {
        for (a, b) in self.0.iter_mut().zip(o.0) {
            *a += b;
        }
    }

    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|x| *x == 0)
    }

    /// Whole units by billed unit name (`write_units`, ...).
    pub fn by_unit(&self) -> BTreeMap<&'static str, f64> {
        let mut m = BTreeMap::new();
        for l in Line::ALL {
            *m.entry(l.unit()).or_insert(0.0) += self.get(l) as f64 / 1000.0;
        }
        m
    }

    pub fn dollars(&self, p: &Prices) -> f64 {
        Line::ALL.iter().map(|l| self.get(*l) as f64 / 1000.0 * l.price(p) / 1e6).sum()
    }
}

type Key = (Option<TenantId>, i64);

static USAGE: Mutex<BTreeMap<Key, Units>> = Mutex::new(BTreeMap::new());

tokio::task_local! {
    /// Set while the flusher writes: its writes are counted by the flush itself.
    static FLUSHING: ();
}

fn hour_of(t: OffsetDateTime) -> i64 {
    t.unix_timestamp().div_euclid(3600) * 3600
}

fn lock() -> std::sync::MutexGuard<'static, BTreeMap<Key, Units>> {
    USAGE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Shares `whole` units of `line` between payers by weight, in thousandths, exactly (the
/// remainder goes to the first payers). Called by the meter for every billed request.
pub(crate) fn share(payers: &[(Option<TenantId>, u64)], line: Line, whole_milli: u64) {
    if whole_milli == 0 || FLUSHING.try_with(|_| ()).is_ok() {
        return;
    }
    let hour = hour_of(OffsetDateTime::now_utc());
    let mut usage = lock();
    bound(&mut usage);
    let total: u64 = payers.iter().map(|(_, w)| *w).sum();
    if payers.is_empty() || total == 0 {
        usage.entry((None, hour)).or_default().add(line, whole_milli);
        return;
    }
    let mut given = 0;
    let parts: Vec<u64> = payers.iter().map(|(_, w)| whole_milli * w / total).collect();
    let mut rest = whole_milli - parts.iter().sum::<u64>();
    for ((payer, _), part) in payers.iter().zip(parts) {
        let extra = u64::from(rest > 0);
        rest -= extra;
        given += part + extra;
        usage.entry((payer.clone(), hour)).or_default().add(line, part + extra);
    }
    debug_assert_eq!(given, whole_milli);
}

/// (tenant, hour) entries kept unflushed at most: with flushing off (or the table unreachable
/// for days) the oldest hours are dropped, counted in `cost_counts_dropped_total`, rather than
/// growing without bound.
const MAX_PENDING: usize = 100_000;

fn bound(usage: &mut BTreeMap<Key, Units>) {
    while usage.len() >= MAX_PENDING {
        let Some(oldest) = usage.keys().map(|(_, h)| *h).min() else { return };
        let before = usage.len();
        usage.retain(|(_, h), _| *h != oldest);
        metrics::counter!("cost_counts_dropped_total").increment((before - usage.len()) as u64);
    }
}

/// Everything counted and not yet flushed, by tenant (`None`: unattributed) and hour start
/// (epoch seconds). For tests and the flusher.
pub fn pending() -> BTreeMap<Key, Units> {
    lock().clone()
}

/// Forgets what was counted and not yet flushed (a test that compares a window of the meter
/// with the flushed items starts from nothing).
pub fn discard_pending() {
    take();
}

fn take() -> BTreeMap<Key, Units> {
    std::mem::take(&mut *lock())
}

// ---- the payer of what a request names ---------------------------------------------------------

/// The tenant an item belongs to: by its partition key, or a site's `tenant_id`.
pub(crate) fn item_payer(item: &HashMap<String, AttributeValue>) -> Option<TenantId> {
    let pk = item.get(keys::PK).and_then(|v| v.as_s().ok())?;
    keys::tenant_of(pk).or_else(|| {
        if pk.starts_with("SITE#") {
            item.get(crate::attrs::site::TENANT).and_then(|v| v.as_s().ok()).and_then(|t| TenantId::parse(t).ok())
        } else {
            None
        }
    })
}

/// The write line of an item, by its key.
pub(crate) fn write_line(item: &HashMap<String, AttributeValue>) -> Line {
    let s = |n: &str| item.get(n).and_then(|v| v.as_s().ok()).map_or("", String::as_str);
    match keys::Entity::classify(s(keys::PK), s(keys::SK)) {
        keys::Entity::Submission { .. } => Line::WriteSubmission,
        keys::Entity::Delivery { .. } | keys::Entity::DeliveryAttempt { .. } => Line::WriteDelivery,
        keys::Entity::Metrics { .. } => Line::WriteMetric,
        _ => Line::WriteOther,
    }
}

pub(crate) fn read_line(component: Option<&str>) -> Line {
    match component {
        Some("api") => Line::ReadApi,
        Some("delivery") => Line::ReadDelivery,
        _ => Line::ReadOther,
    }
}

pub(crate) fn sqs_line(component: Option<&str>, retry: bool) -> Line {
    match component {
        _ if retry => Line::SqsRetry,
        Some("ingest") => Line::SqsIngest,
        Some("persister") => Line::SqsPersister,
        Some("delivery") => Line::SqsDelivery,
        _ => Line::SqsOther,
    }
}

/// The payers of one message: a tenant (or none) per delivery it carries, and whether that one is
/// a second or later attempt.
pub type MessagePayers = Vec<(Option<TenantId>, bool)>;

/// The tenants a queue message or event names, one entry per delivery in a pack, with whether
/// it is a second or later attempt. Field order makes this exact for our own messages: the
/// ingest message's `tenant_id` comes before the form's fields, and a delivery message carries
/// the stored (compressed, base64) payload, never the form's field names.
pub(crate) fn message_payers(body: &str) -> MessagePayers {
    fn id_at(s: &str) -> Option<TenantId> {
        let end = s.find('"')?;
        TenantId::parse(&s[..end]).ok()
    }
    const TENANT_ID: &str = "\"tenant_id\":\"";
    const TENANT: &str = "\"tenant\":\"";
    const ATTEMPT: &str = "\"attempt\":";
    if let Some(i) = body.find(TENANT_ID) {
        return vec![(id_at(&body[i + TENANT_ID.len()..]), false)];
    }
    let starts: Vec<usize> = body.match_indices(TENANT).map(|(i, _)| i).collect();
    if starts.is_empty() {
        return vec![(None, false)];
    }
    starts
        .iter()
        .enumerate()
        .map(|(n, &i)| {
            let end = starts.get(n + 1).copied().unwrap_or(body.len());
            let seg = &body[i + TENANT.len()..end];
            let retry = seg.find(ATTEMPT).is_some_and(|a| {
                let digits: String = seg[a + ATTEMPT.len()..].chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u32>().is_ok_and(|n| n > 1)
            });
            (id_at(seg), retry)
        })
        .collect()
}

/// Payers of messages received, by receipt handle, for their deletes and visibility changes.
static RECEIPTS: Mutex<Option<HashMap<String, MessagePayers>>> = Mutex::new(None);
const MAX_RECEIPTS: usize = 100_000;

pub(crate) fn remember_receipt(handle: &str, payers: MessagePayers) {
    let mut r = RECEIPTS.lock().unwrap_or_else(PoisonError::into_inner);
    let map = r.get_or_insert_with(HashMap::new);
    if map.len() >= MAX_RECEIPTS {
        // Messages received and never deleted (left to their visibility timeout) would
        // accumulate: forget them all; their later deletes are unattributed.
        map.clear();
    }
    map.insert(handle.to_owned(), payers);
}

pub(crate) fn receipt_payers(handle: &str, forget: bool) -> MessagePayers {
    let mut r = RECEIPTS.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(map) = r.as_mut() else { return vec![(None, false)] };
    let found = if forget { map.remove(handle) } else { map.get(handle).cloned() };
    found.unwrap_or_else(|| vec![(None, false)])
}

// ---- flushing ----------------------------------------------------------------------------------

/// This process's identity in the flush guards, and its flush sequence.
struct Instance {
    id: String,
    seq: AtomicU64,
}

fn instance() -> &'static Instance {
    static I: OnceLock<Instance> = OnceLock::new();
    I.get_or_init(|| Instance { id: ulid::Ulid::new().to_string(), seq: AtomicU64::new(0) })
}

/// One cost item's update in a flush.
#[derive(Debug, Clone)]
struct Update {
    key: ItemKey,
    /// The lines to add, and for the system's items the unattributed part.
    units: Units,
    unattributed: Option<Units>,
    payer: Option<TenantId>,
}

/// Updates whose write failed, with their sequence numbers: sent again, as they were, before
/// anything newer for the same item (the guard refuses a retry of one that was applied after
/// all, and keeps the order of the others).
static RETRY: Mutex<Vec<(Update, u64)>> = Mutex::new(Vec::new());

fn day_of(hour: i64) -> Date {
    OffsetDateTime::from_unix_timestamp(hour).map(|t| t.date()).unwrap_or(Date::MIN)
}

fn at(hour: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(hour).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn plan_updates(taken: &BTreeMap<Key, Units>) -> Vec<Update> {
    let mut tenant_items: BTreeMap<ItemKey, (TenantId, Units)> = BTreeMap::new();
    let mut system: BTreeMap<ItemKey, (Units, Units)> = BTreeMap::new();
    for ((payer, hour), u) in taken {
        if u.is_zero() {
            continue;
        }
        for k in [keys::system_cost_hour(at(*hour)), keys::system_cost_day(day_of(*hour))] {
            let e = system.entry(k).or_default();
            e.0.merge(u);
            if payer.is_none() {
                e.1.merge(u);
            }
        }
        if let Some(t) = payer {
            for k in [keys::tenant_cost_hour(t, at(*hour)), keys::tenant_cost_day(t, day_of(*hour))] {
                tenant_items.entry(k).or_insert_with(|| (t.clone(), Units::default())).1.merge(u);
            }
        }
    }
    let mut out: Vec<Update> = tenant_items
        .into_iter()
        .map(|(key, (t, units))| Update { key, units, unattributed: None, payer: Some(t) })
        .collect();
    out.extend(system.into_iter().map(|(key, (units, un))| Update { key, units, unattributed: Some(un), payer: None }));
    out
}

fn guard_attr(instance: &str) -> String {
    format!("f#{instance}")
}

/// The expression and values of an update; `own` is the write's own units (in thousandths),
/// already added where they belong.
fn expression(
    u: &Update,
    seq: u64,
    instance: &str,
) -> (String, HashMap<String, String>, HashMap<String, AttributeValue>) {
    let mut names = HashMap::from([("#f".to_owned(), guard_attr(instance))]);
    let mut values = HashMap::from([(":seq".to_owned(), AttributeValue::N(seq.to_string()))]);
    let mut adds = Vec::new();
    let mut push = |attr: String, v: u64| {
        if v > 0 {
            let n = adds.len();
            names.insert(format!("#a{n}"), attr);
            values.insert(format!(":a{n}"), AttributeValue::N(v.to_string()));
            adds.push(format!("#a{n} :a{n}"));
        }
    };
    for l in Line::ALL {
        push(l.attr().to_owned(), u.units.get(l));
    }
    if let Some(un) = &u.unattributed {
        for l in Line::ALL {
            push(format!("u_{}", l.attr()), un.get(l));
        }
    }
    (format!("ADD {} SET #f = :seq", adds.join(", ")), names, values)
}

/// The write units (thousandths) the meter bills for an update: an UpdateItem that does not ask
/// for the item back bills its key and values.
fn own_units(u: &Update, seq: u64, instance: &str) -> u64 {
    let key = HashMap::from([
        (keys::PK.to_owned(), AttributeValue::S(u.key.pk.clone())),
        (keys::SK.to_owned(), AttributeValue::S(u.key.sk.clone())),
    ]);
    let (_, _, values) = expression(u, seq, instance);
    write_units(item_size(&key) + values.values().map(value_size).sum::<usize>()) * 1000
}

/// Counts the writes of one payer's items in those items: the total goes to its latest hour
/// and that hour's day, so hours still add up to days. Returns the total.
fn count_own_writes(updates: &mut [Update], idx: &[usize], seq: u64, instance: &str, extra: u64) -> u64 {
    let Some(&hour) = idx
        .iter()
        .filter(|i| updates[**i].key.sk.starts_with(keys::COST_HOUR_PREFIX))
        .max_by_key(|i| updates[**i].key.sk.clone())
    else {
        return 0;
    };
    let date = updates[hour].key.sk[keys::COST_HOUR_PREFIX.len()..].split('T').next().unwrap_or_default().to_owned();
    let day = idx.iter().copied().find(|i| updates[*i].key.sk == format!("{}{date}", keys::COST_DAY_PREFIX));
    let targets: Vec<usize> = std::iter::once(hour).chain(day).collect();
    let bump = |updates: &mut [Update], v: u64, own: bool| {
        for t in &targets {
            updates[*t].units.add(Line::WriteMetric, v);
            if own {
                if let Some(un) = updates[*t].unattributed.as_mut() {
                    un.add(Line::WriteMetric, v);
                }
            }
        }
    };
    // Another payer's own writes counted here too (the tenants' in the system's totals).
    bump(updates, extra, false);
    let mut added = 0;
    for _ in 0..4 {
        let total: u64 = idx.iter().map(|i| own_units(&updates[*i], seq, instance)).sum();
        if total <= added {
            break;
        }
        bump(updates, total - added, true);
        added = total;
    }
    added
}

/// Writes what was counted since the last flush. Returns how many items were updated.
pub async fn flush(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<usize, aws_sdk_dynamodb::Error> {
    let taken = take();
    let retry = std::mem::take(&mut *RETRY.lock().unwrap_or_else(PoisonError::into_inner));
    if taken.values().all(Units::is_zero) && retry.is_empty() {
        return Ok(0);
    }
    let inst = instance();
    let mut updates = plan_updates(&taken);
    let seq = inst.seq.fetch_add(1, Ordering::SeqCst) + 1;
    // Each tenant's items count their own writes; the system's count theirs and the tenants'.
    let mut by_payer: BTreeMap<Option<TenantId>, Vec<usize>> = BTreeMap::new();
    for (i, u) in updates.iter().enumerate() {
        by_payer.entry(u.payer.clone()).or_default().push(i);
    }
    let mut tenants_own = 0;
    for (payer, idx) in by_payer.iter().filter(|(p, _)| p.is_some()) {
        let _ = payer;
        tenants_own += count_own_writes(&mut updates, idx, seq, &inst.id, 0);
    }
    if let Some(idx) = by_payer.get(&None) {
        count_own_writes(&mut updates, idx, seq, &inst.id, tenants_own);
    }
    let mut queue: Vec<(Update, u64)> = retry;
    queue.extend(updates.into_iter().map(|u| (u, seq)));
    queue.sort_by_key(|(_, s)| *s);
    let mut written = 0;
    let mut again: Vec<(Update, u64)> = Vec::new();
    for (u, s) in queue {
        // Behind a failed write of the same item, wait: its guard keeps them in order.
        if again.iter().any(|(a, _)| a.key == u.key) {
            again.push((u, s));
            continue;
        }
        let (expr, names, values) = expression(&u, s, &inst.id);
        let sent = FLUSHING
            .scope(
                (),
                client
                    .update_item()
                    .table_name(table)
                    .key(keys::PK, AttributeValue::S(u.key.pk.clone()))
                    .key(keys::SK, AttributeValue::S(u.key.sk.clone()))
                    .update_expression(expr)
                    .condition_expression("attribute_not_exists(#f) OR #f < :seq")
                    .set_expression_attribute_names(Some(names))
                    .set_expression_attribute_values(Some(values))
                    .send(),
            )
            .await;
        match sent.map_err(aws_sdk_dynamodb::Error::from) {
            Ok(_) => written += 1,
            // Refused by the guard: this very update was applied by an attempt whose answer
            // was lost.
            Err(aws_sdk_dynamodb::Error::ConditionalCheckFailedException(_)) => written += 1,
            Err(e) => {
                tracing::warn!(error = %e, item = %u.key.sk, "a cost flush write failed; it is sent again with the next flush");
                again.push((u, s));
            }
        }
    }
    RETRY.lock().unwrap_or_else(PoisonError::into_inner).extend(again);
    Ok(written)
}

static STARTED: OnceLock<()> = OnceLock::new();

/// Whether this process's flusher has been started.
pub fn flusher_started() -> bool {
    STARTED.get().is_some()
}

/// A running flusher (see [`start`]).
#[derive(Debug)]
pub struct Flusher {
    handle: tokio::task::JoinHandle<()>,
    client: aws_sdk_dynamodb::Client,
    table: String,
}

/// Flushes every `interval` until `shutdown`. One flusher per process however many components
/// run in it (later calls get `None`); [`finish`] makes the last flush once the process's work
/// has stopped.
pub fn spawn_flusher(
    client: aws_sdk_dynamodb::Client,
    table: String,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) -> Option<Flusher> {
    if STARTED.set(()).is_err() {
        return None;
    }
    let (c, t) = (client.clone(), table.clone());
    let handle = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.cancelled() => return,
            }
            if let Err(e) = flush(&c, &t).await {
                tracing::warn!(error = %e, "cost flush failed");
            }
        }
    });
    Some(Flusher { handle, client, table })
}

// ---- reading -----------------------------------------------------------------------------------

/// A cost item as read back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CostItem {
    pub units: Units,
    pub unattributed: Units,
}

pub fn cost_item(item: &HashMap<String, AttributeValue>) -> CostItem {
    let n = |a: &str| item.get(a).and_then(|v| v.as_n().ok()).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    let mut c = CostItem::default();
    for l in Line::ALL {
        c.units.add(l, n(l.attr()));
        c.unattributed.add(l, n(&format!("u_{}", l.attr())));
    }
    c
}

/// Starts this process's flusher (once per process), unless `FORMBRIDGE_COST_FLUSH_SECONDS` is 0.
pub fn start(
    client: &aws_sdk_dynamodb::Client,
    resources: &crate::aws::ResourceNames,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Option<Flusher> {
    if resources.cost_flush_seconds == 0 {
        return None;
    }
    spawn_flusher(
        client.clone(),
        resources.table.clone(),
        Duration::from_secs(resources.cost_flush_seconds),
        shutdown.clone(),
    )
}

/// After shutdown, once the process's work has stopped: waits for the flusher and flushes what
/// is left.
pub async fn finish(flusher: Option<Flusher>) {
    if let Some(f) = flusher {
        let _ = f.handle.await;
        if let Err(e) = flush(&f.client, &f.table).await {
            tracing::warn!(error = %e, "the last cost flush failed");
        }
    }
}

/// For a Lambda function, which is frozen between invocations: flushes at the end of an
/// invocation once the interval has passed since the last flush. Counts of an environment that
/// is reclaimed before its next flush are lost (at most one interval's).
pub async fn flush_if_due(client: &aws_sdk_dynamodb::Client, resources: &crate::aws::ResourceNames) {
    static LAST: Mutex<Option<std::time::Instant>> = Mutex::new(None);
    if resources.cost_flush_seconds == 0 {
        return;
    }
    let due = {
        let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
        let now = std::time::Instant::now();
        let due = last.is_none_or(|l| now.duration_since(l) >= Duration::from_secs(resources.cost_flush_seconds));
        if due {
            *last = Some(now);
        }
        due
    };
    if due {
        if let Err(e) = flush(client, &resources.table).await {
            tracing::warn!(error = %e, "cost flush failed");
        }
    }
}

/// The cost items of a tenant (or the system) whose sort keys are between `a` and `b`.
async fn cost_range(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    tenant: Option<&TenantId>,
    a: String,
    b: String,
) -> Result<Vec<HashMap<String, AttributeValue>>, aws_sdk_dynamodb::Error> {
    let pk = tenant.map_or_else(|| keys::SYSTEM_COST_PK.to_owned(), keys::metrics_pk);
    client
        .query()
        .table_name(table)
        .key_condition_expression("PK = :pk AND SK BETWEEN :a AND :b")
        .expression_attribute_values(":pk", AttributeValue::S(pk))
        .expression_attribute_values(":a", AttributeValue::S(a))
        .expression_attribute_values(":b", AttributeValue::S(b))
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(aws_sdk_dynamodb::Error::from)
}

/// A tenant's (or, with `None`, the whole system's) day items from `first` to `last`.
pub async fn days(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    tenant: Option<&TenantId>,
    first: Date,
    last: Date,
) -> Result<Vec<(Date, CostItem)>, aws_sdk_dynamodb::Error> {
    let a = format!("{}{first}", keys::COST_DAY_PREFIX);
    let b = format!("{}{last}", keys::COST_DAY_PREFIX);
    let items = cost_range(client, table, tenant, a, b).await?;
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    Ok(items
        .iter()
        .filter_map(|i| {
            let sk = i.get(keys::SK)?.as_s().ok()?;
            let d = Date::parse(sk.strip_prefix(keys::COST_DAY_PREFIX)?, &fmt).ok()?;
            Some((d, cost_item(i)))
        })
        .collect())
}

/// Hour items of a tenant (or the system) whose hour starts in `[from, to)`.
pub async fn hours(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    tenant: Option<&TenantId>,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Vec<CostItem>, aws_sdk_dynamodb::Error> {
    let a = keys::system_cost_hour(from).sk;
    let b = keys::system_cost_hour(to - time::Duration::seconds(1)).sk;
    Ok(cost_range(client, table, tenant, a, b).await?.iter().map(cost_item).collect())
}

/// One line of a month's bill.
#[derive(Debug, Clone, Serialize)]
pub struct BillLine {
    pub line: Line,
    pub item: &'static str,
    pub unit: &'static str,
    pub units: f64,
    pub usd: f64,
}

impl Line {
    pub fn describe(self) -> &'static str {
        match self {
            Line::WriteSubmission => "submission writes",
            Line::WriteDelivery => "delivery record and attempt writes",
            Line::WriteMetric => "metric and cost writes",
            Line::WriteOther => "other writes (sites, destinations, health, audit)",
            Line::ReadApi => "API and dashboard reads",
            Line::ReadDelivery => "delivery reads",
            Line::ReadOther => "other reads (site lookups, profiles)",
            Line::StreamReads => "stream reads",
            Line::SqsIngest => "SQS: ingest",
            Line::SqsPersister => "SQS: persister",
            Line::SqsDelivery => "SQS: deliveries",
            Line::SqsRetry => "SQS: delivery retries",
            Line::SqsOther => "SQS: other",
            Line::Events => "EventBridge events",
        }
    }
}

/// A month's cost: so far, projected, by line and by day.
#[derive(Debug, Clone, Serialize)]
pub struct MonthCost {
    pub month: String,
    pub region: String,
    pub so_far_usd: f64,
    /// The month at the rate so far (so far / elapsed share of the month); the month's total
    /// once it is over.
    pub projected_usd: f64,
    pub lines: Vec<BillLine>,
    pub days: Vec<DayCost>,
    /// Billed units so far, by unit.
    pub units: BTreeMap<&'static str, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DayCost {
    pub date: String,
    pub usd: f64,
}

/// The first and last day of `YYYY-MM`.
pub fn month_bounds(month: &str) -> Result<(Date, Date), &'static str> {
    let bad = "a month is YYYY-MM, e.g. 2026-12";
    let (y, m) = month.split_once('-').ok_or(bad)?;
    let y: i32 = y.parse().map_err(|_| bad)?;
    let m = time::Month::try_from(m.parse::<u8>().map_err(|_| bad)?).map_err(|_| bad)?;
    let first = Date::from_calendar_date(y, m, 1).map_err(|_| bad)?;
    let last = Date::from_calendar_date(y, m, time::util::days_in_month(m, y)).map_err(|_| bad)?;
    Ok((first, last))
}

pub fn month_cost(
    month: &str,
    days: &[(Date, CostItem)],
    prices: &Prices,
    region: &str,
    now: OffsetDateTime,
) -> Result<MonthCost, &'static str> {
    let (first, last) = month_bounds(month)?;
    let mut total = Units::default();
    for (_, c) in days {
        total.merge(&c.units);
    }
    let so_far = total.dollars(prices);
    let start = first.midnight().assume_utc();
    let end = last.next_day().unwrap_or(last).midnight().assume_utc();
    let span = (end - start).as_seconds_f64();
    let elapsed = (now - start).as_seconds_f64().clamp(3600.0, span);
    let projected = if now >= end { so_far } else { so_far * span / elapsed };
    Ok(MonthCost {
        month: month.to_owned(),
        region: region.to_owned(),
        so_far_usd: so_far,
        projected_usd: projected,
        lines: Line::ALL
            .iter()
            .filter(|l| total.get(**l) > 0)
            .map(|l| BillLine {
                line: *l,
                item: l.describe(),
                unit: l.unit(),
                units: total.get(*l) as f64 / 1000.0,
                usd: total.get(*l) as f64 / 1000.0 * l.price(prices) / 1e6,
            })
            .collect(),
        days: days.iter().map(|(d, c)| DayCost { date: d.to_string(), usd: c.units.dollars(prices) }).collect(),
        units: total.by_unit(),
    })
}

// ---- cost alerts -------------------------------------------------------------------------------

/// The EventBridge source and detail type of a crossed cost threshold (schema:
/// `schemas/events/cost-threshold-crossed.schema.json`).
pub const EVENT_SOURCE: &str = "formbridge.costs";
pub const COST_THRESHOLD_CROSSED: &str = "CostThresholdCrossed";

/// Whose cost an alert is about.
pub type Scope = Option<TenantId>;

/// The scopes whose day cost items changed in a batch of stream records.
pub fn touched(records: &[crate::stream::Change]) -> std::collections::BTreeSet<Scope> {
    records
        .iter()
        .filter_map(|c| {
            let item = c.new.as_ref()?;
            let pk = item.get(keys::PK)?.as_s().ok()?;
            let sk = item.get(keys::SK)?.as_s().ok()?;
            if !sk.starts_with(keys::COST_DAY_PREFIX) {
                return None;
            }
            if pk == keys::SYSTEM_COST_PK {
                Some(None)
            } else {
                match &c.entity {
                    keys::Entity::Metrics { tenant, .. } => Some(Some(tenant.clone())),
                    _ => None,
                }
            }
        })
        .collect()
}

/// Thresholds and prices of the cost alerts.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub thresholds_usd: Vec<f64>,
    pub prices: Prices,
    pub region: String,
    pub bus: String,
    /// At most one check per scope this often, per process.
    pub every: Duration,
}

/// A crossed threshold, as published.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Crossing {
    pub alert_id: String,
    pub scope: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<TenantId>,
    pub month: String,
    pub kind: &'static str,
    pub threshold_usd: f64,
    pub so_far_usd: f64,
    pub projected_usd: f64,
    pub region: String,
    pub crossed_at: String,
}

/// Checks the scopes' month against the thresholds; each threshold crossed (by the month so far,
/// or by its projection) is recorded once under a condition and then published. A crossing
/// recorded but not published (the process died in between) is published by the next check
/// that finds it more than a minute old, so an event is never lost, and is sent twice only if a
/// process dies between publishing and marking it published; its `alert_id` is stable.
pub async fn check_alerts(
    client: &aws_sdk_dynamodb::Client,
    events: &aws_sdk_eventbridge::Client,
    table: &str,
    settings: &AlertSettings,
    scopes: &std::collections::BTreeSet<Scope>,
    now: OffsetDateTime,
) -> Result<Vec<Crossing>, aws_sdk_dynamodb::Error> {
    static LAST: Mutex<Option<HashMap<Scope, std::time::Instant>>> = Mutex::new(None);
    let month = format!("{}-{:02}", now.year(), now.month() as u8);
    let (first, last) = month_bounds(&month).expect("a month of a date");
    let mut out = Vec::new();
    for scope in scopes {
        {
            let mut l = LAST.lock().unwrap_or_else(PoisonError::into_inner);
            let map = l.get_or_insert_with(HashMap::new);
            let at = std::time::Instant::now();
            if map.get(scope).is_some_and(|t| at.duration_since(*t) < settings.every) {
                continue;
            }
            map.insert(scope.clone(), at);
        }
        let days = days(client, table, scope.as_ref(), first, last).await?;
        let bill = month_cost(&month, &days, &settings.prices, &settings.region, now).expect("a valid month");
        for &threshold in &settings.thresholds_usd {
            for (kind, value) in [("month_to_date", bill.so_far_usd), ("projected", bill.projected_usd)] {
                if value < threshold {
                    continue;
                }
                let cents = (threshold * 100.0).round() as u64;
                let key = keys::cost_alert(scope.as_ref(), &month, kind, cents);
                let crossing = Crossing {
                    alert_id: format!("{}|{}", key.pk, key.sk),
                    scope: if scope.is_some() { "tenant" } else { "system" },
                    tenant_id: scope.clone(),
                    month: month.clone(),
                    kind,
                    threshold_usd: threshold,
                    so_far_usd: bill.so_far_usd,
                    projected_usd: bill.projected_usd,
                    region: settings.region.clone(),
                    crossed_at: crate::clock::rfc3339_ms(crate::site::ms(now)),
                };
                if let Some(c) = record_and_publish(client, events, table, settings, &key, crossing, now).await? {
                    out.push(c);
                }
            }
        }
    }
    Ok(out)
}

async fn record_and_publish(
    client: &aws_sdk_dynamodb::Client,
    events: &aws_sdk_eventbridge::Client,
    table: &str,
    settings: &AlertSettings,
    key: &ItemKey,
    crossing: Crossing,
    now: OffsetDateTime,
) -> Result<Option<Crossing>, aws_sdk_dynamodb::Error> {
    let detail = serde_json::to_string(&crossing).unwrap_or_default();
    let now_ms = crate::site::ms(now);
    let created = client
        .update_item()
        .table_name(table)
        .key(keys::PK, AttributeValue::S(key.pk.clone()))
        .key(keys::SK, AttributeValue::S(key.sk.clone()))
        .update_expression("SET detail = :d, created_ms = :c, published = :f")
        .condition_expression("attribute_not_exists(PK)")
        .expression_attribute_values(":d", AttributeValue::S(detail.clone()))
        .expression_attribute_values(":c", AttributeValue::N(now_ms.to_string()))
        .expression_attribute_values(":f", AttributeValue::Bool(false))
        .return_values_on_condition_check_failure(aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld)
        .send()
        .await;
    let detail = match created.map_err(aws_sdk_dynamodb::Error::from) {
        Ok(_) => detail,
        Err(aws_sdk_dynamodb::Error::ConditionalCheckFailedException(e)) => {
            // Recorded before: publish only what a dead process left unpublished.
            let old = e.item.unwrap_or_default();
            let published = old.get("published").and_then(|v| v.as_bool().ok()).copied().unwrap_or(true);
            let created_ms =
                old.get("created_ms").and_then(|v| v.as_n().ok()).and_then(|n| n.parse::<u64>().ok()).unwrap_or(now_ms);
            if published || now_ms.saturating_sub(created_ms) < 60_000 {
                return Ok(None);
            }
            old.get("detail").and_then(|v| v.as_s().ok()).cloned().unwrap_or(detail)
        }
        Err(e) => return Err(e),
    };
    let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
        .event_bus_name(&settings.bus)
        .source(EVENT_SOURCE)
        .detail_type(COST_THRESHOLD_CROSSED)
        .detail(&detail)
        .build();
    match events.put_events().entries(entry).send().await {
        Ok(out) if out.failed_entry_count() == 0 => {}
        Ok(_) | Err(_) => {
            // Left unpublished: the next check a minute on publishes it.
            tracing::error!(alert = %key.sk, "could not publish a cost alert; it is retried by a later check");
            metrics::counter!("cost_alert_errors_total").increment(1);
            return Ok(None);
        }
    }
    client
        .update_item()
        .table_name(table)
        .key(keys::PK, AttributeValue::S(key.pk.clone()))
        .key(keys::SK, AttributeValue::S(key.sk.clone()))
        .update_expression("SET published = :t")
        .expression_attribute_values(":t", AttributeValue::Bool(true))
        .send()
        .await
        .map_err(aws_sdk_dynamodb::Error::from)?;
    metrics::counter!("cost_alerts_total").increment(1);
    tracing::warn!(alert = %key.sk, scope = %key.pk, "cost threshold crossed");
    Ok(Some(crossing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unflushed_counts_are_bounded_by_dropping_the_oldest_hours() {
        let mut usage: BTreeMap<Key, Units> = BTreeMap::new();
        let mut u = Units::default();
        u.add(Line::WriteSubmission, 1000);
        for i in 0..MAX_PENDING as i64 {
            let t = TenantId::parse(&format!("t{}", i % 1000)).unwrap();
            usage.insert((Some(t), (i / 1000) * 3600), u);
        }
        bound(&mut usage);
        assert!(usage.len() < MAX_PENDING);
        assert!(usage.keys().all(|(_, h)| *h > 0), "the oldest hour went first");
        assert_eq!(usage.len(), MAX_PENDING - 1000);
    }

    #[test]
    fn shares_add_up_exactly() {
        let payers = [(Some(TenantId::parse("a").unwrap()), 1), (Some(TenantId::parse("b").unwrap()), 1), (None, 1)];
        let before: u64 = pending().values().map(|u| u.get(Line::SqsOther)).sum();
        share(&payers, Line::SqsOther, 1000);
        let after: u64 = pending().values().map(|u| u.get(Line::SqsOther)).sum();
        assert_eq!(after - before, 1000, "333 + 333 + 334");
    }
}
