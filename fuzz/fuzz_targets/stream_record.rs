//! Stream records into `Change`s, both ways the project reads them, from one JSON input (a
//! DynamoDB stream event as Lambda delivers it):
//!
//! - Lambda mode: `lambda::changes` on the deserialised event;
//! - the Streams API (long-running consumers): each record rebuilt as the SDK's `Record` and
//!   typed by `Change::from_record`.
//!
//! Both must agree on every record they keep (sequence number, kind, entity, images). Then the
//! images go through what the consumers read from them: the stored submission (payload decode
//! included, so the decompression cap is exercised from here too), the inline copy the fan-out
//! makes, delivery records and attempts, tenant profiles, sites and destinations, and the cost
//! scopes a batch touched.
#![no_main]

use std::collections::HashMap;

use aws_sdk_dynamodbstreams::primitives::{Blob, DateTime};
use aws_sdk_dynamodbstreams::types::{AttributeValue as Sv, Identity, OperationType, Record, StreamRecord};
use libfuzzer_sys::fuzz_target;
use serde_dynamo::AttributeValue as Lv;

use formbridge_shared::delivery::message::InlineSubmission;
use formbridge_shared::delivery::{Attempt, DeliveryRecord, RecordChange};
use formbridge_shared::destination::Destination;
use formbridge_shared::keys::Entity;
use formbridge_shared::lambda::{self, StreamEvent};
use formbridge_shared::site::SiteRecord;
use formbridge_shared::stream::record::padded_seq;
use formbridge_shared::stream::{Change, ChangeKind};
use formbridge_shared::submission::{StoredSubmission, SubmissionFields};
use formbridge_shared::tenant::TenantProfile;

fn to_sdk(v: &Lv) -> Sv {
    match v {
        Lv::S(s) => Sv::S(s.clone()),
        Lv::N(n) => Sv::N(n.clone()),
        Lv::B(b) => Sv::B(Blob::new(b.clone())),
        Lv::Bool(b) => Sv::Bool(*b),
        Lv::Null(n) => Sv::Null(*n),
        Lv::L(l) => Sv::L(l.iter().map(to_sdk).collect()),
        Lv::M(m) => Sv::M(m.iter().map(|(k, v)| (k.clone(), to_sdk(v))).collect()),
        Lv::Ss(s) => Sv::Ss(s.clone()),
        Lv::Ns(s) => Sv::Ns(s.clone()),
        Lv::Bs(s) => Sv::Bs(s.iter().map(|b| Blob::new(b.clone())).collect()),
    }
}

fn sdk_image(item: &serde_dynamo::Item) -> Option<HashMap<String, Sv>> {
    // The Streams API leaves out an image the view type (or the operation) does not carry.
    (!item.is_empty()).then(|| item.iter().map(|(k, v)| (k.clone(), to_sdk(v))).collect())
}

/// The same record as the Streams API's `GetRecords` returns it.
fn sdk_record(r: &aws_lambda_events::event::dynamodb::EventRecord) -> Record {
    let d = &r.change;
    let created = d.approximate_creation_date_time.timestamp();
    let change = StreamRecord::builder()
        .set_keys(Some(d.keys.iter().map(|(k, v)| (k.clone(), to_sdk(v))).collect()))
        .set_new_image(sdk_image(&d.new_image))
        .set_old_image(sdk_image(&d.old_image))
        .set_sequence_number(d.sequence_number.clone())
        .set_approximate_creation_date_time((created > 0).then(|| DateTime::from_secs(created)))
        .build();
    let mut b = Record::builder().event_name(OperationType::from(r.event_name.as_str())).dynamodb(change);
    if let Some(u) = &r.user_identity {
        b = b.user_identity(Identity::builder().principal_id(&u.principal_id).r#type(&u.type_).build());
    }
    b.build()
}

fn consume(c: &Change) {
    assert!(padded_seq(&c.seq).len() >= 40);
    let Some(new) = &c.new else { return };
    match &c.entity {
        Entity::Submission { tenant, shard, id } => {
            // The image holds its own key; DynamoDB's is the same as the record's, a forged one may not be.
            let own = |k: &str| new.get(k).and_then(|v| v.as_s().ok()).map(String::as_str);
            let same_key = Entity::classify(own("PK").unwrap_or(""), own("SK").unwrap_or("")) == c.entity;
            if let Ok(s) = StoredSubmission::from_item(new) {
                assert!(!same_key || (&s.tenant_id, s.shard, &s.submission_id) == (tenant, *shard, id));
            }
            let _ = SubmissionFields::read(new);
            let _ = InlineSubmission::from_item(new);
        }
        Entity::Delivery { .. } => {
            if let Ok(rc) = RecordChange::read(c.old.as_ref(), new) {
                let _ = (rc.outcome(), rc.new_attempts());
            }
            let _ = DeliveryRecord::from_item(new);
        }
        Entity::DeliveryAttempt { .. } => {
            let _ = Attempt::from_item(new);
        }
        Entity::TenantProfile { .. } => {
            let _ = TenantProfile::from_item(new);
        }
        Entity::Site { .. } => {
            let _ = SiteRecord::from_item(new);
        }
        Entity::Destination { .. } => {
            let _ = Destination::from_item(new);
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(event) = serde_json::from_slice::<StreamEvent>(data) else { return };
    let from_lambda = lambda::changes(&event);
    let from_api: Vec<Change> = event.records.iter().filter_map(|r| Change::from_record(&sdk_record(r))).collect();
    assert_eq!(from_lambda.len(), from_api.len(), "both readers keep the same records");
    for (l, a) in from_lambda.iter().zip(&from_api) {
        assert_eq!((&l.seq, l.kind, &l.entity), (&a.seq, a.kind, &a.entity));
        assert_eq!((&l.new, &l.old), (&a.new, &a.old), "both readers see the same images");
        assert!(l.created_s.is_none() || l.created_s == a.created_s);
        assert!(l.kind != ChangeKind::TtlExpiry || event.records.iter().any(|r| r.event_name == "REMOVE"));
        consume(l);
    }
    let _ = formbridge_shared::costs::touched(&from_lambda);
});
