//! Recording a queue and replaying the file onto another queue reproduces its contents
//! exactly: bodies and message attributes, nothing lost, nothing doubled.

use std::collections::BTreeMap;

use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use formbridge_loadtest::queue_io::{self, Mode, Pace, Recorded};

async fn queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.create_queue().queue_name(name).send().await.unwrap().queue_url.unwrap()
}

fn key(r: &Recorded) -> String {
    format!("{}|{:?}", r.body, r.attributes)
}

fn multiset(rs: &[Recorded]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in rs {
        *m.entry(key(r)).or_default() += 1;
    }
    m
}

#[tokio::test]
async fn record_and_replay_round_trip_a_queue_exactly() {
    let aws = formbridge_shared::testing::local_engine().await;
    let names = formbridge_shared::testing::unique_names();
    let a = queue(&aws.sqs, &format!("{}-a", names.ingest_queue)).await;
    let b = queue(&aws.sqs, &format!("{}-b", names.ingest_queue)).await;

    const N: usize = 25;
    for chunk in (0..N).collect::<Vec<_>>().chunks(10) {
        let entries = chunk
            .iter()
            .map(|i| {
                let mut e = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(format!("{{\"n\":{i},\"text\":\"héllo \\\"quoted\\\"\"}}"));
                if i % 3 == 0 {
                    e = e.message_attributes(
                        "formbridge-reject-reason",
                        MessageAttributeValue::builder()
                            .data_type("String")
                            .string_value(format!("r{i}"))
                            .build()
                            .unwrap(),
                    );
                }
                if i % 5 == 0 {
                    e = e.message_attributes(
                        "blob",
                        MessageAttributeValue::builder()
                            .data_type("Binary")
                            .binary_value(aws_sdk_sqs::primitives::Blob::new(vec![0u8, 255, *i as u8]))
                            .build()
                            .unwrap(),
                    );
                }
                e.build().unwrap()
            })
            .collect();
        aws.sqs.send_message_batch().queue_url(&a).set_entries(Some(entries)).send().await.unwrap();
    }

    // Peek leaves the queue as it was.
    let mut peeked = Vec::new();
    assert_eq!(queue_io::record(&aws.sqs, &a, Mode::Peek, 1000, &mut peeked).await.unwrap(), N);
    let peeked = queue_io::read(&peeked[..]).unwrap();

    // Drain takes everything, once.
    let mut drained = Vec::new();
    assert_eq!(queue_io::record(&aws.sqs, &a, Mode::Drain, 1000, &mut drained).await.unwrap(), N);
    let drained = queue_io::read(&drained[..]).unwrap();
    assert_eq!(multiset(&peeked), multiset(&drained));
    assert_eq!(multiset(&drained).len(), N, "no message doubled");
    assert!(drained.iter().filter(|r| r.attributes.contains_key("blob")).count() == 5);
    let mut left = Vec::new();
    assert_eq!(queue_io::record(&aws.sqs, &a, Mode::Drain, 1000, &mut left).await.unwrap(), 0);

    // Replay onto another queue, then record that: the same contents.
    let pace = Pace { speed: f64::INFINITY, max_backlog: 1000 };
    queue_io::replay(&aws.sqs, &b, &drained, pace).await.unwrap();
    let mut again = Vec::new();
    assert_eq!(queue_io::record(&aws.sqs, &b, Mode::Drain, 1000, &mut again).await.unwrap(), N);
    assert_eq!(multiset(&queue_io::read(&again[..]).unwrap()), multiset(&drained));
}

#[test]
fn a_broken_line_is_named() {
    let e = queue_io::read(&b"{\"body\":\"x\",\"sent_at_ms\":1}\nnot json\n"[..]).unwrap_err();
    assert!(e.to_string().starts_with("line 2:"), "{e}");
}

/// A replay waits for the queue's backlog: with a slow consumer, the queue never holds more
/// than `max_backlog` plus the batch that was just sent, and every message still arrives once.
#[tokio::test]
async fn replay_paces_itself_against_the_backlog() {
    let aws = formbridge_shared::testing::local_engine().await;
    let names = formbridge_shared::testing::unique_names();
    let url = queue(&aws.sqs, &format!("{}-paced", names.ingest_queue)).await;
    const N: u64 = 60;
    const MAX_BACKLOG: u64 = 10;
    let messages: Vec<Recorded> = (0..N)
        .map(|i| Recorded { body: format!("{{\"n\":{i}}}"), attributes: BTreeMap::new(), sent_at_ms: 1_000 })
        .collect();

    // A slow consumer: every 150 ms it notes the backlog, then takes and deletes up to 5.
    let consumer = {
        let (sqs, url) = (aws.sqs.clone(), url.clone());
        tokio::spawn(async move {
            let (mut seen, mut peak) = (Vec::new(), 0u64);
            while (seen.len() as u64) < N {
                tokio::time::sleep(std::time::Duration::from_millis(150)).await;
                let a = sqs
                    .get_queue_attributes()
                    .queue_url(&url)
                    .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
                    .send()
                    .await
                    .unwrap();
                let backlog: u64 = a.attributes().unwrap()
                    [&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages]
                    .parse()
                    .unwrap();
                peak = peak.max(backlog);
                let out = sqs.receive_message().queue_url(&url).max_number_of_messages(5).send().await.unwrap();
                for m in out.messages() {
                    seen.push(m.body().unwrap().to_owned());
                    sqs.delete_message()
                        .queue_url(&url)
                        .receipt_handle(m.receipt_handle().unwrap())
                        .send()
                        .await
                        .unwrap();
                }
            }
            (seen, peak)
        })
    };
    queue_io::replay(&aws.sqs, &url, &messages, Pace { speed: f64::INFINITY, max_backlog: MAX_BACKLOG }).await.unwrap();
    let (mut seen, peak) = tokio::time::timeout(std::time::Duration::from_secs(120), consumer).await.unwrap().unwrap();
    assert!(peak <= MAX_BACKLOG + 10, "the queue held {peak} messages (limit {MAX_BACKLOG} + one batch)");
    seen.sort();
    let mut want: Vec<String> = messages.iter().map(|m| m.body.clone()).collect();
    want.sort();
    assert_eq!(seen, want, "every message exactly once");
}
