//! The delivery queue's message: which delivery, which attempt, when. Small and free of
//! submission data; the worker reads the submission when it sends.

use formbridge_shared::{DestinationId, SubmissionId, TenantId};
use serde::{Deserialize, Serialize};

/// Why an attempt happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The first attempt after fan-out, or a retry on the schedule.
    #[default]
    Scheduled,
    /// Asked for by an operator (`formbridge-admin delivery replay`).
    Replay,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Scheduled => "scheduled",
            Trigger::Replay => "replay",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryMessage {
    pub v: u8,
    pub tenant: TenantId,
    pub shard: u16,
    pub submission: SubmissionId,
    pub destination: DestinationId,
    /// The attempt this message performs (1-based, over the delivery's whole life). A message
    /// whose attempt the delivery record has already passed is stale and dropped.
    pub attempt: u16,
    /// Epoch ms when the attempt is due; the queue's delay is at most 15 minutes, so longer
    /// waits are chained.
    pub due_ms: u64,
    #[serde(default)]
    pub trigger: Trigger,
}

impl DeliveryMessage {
    pub fn body(&self) -> String {
        serde_json::to_string(self).expect("message serialises")
    }

    pub fn parse(body: &str) -> Result<Self, serde_json::Error> {
        let m: Self = serde_json::from_str(body)?;
        if m.v != 1 {
            return Err(serde::de::Error::custom(format!("unsupported version {}", m.v)));
        }
        Ok(m)
    }
}

/// The longest `DelaySeconds` SQS accepts.
pub const MAX_DELAY_S: u64 = 900;

/// The `DelaySeconds` for a message due at `due_ms`: the whole wait when it fits, else the cap
/// (the worker re-queues it for the rest).
pub fn delay_seconds(due_ms: u64, now_ms: u64) -> i32 {
    let wait = due_ms.saturating_sub(now_ms).div_ceil(1000);
    i32::try_from(wait.min(MAX_DELAY_S)).unwrap_or(900)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_waits_are_chained_in_15_minute_hops() {
        assert_eq!(delay_seconds(1_000, 5_000), 0);
        assert_eq!(delay_seconds(5_001, 0), 6);
        assert_eq!(delay_seconds(36_000_000, 0), 900);
    }

    #[test]
    fn messages_round_trip_and_versions_are_checked() {
        let m = DeliveryMessage {
            v: 1,
            tenant: TenantId::parse("acme").unwrap(),
            shard: 2,
            submission: SubmissionId::new(),
            destination: DestinationId::new(),
            attempt: 3,
            due_ms: 42,
            trigger: Trigger::Replay,
        };
        assert_eq!(DeliveryMessage::parse(&m.body()).unwrap(), m);
        let v2 = m.body().replace("\"v\":1", "\"v\":2");
        assert!(DeliveryMessage::parse(&v2).is_err());
    }
}
