//! Exports streamed in CSV and JSONL, a person's erasure with its receipt, and retention per form.

use std::collections::BTreeSet;

use formbridge_shared::clock::now_ms;
use formbridge_shared::delivery::model::{Attempt, DeliveryRecord, FailureReason, Status, Trigger};
use formbridge_shared::delivery::Records;
use formbridge_shared::keys;
use formbridge_shared::sharding::ShardHistory;
use formbridge_shared::submission::QueueMessage;
use formbridge_shared::{DestinationId, FormId, SiteDomain, SubmissionId};
use reqwest::Method;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::helpers::start;

fn payload(fields: Value) -> serde_json::Map<String, Value> {
    let Value::Object(m) = json!({ "fields": fields, "meta": {"page": "/contact"} }) else { unreachable!() };
    m
}

#[tokio::test]
async fn exports_stream_every_page_with_the_union_of_field_names() {
    let api = start(|_| {}).await;
    let t = api.tenant("exp-a", ShardHistory::new(3, 0).unwrap()).await;
    let key = api.key(&[&t.tenant_id], "export").await;
    let now = OffsetDateTime::now_utc();
    // 230 submissions (three pages of 100), two shapes of fields.
    for i in 0..230u64 {
        let fields = if i % 2 == 0 {
            json!({"name": format!("Person {i}"), "email": format!("p{i}@example.com")})
        } else {
            json!({"name": format!("Person {i}"), "colors": ["red", "blue"], "note": "=1+2, \"quoted\"\nnext line"})
        };
        api.submission_with(&t, "contact", now_ms() + i, now, payload(fields)).await;
    }
    let r = api.http.get(format!("{}/v1/exports?format=jsonl", api.base)).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/jsonl; charset=utf-8");
    let text = r.text().await.unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 230);
    let ids: BTreeSet<&str> = lines.iter().map(|l| l["submission_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 230, "each once");
    assert!(lines.windows(2).all(|w| w[0]["submission_id"].as_str() > w[1]["submission_id"].as_str()), "newest first");

    let r = api.http.get(format!("{}/v1/exports?format=csv", api.base)).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(header, ["submission_id", "received_at", "form_id", "site", "colors", "email", "name", "note"]);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 230);
    let odd = rows.iter().find(|r| !r[4].is_empty()).unwrap();
    assert_eq!(&odd[4], "red; blue", "arrays are joined");
    assert_eq!(&odd[5], "", "a missing field is an empty cell");
    assert_eq!(&odd[7], "'=1+2, \"quoted\"\nnext line", "no formula, quotes and newlines survive");

    assert_eq!(api.get(&key, "/v1/exports?format=xml").await.1["error"]["code"], "invalid_parameter");
}

#[tokio::test]
async fn erasure_removes_a_persons_submissions_and_closes_their_deliveries() {
    let api = start(|_| {}).await;
    let t = api.tenant("era-a", ShardHistory::new(2, 0).unwrap()).await;
    let other = api.tenant("era-b", ShardHistory::new(1, 0).unwrap()).await;
    let key = api.key(&[&t.tenant_id], "erase").await;
    let now = OffsetDateTime::now_utc();
    let mine = [
        api.submission_with(&t, "contact", now_ms(), now, payload(json!({"email": "Ann@Example.com"}))).await,
        api.submission_with(&t, "quote", now_ms() + 1, now, payload(json!({"msg": "write to ann@example.com"}))).await,
    ];
    let theirs =
        api.submission_with(&t, "contact", now_ms() + 2, now, payload(json!({"email": "bob@example.com"}))).await;
    let other_tenant =
        api.submission_with(&other, "contact", now_ms(), now, payload(json!({"email": "ann@example.com"}))).await;
    let dest = DestinationId::new();
    // The first was delivered after a retry (two attempts); the second is still retrying.
    let delivered = api.delivery(&t, &mine[0], &dest, Status::Succeeded, 40, now_ms()).await;
    let records = Records::new(api.store.clone(), "test");
    let second = Attempt {
        attempt: 2,
        at_ms: now_ms(),
        status_code: 200,
        error_class: None,
        error: None,
        latency_ms: 40,
        response: "thanks Ann".into(),
        trigger: Trigger::Scheduled,
        sends: 1,
    };
    records.put_attempt(&DeliveryRecord { attempts: 2, ..delivered.clone() }, &second).await.unwrap();
    let retrying = api.delivery(&t, &mine[1], &dest, Status::Retrying, 900, now_ms() + 60_000).await;
    api.delivery(&t, &theirs, &dest, Status::Failed, 900, now_ms()).await;

    let (s, body) = api.send(Method::POST, &key, "/v1/erasure", Some(json!({"email": "ANN@example.com "}))).await;
    assert_eq!(s, 200, "{body}");
    let r = &body["receipt"];
    assert_eq!(r["submissions_scanned"], 3, "the tenant's own partitions only");
    assert_eq!(r["submissions_erased"], 2);
    assert_eq!(r["deliveries_closed"], 2);
    assert_eq!(r["attempts_deleted"], 1);
    assert_eq!(r["delivered_to"], json!([dest]));
    let hashes = r["submission_hashes"].as_array().unwrap();
    assert_eq!(hashes.len(), 2);
    assert!(!body.to_string().contains(&mine[0].to_string()), "the receipt holds hashes, not ids");

    // Gone: the submissions and the attempt; the other person's and the other tenant's stay.
    for id in &mine {
        assert_eq!(api.get(&key, &format!("/v1/submissions/{id}")).await.0, 404);
    }
    assert_eq!(api.get(&key, &format!("/v1/submissions/{theirs}")).await.0, 200);
    let key_b = api.key(&[&other.tenant_id], "b").await;
    assert_eq!(api.get(&key_b, &format!("/v1/submissions/{other_tenant}")).await.0, 200);
    let family = api
        .store
        .client()
        .query()
        .table_name(api.store.table())
        .key_condition_expression("PK = :pk AND begins_with(SK, :p)")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(keys::submission_pk(&t.tenant_id, delivered.shard)),
        )
        .expression_attribute_values(
            ":p",
            aws_sdk_dynamodb::types::AttributeValue::S(keys::submission_family_prefix(&mine[0])),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(family.items().len(), 1, "only the delivery's marker is left: {:?}", family.items());
    let marker = DeliveryRecord::from_item(&family.items()[0]).unwrap();
    assert_eq!((marker.status, marker.reason), (Status::Failed, Some(FailureReason::Erased)));
    assert!(marker.first_attempt.is_none() && marker.last_error.is_none() && marker.last_status.is_none());
    assert!(!family.items()[0].contains_key(keys::GSI1PK), "markers are off the worklist");
    // The retrying delivery is closed: its queued retry will find it final, and no replay runs.
    let (_, dl) = api.get(&key, "/v1/deliveries?status=retrying").await;
    assert_eq!(dl["deliveries"].as_array().unwrap().len(), 0, "{dl}");
    let (s, _) = api
        .send(Method::POST, &key, &format!("/v1/submissions/{}/deliveries/{dest}/replay", retrying.submission), None)
        .await;
    assert!(s == 404 || s == 202);
    let rec = records.get(&retrying.key(), true).await.unwrap().unwrap();
    assert_eq!(rec.reason, Some(FailureReason::Erased), "a replay never reopens an erased delivery");

    // Audited, with the address only as a hash.
    let month = now.format(&time::macros::format_description!("[year]-[month]")).unwrap();
    let audit = api
        .store
        .client()
        .query()
        .table_name(api.store.table())
        .key_condition_expression("PK = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("AUDIT#{}#{month}", t.tenant_id)),
        )
        .send()
        .await
        .unwrap();
    let text = format!("{:?}", audit.items());
    assert!(text.contains("submissions.erased") && !text.to_lowercase().contains("ann@example.com"), "{text}");

    // Again: nothing more to erase.
    let (_, again) = api.send(Method::POST, &key, "/v1/erasure", Some(json!({"email": "ann@example.com"}))).await;
    assert_eq!(again["receipt"]["submissions_erased"], 0);
    assert_eq!(
        api.send(Method::POST, &key, "/v1/erasure", Some(json!({"email": "not an address"}))).await.1["error"]["code"],
        "invalid_email"
    );
    formbridge_shared::testing::assert_role_allows("api", "ApiRole");
}

#[tokio::test]
async fn a_forms_retention_applies_to_submissions_from_then_on() {
    let api = start(|_| {}).await;
    let t = api.tenant("ret-a", ShardHistory::new(1, 0).unwrap()).await;
    let key = api.key(&[&t.tenant_id], "retention").await;
    let (s, body) = api.send(Method::PUT, &key, "/v1/forms/newsletter/retention", Some(json!({"days": 7}))).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["retention_days"], 7);
    let (_, r) = api.get(&key, "/v1/retention").await;
    assert_eq!(r, json!({"retention_days": 30, "forms": {"newsletter": 7}}));
    // What ingest stamps on the next submissions: 7 days for that form, 30 for the others.
    let profile = api.store.get_tenant(&t.tenant_id).await.unwrap().unwrap();
    let now = OffsetDateTime::now_utc();
    let msg = |form: &str| {
        QueueMessage::new(
            &profile,
            SiteDomain::parse("www.example.com").unwrap(),
            FormId::parse(form).unwrap(),
            SubmissionId::new(),
            now,
            serde_json::Map::new(),
        )
    };
    assert_eq!(msg("newsletter").expires_at - now.unix_timestamp(), 7 * 86_400);
    assert_eq!(msg("contact").expires_at - now.unix_timestamp(), 30 * 86_400);
    // Back to the tenant's, and bounds.
    let (_, body) = api.send(Method::PUT, &key, "/v1/forms/newsletter/retention", Some(json!({"days": null}))).await;
    assert_eq!(body["retention_days"], 30);
    let (s, e) = api.send(Method::PUT, &key, "/v1/forms/newsletter/retention", Some(json!({"days": 0}))).await;
    assert_eq!((s, e["error"]["code"].as_str()), (422, Some("invalid_retention")));
}
