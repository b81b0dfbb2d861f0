//! Delivery events on the EventBridge bus (source `formbridge.delivery`). Their `detail`
//! schemas are in `schemas/events/`. Publishing is best effort: a failure is logged and
//! counted (`delivery_event_errors_total`), never allowed to block or undo a delivery.

use serde_json::Value;

pub const SOURCE: &str = "formbridge.delivery";
pub const DELIVERY_FAILED: &str = "DeliveryFailed";
pub const DESTINATION_PAUSED: &str = "DestinationPaused";
pub const DESTINATION_DISABLED: &str = "DestinationDisabled";
pub const DESTINATION_RECOVERED: &str = "DestinationRecovered";

#[derive(Debug, Clone)]
pub struct Events {
    pub client: aws_sdk_eventbridge::Client,
    pub bus: String,
}

impl Events {
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
}

pub fn rfc3339_ms(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
