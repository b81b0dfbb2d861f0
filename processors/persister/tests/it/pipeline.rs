use std::collections::HashSet;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use formbridge_persister::REJECT_REASON_ATTRIBUTE;

use crate::helpers::TestStack;

#[tokio::test]
async fn n_messages_become_n_decodable_items_spread_over_shards() {
    let stack = TestStack::new(4).await;
    let messages: Vec<_> = (0..60).map(|i| stack.message([600, 2048, 4096][i % 3], i as u64)).collect();
    let bodies: Vec<_> = messages.iter().map(|m| serde_json::to_string(m).unwrap()).collect();
    stack.send_bodies(&bodies).await;

    let running = stack.start(stack.config());
    let stored = stack.wait_for_stored(60).await;
    assert_eq!(stack.wait_queue_drained().await, (0, 0), "messages left on the queue");
    let summary = running.stop().await;

    assert_eq!(stored.len(), 60);
    // Counters are in messages and SQS delivery is at least once (the engine does hand one
    // message to two concurrent receivers now and then), so they may exceed 60; items may not.
    assert!(summary.written >= 60 && summary.deleted >= 60, "{summary:?}");
    for m in &messages {
        let s = stored.iter().find(|s| s.submission_id == m.submission_id).expect("every message is stored");
        assert_eq!(s.payload, serde_json::Value::Object(m.payload.clone()), "payload decodes to what was sent");
        assert_eq!(s.expires_at, m.expires_at);
        assert_eq!(s.received_at, m.received_at);
        let expected_codec = if s.raw_size > formbridge_shared::codec::DEFAULT_THRESHOLD { "br.d2" } else { "id" };
        assert_eq!(s.codec, expected_codec);
    }
    let shards: HashSet<u16> = stored.iter().map(|s| s.shard).collect();
    assert_eq!(shards.len(), 4, "60 submissions should touch all 4 shards, got {shards:?}");
    // Compression pays: the 2 and 4 KiB text-heavy forms are stored in well under their raw size.
    let big: Vec<_> = stored.iter().filter(|s| s.raw_size > 2000).collect();
    let raw: usize = big.iter().map(|s| s.raw_size).sum();
    let kept: usize = big.iter().map(|s| s.stored_size).sum();
    assert!(kept * 10 < raw * 7, "stored {kept} of {raw} raw bytes");
}

#[tokio::test]
async fn a_redelivered_message_is_stored_once() {
    let stack = TestStack::new(2).await;
    let messages: Vec<_> = (0..12).map(|i| stack.message(1500, i)).collect();
    let bodies: Vec<_> = messages.iter().map(|m| serde_json::to_string(m).unwrap()).collect();
    // Each message twice in the first round (duplicates in one batch), then all again after the
    // first run has written them (a redelivery after a crash between write and delete).
    let doubled: Vec<_> = bodies.iter().chain(bodies.iter()).cloned().collect();
    stack.send_bodies(&doubled).await;
    let running = stack.start(stack.config());
    assert_eq!(stack.wait_for_stored(12).await.len(), 12);
    assert_eq!(stack.wait_queue_drained().await, (0, 0));
    let first: Vec<_> = stack.stored().await;
    running.stop().await;

    stack.send_bodies(&bodies).await;
    let running = stack.start(stack.config());
    assert_eq!(stack.wait_queue_drained().await, (0, 0));
    let summary = running.stop().await;
    assert!(summary.deleted >= 12, "{summary:?}");
    let second = stack.stored().await;
    assert_eq!(second.len(), 12, "a redelivery created a second submission");
    assert_eq!(first, second, "a rewrite must leave the item identical");
}

#[tokio::test]
async fn poison_messages_go_to_the_dlq_with_a_reason_and_the_rest_get_through() {
    let stack = TestStack::new(2).await;
    let mut bodies: Vec<_> = (0..15).map(|i| serde_json::to_string(&stack.message(1200, i)).unwrap()).collect();
    let mut forged = stack.message(100, 99);
    forged.shard_count = 0;
    let poison = [
        "{not json".to_string(),
        serde_json::to_string(&forged).unwrap(),
        serde_json::to_string(&stack.message(100, 98))
            .unwrap()
            .replace("\"tenant_id\":\"acme\"", "\"tenant_id\":\"acme#SUB#other\""),
    ];
    bodies.insert(3, poison[0].clone());
    bodies.insert(9, poison[1].clone());
    bodies.push(poison[2].clone());
    stack.send_bodies(&bodies).await;

    let running = stack.start(stack.config());
    assert_eq!(stack.wait_for_stored(15).await.len(), 15);
    assert_eq!(stack.wait_queue_drained().await, (0, 0));
    let summary = running.stop().await;
    // The engine now and then hands one message to two receivers (SQS is at least once), so a
    // poison message may be dead-lettered twice: counted by distinct body below.
    assert!(summary.rejected >= 3, "{summary:?}");

    let mut reasons = std::collections::BTreeMap::new();
    for _ in 0..10 {
        let out = stack
            .aws
            .sqs
            .receive_message()
            .queue_url(&stack.dlq_url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        for m in out.messages.unwrap_or_default() {
            assert!(poison.contains(&m.body().unwrap().to_string()), "DLQ holds the original body");
            let reason = m.message_attributes().unwrap()[REJECT_REASON_ATTRIBUTE].string_value().unwrap().to_string();
            reasons.insert(m.body().unwrap().to_string(), reason);
        }
        if reasons.len() >= 3 {
            break;
        }
    }
    let mut reasons: Vec<String> = reasons.into_values().collect();
    reasons.sort();
    assert_eq!(reasons, vec!["bad_shard_count", "malformed_json", "malformed_json"]);
    assert_eq!(stack.stored().await.len(), 15, "nothing of the poison was written");
}

#[tokio::test]
async fn shutdown_finishes_what_was_received_and_loses_nothing() {
    let stack = TestStack::new(3).await;
    let bodies: Vec<_> = (0..200).map(|i| serde_json::to_string(&stack.message(2048, i)).unwrap()).collect();
    stack.send_bodies(&bodies).await;

    // Stop the first instance as soon as anything is stored, mid-stream.
    let running = stack.start(stack.config());
    stack.wait_for_stored(1).await;
    let first = running.stop().await;
    assert_eq!(
        first.received,
        first.written + first.rejected + first.write_failures,
        "received messages were not all handled"
    );
    assert_eq!(first.deleted, first.written + first.rejected, "only handled messages were deleted");
    let (_, in_flight) = stack.queue_depth(&stack.queue_url).await;
    assert_eq!(in_flight, 0, "a stopped persister must not hold messages invisible");

    // Two more instances at once drain the rest.
    let a = stack.start(stack.config());
    let b = stack.start(stack.config());
    assert_eq!(stack.wait_for_stored(200).await.len(), 200);
    assert_eq!(stack.wait_queue_drained().await, (0, 0));
    let (sa, sb) = (a.stop().await, b.stop().await);
    // Exactly 200 items (checked above). The write counters may add up to more: SQS delivery is
    // at least once, and two instances can receive the same message; the rewrite is idempotent.
    assert!(first.written + sa.written + sb.written >= 200, "some message was never written");
}
