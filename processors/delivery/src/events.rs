//! What the worker tells the world, in two kinds:
//!
//! - **Bus events** on EventBridge (source `formbridge.delivery`), for tenants' and operators'
//!   automation. Their `detail` schemas are in `schemas/events/`. Publishing is best effort: a
//!   failure is logged and counted (`delivery_event_errors_total`), never allowed to block or
//!   undo a delivery.
//! - **Internal events**: each a named type whose `emit` both logs and counts, so a log line and
//!   its metric can never drift apart (the pattern of vector's internal events). The ids of the
//!   delivery come from the enclosing `tracing` span, not from each line.

use std::time::Duration;

use formbridge_shared::clock::rfc3339_ms;
use formbridge_shared::delivery::{DeliveryRecord, FailureReason};
use serde_json::{json, Value};

pub const SOURCE: &str = "formbridge.delivery";
pub const DELIVERY_FAILED: &str = "DeliveryFailed";
pub const DESTINATION_PAUSED: &str = "DestinationPaused";
pub const DESTINATION_DISABLED: &str = "DestinationDisabled";
pub const DESTINATION_RECOVERED: &str = "DestinationRecovered";

#[derive(Debug, Clone)]
pub struct Bus {
    pub client: aws_sdk_eventbridge::Client,
    pub bus: String,
}

impl Bus {
    pub async fn publish(&self, detail_type: &'static str, detail: Value) {
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(SOURCE)
            .detail_type(detail_type)
            .detail(detail.to_string())
            .build();
        let ok = match self.client.put_events().entries(entry).send().await {
            Ok(out) => out.failed_entry_count() == 0,
            Err(e) => {
                tracing::error!(event = detail_type, error = %aws_sdk_eventbridge::Error::from(e), "could not publish a delivery event");
                false
            }
        };
        if ok {
            metrics::counter!("delivery_events_total", "type" => detail_type).increment(1);
        } else {
            metrics::counter!("delivery_event_errors_total", "type" => detail_type).increment(1);
        }
    }

    /// `DeliveryFailed`: a delivery reached `failed`.
    pub async fn delivery_failed(&self, r: &DeliveryRecord, at_ms: u64) {
        let detail = json!({
            "tenant_id": r.tenant,
            "destination_id": r.destination,
            "submission_id": r.submission,
            "webhook_id": r.webhook_id(),
            "attempts": r.attempts,
            "last_status": r.last_status.unwrap_or(0),
            "last_error": r.last_error,
            "reason": r.reason,
            "failed_at": rfc3339_ms(at_ms),
        });
        self.publish(DELIVERY_FAILED, detail).await;
    }
}

/// A named event of the worker's own: logs and counts in one place.
pub trait InternalEvent {
    fn emit(self);
}

/// Why a message went back to the queue instead of being sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeferReason {
    /// Due more than 15 minutes out: chained in hops.
    Chained,
    /// The destination is paused (circuit breaker open).
    Paused,
    /// The destination has its maximum attempts in flight here.
    Busy,
    /// The previous attempt is not recorded yet (its worker crashed, or its record is late).
    Early,
    /// Another worker holds this attempt's claim.
    Claimed,
}

impl DeferReason {
    fn as_str(self) -> &'static str {
        match self {
            DeferReason::Chained => "chained",
            DeferReason::Paused => "paused",
            DeferReason::Busy => "busy",
            DeferReason::Early => "early",
            DeferReason::Claimed => "claimed",
        }
    }
}

#[derive(Debug)]
pub struct Deferred {
    pub why: DeferReason,
    pub wait: Duration,
}

impl InternalEvent for Deferred {
    fn emit(self) {
        tracing::debug!(why = self.why.as_str(), wait_ms = self.wait.as_millis() as u64, "attempt deferred");
        metrics::counter!("delivery_deferred_total", "why" => self.why.as_str()).increment(1);
    }
}

/// A message whose attempt the record has already passed (or a duplicate first attempt).
#[derive(Debug)]
pub struct StaleMessage;

impl InternalEvent for StaleMessage {
    fn emit(self) {
        tracing::debug!("stale delivery message dropped");
        metrics::counter!("delivery_stale_messages_total").increment(1);
    }
}

#[derive(Debug)]
pub struct AttemptSent {
    pub outcome: &'static str,
    pub status: u16,
    pub latency: Duration,
}

impl InternalEvent for AttemptSent {
    fn emit(self) {
        tracing::debug!(
            outcome = self.outcome,
            status = self.status,
            latency_ms = self.latency.as_millis() as u64,
            "attempt sent"
        );
        metrics::counter!("delivery_attempts_total", "outcome" => self.outcome).increment(1);
        metrics::histogram!("delivery_attempt_seconds").record(self.latency.as_secs_f64());
    }
}

#[derive(Debug)]
pub struct DeliveryFailed {
    pub reason: FailureReason,
}

impl InternalEvent for DeliveryFailed {
    fn emit(self) {
        tracing::info!(reason = self.reason.as_str(), "delivery failed");
        formbridge_shared::telemetry::log_metric::emit(formbridge_shared::telemetry::log_metric::DELIVERY_FAILED, 1);
        metrics::counter!("delivery_failed_total", "reason" => self.reason.as_str()).increment(1);
    }
}

/// Two sends of the same first attempt (a duplicate message raced its original).
#[derive(Debug)]
pub struct DuplicateSend;

impl InternalEvent for DuplicateSend {
    fn emit(self) {
        tracing::warn!("a first attempt was sent twice; both sends are recorded");
        metrics::counter!("delivery_duplicate_sends_total").increment(1);
    }
}

/// A message the worker could not handle; it comes back after a short back-off.
#[derive(Debug)]
pub struct NotHandled<'a> {
    pub error: &'a crate::engine::EngineError,
}

impl InternalEvent for NotHandled<'_> {
    fn emit(self) {
        tracing::warn!(error = %self.error, "delivery message not handled; will retry");
        metrics::counter!("delivery_errors_total").increment(1);
    }
}

/// A message from the delivery DLQ, settled as a failed delivery.
#[derive(Debug)]
pub struct DeadLettered {
    pub settled: bool,
}

impl InternalEvent for DeadLettered {
    fn emit(self) {
        tracing::error!(settled = self.settled, "a delivery message reached the dead-letter queue");
        metrics::counter!("delivery_dead_lettered_total").increment(1);
    }
}
