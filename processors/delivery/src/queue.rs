//! The delivery queue: first attempts, retries, deferrals and replays, each message with its
//! delay (at most 15 minutes; longer waits are chained by the worker).

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use crate::engine::{now_ms, EngineError};
use crate::message::{delay_seconds, DeliveryMessage};

#[derive(Debug, Clone)]
pub struct DeliveryQueue {
    pub sqs: aws_sdk_sqs::Client,
    pub url: String,
}

impl DeliveryQueue {
    pub async fn open(sqs: aws_sdk_sqs::Client, name: &str) -> Result<Self, aws_sdk_sqs::Error> {
        let out = sqs.get_queue_url().queue_name(name).send().await?;
        Ok(Self { sqs, url: out.queue_url.unwrap_or_default() })
    }

    /// Puts messages on the delivery queue, each with its delay.
    pub async fn enqueue(&self, messages: &[DeliveryMessage]) -> Result<(), EngineError> {
        let now = now_ms();
        for chunk in messages.chunks(10) {
            let entries: Vec<SendMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(m.body())
                        .delay_seconds(delay_seconds(m.due_ms, now))
                        .build()
                        .expect("id and body are set")
                })
                .collect();
            let out = self
                .sqs
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(aws_sdk_sqs::Error::from)?;
            if !out.failed.is_empty() {
                return Err(EngineError::SqsPartial(out.failed.len()));
            }
        }
        metrics::counter!("delivery_messages_enqueued_total").increment(messages.len() as u64);
        Ok(())
    }
}
