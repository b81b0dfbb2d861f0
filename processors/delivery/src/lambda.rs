//! The delivery worker as Lambda functions, one binary with three handlers chosen by
//! `DELIVERY_LAMBDA_HANDLER`, each calling the same engine as the long-running loops:
//!
//! - `fanout`: a DynamoDB Streams event source mapping. Queues the first attempts of each new
//!   submission, all marked `recheck`: Lambda does not say whether a batch is a retry, so the
//!   worker reads the delivery record before every first send (half a read unit each) and a
//!   repeated batch never sends twice.
//! - `worker`: an SQS mapping on the delivery queue. Sends, records, schedules retries.
//! - `dead-letters`: an SQS mapping on the delivery DLQ. Settles dead letters as failed.
//!
//! Both SQS handlers answer with partial batch responses: what is not durable is named, and a
//! message that failed is made visible again after the same back-off as in the long-running
//! worker (ChangeMessageVisibility on its receipt handle).

use std::sync::Arc;

use formbridge_shared::aws::AwsClients;
use formbridge_shared::delivery::DeliveryMessage;
use formbridge_shared::lambda::{self, DynamoDbEventResponse, SqsBatchResponse, SqsEvent, StreamEvent};
use formbridge_shared::queue::{Queue, Received};

use crate::events::{DeadLettered, InternalEvent, NotHandled};
use crate::{dead_letters, engine, fanout, worker, Config, DeliveryError, COMPONENT};

/// Which event source a delivery function serves (`DELIVERY_LAMBDA_HANDLER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LambdaRole {
    Fanout,
    Worker,
    DeadLetters,
}

#[derive(Debug)]
pub struct LambdaHandler {
    engine: Arc<engine::Engine>,
    fan: fanout::FanOut,
    dlq: Queue,
}

impl LambdaHandler {
    pub async fn new(config: &Config, aws: &AwsClients) -> Result<Self, DeliveryError> {
        let aws = aws.for_component("delivery");
        let engine = crate::engine(config, &aws).await?;
        let dlq = Queue::open(aws.sqs.clone(), &config.resources.delivery_dlq, COMPONENT).await?;
        Ok(Self { fan: fanout::FanOut::new(engine.clone()), engine, dlq })
    }

    /// `fanout`: queues the first attempts of the event's new submissions. On a failure nothing
    /// is reported done: the mapping retries the whole batch (bisecting it).
    pub async fn fan_out(&self, event: StreamEvent) -> DynamoDbEventResponse {
        let changes = lambda::changes(&event);
        if let Some(lag) = formbridge_shared::telemetry::log_metric::lag_of(changes.last().and_then(|c| c.created_s)) {
            formbridge_shared::telemetry::log_metric::stream_lag("delivery", lag);
        }
        match self.fan.fan_out(&changes, |_| true).await {
            Ok(()) => lambda::stream_response(None),
            Err(e) => {
                tracing::error!(error = %e, "fan-out failed; the batch is retried");
                lambda::stream_response(changes.first().map(|c| c.seq.as_str()))
            }
        }
    }

    /// `worker`: handles each delivery message of the event, as the long-running pollers do.
    /// A delivery attempt named by two messages of one batch (a fan-out batch that was handed
    /// over twice, so both packs arrived together) is attempted once: the later copy is done
    /// when the first is.
    pub async fn work(&self, event: SqsEvent) -> SqsBatchResponse {
        let messages = lambda::received(&event);
        let mut seen = std::collections::HashSet::new();
        let mut parsed = Vec::with_capacity(messages.len());
        for m in &messages {
            let jobs = DeliveryMessage::parse_all(&m.body).map(|jobs| {
                jobs.into_iter()
                    .filter(|j| seen.insert((j.tenant.clone(), j.shard, j.submission, j.destination, j.attempt)))
                    .collect::<Vec<_>>()
            });
            parsed.push(jobs);
        }
        let outcomes =
            futures::future::join_all(messages.iter().zip(&parsed).map(|(m, jobs)| self.work_one(m, jobs))).await;
        let mut failed = Vec::new();
        for (m, done) in messages.into_iter().zip(outcomes) {
            if !done {
                failed.push(m.id);
            }
        }
        lambda::sqs_response(failed)
    }

    async fn work_one(&self, m: &Received, jobs: &Result<Vec<DeliveryMessage>, impl std::fmt::Display>) -> bool {
        let jobs = match jobs {
            Ok(jobs) => jobs,
            Err(e) => {
                // Left in place: after the redrive policy's receive count it lands in the DLQ.
                tracing::error!(error = %e, "unreadable delivery message");
                return false;
            }
        };
        let outcomes = futures::future::join_all(jobs.iter().map(|j| self.engine.handle(j, m.receive_count))).await;
        let mut done = true;
        for e in outcomes.iter().filter_map(|r| r.as_ref().err()) {
            NotHandled { error: e }.emit();
            done = false;
        }
        if !done {
            if let Err(e) = self.engine.queue.change_visibility(&m.receipt, worker::ERROR_BACKOFF_S).await {
                tracing::warn!(error = %e, "could not shorten a failed message's visibility timeout");
            }
        }
        done
    }

    /// `dead-letters`: settles each dead letter of the event as a failed delivery.
    pub async fn settle(&self, event: SqsEvent) -> SqsBatchResponse {
        let mut failed = Vec::new();
        for m in lambda::received(&event) {
            match dead_letters::settle(&self.engine, &m).await {
                Ok(settled) => DeadLettered { settled }.emit(),
                Err(e) => {
                    tracing::warn!(error = %e, "could not settle a dead-lettered message; it stays in the DLQ");
                    let _ = self.dlq.change_visibility(&m.receipt, dead_letters::RETRY_AFTER_S).await;
                    failed.push(m.id);
                }
            }
        }
        lambda::sqs_response(failed)
    }

    /// Dispatches one invocation's JSON event to the handler of `role`.
    pub async fn invoke(
        &self,
        role: LambdaRole,
        event: serde_json::Value,
    ) -> Result<serde_json::Value, serde_json::Error> {
        Ok(match role {
            LambdaRole::Fanout => serde_json::to_value(self.fan_out(serde_json::from_value(event)?).await)?,
            LambdaRole::Worker => serde_json::to_value(self.work(serde_json::from_value(event)?).await)?,
            LambdaRole::DeadLetters => serde_json::to_value(self.settle(serde_json::from_value(event)?).await)?,
        })
    }
}
