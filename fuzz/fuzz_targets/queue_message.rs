//! A queue message body, as the persister handles it: `Submission::from_message_body` (serde
//! with the typed ids, then the version, shard count, time and payload checks), then the checked
//! item. What it accepts must read back: the item's key classifies as this submission, its
//! payload decodes to what came in, and the inline copy the fan-out would put in a delivery
//! message decodes to the same stored submission.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

use formbridge_shared::codec::PayloadCodec;
use formbridge_shared::delivery::message::InlineSubmission;
use formbridge_shared::delivery::{DeliveryMessage, Trigger};
use formbridge_shared::keys::{self, Entity};
use formbridge_shared::sharding::MAX_SHARDS;
use formbridge_shared::submission::{QueueMessage, StoredSubmission, Submission};
use formbridge_shared::DestinationId;

fuzz_target!(|body: &[u8]| {
    let Ok(body) = std::str::from_utf8(body) else { return };
    let Ok(sub) = Submission::from_message_body(body) else { return };
    let message: QueueMessage = serde_json::from_str(body).expect("an accepted body is a queue message");
    assert!(message.shard_count >= 1 && message.shard_count <= MAX_SHARDS);
    assert!(sub.shard < message.shard_count, "shard {} of {}", sub.shard, message.shard_count);
    assert!(sub.expires_at > sub.received_at.unix_timestamp());

    let key = sub.key();
    assert_eq!(
        Entity::classify(&key.pk, &key.sk),
        Entity::Submission { tenant: sub.tenant.clone(), shard: sub.shard, id: sub.id },
        "a submission's key reads back as it"
    );

    let Ok(item) = sub.to_checked_item(&PayloadCodec::default()) else { return };
    assert_eq!(item.get(keys::PK).and_then(|v| v.as_s().ok()), Some(&key.pk));
    let stored = StoredSubmission::from_item(&item).expect("a stored submission reads back");
    assert_eq!(stored.payload, Value::Object(message.payload.clone()), "the payload survives storage");
    assert_eq!((stored.expires_at, stored.raw_size), (sub.expires_at, sub.raw_payload.len()));

    // The fan-out's copy, carried in a delivery message, decodes to the same submission.
    if let Some(inline) = InlineSubmission::from_item(&item).expect("an inline copy") {
        let m = DeliveryMessage {
            v: formbridge_shared::delivery::message::VERSION,
            tenant: sub.tenant.clone(),
            shard: sub.shard,
            submission: sub.id,
            destination: DestinationId::parse("01JDQ7Z8X00000000000000001").expect("a destination id"),
            attempt: 1,
            due_ms: 0,
            trigger: Trigger::Scheduled,
            form_id: Some(sub.form.to_string()),
            expires_at: Some(sub.expires_at),
            sub: Some(inline),
            recheck: false,
        };
        let m = DeliveryMessage::parse(&m.body()).expect("a delivery message round-trips");
        let decoded = m.sub.as_ref().expect("inline").decode(&m).expect("an inline copy decodes");
        assert_eq!(decoded, stored, "the inline copy is the stored submission");
    }
});
