//! The queue half: pollers that receive delivery messages and hand each to the engine in its
//! own task, bounded by `DELIVERY_MAX_IN_FLIGHT` (a pack of deliveries counts once; each
//! destination's own in-flight limit still holds). A message is acknowledged (deleted) only after
//! the engine says its work is durable; on error it becomes visible again after a short
//! back-off. Acknowledgements go out in lingering batches (one DeleteMessageBatch for up to ten).
//! A delete that is late or lost is harmless: the message comes back and is dropped as stale.
//!
//! At low rates a poller waits `receive_linger` after a receive that did not fill its batch,
//! so messages gather and one request fetches several.
//!
//! One more poller watches the delivery DLQ: see [`crate::dead_letters`].

use std::sync::Arc;
use std::time::Duration;

use formbridge_shared::delivery::DeliveryMessage;
use formbridge_shared::queue::{Acker, LeaseKeeper, Received, MAX_BATCH};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::events::{InternalEvent, NotHandled};

/// Seconds a message that could not be handled waits before it is tried again.
pub(crate) const ERROR_BACKOFF_S: i32 = 10;

/// Longest wait for a batch of acknowledgements to fill. Nobody waits on a delete, so it may
/// linger longer than a receive.
const ACK_LINGER: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy)]
pub struct PollSettings {
    pub pollers: u32,
    pub max_in_flight: u32,
    pub receive_linger: Duration,
}

pub async fn run(engine: Arc<Engine>, settings: PollSettings, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(settings.max_in_flight as usize));
    let acker = engine.queue.acker(ACK_LINGER);
    // Stopped once every attempt in flight is recorded, so no lease lapses during shutdown.
    let lease_stop = CancellationToken::new();
    let leases = LeaseKeeper::start(engine.queue.clone(), lease_stop.clone());
    let mut tasks = JoinSet::new();
    for _ in 0..settings.pollers {
        let p = Poller { engine: engine.clone(), slots: slots.clone(), acker: acker.clone(), leases: leases.clone() };
        tasks.spawn(poll(p, settings.receive_linger, shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
    lease_stop.cancel();
    // Every poller is gone with its clone: flush what is left.
    acker.close().await;
}

struct Poller {
    engine: Arc<Engine>,
    slots: Arc<Semaphore>,
    acker: Acker,
    leases: LeaseKeeper,
}

async fn poll(p: Poller, linger: Duration, shutdown: CancellationToken) {
    let Poller { engine, slots, acker, leases } = p;
    let mut running = JoinSet::new();
    loop {
        // Receive only as many messages as there are free slots (at most 10 per call).
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let mut permits = vec![first];
        while permits.len() < MAX_BATCH {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let out = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = engine.queue.receive(permits.len(), Duration::from_secs(20)) => r,
        };
        let messages = match out {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "receiving delivery messages failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let partial = messages.len() < permits.len();
        for m in messages {
            let Some(permit) = permits.pop() else { break };
            let (engine, acker, leases) = (engine.clone(), acker.clone(), leases.clone());
            leases.hold(&m.receipt);
            running.spawn(async move {
                let receipt = m.receipt.clone();
                handle(&engine, m, &acker).await;
                leases.release(&receipt);
                drop(permit);
            });
        }
        drop(permits);
        while running.try_join_next().is_some() {}
        if partial && !linger.is_zero() {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(linger) => {}
            }
        }
    }
    // Let attempts in flight finish and record themselves (each is bounded by its timeout).
    while running.join_next().await.is_some() {}
}

async fn handle(engine: &Engine, m: Received, acker: &Acker) {
    let jobs = match DeliveryMessage::parse_all(&m.body) {
        Ok(jobs) => jobs,
        Err(e) => {
            // Left in place: after the redrive policy's receive count it lands in the DLQ.
            tracing::error!(error = %e, "unreadable delivery message");
            return;
        }
    };
    // A pack's deliveries are attempted together (each destination still within its own limit).
    // The message is acknowledged once every one is durable; if any failed, the whole message
    // comes back, and on that redelivery each delivery already recorded is dropped as a
    // duplicate by its record (receive count > 1), so only the unfinished ones are attempted.
    let outcomes = futures::future::join_all(jobs.iter().map(|j| engine.handle(j, m.receive_count))).await;
    let mut failed = false;
    for e in outcomes.iter().filter_map(|r| r.as_ref().err()) {
        NotHandled { error: e }.emit();
        failed = true;
    }
    if failed {
        acker.nack(m.receipt, ERROR_BACKOFF_S);
    } else if let Err(e) = acker.ack_durably(m.receipt).await {
        // The deliveries are recorded: a redelivery finds them and sends nothing again.
        tracing::warn!(error = %e, "a delivered message could not be deleted; it will come back and be found done");
    }
}
