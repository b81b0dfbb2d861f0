//! Short leases on received messages, kept alive while the work lasts (`PERSISTER_LEASE_SECONDS`):
//! against the engine, a held message stays invisible well past its lease, and comes back within
//! a lease once let go, instead of after the queue's visibility timeout.

use std::time::{Duration, Instant};

use formbridge_shared::queue::{LeaseKeeper, Outgoing, Queue};
use formbridge_shared::testing::fresh_stack;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_held_message_keeps_its_lease_and_comes_back_soon_after_it_is_let_go() {
    let (aws, names, _) = fresh_stack().await;
    let aws = aws.for_component("persister");
    let lease = Duration::from_secs(6);
    let leased = Queue::open(aws.sqs.clone(), &names.ingest_queue, "persister").await.unwrap().with_lease(lease);
    // Another consumer, receiving with the queue's own visibility timeout (60 s).
    let other = Queue::open(aws.sqs.clone(), &names.ingest_queue, "persister").await.unwrap();
    leased.send_all(&[Outgoing::new("held")]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let m = loop {
        if let Some(m) = leased.receive(1, Duration::from_secs(1)).await.unwrap().pop() {
            break m;
        }
        assert!(Instant::now() < deadline, "the message never arrived");
    };
    let stop = CancellationToken::new();
    let keeper = LeaseKeeper::start(leased.clone(), stop.clone());
    keeper.hold(&m.receipt);
    // Two leases long, nobody else gets it: the keeper extended it.
    let held_until = Instant::now() + lease * 2;
    while Instant::now() < held_until {
        let got = other.receive(10, Duration::from_secs(1)).await.unwrap();
        assert!(got.is_empty(), "a held message was handed to another consumer");
    }
    assert_eq!(keeper.held(), 1);
    // Let go (as a crashed consumer would, by no longer extending): back within about a lease.
    keeper.release(&m.receipt);
    let back_by = Instant::now() + lease * 4;
    let again = loop {
        if let Some(m) = other.receive(1, Duration::from_secs(1)).await.unwrap().pop() {
            break m;
        }
        assert!(Instant::now() < back_by, "the message did not come back after its lease");
    };
    assert_eq!(again.body, "held");
    assert!(again.receive_count >= 2);
    let _ = other.delete(&[again.receipt]).await;
    stop.cancel();
    formbridge_shared::testing::assert_role_allows("persister", "PersisterRole");
}
