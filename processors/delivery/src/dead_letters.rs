//! The delivery DLQ's watcher. A delivery message lands there after it failed to be handled
//! `DELIVERY_MAX_RECEIVE_COUNT` times (a poison message, or a bug). Its delivery must not stay
//! pending forever, so each one is settled: the delivery is marked `failed` with reason
//! `dead_lettered` (recorded even when it had no record yet), a `DeliveryFailed` event goes on
//! the bus, `delivery_dead_lettered_total` counts it, and the message is deleted. An operator
//! redrives such deliveries with `formbridge-admin delivery replay --status failed`.
//!
//! A message that is not even readable is left in the DLQ for an operator, and counted.

use std::sync::Arc;
use std::time::Duration;

use formbridge_shared::delivery::{DeliveryMessage, FailureReason};
use formbridge_shared::keys;
use formbridge_shared::queue::{Queue, Received};
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, EngineError};
use crate::events::{DeadLettered, InternalEvent};

/// How long a dead letter that could not be settled waits before it is looked at again (s).
pub(crate) const RETRY_AFTER_S: i32 = 300;

/// How long an empty DLQ rests before the next look.
const IDLE: Duration = Duration::from_secs(60);

pub async fn run(engine: Arc<Engine>, dlq: Queue, shutdown: CancellationToken) {
    loop {
        let out = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = dlq.receive(10, Duration::from_secs(20)) => r,
        };
        let messages = match out {
            // Dead letters are rare: an empty DLQ is looked at again a minute later.
            Ok(m) if m.is_empty() => {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(IDLE) => {}
                }
                continue;
            }
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "reading the delivery DLQ failed; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        for m in messages {
            match settle(&engine, &m).await {
                Ok(settled) => {
                    DeadLettered { settled }.emit();
                    if let Err(e) = dlq.delete(std::slice::from_ref(&m.receipt)).await.remove(0) {
                        tracing::warn!(error = %e, "could not delete a settled DLQ message; it will be settled again");
                    }
                }
                Err(e) => {
                    // Unreadable, or the table is unreachable: look again in a while, not at once.
                    tracing::warn!(error = %e, "could not settle a dead-lettered message; it stays in the DLQ");
                    let _ = dlq.change_visibility(&m.receipt, RETRY_AFTER_S).await;
                }
            }
        }
    }
}

/// Marks each of the message's deliveries (one, or a pack's) failed unless it already ended.
/// Returns whether this call changed any. An unreadable message is counted and left where it is.
pub async fn settle(engine: &Engine, m: &Received) -> Result<bool, EngineError> {
    let Ok(jobs) = DeliveryMessage::parse_all(&m.body) else {
        metrics::counter!("delivery_dead_letters_unreadable_total").increment(1);
        return Err(EngineError::Submission("the dead-lettered message is not a delivery message".into()));
    };
    let mut changed = false;
    for msg in &jobs {
        let key = keys::delivery(&msg.tenant, msg.shard, &msg.submission, &msg.destination);
        let existing = engine.records.get(&key, true).await?;
        if existing.as_ref().is_some_and(|r| r.status.is_final() || r.attempts >= msg.attempt) {
            continue;
        }
        changed |= engine.fail_unsent(msg, existing.as_ref(), FailureReason::DeadLettered).await?;
    }
    Ok(changed)
}
