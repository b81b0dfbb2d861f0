//! The edges where a delivery could repeat, be lost or hide: each driven on purpose.

use std::sync::Arc;
use std::time::{Duration, Instant};

use formbridge_shared::delivery::replay::Replayer;
use formbridge_shared::delivery::{FailureReason, Records, Status, Trigger};
use formbridge_shared::queue::Queue;
use formbridge_shared::SubmissionId;

use crate::harness::*;

const LIMIT: Duration = Duration::from_secs(60);

async fn settle_for(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Edge 3: a read that does not complete (here: the submission is not readable yet) leaves the
/// message for another try, instead of failing the delivery as expired.
#[tokio::test]
async fn a_submission_not_yet_readable_leaves_the_message_for_another_try() {
    let stack = Stack::new("unread").await;
    let rx = Receiver::start(None, always(200)).await;
    let (dest, _) = stack.destination(&rx.url, fast_policy(&[1]), 5_000).await;
    let (stop, worker) = stack.start(stack.config());
    let id = SubmissionId::new();
    stack.enqueue(&stack.names.delivery_queue, &stack.message(&id, &dest, 1)).await;
    settle_for(Duration::from_secs(3)).await;
    assert!(stack.history(&id).await.is_empty(), "nothing recorded, nothing failed");
    assert!(rx.received().is_empty());
    // The submission arrives: it is delivered once, and the early message is dropped when it
    // comes back (its delivery now has a record).
    stack.submit_as(id, 1).await;
    stack.wait_for(&[id], LIMIT, all_are(Status::Succeeded)).await;
    settle_for(Duration::from_secs(12)).await;
    assert_eq!(rx.received().len(), 1, "{:?}", rx.received());
    stop.cancel();
    worker.await.unwrap();
}

/// Edge 4: a next-attempt message that arrives before its predecessor is recorded waits, so the
/// history has no gap; and only one of two messages for the same attempt sends.
#[tokio::test]
async fn attempts_are_recorded_in_order_without_gaps() {
    let stack = Stack::new("gaps").await;
    let rx = Receiver::start(None, Arc::new(|n| (if n == 0 { 500 } else { 200 }, vec![], Duration::ZERO))).await;
    let (dest, _) = stack.destination(&rx.url, fast_policy(&[2]), 5_000).await;
    let id = SubmissionId::new();
    // Attempt 2's message is there before attempt 1 has even been sent.
    stack.enqueue(&stack.names.delivery_queue, &stack.message(&id, &dest, 2)).await;
    let (stop, worker) = stack.start(stack.config());
    settle_for(Duration::from_secs(2)).await;
    assert!(rx.received().is_empty(), "attempt 2 must not go before attempt 1");
    stack.submit_as(id, 2).await;
    let all = stack.wait_for(&[id], LIMIT, all_are(Status::Succeeded)).await;
    let d = &all[&id][0];
    let numbers: Vec<u16> = d.attempts.iter().map(|a| a.attempt).collect();
    let codes: Vec<u16> = d.attempts.iter().map(|a| a.status_code).collect();
    assert_eq!((numbers, codes), (vec![1, 2], vec![500, 200]));
    // The early message wakes up later and finds its attempt done.
    settle_for(Duration::from_secs(16)).await;
    assert_eq!(rx.received().len(), 2, "attempt 2 was sent once: {:?}", rx.received());
    stop.cancel();
    worker.await.unwrap();
}

/// Edge 4, the record side: the same attempt sent again after a lost record update records its
/// own outcome, and counts the sends.
#[tokio::test]
async fn an_attempt_sent_again_records_its_newer_outcome() {
    let stack = Stack::new("resend").await;
    let rx = Receiver::start(None, always(500)).await;
    let (_dest, _) = stack.destination(&rx.url, fast_policy(&[600]), 5_000).await;
    let (stop, worker) = stack.start(stack.config());
    let ids = stack.submit(1).await;
    let all = stack.wait_for(&ids, LIMIT, all_are(Status::Retrying)).await;
    stop.cancel();
    worker.await.unwrap();
    let rec = all[&ids[0]][0].record.clone().unwrap();
    let records = Records::new(stack.store.clone(), "test");
    let mut attempt = rec.first_attempt.clone().unwrap();
    attempt.attempt = 2;
    attempt.status_code = 502;
    records.put_attempt(&rec, &attempt).await.unwrap();
    attempt.status_code = 503;
    records.put_attempt(&rec, &attempt).await.unwrap();
    let h = &stack.history(&ids[0]).await[0];
    let second = h.attempts.iter().find(|a| a.attempt == 2).unwrap();
    assert_eq!((second.status_code, second.sends), (503, 2));
}

/// Edge 5: replaying a delivery that is retrying (twice, even) never sends its next attempt twice.
#[tokio::test]
async fn replaying_a_retrying_delivery_sends_its_next_attempt_once() {
    let stack = Stack::new("replay-pending").await;
    let rx = Receiver::start(None, Arc::new(|n| (if n == 0 { 500 } else { 200 }, vec![], Duration::ZERO))).await;
    stack.destination(&rx.url, fast_policy(&[3]), 5_000).await;
    let (stop, worker) = stack.start(stack.config());
    let ids = stack.submit(1).await;
    let all = stack.wait_for(&ids, LIMIT, all_are(Status::Retrying)).await;
    let rec = all[&ids[0]][0].record.clone().unwrap();
    let queue = Queue::open(stack.aws.sqs.clone(), &stack.names.delivery_queue, "test").await.unwrap();
    let replayer = Replayer { records: Records::new(stack.store.clone(), "test"), queue };
    // Two operators replay it at once; its own retry is also queued.
    assert!(replayer.replay_one(&rec).await.unwrap());
    let pending = stack.history(&ids[0]).await[0].record.clone().unwrap();
    assert_eq!(pending.status, Status::Pending);
    assert!(replayer.replay_one(&pending).await.unwrap());
    stack.wait_for(&ids, LIMIT, all_are(Status::Succeeded)).await;
    settle_for(Duration::from_secs(5)).await;
    let h = &stack.history(&ids[0]).await[0];
    assert_eq!(rx.received().len(), 2, "attempt 1 and one attempt 2: {:?}", rx.received());
    assert_eq!(h.attempts.len(), 2);
    assert_eq!(h.attempts[1].trigger, Trigger::Replay);
    stop.cancel();
    worker.await.unwrap();
}

/// Edge 6: a message that reached the delivery DLQ fails its delivery visibly, with a reason
/// and an event, instead of leaving it pending forever.
#[tokio::test]
async fn a_dead_lettered_message_fails_its_delivery_with_a_reason_and_an_event() {
    let stack = Stack::new("dlq").await;
    let rx = Receiver::start(None, always(200)).await;
    let (dest, _) = stack.destination(&rx.url, fast_policy(&[1]), 5_000).await;
    let id = SubmissionId::new();
    stack.enqueue(&stack.names.delivery_dlq, &stack.message(&id, &dest, 1)).await;
    let settled = formbridge_delivery::settle_dead_letters(&stack.config(), &stack.aws).await.unwrap();
    assert_eq!(settled, 1);
    let rec = Records::new(stack.store.clone(), "test")
        .get(
            &formbridge_shared::keys::delivery(stack.tenant(), stack.message(&id, &dest, 1).shard, &id, &dest.id),
            true,
        )
        .await
        .unwrap()
        .expect("a failed record");
    assert_eq!((rec.status, rec.reason), (Status::Failed, Some(FailureReason::DeadLettered)));
    let events = stack.events().await;
    let failed: Vec<_> = events.iter().filter(|(t, _)| t == "DeliveryFailed").collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(failed[0].1["reason"], "dead_lettered");
    assert_schema("delivery-failed.schema.json", &failed[0].1);
    // Settling again changes nothing (the DLQ is empty, and the record is final).
    assert_eq!(formbridge_delivery::settle_dead_letters(&stack.config(), &stack.aws).await.unwrap(), 0);
}

/// The other side of edge 7: a destination deleted before a submission was received never
/// gets it, though the worker's cached list still names it (the tenant's destination-set
/// version moved with the delete, so the cached list is read again).
#[tokio::test]
async fn a_destination_deleted_a_moment_ago_gets_nothing_more() {
    let stack = Stack::new("gonedest").await;
    let keep = Receiver::start(None, always(200)).await;
    let gone = Receiver::start(None, always(200)).await;
    stack.destination(&keep.url, fast_policy(&[1]), 5_000).await;
    let (doomed, _) = stack.destination(&gone.url, fast_policy(&[1]), 5_000).await;
    let mut config = stack.config();
    config.destination_cache_ms = 600_000;
    let (stop, worker) = stack.start(config);
    let warm = stack.submit(1).await;
    stack.wait_for(&warm, LIMIT, all_are(Status::Succeeded)).await;
    assert_eq!(gone.received().len(), 1);
    stack.store.delete_destination(stack.tenant(), &doomed.id, time::OffsetDateTime::now_utc()).await.unwrap();
    let ids = stack.submit(2).await;
    let started = Instant::now();
    while keep.received().len() < 3 {
        assert!(started.elapsed() < LIMIT, "the remaining destination never got the submissions");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got: Vec<String> = keep.received().iter().map(|r| r.submission_id.clone()).collect();
    assert!(ids.iter().all(|id| got.contains(&id.to_string())), "{got:?}");
    assert_eq!(gone.received().len(), 1, "the deleted destination got a submission received after its delete");
    stop.cancel();
    worker.await.unwrap();
}

/// Edge 7: a destination created before a submission was received gets it, whatever the
/// worker's destination cache holds.
#[tokio::test]
async fn a_destination_created_a_moment_ago_gets_the_next_submission() {
    let stack = Stack::new("newdest").await;
    let first = Receiver::start(None, always(200)).await;
    stack.destination(&first.url, fast_policy(&[1]), 5_000).await;
    let mut config = stack.config();
    config.destination_cache_ms = 600_000;
    let (stop, worker) = stack.start(config);
    let warm = stack.submit(1).await;
    stack.wait_for(&warm, LIMIT, all_are(Status::Succeeded)).await;
    // The cache now holds one destination; a second is created, then a submission arrives.
    let second = Receiver::start(None, always(200)).await;
    stack.destination(&second.url, fast_policy(&[1]), 5_000).await;
    let ids = stack.submit(1).await;
    let started = Instant::now();
    while second.received().is_empty() {
        assert!(started.elapsed() < LIMIT, "the new destination never got the submission");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(second.received()[0].submission_id, ids[0].to_string());
    stop.cancel();
    worker.await.unwrap();
}

/// A pack (several deliveries in one queue message) is deleted only when every delivery in it is
/// durable. Here one of two cannot be sent yet (its submission is not readable): the delivery
/// that could is sent and recorded, the message comes back whole, and on its return the recorded
/// delivery is dropped as a duplicate while the other is sent, each exactly once.
#[tokio::test]
async fn a_pack_comes_back_whole_and_only_its_unfinished_deliveries_are_sent() {
    let stack = Stack::new("pack").await;
    let rx = Receiver::start(None, always(200)).await;
    let (dest, _) = stack.destination(&rx.url, fast_policy(&[1]), 5_000).await;
    // The destination takes another form only, so the fan-out queues nothing of its own for
    // these submissions: whatever reaches the receiver came through the pack.
    let now = time::OffsetDateTime::now_utc();
    let dest = stack
        .store
        .update_destination(stack.tenant(), &dest.id, &stack.keyring, now, "destination.updated", |d, _| {
            d.forms = vec![formbridge_shared::FormId::parse("another-form").unwrap()]
        })
        .await
        .unwrap();
    let (ready, late) = (SubmissionId::new(), SubmissionId::new());
    // `ready` travels inline; `late` must be read from the table, where it is not yet.
    let mut a = stack.message(&ready, &dest, 1);
    a.sub = formbridge_shared::delivery::message::InlineSubmission::from_item(&stack.stored_item(ready, 1)).unwrap();
    let b = stack.message(&late, &dest, 1);
    let packed = formbridge_shared::delivery::DeliveryMessage::pack(&[a, b], 0);
    assert_eq!(packed.len(), 1, "both in one queue message");
    let q = Queue::open(stack.aws.sqs.clone(), &stack.names.delivery_queue, "test").await.unwrap();
    q.send_all(&[formbridge_shared::queue::Outgoing::new(packed[0].0.clone())]).await.unwrap();
    let (stop, worker) = stack.start(stack.config());
    stack.wait_for(&[ready], LIMIT, all_are(Status::Succeeded)).await;
    assert!(stack.history(&late).await.is_empty(), "nothing recorded for the unreadable one");
    // The submission arrives; only the pack, back after the worker's back-off (10 s), can send
    // it: a pack acknowledged part-way would lose it.
    stack.submit_as(late, 2).await;
    stack.wait_for(&[late], LIMIT, all_are(Status::Succeeded)).await;
    settle_for(Duration::from_secs(14)).await;
    let got = rx.received();
    let count = |id: &SubmissionId| got.iter().filter(|r| r.submission_id == id.to_string()).count();
    assert_eq!((count(&ready), count(&late)), (1, 1), "each delivery sent once: {got:?}");
    stop.cancel();
    worker.await.unwrap();
}
