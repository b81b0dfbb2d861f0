//! Lambda mode: the events Lambda's event source mappings hand a function, turned into what the
//! long-running processes handle (stream [`Change`]s, queue [`Received`] messages), and the
//! partial batch responses that tell the mapping what to retry.
//!
//! - An SQS mapping deletes every message of a batch except those named in the response's
//!   `batchItemFailures` (by message id); those come back after their visibility timeout.
//! - A stream mapping checkpoints up to, not including, the first sequence number named in the
//!   response, and retries from it (bisecting the batch when the function fails as a whole).

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue as Av;
use serde_dynamo::AttributeValue as Lv;

pub use aws_lambda_events::event::dynamodb::Event as StreamEvent;
pub use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
pub use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};

use crate::keys::{self, Entity};
use crate::queue::Received;
use crate::stream::record::Item;
use crate::stream::{Change, ChangeKind};

fn convert(v: &Lv) -> Av {
    match v {
        Lv::S(s) => Av::S(s.clone()),
        Lv::N(n) => Av::N(n.clone()),
        Lv::B(b) => Av::B(Blob::new(b.clone())),
        Lv::Bool(b) => Av::Bool(*b),
        Lv::Null(n) => Av::Null(*n),
        Lv::L(l) => Av::L(l.iter().map(convert).collect()),
        Lv::M(m) => Av::M(m.iter().map(|(k, v)| (k.clone(), convert(v))).collect()),
        Lv::Ss(s) => Av::Ss(s.clone()),
        Lv::Ns(s) => Av::Ns(s.clone()),
        Lv::Bs(s) => Av::Bs(s.iter().map(|b| Blob::new(b.clone())).collect()),
    }
}

fn image(item: &serde_dynamo::Item) -> Option<Item> {
    (!item.is_empty()).then(|| item.iter().map(|(k, v)| (k.clone(), convert(v))).collect())
}

/// The records of a stream event as the stream consumers see them, in stream order. A record
/// without keys or a sequence number (never sent by DynamoDB) is left out, and logged.
pub fn changes(event: &StreamEvent) -> Vec<Change> {
    let mut out = Vec::with_capacity(event.records.len());
    for r in &event.records {
        let d = &r.change;
        let key = |name: &str| match d.keys.get(name) {
            Some(Lv::S(s)) => Some(s.clone()),
            _ => None,
        };
        let by_service = r
            .user_identity
            .as_ref()
            .is_some_and(|u| u.principal_id == "dynamodb.amazonaws.com" && u.type_ == "Service");
        let kind = match r.event_name.as_str() {
            "INSERT" => Some(ChangeKind::Insert),
            "MODIFY" => Some(ChangeKind::Modify),
            "REMOVE" if by_service => Some(ChangeKind::TtlExpiry),
            "REMOVE" => Some(ChangeKind::Remove),
            _ => None,
        };
        let (Some(pk), Some(sk), Some(seq), Some(kind)) =
            (key(keys::PK), key(keys::SK), d.sequence_number.clone(), kind)
        else {
            tracing::error!(event_id = %r.event_id, event_name = %r.event_name, "a stream record without keys, sequence number or known event name; skipped");
            continue;
        };
        let created = d.approximate_creation_date_time.timestamp();
        out.push(Change {
            seq,
            kind,
            entity: Entity::classify(&pk, &sk),
            new: image(&d.new_image),
            old: image(&d.old_image),
            created_s: (created > 0).then_some(created),
        });
    }
    out
}

/// The messages of an SQS event as the queue consumers see them.
pub fn received(event: &SqsEvent) -> Vec<Received> {
    event
        .records
        .iter()
        .filter_map(|m| {
            Some(Received {
                id: m.message_id.clone()?,
                body: m.body.clone().unwrap_or_default(),
                receipt: m.receipt_handle.clone().unwrap_or_default(),
                receive_count: m.attributes.get("ApproximateReceiveCount").and_then(|v| v.parse().ok()).unwrap_or(1),
                attributes: m
                    .message_attributes
                    .iter()
                    .filter_map(|(k, v)| v.string_value.clone().map(|s| (k.clone(), s)))
                    .collect(),
            })
        })
        .collect()
}

/// An SQS partial batch response naming the messages (by id) to keep on the queue.
pub fn sqs_response(failed_ids: impl IntoIterator<Item = String>) -> SqsBatchResponse {
    let mut r = SqsBatchResponse::default();
    r.batch_item_failures = failed_ids
        .into_iter()
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    r
}

/// A stream partial batch response: everything before `first_failed` is done; the mapping
/// retries from it. `None`: the whole batch is done.
pub fn stream_response(first_failed: Option<&str>) -> DynamoDbEventResponse {
    let mut r = DynamoDbEventResponse::default();
    if let Some(seq) = first_failed {
        let mut f = DynamoDbBatchItemFailure::default();
        f.item_identifier = Some(seq.to_owned());
        r.batch_item_failures.push(f);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_event(json: serde_json::Value) -> StreamEvent {
        serde_json::from_value(json).expect("a stream event")
    }

    #[test]
    fn stream_records_become_changes_with_their_kind_entity_and_images() {
        let e = stream_event(serde_json::json!({"Records": [
            {"eventID": "1", "eventName": "INSERT", "awsRegion": "us-east-1", "eventSource": "aws:dynamodb",
             "dynamodb": {"ApproximateCreationDateTime": 1764900000.0, "SequenceNumber": "100",
                          "Keys": {"PK": {"S": "SUB#acme#001"}, "SK": {"S": "SUB#01ARZ3NDEKTSV4RRFFQ69G5FAV"}},
                          "NewImage": {"PK": {"S": "SUB#acme#001"}, "SK": {"S": "SUB#01ARZ3NDEKTSV4RRFFQ69G5FAV"},
                                       "n": {"N": "3"}, "b": {"B": "aGk="}, "m": {"M": {"x": {"L": [{"BOOL": true}]}}}},
                          "SizeBytes": 10, "StreamViewType": "NEW_AND_OLD_IMAGES"}},
            {"eventID": "2", "eventName": "REMOVE", "awsRegion": "us-east-1",
             "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
             "dynamodb": {"SequenceNumber": "101", "Keys": {"PK": {"S": "METRIC#acme"}, "SK": {"S": "H#2026-12-05T01"}},
                          "OldImage": {"PK": {"S": "METRIC#acme"}}, "SizeBytes": 5}},
            {"eventID": "3", "eventName": "MODIFY", "awsRegion": "us-east-1",
             "dynamodb": {"SequenceNumber": "102", "Keys": {"PK": {"N": "1"}}, "SizeBytes": 5}}
        ]}));
        let c = changes(&e);
        assert_eq!(c.len(), 2, "the record without string keys is left out");
        assert_eq!(c[0].kind, ChangeKind::Insert);
        assert!(matches!(c[0].entity, Entity::Submission { shard: 1, .. }));
        assert_eq!(c[0].seq, "100");
        assert_eq!(c[0].created_s, Some(1_764_900_000));
        let new = c[0].new.as_ref().unwrap();
        assert_eq!(new["n"], Av::N("3".into()));
        assert_eq!(new["b"], Av::B(Blob::new(b"hi".to_vec())));
        assert_eq!(new["m"], Av::M([("x".to_string(), Av::L(vec![Av::Bool(true)]))].into()));
        assert!(c[0].old.is_none());
        assert_eq!(c[1].kind, ChangeKind::TtlExpiry, "a REMOVE by DynamoDB's TTL sweeper");
        assert_eq!(c[1].created_s, None);
    }

    #[test]
    fn sqs_messages_keep_their_id_receipt_count_and_attributes() {
        let e: SqsEvent = serde_json::from_value(serde_json::json!({"Records": [
            {"messageId": "m1", "receiptHandle": "r1", "body": "{}", "eventSource": "aws:sqs",
             "attributes": {"ApproximateReceiveCount": "3"},
             "messageAttributes": {"reason": {"stringValue": "bad", "dataType": "String"}}}
        ]}))
        .unwrap();
        let r = received(&e);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].id.as_str(), r[0].receipt.as_str(), r[0].receive_count), ("m1", "r1", 3));
        assert_eq!(r[0].attribute("reason"), Some("bad"));
        let resp = serde_json::to_value(sqs_response(["m1".to_string()])).unwrap();
        assert_eq!(resp, serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m1"}]}));
        let resp = serde_json::to_value(stream_response(Some("101"))).unwrap();
        assert_eq!(resp, serde_json::json!({"batchItemFailures": [{"itemIdentifier": "101"}]}));
        assert_eq!(serde_json::to_value(stream_response(None)).unwrap(), serde_json::json!({"batchItemFailures": []}));
    }
}
