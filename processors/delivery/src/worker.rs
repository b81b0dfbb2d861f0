//! The queue half: pollers that receive delivery messages and hand each to the engine in its
//! own task, bounded by `DELIVERY_MAX_IN_FLIGHT`. A message is deleted only after the engine
//! says its work is durable; on error it becomes visible again after a short back-off.
//!
//! Deletes go out in batches of up to 10 (one DeleteMessageBatch instead of ten requests),
//! waiting at most `DELETE_LINGER` for a batch to fill. A delete that is late or lost is
//! harmless: the message comes back after the visibility timeout and is dropped unread, because
//! the delivery record has already passed its attempt number.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::message::DeliveryMessage;

/// Seconds a message that could not be handled waits before it is tried again.
const ERROR_BACKOFF_S: i32 = 10;

/// Longest wait for a batch of deletes to fill.
const DELETE_LINGER: Duration = Duration::from_millis(100);

pub async fn run(engine: Arc<Engine>, pollers: u32, max_in_flight: u32, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(max_in_flight as usize));
    let (done, handled) = mpsc::channel::<String>(max_in_flight as usize + 10);
    let deletes = tokio::spawn(deleter(engine.clone(), handled));
    let mut tasks = JoinSet::new();
    for _ in 0..pollers {
        tasks.spawn(poll(engine.clone(), slots.clone(), done.clone(), shutdown.clone()));
    }
    drop(done);
    while tasks.join_next().await.is_some() {}
    // Every poller is gone with its sender: the deleter flushes what is left and ends.
    let _ = deletes.await;
}

/// Deletes handled messages in batches.
async fn deleter(engine: Arc<Engine>, mut handled: mpsc::Receiver<String>) {
    let mut batch: Vec<String> = Vec::with_capacity(10);
    loop {
        batch.clear();
        if handled.recv_many(&mut batch, 10).await == 0 {
            return;
        }
        let fill_by = tokio::time::Instant::now() + DELETE_LINGER;
        while batch.len() < 10 {
            match tokio::time::timeout_at(fill_by, handled.recv()).await {
                Ok(Some(receipt)) => batch.push(receipt),
                Ok(None) | Err(_) => break,
            }
        }
        let entries: Vec<DeleteMessageBatchRequestEntry> = batch
            .iter()
            .enumerate()
            .map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(r).build().expect("set")
            })
            .collect();
        let r = engine
            .queue
            .sqs
            .delete_message_batch()
            .queue_url(&engine.queue.url)
            .set_entries(Some(entries))
            .send()
            .await;
        match r {
            Ok(out) if out.failed.is_empty() => {}
            Ok(out) => tracing::warn!(
                failed = out.failed.len(),
                "some handled delivery messages were not deleted; they will be seen again and dropped as stale"
            ),
            Err(e) => tracing::warn!(
                error = %aws_sdk_sqs::Error::from(e),
                "could not delete handled delivery messages; they will be seen again and dropped as stale"
            ),
        }
    }
}

async fn poll(engine: Arc<Engine>, slots: Arc<Semaphore>, done: mpsc::Sender<String>, shutdown: CancellationToken) {
    let mut running = JoinSet::new();
    loop {
        // Receive only as many messages as there are free slots (at most 10 per call).
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let mut permits = vec![first];
        while permits.len() < 10 {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let receive = engine
            .queue
            .sqs
            .receive_message()
            .queue_url(&engine.queue.url)
            .max_number_of_messages(permits.len() as i32)
            .wait_time_seconds(20)
            .send();
        let out = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = receive => r,
        };
        let messages = match out {
            Ok(o) => o.messages.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %aws_sdk_sqs::Error::from(e), "receiving delivery messages failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for m in messages {
            let Some(permit) = permits.pop() else { break };
            let (engine, done) = (engine.clone(), done.clone());
            running.spawn(async move {
                handle(&engine, m, &done).await;
                drop(permit);
            });
        }
        while running.try_join_next().is_some() {}
    }
    // Let attempts in flight finish and record themselves (each is bounded by its timeout).
    while running.join_next().await.is_some() {}
}

async fn handle(engine: &Engine, m: Message, done: &mpsc::Sender<String>) {
    let Some(receipt) = m.receipt_handle.clone() else { return };
    let body = m.body.as_deref().unwrap_or_default();
    let msg = match DeliveryMessage::parse(body) {
        Ok(msg) => msg,
        Err(e) => {
            // Left in place: after the redrive policy's receive count it lands in the DLQ.
            tracing::error!(error = %e, "unreadable delivery message");
            return;
        }
    };
    match engine.handle(&msg).await {
        Ok(()) => {
            // The deleter outlives every poller, so this only fails if it panicked.
            let _ = done.send(receipt).await;
        }
        Err(e) => {
            metrics::counter!("delivery_errors_total").increment(1);
            tracing::warn!(submission = %msg.submission, destination = %msg.destination, error = %e, "delivery message not handled; will retry");
            let _ = engine
                .queue
                .sqs
                .change_message_visibility()
                .queue_url(&engine.queue.url)
                .receipt_handle(receipt)
                .visibility_timeout(ERROR_BACKOFF_S)
                .send()
                .await;
        }
    }
}
