//! Typed stream records: what a consumer's handler sees. Each record says what changed (by key
//! class, see `keys::Entity`), how (insert, modify, remove, or a TTL expiry, which is a REMOVE by
//! the DynamoDB service principal), and carries both images. Consumers route on `entity`, so no
//! consumer ever mistakes its own output (metric items, delivery records) for new work.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue as Av;
use aws_sdk_dynamodbstreams::types::{AttributeValue as Sv, OperationType, Record};

use crate::keys::{self, Entity};

pub type Item = HashMap<String, Av>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Insert,
    Modify,
    Remove,
    /// A REMOVE performed by DynamoDB's TTL sweeper, not by us.
    TtlExpiry,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The stream sequence number, as the service gives it.
    pub seq: String,
    pub kind: ChangeKind,
    pub entity: Entity,
    pub new: Option<Item>,
    pub old: Option<Item>,
    /// When the change happened (epoch seconds, approximate).
    pub created_s: Option<i64>,
}

/// Sequence numbers are decimal strings of varying length; padded, they compare as strings.
pub fn padded_seq(seq: &str) -> String {
    format!("{seq:0>40}")
}

fn convert(v: &Sv) -> Av {
    match v {
        Sv::S(s) => Av::S(s.clone()),
        Sv::N(n) => Av::N(n.clone()),
        Sv::B(b) => Av::B(Blob::new(b.as_ref().to_vec())),
        Sv::Bool(b) => Av::Bool(*b),
        Sv::Null(n) => Av::Null(*n),
        Sv::L(l) => Av::L(l.iter().map(convert).collect()),
        Sv::M(m) => Av::M(m.iter().map(|(k, v)| (k.clone(), convert(v))).collect()),
        Sv::Ss(s) => Av::Ss(s.clone()),
        Sv::Ns(s) => Av::Ns(s.clone()),
        Sv::Bs(s) => Av::Bs(s.iter().map(|b| Blob::new(b.as_ref().to_vec())).collect()),
        _ => Av::Null(true),
    }
}

fn image(m: Option<&HashMap<String, Sv>>) -> Option<Item> {
    m.map(|m| m.iter().map(|(k, v)| (k.clone(), convert(v))).collect())
}

impl Change {
    /// Types one record of the DynamoDB Streams API.
    pub fn from_record(r: &Record) -> Option<Change> {
        let d = r.dynamodb()?;
        let keys = image(d.keys.as_ref())?;
        let pk = keys.get(keys::PK)?.as_s().ok()?;
        let sk = keys.get(keys::SK)?.as_s().ok()?;
        let by_service = r
            .user_identity()
            .is_some_and(|u| u.principal_id() == Some("dynamodb.amazonaws.com") && u.r#type() == Some("Service"));
        let kind = match r.event_name()? {
            OperationType::Insert => ChangeKind::Insert,
            OperationType::Modify => ChangeKind::Modify,
            OperationType::Remove if by_service => ChangeKind::TtlExpiry,
            OperationType::Remove => ChangeKind::Remove,
            _ => return None,
        };
        Some(Change {
            seq: d.sequence_number()?.to_owned(),
            kind,
            entity: Entity::classify(pk, sk),
            new: image(d.new_image.as_ref()),
            old: image(d.old_image.as_ref()),
            created_s: d.approximate_creation_date_time().map(|t| t.secs()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::types::{Identity, StreamRecord};

    fn record(op: OperationType, service: bool) -> Record {
        let keys = HashMap::from([
            ("PK".to_string(), Sv::S("SUB#acme#001".into())),
            ("SK".to_string(), Sv::S("SUB#01ARZ3NDEKTSV4RRFFQ69G5FAV".into())),
        ]);
        let mut b = Record::builder().event_name(op).dynamodb(
            StreamRecord::builder()
                .set_keys(Some(keys.clone()))
                .set_new_image(Some(keys))
                .sequence_number("42")
                .build(),
        );
        if service {
            b = b.user_identity(Identity::builder().principal_id("dynamodb.amazonaws.com").r#type("Service").build());
        }
        b.build()
    }

    #[test]
    fn ttl_deletions_are_told_apart_from_removes() {
        assert_eq!(Change::from_record(&record(OperationType::Remove, true)).unwrap().kind, ChangeKind::TtlExpiry);
        assert_eq!(Change::from_record(&record(OperationType::Remove, false)).unwrap().kind, ChangeKind::Remove);
        let c = Change::from_record(&record(OperationType::Insert, false)).unwrap();
        assert_eq!(c.kind, ChangeKind::Insert);
        assert!(matches!(c.entity, Entity::Submission { shard: 1, .. }));
        assert_eq!(c.new.unwrap()["PK"], Av::S("SUB#acme#001".into()));
    }

    #[test]
    fn padded_sequence_numbers_compare_numerically() {
        assert!(padded_seq("9") < padded_seq("10"));
        assert!(padded_seq("100000000000000000001") < padded_seq("100000000000000000010"));
    }
}
