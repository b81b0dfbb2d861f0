//! The submission envelope, as ingest handles a POST body: strict parse (duplicate keys refused),
//! the site named inside, its normalisation, validation against the documented limits, then the
//! queue message built from it, which the persister must accept: ingest never accepts a
//! submission only for the persister to dead-letter it (bodies under half the item limit are not
//! re-checked by ingest, and every input here is under it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use time::macros::datetime;

use formbridge_ingest::envelope;
use formbridge_shared::codec::PayloadCodec;
use formbridge_shared::domain;
use formbridge_shared::sharding::ShardHistory;
use formbridge_shared::submission::{QueueMessage, StoredSubmission, Submission, MAX_ITEM_BYTES};
use formbridge_shared::tenant::TenantProfile;
use formbridge_shared::TenantId;

fuzz_target!(|body: &[u8]| {
    let Ok(parsed) = envelope::parse_strict(body) else { return };
    // Read before authentication, then normalised to look the site up.
    let site = envelope::site_of(&parsed).map(domain::normalize);
    let Ok(env) = envelope::validate(parsed) else { return };
    let Some(Ok(site)) = site else { return };

    let payload = env.payload();
    let canonical = serde_json::to_vec(&payload).expect("a payload serialises");
    let time_ms = env.submitted_at.map_or(0, |t| u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0));
    let id = formbridge_ingest::submission_id(&site, "msg_fuzz", time_ms, &canonical);
    assert_eq!(id, formbridge_ingest::submission_id(&site, "msg_fuzz", time_ms, &canonical), "ids are deterministic");

    let profile = TenantProfile {
        tenant_id: TenantId::parse("acme").expect("a tenant id"),
        name: "Acme".into(),
        created_at: "2026-01-01T00:00:00Z".into(),
        retention_days: 30,
        form_retention: Default::default(),
        shards: ShardHistory::new(4, 0).expect("a shard history"),
    };
    let received = datetime!(2026-11-25 08:00:00.123456 UTC);
    let message = QueueMessage::new(&profile, site.clone(), env.form_id.clone(), id, received, payload.clone());
    assert!(canonical.len() < MAX_ITEM_BYTES / 2, "inputs stay under what ingest re-checks");

    // What goes on the queue, as the persister reads it.
    let wire = serde_json::to_string(&message).expect("a queue message serialises");
    let sub = match Submission::from_message_body(&wire) {
        Ok(sub) => sub,
        Err(e) => panic!("ingest accepted a submission the persister rejects ({}): {e}", e.code()),
    };
    assert_eq!(sub, Submission::from_message(message).expect("the same message"), "the wire form changes nothing");
    let item = match sub.to_checked_item(&PayloadCodec::default()) {
        Ok(item) => item,
        Err(e) => panic!("ingest accepted a submission that cannot be stored ({}): {e}", e.code()),
    };
    let back = StoredSubmission::from_item(&item).expect("a stored submission reads back");
    assert_eq!(back.payload, Value::Object(payload), "the stored payload is the accepted one");
    assert_eq!(
        (back.submission_id, back.site.as_str(), back.form_id.as_str()),
        (id, site.as_str(), env.form_id.as_str())
    );
});
