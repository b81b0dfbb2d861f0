//! The queue half: pollers that receive delivery messages and hand each to the engine in its
//! own task, bounded by `DELIVERY_MAX_IN_FLIGHT`. A message is deleted only after the engine
//! says its work is durable; on error it becomes visible again after a short back-off.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::Message;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::message::DeliveryMessage;

/// Seconds a message that could not be handled waits before it is tried again.
const ERROR_BACKOFF_S: i32 = 10;

pub async fn run(engine: Arc<Engine>, pollers: u32, max_in_flight: u32, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(max_in_flight as usize));
    let mut tasks = JoinSet::new();
    for _ in 0..pollers {
        tasks.spawn(poll(engine.clone(), slots.clone(), shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

async fn poll(engine: Arc<Engine>, slots: Arc<Semaphore>, shutdown: CancellationToken) {
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
            let engine = engine.clone();
            running.spawn(async move {
                handle(&engine, m).await;
                drop(permit);
            });
        }
        while running.try_join_next().is_some() {}
    }
    // Let attempts in flight finish and record themselves (each is bounded by its timeout).
    while running.join_next().await.is_some() {}
}

async fn handle(engine: &Engine, m: Message) {
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
            if let Err(e) =
                engine.queue.sqs.delete_message().queue_url(&engine.queue.url).receipt_handle(receipt).send().await
            {
                tracing::warn!(error = %aws_sdk_sqs::Error::from(e), "could not delete a handled delivery message; it will be seen again and dropped as stale");
            }
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
