//! Queue record and replay. `record` drains or peeks a queue (the ingest queue, a DLQ, the
//! delivery queue) into JSON Lines, one message per line with its body, message attributes and
//! the time SQS received it. `replay` puts a file back onto a queue at its recorded pace or N
//! times faster, pacing itself against the queue's backlog: the local engine slows down in
//! proportion to the backlog, so an unpaced replay would measure the emulator, not us.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::time::Duration;

use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use base64::Engine;
use serde::{Deserialize, Serialize};

/// One recorded message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    pub body: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, Attribute>,
    /// When SQS first received it (epoch ms): the pace of a replay.
    pub sent_at_ms: u64,
}

/// A message attribute: its type and its string or base64 binary value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribute {
    pub data_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_base64: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueIoError {
    #[error("SQS: {0}")]
    Sqs(#[from] aws_sdk_sqs::Error),
    #[error("file: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {source}")]
    Line { line: usize, source: serde_json::Error },
    #[error("SQS refused {0} messages of a batch")]
    Refused(usize),
}

fn sqs<E>(e: aws_sdk_sqs::error::SdkError<E>) -> QueueIoError
where
    aws_sdk_sqs::Error: From<aws_sdk_sqs::error::SdkError<E>>,
{
    QueueIoError::Sqs(e.into())
}

pub async fn queue_url(client: &aws_sdk_sqs::Client, name: &str) -> Result<String, QueueIoError> {
    Ok(client.get_queue_url().queue_name(name).send().await.map_err(sqs)?.queue_url.unwrap_or_default())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Delete each message once it is written (and flushed) to the file.
    Drain,
    /// Leave the queue as it was: messages are hidden while the recording runs, then made
    /// visible again.
    Peek,
}

/// Records up to `max` messages of `url` into `out`; stops when the queue answers empty twice.
pub async fn record(
    client: &aws_sdk_sqs::Client,
    url: &str,
    mode: Mode,
    max: usize,
    out: &mut impl Write,
) -> Result<usize, QueueIoError> {
    let mut n = 0;
    let mut empty = 0;
    let mut peeked = Vec::new();
    while n < max && empty < 2 {
        let want = (max - n).min(10) as i32;
        let got = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(want)
            .wait_time_seconds(1)
            .visibility_timeout(if mode == Mode::Peek { 300 } else { 60 })
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(sqs)?;
        let messages = got.messages.unwrap_or_default();
        if messages.is_empty() {
            empty += 1;
            continue;
        }
        empty = 0;
        for m in &messages {
            let attributes = m
                .message_attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| {
                            let attr = Attribute {
                                data_type: v.data_type().to_owned(),
                                string: v.string_value().map(str::to_owned),
                                binary_base64: v
                                    .binary_value()
                                    .map(|b| base64::engine::general_purpose::STANDARD.encode(b.as_ref())),
                            };
                            (k.clone(), attr)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let sent_at_ms = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let r = Recorded { body: m.body().unwrap_or_default().to_owned(), attributes, sent_at_ms };
            serde_json::to_writer(&mut *out, &r).map_err(|e| QueueIoError::Io(e.into()))?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        n += messages.len();
        let handles: Vec<String> = messages.iter().filter_map(|m| m.receipt_handle().map(str::to_owned)).collect();
        match mode {
            Mode::Drain => {
                let entries = handles.iter().enumerate().map(|(i, h)| {
                    aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(h)
                        .build()
                        .expect("id and handle set")
                });
                client
                    .delete_message_batch()
                    .queue_url(url)
                    .set_entries(Some(entries.collect()))
                    .send()
                    .await
                    .map_err(sqs)?;
            }
            Mode::Peek => peeked.extend(handles),
        }
    }
    for h in peeked {
        client
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(h)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(sqs)?;
    }
    Ok(n)
}

/// Reads a recording.
pub fn read(input: impl BufRead) -> Result<Vec<Recorded>, QueueIoError> {
    let mut out = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|source| QueueIoError::Line { line: i + 1, source })?);
    }
    Ok(out)
}

/// How a replay paces itself.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// 1.0 = the recorded pace; 10.0 = ten times faster; `f64::INFINITY` = as fast as the
    /// backlog allows.
    pub speed: f64,
    /// Wait while the queue holds more than this many visible messages.
    pub max_backlog: u64,
}

async fn backlog(client: &aws_sdk_sqs::Client, url: &str) -> Result<u64, QueueIoError> {
    let a = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .map_err(sqs)?;
    Ok(a.attributes()
        .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Puts `messages` onto `url`, in batches of 10, at `pace`. Returns the time the backlog made
/// it wait.
pub async fn replay(
    client: &aws_sdk_sqs::Client,
    url: &str,
    messages: &[Recorded],
    pace: Pace,
) -> Result<Duration, QueueIoError> {
    let started = tokio::time::Instant::now();
    let first = messages.first().map_or(0, |m| m.sent_at_ms);
    let mut waited = Duration::ZERO;
    for chunk in messages.chunks(10) {
        if pace.speed.is_finite() && pace.speed > 0.0 {
            let offset = chunk[0].sent_at_ms.saturating_sub(first) as f64 / pace.speed;
            tokio::time::sleep_until(started + Duration::from_millis(offset as u64)).await;
        }
        let t = tokio::time::Instant::now();
        while backlog(client, url).await? > pace.max_backlog {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        waited += t.elapsed();
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut e = SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(&m.body);
                for (k, a) in &m.attributes {
                    let mut v = MessageAttributeValue::builder().data_type(&a.data_type);
                    if let Some(s) = &a.string {
                        v = v.string_value(s);
                    }
                    if let Some(b) = &a.binary_base64 {
                        let bytes = base64::engine::general_purpose::STANDARD.decode(b).unwrap_or_default();
                        v = v.binary_value(aws_sdk_sqs::primitives::Blob::new(bytes));
                    }
                    e = e.message_attributes(k, v.build().expect("data type set"));
                }
                e.build().expect("id and body set")
            })
            .collect();
        let out = client.send_message_batch().queue_url(url).set_entries(Some(entries)).send().await.map_err(sqs)?;
        if !out.failed.is_empty() {
            return Err(QueueIoError::Refused(out.failed.len()));
        }
    }
    Ok(waited)
}
