//! The delivery worker: fans each stored submission out to its tenant's destinations and
//! delivers it, signed, with every attempt recorded.
//!
//! Two halves in one process, each runnable as many instances as wanted:
//! - `fanout`: a consumer group on the table's stream (leases, checkpoints) that creates the
//!   delivery records of each new submission and queues their first attempts;
//! - `worker`: pollers of the delivery queue that send, record, schedule retries (the same
//!   queue, with DelaySeconds), keep destination health and the circuit breaker, and publish
//!   events.
//!
//! `replay` is used by `formbridge-admin delivery replay`.

pub mod config;
pub mod engine;
pub mod events;
pub mod fanout;
pub mod health;
pub mod message;
pub mod queue;
pub mod record;
pub mod replay;
pub mod schedule;
pub mod send;
pub mod ssrf;
pub mod worker;

use std::sync::Arc;

use formbridge_shared::aws::{AwsClients, ConfigError};
use formbridge_shared::store::DataStore;
use formbridge_shared::stream::{self, DynamoStreams, LeaseTable};
use tokio_util::sync::CancellationToken;

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open the table's stream: {0}")]
    Stream(#[from] stream::ShardError),
    #[error("cannot find the delivery queue {name}: {source}")]
    Queue { name: String, source: aws_sdk_sqs::Error },
}

/// Builds the engine from the configuration.
pub async fn engine(config: &Config, aws: &AwsClients) -> Result<Arc<engine::Engine>, DeliveryError> {
    let keyring = config.keyring.load()?;
    let queue = queue::DeliveryQueue::open(aws.sqs.clone(), &config.resources.delivery_queue)
        .await
        .map_err(|source| DeliveryError::Queue { name: config.resources.delivery_queue.clone(), source })?;
    let store = DataStore::new(aws.dynamodb.clone(), config.resources.table.clone());
    let events = events::Events { client: aws.eventbridge.clone(), bus: config.resources.event_bus.clone() };
    let sender = send::Sender::new(ssrf::AddressPolicy { allow_loopback: config.allow_loopback });
    Ok(Arc::new(engine::Engine::new(
        store,
        queue,
        events,
        keyring,
        sender,
        engine::EngineSettings::from_config(config),
    )))
}

/// Runs both halves until `shutdown`; stream leases are released and attempts in flight are
/// recorded on the way out.
pub async fn run(config: Config, aws: AwsClients, shutdown: CancellationToken) -> Result<(), DeliveryError> {
    let engine = engine(&config, &aws).await?;
    let streams = DynamoStreams::for_table(&aws.dynamodb, aws.streams.clone(), &config.resources.table).await?;
    let leases = LeaseTable {
        client: aws.dynamodb.clone(),
        table: config.resources.control_table.clone(),
        group: config.group.clone(),
    };
    let alarms = stream::Alarms { eventbridge: Some((aws.eventbridge.clone(), config.resources.event_bus.clone())) };
    let fan = Arc::new(fanout::FanOut { engine: engine.clone() });
    let consumer = stream::run(streams, leases, fan, config.consumer(), alarms, shutdown.clone());
    let workers = worker::run(engine, config.pollers, config.max_in_flight, shutdown);
    tokio::join!(consumer, workers);
    Ok(())
}
