//! What each AWS request bills, in the units AWS prices: DynamoDB write and read units, DynamoDB
//! Streams read requests, SQS requests (64 KiB chunks) and EventBridge events (64 KiB chunks).
//!
//! Every client built by [`crate::aws::AwsClients`] carries a meter that works this out from the
//! typed request and response of each operation, so every process, and every load run over it,
//! can put a dollar figure on what it did without a fixed formula. The local engine reports no
//! real consumed capacity (moto answers 1.0 for everything), so the units come from item sizes
//! by DynamoDB's published rules ([`crate::capacity`]):
//!
//! - **PutItem, BatchWriteItem puts:** the item's write units (1 per KB, rounded up), for each
//!   item processed (BatchWriteItem's `UnprocessedItems` are not billed).
//! - **UpdateItem:** the item after the update when the call asks for it back (`ALL_NEW`), else
//!   the key and the values the update sets, a lower bound (the final size is unknown to the
//!   caller). **DeleteItem, batch deletes:** 1.
//! - **TransactWriteItems:** twice each item's units.
//! - A write refused by its condition is billed as if written; a throttled attempt is not.
//! - **GetItem, BatchGetItem:** each item's read units (4 KB, half for eventually consistent
//!   reads; a missing item bills the minimum). **Query, Scan:** the returned items' total size.
//! - **Streams:** each GetRecords call is one read request unit; the other stream calls are free.
//! - **SQS:** every call is one request per 64 KiB of payload (sent bodies, or received bodies).
//! - **EventBridge:** PutEvents bills each entry per 64 KiB.
//!
//! Counted as `aws_billed_units_total{unit}` (Prometheus) and in a process-wide tally read by
//! [`snapshot`]. Read units are kept in tenths, so eventually consistent reads stay integral.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_runtime_api::client::interceptors::context::{Input, Output};
use aws_smithy_types::config_bag::{Storable, StoreReplace};

use crate::capacity::{item_size, read_units_tenths, transactional_write_units, value_size, write_units};
use crate::costs::{self, item_payer, write_line, Line};
use crate::ids::TenantId;

/// On-demand prices in dollars: the documented us-east-1 prices (check them before quoting a
/// figure for another region). The load test and the API's cost figures both use them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    pub per_million_write_units: f64,
    pub per_million_read_units: f64,
    /// DynamoDB Streams GetRecords (and other stream API) requests.
    pub per_million_stream_reads: f64,
    /// SQS requests, per 64 KiB chunk.
    pub per_million_sqs_requests: f64,
    /// EventBridge custom events, per 64 KiB chunk.
    pub per_million_events: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Self {
            per_million_write_units: 0.625,
            per_million_read_units: 0.125,
            per_million_stream_reads: 0.20,
            per_million_sqs_requests: 0.40,
            per_million_events: 1.00,
        }
    }
}

impl Prices {
    /// The built-in prices of `region`: the documented us-east-1 on-demand prices, which
    /// us-east-2 and us-west-2 charge too for these services. Other regions differ (most by
    /// 10-30%): give their prices in a file ([`PriceSettings`]).
    pub fn for_region(region: &str) -> Option<Prices> {
        matches!(region, "us-east-1" | "us-east-2" | "us-west-2").then(Prices::default)
    }
}

/// Where the dollar figures' prices come from: the region's built-in table, or a JSON file of
/// the [`Prices`] fields (`per_million_write_units`, ...) for any region.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct PriceSettings {
    /// The AWS region whose prices cost figures use (built in: us-east-1, us-east-2, us-west-2).
    #[arg(long = "price-region", env = "FORMBRIDGE_PRICE_REGION", default_value = "us-east-1")]
    pub region: String,
    /// A JSON file of prices (the fields of the built-in table), for a region not built in.
    #[arg(long = "prices-file", env = "FORMBRIDGE_PRICES_FILE")]
    pub file: Option<std::path::PathBuf>,
}

impl Default for PriceSettings {
    fn default() -> Self {
        Self { region: "us-east-1".into(), file: None }
    }
}

impl PriceSettings {
    pub fn load(&self) -> Result<Prices, crate::aws::ConfigError> {
        let err = |setting, value: &str, rule| crate::aws::ConfigError { setting, value: value.to_owned(), rule };
        match &self.file {
            Some(f) => {
                let shown = f.display().to_string();
                let text =
                    std::fs::read_to_string(f).map_err(|_| err("FORMBRIDGE_PRICES_FILE", &shown, "cannot be read"))?;
                let p: Prices = serde_json::from_str(&text).map_err(|_| {
                    err("FORMBRIDGE_PRICES_FILE", &shown, "must be a JSON object of the five per-million prices")
                })?;
                let all = [
                    p.per_million_write_units,
                    p.per_million_read_units,
                    p.per_million_stream_reads,
                    p.per_million_sqs_requests,
                    p.per_million_events,
                ];
                if all.iter().any(|x| !x.is_finite() || *x < 0.0) {
                    return Err(err("FORMBRIDGE_PRICES_FILE", &shown, "prices must be finite and not negative"));
                }
                Ok(p)
            }
            None => Prices::for_region(&self.region).ok_or_else(|| {
                err(
                    "FORMBRIDGE_PRICE_REGION",
                    &self.region,
                    "has no built-in prices (us-east-1, us-east-2, us-west-2): give FORMBRIDGE_PRICES_FILE",
                )
            }),
        }
    }
}

/// A billed unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Billed {
    WriteUnits,
    /// Read units times ten.
    ReadUnitsTenths,
    StreamReads,
    SqsRequests,
    Events,
}

impl Billed {
    pub const ALL: [Billed; 5] =
        [Billed::WriteUnits, Billed::ReadUnitsTenths, Billed::StreamReads, Billed::SqsRequests, Billed::Events];

    pub fn as_str(self) -> &'static str {
        match self {
            Billed::WriteUnits => "write_units",
            Billed::ReadUnitsTenths => "read_units_tenths",
            Billed::StreamReads => "stream_reads",
            Billed::SqsRequests => "sqs_requests",
            Billed::Events => "events",
        }
    }

    pub fn parse(s: &str) -> Option<Billed> {
        Billed::ALL.into_iter().find(|b| b.as_str() == s)
    }
}

static TALLY: Mutex<BTreeMap<Billed, u64>> = Mutex::new(BTreeMap::new());

fn record(unit: Billed, amount: u64) {
    if amount == 0 {
        return;
    }
    metrics::counter!("aws_billed_units_total", "unit" => unit.as_str()).increment(amount);
    *TALLY.lock().unwrap_or_else(PoisonError::into_inner).entry(unit).or_insert(0) += amount;
}

/// Every unit billed by this process so far, by unit name (`write_units`, ...). Counts only
/// grow: diff two snapshots.
pub fn snapshot() -> BTreeMap<String, u64> {
    TALLY.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|(k, v)| (k.as_str().to_owned(), *v)).collect()
}

/// What the request side of an operation tells about its bill, kept until its response.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pending {
    /// Write units if the write happens (or is refused by its condition).
    write_units: u64,
    /// A strongly consistent read.
    consistent: bool,
    /// BatchGetItem: consistency per table.
    consistent_tables: HashMap<String, bool>,
    /// SQS payload bytes sent.
    sqs_bytes: u64,
    /// EventBridge chunks.
    events: u64,
    /// Who pays (see [`crate::costs`]): each write with its payer, line and units.
    writes: Vec<(Option<TenantId>, Line, u64)>,
    /// A read of one partition: its tenant (`Some(None)`: a partition of no tenant).
    read_payer: Option<Option<TenantId>>,
    /// The process the client belongs to.
    component: Option<&'static str>,
    /// SQS: each message sent, with its payers (and whether a retry) and bytes.
    sqs_sent: Vec<(costs::MessagePayers, u64)>,
    /// SQS: receipt handles named by a delete or visibility change; `true`: a delete.
    receipts: Vec<String>,
    forget_receipts: bool,
    /// EventBridge: each entry's payer and chunks.
    event_payers: Vec<(Option<TenantId>, u64)>,
}

impl Storable for Pending {
    type Storer = StoreReplace<Self>;
}

fn chunks_64k(bytes: u64) -> u64 {
    bytes.div_ceil(64 * 1024).max(1)
}

fn key_and_values_size(
    key: Option<&HashMap<String, AttributeValue>>,
    values: Option<&HashMap<String, AttributeValue>>,
) -> usize {
    key.map_or(0, item_size) + values.map_or(0, |v| v.values().map(value_size).sum())
}

/// The request side: what a DynamoDB operation will bill if it succeeds, and who pays.
pub(crate) fn dynamodb_request(input: &Input, component: Option<&'static str>) -> Option<Pending> {
    use aws_sdk_dynamodb::operation::{
        batch_get_item::BatchGetItemInput, batch_write_item::BatchWriteItemInput, delete_item::DeleteItemInput,
        get_item::GetItemInput, put_item::PutItemInput, query::QueryInput, scan::ScanInput,
        transact_write_items::TransactWriteItemsInput, update_item::UpdateItemInput,
    };
    let mut p = Pending { component, ..Pending::default() };
    let empty = HashMap::new();
    if let Some(i) = input.downcast_ref::<PutItemInput>() {
        let item = i.item.as_ref().unwrap_or(&empty);
        p.write_units = write_units(item_size(item));
        p.writes.push((item_payer(item), write_line(item), p.write_units));
    } else if let Some(i) = input.downcast_ref::<UpdateItemInput>() {
        p.write_units = write_units(key_and_values_size(i.key.as_ref(), i.expression_attribute_values.as_ref()));
        let key = i.key.as_ref().unwrap_or(&empty);
        p.writes.push((item_payer(key), write_line(key), p.write_units));
    } else if let Some(i) = input.downcast_ref::<DeleteItemInput>() {
        p.write_units = 1;
        let key = i.key.as_ref().unwrap_or(&empty);
        p.writes.push((item_payer(key), write_line(key), 1));
    } else if let Some(i) = input.downcast_ref::<BatchWriteItemInput>() {
        p.writes = i.request_items.as_ref().map_or_else(Vec::new, batch_write_shares);
        p.write_units = p.writes.iter().map(|w| w.2).sum();
    } else if let Some(i) = input.downcast_ref::<TransactWriteItemsInput>() {
        for t in i.transact_items.iter().flatten() {
            let (size, key) = if let Some(put) = &t.put {
                (item_size(&put.item), &put.item)
            } else if let Some(u) = &t.update {
                (key_and_values_size(Some(&u.key), u.expression_attribute_values.as_ref()), &u.key)
            } else if let Some(d) = &t.delete {
                (0, &d.key)
            } else if let Some(c) = &t.condition_check {
                (0, &c.key)
            } else {
                (0, &empty)
            };
            let units = transactional_write_units(size);
            p.write_units += units;
            p.writes.push((item_payer(key), write_line(key), units));
        }
    } else if let Some(i) = input.downcast_ref::<GetItemInput>() {
        p.consistent = i.consistent_read == Some(true);
        p.read_payer = Some(i.key.as_ref().and_then(item_payer));
    } else if let Some(i) = input.downcast_ref::<QueryInput>() {
        p.consistent = i.consistent_read == Some(true);
        // The partition queried, when its key names a tenant (base table, GSI1, GSI2).
        p.read_payer = i
            .expression_attribute_values
            .iter()
            .flatten()
            .find_map(|(_, v)| v.as_s().ok().and_then(|s| crate::keys::tenant_of(s)))
            .map(Some);
    } else if let Some(i) = input.downcast_ref::<ScanInput>() {
        p.consistent = i.consistent_read == Some(true);
        p.read_payer = Some(None);
    } else if let Some(i) = input.downcast_ref::<BatchGetItemInput>() {
        p.consistent_tables =
            i.request_items.iter().flatten().map(|(t, k)| (t.clone(), k.consistent_read == Some(true))).collect();
    } else {
        return None;
    }
    Some(p)
}

fn batch_write_shares(
    items: &HashMap<String, Vec<aws_sdk_dynamodb::types::WriteRequest>>,
) -> Vec<(Option<TenantId>, Line, u64)> {
    items
        .values()
        .flatten()
        .filter_map(|w| match (&w.put_request, &w.delete_request) {
            (Some(put), _) => Some((item_payer(&put.item), write_line(&put.item), write_units(item_size(&put.item)))),
            (None, Some(d)) => Some((item_payer(&d.key), write_line(&d.key), 1)),
            (None, None) => None,
        })
        .collect()
}

/// Records `amount` of `unit` and shares it, as thousandths of a unit, between `payers`.
fn bill(unit: Billed, amount: u64, line: Line, payers: &[(Option<TenantId>, u64)]) {
    record(unit, amount);
    let milli = if unit == Billed::ReadUnitsTenths { amount * 100 } else { amount * 1000 };
    costs::share(payers, line, milli);
}

/// Bills writes as listed, per payer and line (`scale`: the units actually billed, when the
/// response says more than the request did).
fn bill_writes(writes: &[(Option<TenantId>, Line, u64)], billed: u64) {
    let listed: u64 = writes.iter().map(|w| w.2).sum();
    if writes.is_empty() || listed == 0 {
        bill(Billed::WriteUnits, billed, Line::WriteOther, &[(writes.first().and_then(|w| w.0.clone()), 1)]);
        return;
    }
    record(Billed::WriteUnits, billed);
    // Most writes are one item; a batch is shared by its items' own units.
    let mut by_line: BTreeMap<Line, Vec<(Option<TenantId>, u64)>> = BTreeMap::new();
    for (payer, line, units) in writes {
        by_line.entry(*line).or_default().push((payer.clone(), *units));
    }
    let mut left = billed * 1000;
    let lines: Vec<_> = by_line.into_iter().collect();
    for (n, (line, payers)) in lines.iter().enumerate() {
        let weight: u64 = payers.iter().map(|p| p.1).sum();
        let milli = if n + 1 == lines.len() { left } else { billed * 1000 * weight / listed };
        left -= milli;
        costs::share(payers, *line, milli);
    }
}

/// The response side of a DynamoDB operation: bills what it wrote or read. `refused`: the call
/// failed on its condition (billed as a write all the same).
pub(crate) fn dynamodb_response(p: &Pending, output: Option<&Output>, refused: bool) {
    use aws_sdk_dynamodb::operation::{
        batch_get_item::BatchGetItemOutput, batch_write_item::BatchWriteItemOutput, get_item::GetItemOutput,
        query::QueryOutput, scan::ScanOutput, update_item::UpdateItemOutput,
    };
    let read_line = costs::read_line(p.component);
    let Some(out) = output else {
        if refused {
            bill_writes(&p.writes, p.write_units.max(1));
        }
        return;
    };
    if let Some(o) = out.downcast_ref::<BatchWriteItemOutput>() {
        let unprocessed = o.unprocessed_items.as_ref().map_or_else(Vec::new, batch_write_shares);
        // What was written: the request's items less the unprocessed ones.
        let mut writes = p.writes.clone();
        for u in unprocessed {
            if let Some(i) = writes.iter().position(|w| *w == u) {
                writes.remove(i);
            }
        }
        let billed = writes.iter().map(|w| w.2).sum();
        bill_writes(&writes, billed);
    } else if let Some(o) = out.downcast_ref::<UpdateItemOutput>() {
        let returned = o.attributes.as_ref().map_or(0, |a| write_units(item_size(a)));
        bill_writes(&p.writes, p.write_units.max(returned));
    } else if let Some(o) = out.downcast_ref::<GetItemOutput>() {
        let payer = o.item.as_ref().and_then(item_payer).or_else(|| p.read_payer.clone().flatten());
        bill(
            Billed::ReadUnitsTenths,
            read_units_tenths(o.item.as_ref().map_or(0, item_size), p.consistent),
            read_line,
            &[(payer, 1)],
        );
    } else if let Some(o) = out.downcast_ref::<QueryOutput>() {
        bill_read_items(p, o.items.as_deref().unwrap_or_default(), read_line);
    } else if let Some(o) = out.downcast_ref::<ScanOutput>() {
        bill_read_items(p, o.items.as_deref().unwrap_or_default(), read_line);
    } else if let Some(o) = out.downcast_ref::<BatchGetItemOutput>() {
        for (table, items) in o.responses.iter().flatten() {
            let consistent = p.consistent_tables.get(table).copied().unwrap_or(false);
            for item in items {
                bill(
                    Billed::ReadUnitsTenths,
                    read_units_tenths(item_size(item), consistent),
                    read_line,
                    &[(item_payer(item), 1)],
                );
            }
        }
    } else {
        bill_writes(&p.writes, p.write_units);
    }
}

/// A Query or Scan: billed on the items' total size; paid by the partition's tenant, or shared
/// by the items' tenants by size.
fn bill_read_items(p: &Pending, items: &[HashMap<String, AttributeValue>], line: Line) {
    let size: usize = items.iter().map(item_size).sum();
    let tenths = read_units_tenths(size, p.consistent);
    match &p.read_payer {
        Some(payer) => bill(Billed::ReadUnitsTenths, tenths, line, &[(payer.clone(), 1)]),
        None => {
            let shares: Vec<(Option<TenantId>, u64)> =
                items.iter().map(|i| (item_payer(i), item_size(i).max(1) as u64)).collect();
            bill(Billed::ReadUnitsTenths, tenths, line, &shares);
        }
    }
}

/// The request side of an SQS operation: the payload it sends, and whose messages it names.
pub(crate) fn sqs_request(input: &Input, component: Option<&'static str>) -> Pending {
    use aws_sdk_sqs::operation::{
        change_message_visibility::ChangeMessageVisibilityInput,
        change_message_visibility_batch::ChangeMessageVisibilityBatchInput, delete_message::DeleteMessageInput,
        delete_message_batch::DeleteMessageBatchInput, send_message::SendMessageInput,
        send_message_batch::SendMessageBatchInput,
    };
    let mut p = Pending { component, ..Pending::default() };
    if let Some(i) = input.downcast_ref::<SendMessageInput>() {
        let body = i.message_body.as_deref().unwrap_or_default();
        p.sqs_bytes = body.len() as u64;
        p.sqs_sent.push((costs::message_payers(body), body.len() as u64));
    } else if let Some(i) = input.downcast_ref::<SendMessageBatchInput>() {
        p.sqs_bytes = i.entries.iter().flatten().map(|e| e.message_body.len() as u64).sum();
        for e in i.entries.iter().flatten() {
            p.sqs_sent.push((costs::message_payers(&e.message_body), e.message_body.len() as u64));
        }
    } else if let Some(i) = input.downcast_ref::<DeleteMessageInput>() {
        p.receipts.extend(i.receipt_handle.clone());
        p.forget_receipts = true;
    } else if let Some(i) = input.downcast_ref::<DeleteMessageBatchInput>() {
        p.receipts.extend(i.entries.iter().flatten().map(|e| e.receipt_handle.clone()));
        p.forget_receipts = true;
    } else if let Some(i) = input.downcast_ref::<ChangeMessageVisibilityInput>() {
        p.receipts.extend(i.receipt_handle.clone());
    } else if let Some(i) = input.downcast_ref::<ChangeMessageVisibilityBatchInput>() {
        p.receipts.extend(i.entries.iter().flatten().map(|e| e.receipt_handle.clone()));
    }
    p
}

/// Shares one request between messages by weight, each message between its payers.
fn sqs_shares(
    messages: &[(costs::MessagePayers, u64)],
    component: Option<&'static str>,
) -> BTreeMap<Line, Vec<(Option<TenantId>, u64)>> {
    let mut by_line: BTreeMap<Line, Vec<(Option<TenantId>, u64)>> = BTreeMap::new();
    for (payers, weight) in messages {
        let n = payers.len().max(1) as u64;
        for (payer, retry) in payers {
            // Weights in thousandths of the message's share, so packs split evenly.
            by_line
                .entry(costs::sqs_line(component, *retry))
                .or_default()
                .push((payer.clone(), weight.max(&1) * 1000 / n));
        }
    }
    by_line
}

/// The response side of an SQS call that succeeded: one request per 64 KiB sent or received.
pub(crate) fn sqs_response(p: &Pending, output: Option<&Output>) {
    use aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput;
    let received_msgs = output
        .and_then(|o| o.downcast_ref::<ReceiveMessageOutput>())
        .map(|o| o.messages.as_deref().unwrap_or_default());
    let received = received_msgs.map_or(0, |m| m.iter().map(|m| m.body.as_ref().map_or(0, |b| b.len() as u64)).sum());
    let requests = chunks_64k(p.sqs_bytes.max(received));
    // Who the request is for: the messages it sent, received, deleted or held.
    let mut messages: Vec<(costs::MessagePayers, u64)> = p.sqs_sent.clone();
    for m in received_msgs.unwrap_or_default() {
        let body = m.body.as_deref().unwrap_or_default();
        let payers = costs::message_payers(body);
        if let Some(h) = &m.receipt_handle {
            costs::remember_receipt(h, payers.clone());
        }
        messages.push((payers, body.len() as u64));
    }
    for h in &p.receipts {
        messages.push((costs::receipt_payers(h, p.forget_receipts), 1));
    }
    record(Billed::SqsRequests, requests);
    let by_line = sqs_shares(&messages, p.component);
    if by_line.is_empty() {
        // An empty long poll, a queue lookup: nobody's.
        costs::share(&[], costs::sqs_line(p.component, false), requests * 1000);
        return;
    }
    let total: u64 = by_line.values().flatten().map(|x| x.1).sum::<u64>().max(1);
    let mut left = requests * 1000;
    let n = by_line.len();
    for (i, (line, payers)) in by_line.into_iter().enumerate() {
        let w: u64 = payers.iter().map(|x| x.1).sum();
        let milli = if i + 1 == n { left } else { requests * 1000 * w / total };
        left -= milli;
        costs::share(&payers, line, milli);
    }
}

/// The request side of an EventBridge operation: PutEvents entries, per 64 KiB.
pub(crate) fn eventbridge_request(input: &Input) -> Pending {
    use aws_sdk_eventbridge::operation::put_events::PutEventsInput;
    let mut p = Pending::default();
    if let Some(i) = input.downcast_ref::<PutEventsInput>() {
        for e in i.entries.iter().flatten() {
            let bytes =
                [&e.source, &e.detail_type, &e.detail].iter().map(|s| s.as_ref().map_or(0, |s| s.len())).sum::<usize>();
            let chunks = chunks_64k(bytes as u64);
            let payer =
                e.detail.as_deref().map(costs::message_payers).and_then(|p| p.into_iter().next()).and_then(|p| p.0);
            p.events += chunks;
            p.event_payers.push((payer, chunks));
        }
    }
    p
}

pub(crate) fn eventbridge_response(p: &Pending) {
    bill(Billed::Events, p.events, Line::Events, &p.event_payers);
}

/// A Streams call: GetRecords is one read request, shared by its records' tenants.
pub(crate) fn stream_response(operation: &str, output: Option<&Output>) {
    use aws_sdk_dynamodbstreams::operation::get_records::GetRecordsOutput;
    if operation != "GetRecords" {
        return;
    }
    let payers: Vec<(Option<TenantId>, u64)> = output
        .and_then(|o| o.downcast_ref::<GetRecordsOutput>())
        .map(|o| {
            o.records()
                .iter()
                .map(|r| {
                    let pk = r
                        .dynamodb
                        .as_ref()
                        .and_then(|d| d.keys.as_ref())
                        .and_then(|k| k.get(crate::keys::PK))
                        .and_then(|v| match v {
                            aws_sdk_dynamodbstreams::types::AttributeValue::S(s) => Some(s.as_str()),
                            _ => None,
                        });
                    (pk.and_then(crate::keys::tenant_of), 1)
                })
                .collect()
        })
        .unwrap_or_default();
    bill(Billed::StreamReads, 1, Line::StreamReads, &payers);
}
