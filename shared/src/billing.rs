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

/// On-demand prices in dollars: the documented us-east-1 prices (check them before quoting a
/// figure for another region). The load test and the API's cost figures both use them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
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

/// The request side: what a DynamoDB operation will bill if it succeeds.
pub(crate) fn dynamodb_request(input: &Input) -> Option<Pending> {
    use aws_sdk_dynamodb::operation::{
        batch_get_item::BatchGetItemInput, batch_write_item::BatchWriteItemInput, delete_item::DeleteItemInput,
        get_item::GetItemInput, put_item::PutItemInput, query::QueryInput, scan::ScanInput,
        transact_write_items::TransactWriteItemsInput, update_item::UpdateItemInput,
    };
    let mut p = Pending::default();
    if let Some(i) = input.downcast_ref::<PutItemInput>() {
        p.write_units = write_units(i.item.as_ref().map_or(0, item_size));
    } else if let Some(i) = input.downcast_ref::<UpdateItemInput>() {
        p.write_units = write_units(key_and_values_size(i.key.as_ref(), i.expression_attribute_values.as_ref()));
    } else if input.downcast_ref::<DeleteItemInput>().is_some() {
        p.write_units = 1;
    } else if let Some(i) = input.downcast_ref::<BatchWriteItemInput>() {
        p.write_units = i.request_items.as_ref().map_or(0, batch_write_units);
    } else if let Some(i) = input.downcast_ref::<TransactWriteItemsInput>() {
        p.write_units = i
            .transact_items
            .iter()
            .flatten()
            .map(|t| {
                let size = if let Some(put) = &t.put {
                    item_size(&put.item)
                } else if let Some(u) = &t.update {
                    key_and_values_size(Some(&u.key), u.expression_attribute_values.as_ref())
                } else {
                    0
                };
                transactional_write_units(size)
            })
            .sum();
    } else if let Some(i) = input.downcast_ref::<GetItemInput>() {
        p.consistent = i.consistent_read == Some(true);
    } else if let Some(i) = input.downcast_ref::<QueryInput>() {
        p.consistent = i.consistent_read == Some(true);
    } else if let Some(i) = input.downcast_ref::<ScanInput>() {
        p.consistent = i.consistent_read == Some(true);
    } else if let Some(i) = input.downcast_ref::<BatchGetItemInput>() {
        p.consistent_tables =
            i.request_items.iter().flatten().map(|(t, k)| (t.clone(), k.consistent_read == Some(true))).collect();
    } else {
        return None;
    }
    Some(p)
}

fn batch_write_units(items: &HashMap<String, Vec<aws_sdk_dynamodb::types::WriteRequest>>) -> u64 {
    items
        .values()
        .flatten()
        .map(|w| match &w.put_request {
            Some(put) => write_units(item_size(&put.item)),
            None => 1,
        })
        .sum()
}

/// The response side of a DynamoDB operation: bills what it wrote or read. `refused`: the call
/// failed on its condition (billed as a write all the same).
pub(crate) fn dynamodb_response(p: &Pending, output: Option<&Output>, refused: bool) {
    use aws_sdk_dynamodb::operation::{
        batch_get_item::BatchGetItemOutput, batch_write_item::BatchWriteItemOutput, get_item::GetItemOutput,
        query::QueryOutput, scan::ScanOutput, update_item::UpdateItemOutput,
    };
    let Some(out) = output else {
        if refused {
            record(Billed::WriteUnits, p.write_units.max(1));
        }
        return;
    };
    if let Some(o) = out.downcast_ref::<BatchWriteItemOutput>() {
        let unprocessed = o.unprocessed_items.as_ref().map_or(0, batch_write_units);
        record(Billed::WriteUnits, p.write_units.saturating_sub(unprocessed));
    } else if let Some(o) = out.downcast_ref::<UpdateItemOutput>() {
        let returned = o.attributes.as_ref().map_or(0, |a| write_units(item_size(a)));
        record(Billed::WriteUnits, p.write_units.max(returned));
    } else if let Some(o) = out.downcast_ref::<GetItemOutput>() {
        record(Billed::ReadUnitsTenths, read_units_tenths(o.item.as_ref().map_or(0, item_size), p.consistent));
    } else if let Some(o) = out.downcast_ref::<QueryOutput>() {
        let size = o.items.iter().flatten().map(item_size).sum();
        record(Billed::ReadUnitsTenths, read_units_tenths(size, p.consistent));
    } else if let Some(o) = out.downcast_ref::<ScanOutput>() {
        let size = o.items.iter().flatten().map(item_size).sum();
        record(Billed::ReadUnitsTenths, read_units_tenths(size, p.consistent));
    } else if let Some(o) = out.downcast_ref::<BatchGetItemOutput>() {
        for (table, items) in o.responses.iter().flatten() {
            let consistent = p.consistent_tables.get(table).copied().unwrap_or(false);
            for item in items {
                record(Billed::ReadUnitsTenths, read_units_tenths(item_size(item), consistent));
            }
        }
    } else {
        record(Billed::WriteUnits, p.write_units);
    }
}

/// The request side of an SQS operation: the payload it sends.
pub(crate) fn sqs_request(input: &Input) -> Pending {
    use aws_sdk_sqs::operation::{send_message::SendMessageInput, send_message_batch::SendMessageBatchInput};
    let mut p = Pending::default();
    if let Some(i) = input.downcast_ref::<SendMessageInput>() {
        p.sqs_bytes = i.message_body.as_ref().map_or(0, |b| b.len() as u64);
    } else if let Some(i) = input.downcast_ref::<SendMessageBatchInput>() {
        p.sqs_bytes = i.entries.iter().flatten().map(|e| e.message_body.len() as u64).sum();
    }
    p
}

/// The response side of an SQS call that succeeded: one request per 64 KiB sent or received.
pub(crate) fn sqs_response(p: &Pending, output: Option<&Output>) {
    use aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput;
    let received = output
        .and_then(|o| o.downcast_ref::<ReceiveMessageOutput>())
        .map_or(0, |o| o.messages.iter().flatten().map(|m| m.body.as_ref().map_or(0, |b| b.len() as u64)).sum());
    record(Billed::SqsRequests, chunks_64k(p.sqs_bytes.max(received)));
}

/// The request side of an EventBridge operation: PutEvents entries, per 64 KiB.
pub(crate) fn eventbridge_request(input: &Input) -> Pending {
    use aws_sdk_eventbridge::operation::put_events::PutEventsInput;
    let mut p = Pending::default();
    if let Some(i) = input.downcast_ref::<PutEventsInput>() {
        p.events = i
            .entries
            .iter()
            .flatten()
            .map(|e| {
                let bytes = [&e.source, &e.detail_type, &e.detail]
                    .iter()
                    .map(|s| s.as_ref().map_or(0, |s| s.len()))
                    .sum::<usize>();
                chunks_64k(bytes as u64)
            })
            .sum();
    }
    p
}

pub(crate) fn eventbridge_response(p: &Pending) {
    record(Billed::Events, p.events);
}

pub(crate) fn stream_response(operation: &str) {
    if operation == "GetRecords" {
        record(Billed::StreamReads, 1);
    }
}
