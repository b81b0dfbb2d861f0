//! Sending dead letters back to the ingest queue, against the local engine.

use std::time::Duration;

use formbridge_shared::queue::{redrive, Outgoing, Queue};
use formbridge_shared::submission::{dead_letter_reason, REJECT_REASON_ATTRIBUTE, REPEATED_FAILURES};
use formbridge_shared::testing::fresh_stack;

async fn drain(q: &Queue) -> Vec<String> {
    let mut bodies = Vec::new();
    loop {
        let got = q.receive(10, Duration::from_secs(1)).await.unwrap();
        if got.is_empty() {
            break;
        }
        q.delete(&got.iter().map(|m| m.receipt.clone()).collect::<Vec<_>>()).await;
        bodies.extend(got.into_iter().map(|m| m.body));
    }
    bodies.sort();
    bodies
}

/// Messages the redrive policy moved (no reason) go back by default; messages the persister
/// rejected stay until asked for by reason, and are visible again at once, untouched.
#[tokio::test]
async fn redrive_moves_what_failed_repeatedly_and_leaves_the_rejected() {
    let (aws, names, _) = fresh_stack().await;
    let dlq = Queue::open(aws.sqs.clone(), &names.ingest_dlq, "admin").await.unwrap();
    let ingest = Queue::open(aws.sqs.clone(), &names.ingest_queue, "admin").await.unwrap();
    let mut letters: Vec<Outgoing> = (0..13).map(|i| Outgoing::new(format!("{{\"failed\":{i:02}}}"))).collect();
    letters.push(Outgoing::new("not json").attribute(REJECT_REASON_ATTRIBUTE, "malformed_message"));
    letters.push(Outgoing::new("{\"site\":\"gone\"}").attribute(REJECT_REASON_ATTRIBUTE, "unknown_site"));
    dlq.send_all(&letters).await.unwrap();

    let done = redrive(&dlq, &ingest, dead_letter_reason, |r| r == REPEATED_FAILURES, usize::MAX).await.unwrap();
    assert_eq!(done.moved, 13, "{done:?}");
    assert_eq!(done.left.get("malformed_message"), Some(&1), "{done:?}");
    assert_eq!(done.left.get("unknown_site"), Some(&1), "{done:?}");
    let expected: Vec<String> = (0..13).map(|i| format!("{{\"failed\":{i:02}}}")).collect();
    assert_eq!(drain(&ingest).await, expected, "each moved once, body unchanged");

    // The rejected two are visible again now (not after the hold), reasons intact; a second
    // run for one reason moves exactly that one.
    let left = dlq.peek(10).await.unwrap();
    assert_eq!(left.len(), 2, "{left:?}");
    let again = redrive(&dlq, &ingest, dead_letter_reason, |r| r == "unknown_site", 5).await.unwrap();
    assert_eq!(again.moved, 1, "{again:?}");
    assert_eq!(drain(&ingest).await, ["{\"site\":\"gone\"}"]);
    let rest = dlq.peek(10).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(dead_letter_reason(&rest[0]), "malformed_message");
}

/// `max` bounds the moves.
#[tokio::test]
async fn redrive_stops_at_max() {
    let (aws, names, _) = fresh_stack().await;
    let dlq = Queue::open(aws.sqs.clone(), &names.ingest_dlq, "admin").await.unwrap();
    let ingest = Queue::open(aws.sqs.clone(), &names.ingest_queue, "admin").await.unwrap();
    dlq.send_all(&(0..5).map(|i| Outgoing::new(format!("{i}"))).collect::<Vec<_>>()).await.unwrap();
    let done = redrive(&dlq, &ingest, dead_letter_reason, |_| true, 3).await.unwrap();
    assert_eq!(done.moved, 3);
    assert_eq!(drain(&ingest).await.len(), 3);
    assert_eq!(drain(&dlq).await.len(), 2);
}
