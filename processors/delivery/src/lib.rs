//! The delivery worker: fans each stored submission out to its tenant's destinations and
//! delivers it, signed, with every attempt recorded.
//!
//! Three loops in one process, each runnable as many instances as wanted:
//! - `fanout`: a consumer group on the table's stream (leases, checkpoints) that queues the
//!   first attempt of each new submission to each matching destination;
//! - `worker`: pollers of the delivery queue that send, record, schedule retries (the same
//!   queue, with DelaySeconds), keep destination health and the circuit breaker, and publish
//!   events;
//! - `dead_letters`: settles messages that reached the delivery DLQ as failed deliveries.
//!
//! The data model (records, attempts, messages, health, replay, history) lives in
//! `formbridge_shared::delivery`, so readers never link this crate.

mod config;
mod dead_letters;
mod engine;
mod events;
mod fanout;
pub mod lambda;
mod schedule;
use formbridge_shared::delivery::{send, ssrf};
mod worker;

use std::sync::Arc;

use formbridge_shared::aws::{AwsClients, ConfigError};
use formbridge_shared::queue::{Queue, QueueError};
use formbridge_shared::store::DataStore;
use formbridge_shared::stream::{self, DynamoStreams, LeaseTable};
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use engine::{decide, Decision, Engine, COMPONENT};
pub use lambda::{LambdaHandler, LambdaRole};
pub use schedule::Schedule;
pub use send::{Verdict, USER_AGENT};
pub use ssrf::AddressPolicy;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open the table's stream: {0}")]
    Stream(#[from] stream::ShardError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Builds the engine from the configuration.
pub async fn engine(config: &Config, aws: &AwsClients) -> Result<Arc<Engine>, DeliveryError> {
    let keyring = config.keyring.load()?;
    let mut queue = Queue::open_patiently(aws.sqs.clone(), &config.resources.delivery_queue, COMPONENT).await?;
    if config.lease_seconds > 0 {
        queue = queue.with_lease(std::time::Duration::from_secs(config.lease_seconds));
    }
    let store = DataStore::new(aws.dynamodb.clone(), config.resources.table.clone());
    let bus = events::Bus { client: aws.eventbridge.clone(), bus: config.resources.event_bus.clone() };
    let sender = send::Sender::new(ssrf::AddressPolicy { allow_loopback: config.allow_loopback });
    Ok(Arc::new(Engine::new(store, queue, bus, keyring, sender, engine::EngineSettings::from_config(config))))
}

/// Runs every loop until `shutdown`; stream leases are released and attempts in flight are
/// recorded on the way out.
pub async fn run(config: Config, aws: AwsClients, shutdown: CancellationToken) -> Result<(), DeliveryError> {
    let aws = aws.for_component("delivery");
    let costs = formbridge_shared::costs::start(&aws.dynamodb, &config.resources, &shutdown);
    let engine = engine(&config, &aws).await?;
    let dlq = Queue::open_patiently(aws.sqs.clone(), &config.resources.delivery_dlq, COMPONENT).await?;
    let streams =
        DynamoStreams::for_table_patiently(&aws.dynamodb, aws.streams.clone(), &config.resources.table).await?;
    let leases = LeaseTable {
        client: aws.dynamodb.clone(),
        table: config.resources.control_table.clone(),
        group: config.group.clone(),
    };
    let alarms = stream::Alarms { eventbridge: Some((aws.eventbridge.clone(), config.resources.event_bus.clone())) };
    let fan = Arc::new(fanout::FanOut::new(engine.clone()));
    let consumer = stream::run(streams, leases, fan, config.consumer(), alarms, shutdown.clone());
    let settings = worker::PollSettings {
        pollers: config.pollers,
        max_in_flight: config.max_in_flight,
        receive_linger: std::time::Duration::from_millis(config.receive_linger_ms),
    };
    let workers = worker::run(engine.clone(), settings, shutdown.clone());
    let dead = dead_letters::run(engine, dlq, shutdown);
    tokio::join!(consumer, workers, dead);
    formbridge_shared::costs::finish(costs).await;
    Ok(())
}

/// Settles the messages now in the delivery DLQ (what the running worker does continuously);
/// returns how many deliveries it marked failed. For tests and operators.
pub async fn settle_dead_letters(config: &Config, aws: &AwsClients) -> Result<usize, DeliveryError> {
    let engine = engine(config, aws).await?;
    let dlq = Queue::open(aws.sqs.clone(), &config.resources.delivery_dlq, COMPONENT).await?;
    let mut settled = 0;
    loop {
        let batch = dlq.receive(10, std::time::Duration::from_secs(1)).await?;
        if batch.is_empty() {
            return Ok(settled);
        }
        for m in batch {
            if let Ok(changed) = dead_letters::settle(&engine, &m).await {
                settled += usize::from(changed);
                let _ = dlq.delete(std::slice::from_ref(&m.receipt)).await;
            }
        }
    }
}
