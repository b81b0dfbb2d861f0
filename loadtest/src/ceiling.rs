//! The engine's own ceiling, measured in the same run on the same table and engine: how many
//! items per second raw BatchWriteItem calls store, and how many messages per second raw
//! SendMessageBatch calls enqueue, with items and messages of the sizes the run's traffic
//! produces. The pipeline's throughput is reported as a share of it.
//!
//! Ceiling items live under their own partition keys (`LTCEIL#<run>#<n>`), which no reader or
//! stream consumer recognises, and carry `expires_at` one hour ahead so DynamoDB's TTL removes
//! them on AWS (the local engine never expires anything; its state is in memory). Ceiling
//! messages go to a scratch queue, drained concurrently so its backlog stays small (as the
//! persister keeps the ingest queue's), and deleted at the end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry};
use formbridge_shared::aws::AwsClients;
use formbridge_shared::capacity::item_size;
use formbridge_shared::keys;
use serde::Serialize;

/// Prefix of every ceiling item's partition key.
pub const PK_PREFIX: &str = "LTCEIL#";

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Ceiling {
    pub seconds: f64,
    pub concurrency: usize,
    /// Items stored per second by raw BatchWriteItem (25 per call).
    pub batch_write_items_per_s: f64,
    pub items_written: u64,
    pub avg_item_bytes: f64,
    /// Messages enqueued per second by raw SendMessageBatch (10 per call).
    pub send_message_batch_msgs_per_s: f64,
    pub messages_sent: u64,
    pub avg_message_bytes: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum CeilingError {
    #[error("DynamoDB: {0}")]
    Dynamo(String),
    #[error("SQS: {0}")]
    Sqs(String),
}

/// Measures both ceilings for `seconds` each, `concurrency` calls in flight. `item_sizes` are
/// the sizes of the items the persister would store for the run's traffic, `bodies` the queue
/// messages ingest would send.
pub async fn measure(
    aws: &AwsClients,
    table: &str,
    run: &str,
    item_sizes: &[usize],
    bodies: &[String],
    seconds: f64,
    concurrency: usize,
) -> Result<Ceiling, CeilingError> {
    let concurrency = concurrency.max(1);
    let window = Duration::from_secs_f64(seconds);
    let (items, item_secs) = batch_writes(aws, table, run, item_sizes, window, concurrency).await?;
    let (msgs, msg_secs) = message_sends(aws, run, bodies, window, concurrency).await?;
    Ok(Ceiling {
        seconds,
        concurrency,
        batch_write_items_per_s: items as f64 / item_secs.max(1e-9),
        items_written: items,
        avg_item_bytes: item_sizes.iter().sum::<usize>() as f64 / item_sizes.len().max(1) as f64,
        send_message_batch_msgs_per_s: msgs as f64 / msg_secs.max(1e-9),
        messages_sent: msgs,
        avg_message_bytes: bodies.iter().map(String::len).sum::<usize>() as f64 / bodies.len().max(1) as f64,
    })
}

/// One ceiling item of exactly `size` bytes (DynamoDB's item-size rules) under key `n`.
pub fn item(run: &str, n: u64, size: usize, expires_at: i64) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        (keys::PK.to_owned(), AttributeValue::S(format!("{PK_PREFIX}{run}#{}", n % 64))),
        (keys::SK.to_owned(), AttributeValue::S(format!("{n:010}"))),
        (keys::TTL.to_owned(), AttributeValue::N(expires_at.to_string())),
        ("b".to_owned(), AttributeValue::B(Vec::new().into())),
    ]);
    let pad = size.saturating_sub(item_size(&item));
    // Incompressible-looking filler, so nothing downstream can shrink it.
    let filler: Vec<u8> = (0..pad as u64).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    item.insert("b".into(), AttributeValue::B(filler.into()));
    item
}

async fn batch_writes(
    aws: &AwsClients,
    table: &str,
    run: &str,
    sizes: &[usize],
    window: Duration,
    concurrency: usize,
) -> Result<(u64, f64), CeilingError> {
    let next = Arc::new(AtomicU64::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let expires = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    let sizes: Arc<Vec<usize>> = Arc::new(if sizes.is_empty() { vec![1024] } else { sizes.to_vec() });
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (db, table, run) = (aws.dynamodb.clone(), table.to_owned(), run.to_owned());
            let (next, written, sizes) = (next.clone(), written.clone(), sizes.clone());
            tokio::spawn(async move {
                while started.elapsed() < window {
                    let first = next.fetch_add(25, Ordering::Relaxed);
                    let mut requests: Vec<WriteRequest> = (first..first + 25)
                        .map(|n| {
                            let put = PutRequest::builder()
                                .set_item(Some(item(&run, n, sizes[n as usize % sizes.len()], expires)))
                                .build()
                                .expect("item set");
                            WriteRequest::builder().put_request(put).build()
                        })
                        .collect();
                    // Unprocessed items are retried at once: the ceiling counts stored items only.
                    while !requests.is_empty() {
                        let n = requests.len() as u64;
                        let out = db.batch_write_item().request_items(&table, requests).send().await.map_err(|e| {
                            CeilingError::Dynamo(aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string())
                        })?;
                        requests = out.unprocessed_items.and_then(|mut u| u.remove(&table)).unwrap_or_default();
                        written.fetch_add(n - requests.len() as u64, Ordering::Relaxed);
                    }
                }
                Ok::<(), CeilingError>(())
            })
        })
        .collect();
    for t in futures::future::join_all(tasks).await {
        t.map_err(|e| CeilingError::Dynamo(e.to_string()))??;
    }
    Ok((written.load(Ordering::Relaxed), started.elapsed().as_secs_f64()))
}

async fn message_sends(
    aws: &AwsClients,
    run: &str,
    bodies: &[String],
    window: Duration,
    concurrency: usize,
) -> Result<(u64, f64), CeilingError> {
    let sqs_err = |e: String| CeilingError::Sqs(e);
    let url = aws
        .sqs
        .create_queue()
        .queue_name(format!("formbridge-loadtest-ceiling-{run}"))
        .send()
        .await
        .map_err(|e| sqs_err(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?
        .queue_url
        .unwrap_or_default();
    let bodies: Arc<Vec<String>> = Arc::new(if bodies.is_empty() { vec!["{}".into()] } else { bodies.to_vec() });
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let senders: Vec<_> =
        (0..concurrency)
            .map(|w| {
                let (sqs, url, bodies, sent) = (aws.sqs.clone(), url.clone(), bodies.clone(), sent.clone());
                tokio::spawn(async move {
                    let mut k = w;
                    while started.elapsed() < window {
                        let entries: Vec<_> = (0..10)
                            .map(|i| {
                                k += 1;
                                SendMessageBatchRequestEntry::builder()
                                    .id(i.to_string())
                                    .message_body(&bodies[k % bodies.len()])
                                    .build()
                                    .expect("set")
                            })
                            .collect();
                        let out =
                            sqs.send_message_batch().queue_url(&url).set_entries(Some(entries)).send().await.map_err(
                                |e| CeilingError::Sqs(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()),
                            )?;
                        sent.fetch_add(out.successful.len() as u64, Ordering::Relaxed);
                    }
                    Ok::<(), CeilingError>(())
                })
            })
            .collect();
    // The drain keeps the backlog small, as the persister does on the ingest queue.
    let drain = {
        let (sqs, url) = (aws.sqs.clone(), url.clone());
        tokio::spawn(async move {
            while started.elapsed() < window {
                let Ok(out) = sqs.receive_message().queue_url(&url).max_number_of_messages(10).send().await else {
                    continue;
                };
                let entries: Vec<_> = out
                    .messages()
                    .iter()
                    .enumerate()
                    .filter_map(|(i, m)| {
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .set_receipt_handle(m.receipt_handle.clone())
                            .build()
                            .ok()
                    })
                    .collect();
                if !entries.is_empty() {
                    let _ = sqs.delete_message_batch().queue_url(&url).set_entries(Some(entries)).send().await;
                }
            }
        })
    };
    let mut result = Ok(());
    for t in futures::future::join_all(senders).await {
        if let Err(e) = t.map_err(|e| CeilingError::Sqs(e.to_string())).and_then(|r| r) {
            result = Err(e);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let _ = drain.await;
    let _ = aws.sqs.delete_queue().queue_url(&url).send().await;
    result.map(|_| (sent.load(Ordering::Relaxed), elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ceiling_item_has_exactly_the_size_asked_for() {
        for size in [200, 1024, 1025, 5_000, 16_384] {
            let it = item("abc", 12_345, size, 1_800_000_000);
            assert_eq!(item_size(&it), size);
        }
    }
}
