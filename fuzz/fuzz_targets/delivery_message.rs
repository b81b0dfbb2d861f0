//! A delivery queue message body, as the delivery worker handles it: `DeliveryMessage::parse_all`
//! (one message or a `{"pack":[...]}`), then, for a delivery carrying its submission inline,
//! decoding that copy (base64, codec, JSON) and building the bodies a destination receives.
//! What parses re-serialises to itself, and packing what was read loses and adds nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;

use formbridge_shared::delivery::message::{MAX_PACK, MAX_PACK_BYTES};
use formbridge_shared::delivery::send::{slack_body, webhook_body};
use formbridge_shared::delivery::DeliveryMessage;

fuzz_target!(|body: &[u8]| {
    let Ok(body) = std::str::from_utf8(body) else { return };
    let Ok(jobs) = DeliveryMessage::parse_all(body) else { return };
    assert!(!jobs.is_empty(), "a readable body holds at least one delivery");
    for m in &jobs {
        assert!(m.v >= 1 && m.v <= formbridge_shared::delivery::message::VERSION);
        let again = DeliveryMessage::parse(&m.body()).expect("a message's own body parses");
        assert_eq!(&again, m, "a message round-trips through its body");
        assert!(!m.webhook_id().is_empty());
        if let Some(inline) = &m.sub {
            if let Ok(sub) = inline.decode(m) {
                assert_eq!(
                    (sub.tenant_id.clone(), sub.shard, sub.submission_id),
                    (m.tenant.clone(), m.shard, m.submission)
                );
                let w: serde_json::Value = serde_json::from_slice(&webhook_body(&sub)).expect("a webhook body is JSON");
                assert_eq!(w["data"]["payload"], sub.payload);
                let _: serde_json::Value = serde_json::from_slice(&slack_body(&sub)).expect("a Slack body is JSON");
            }
        }
    }

    // Packing what was read gives every delivery back exactly once, within the pack bounds.
    // "Now" is the first delivery's due time: later ones travel alone, the rest share packs.
    let now = jobs[0].due_ms;
    let mut back = Vec::new();
    for (packed, due) in DeliveryMessage::pack(&jobs, now) {
        let got = DeliveryMessage::parse_all(&packed).expect("a pack parses");
        assert!(got.len() <= MAX_PACK);
        assert!(got.len() == 1 || packed.len() <= MAX_PACK_BYTES, "a shared pack stays under the size bound");
        assert!(got.iter().all(|m| m.due_ms <= due));
        back.extend(got);
    }
    let key = |m: &DeliveryMessage| m.body();
    let (mut a, mut b): (Vec<String>, Vec<String>) = (jobs.iter().map(key).collect(), back.iter().map(key).collect());
    a.sort();
    b.sort();
    assert_eq!(a, b, "packing neither loses nor adds a delivery");
});
