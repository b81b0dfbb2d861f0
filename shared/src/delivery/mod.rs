//! The delivery data model, shared by the delivery worker, the aggregator, the operator's CLI
//! and the API: records and attempts with their closed sets of states, the queue message, the
//! destination health read model, replay, and the history reader. Nothing here sends HTTP.

pub mod health;
pub mod history;
pub mod message;
pub mod model;
pub mod records;
pub mod replay;
pub mod send;
pub mod ssrf;

pub use message::DeliveryMessage;
pub use model::{
    truncate_body, webhook_id, Attempt, DeliveryRecord, ErrorClass, FailureReason, RecordChange, Status, Trigger,
};
pub use records::{RecordError, Records};
