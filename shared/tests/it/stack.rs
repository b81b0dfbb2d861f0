//! Bootstrap and store behaviour against the local engine.

use aws_sdk_dynamodb::types::AttributeValue;
use formbridge_shared::bootstrap::{bootstrap, Outcome};
use formbridge_shared::codec::PayloadCodec;
use formbridge_shared::keys;
use formbridge_shared::sharding::ShardHistory;
use formbridge_shared::store::{DataStore, StoreError};
use formbridge_shared::submission::{QueueMessage, Submission};
use formbridge_shared::tenant::TenantProfile;
use formbridge_shared::testing::fresh_stack;
use formbridge_shared::{sample, SubmissionId, TenantId};

fn profile(tenant: &str, shards: u16) -> TenantProfile {
    TenantProfile {
        tenant_id: TenantId::parse(tenant).unwrap(),
        name: tenant.into(),
        created_at: "2026-11-25T08:00:00Z".into(),
        retention_days: 30,
        form_retention: Default::default(),
        shards: ShardHistory::new(shards, 0).unwrap(),
    }
}

async fn put_submission(store: &DataStore, p: &TenantProfile, seed: u64) -> SubmissionId {
    let serde_json::Value::Object(payload) = sample::text_heavy_payload(1800, seed) else { panic!() };
    let id = SubmissionId::new();
    let m = QueueMessage::new(
        p,
        "www.example.com".parse().unwrap(),
        "contact".parse().unwrap(),
        id,
        time::OffsetDateTime::now_utc(),
        payload,
    );
    let item = Submission::from_message(m).unwrap().to_item(&PayloadCodec::default());
    store.client().put_item().table_name(store.table()).set_item(Some(item)).send().await.unwrap();
    id
}

#[tokio::test]
async fn bootstrap_twice_changes_nothing() {
    let (aws, names, first) = fresh_stack().await;
    assert!(first.steps.iter().any(|s| s.outcome == Outcome::Created), "{first:?}");
    let before = aws.dynamodb.describe_table().table_name(&names.table).send().await.unwrap();
    let second = bootstrap(&aws, &names).await.unwrap();
    assert!(!second.changed(), "second run changed something: {second:?}");
    assert_eq!(second.ingest_queue_url, first.ingest_queue_url);
    let after = aws.dynamodb.describe_table().table_name(&names.table).send().await.unwrap();
    let t = |d: &aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput| {
        let t = d.table().unwrap();
        (
            t.global_secondary_indexes().len(),
            t.latest_stream_arn().map(str::to_owned),
            t.stream_specification().cloned(),
        )
    };
    assert_eq!(t(&before), t(&after));

    // The table is the roadmap's, plus stream and TTL.
    let table = after.table().unwrap();
    let mut gsis: Vec<_> = table
        .global_secondary_indexes()
        .iter()
        .map(|g| {
            (g.index_name().unwrap().to_owned(), g.projection().unwrap().projection_type().unwrap().as_str().to_owned())
        })
        .collect();
    gsis.sort();
    assert_eq!(
        gsis,
        vec![("GSI1".into(), "ALL".into()), ("GSI2".into(), "KEYS_ONLY".into()), ("GSI3".into(), "INCLUDE".into())]
    );
    let spec = table.stream_specification().unwrap();
    assert!(spec.stream_enabled());
    assert_eq!(spec.stream_view_type().unwrap().as_str(), "NEW_AND_OLD_IMAGES");
    let ttl = aws.dynamodb.describe_time_to_live().table_name(&names.table).send().await.unwrap();
    assert_eq!(ttl.time_to_live_description().unwrap().attribute_name(), Some("ttl"));

    // The queue has its DLQ, redrive and explicit 1 MiB message size.
    let attrs = aws
        .sqs
        .get_queue_attributes()
        .queue_url(&first.ingest_queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    assert_eq!(attrs[&aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize], "1048576");
    assert!(attrs[&aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy].contains(&names.ingest_dlq));
    aws.eventbridge.describe_event_bus().name(&names.event_bus).send().await.unwrap();
}

#[tokio::test]
async fn bootstrap_repairs_a_drifted_queue() {
    let (aws, names, first) = fresh_stack().await;
    aws.sqs
        .set_queue_attributes()
        .queue_url(&first.ingest_queue_url)
        .attributes(aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize, "262144")
        .send()
        .await
        .unwrap();
    let second = bootstrap(&aws, &names).await.unwrap();
    let queue_step = second.steps.iter().find(|s| s.name == names.ingest_queue).unwrap();
    assert_eq!(queue_step.outcome, Outcome::Updated);
    assert!(!bootstrap(&aws, &names).await.unwrap().changed());
}

#[tokio::test]
async fn tenants_are_created_once_and_shards_only_grow() {
    let (aws, names, _) = fresh_stack().await;
    let store = DataStore::new(aws.dynamodb.clone(), names.table.clone());
    let p = profile("acme", 2);
    store.create_tenant(&p).await.unwrap();
    assert!(matches!(store.create_tenant(&p).await, Err(StoreError::TenantExists(_))));
    assert_eq!(store.get_tenant(&p.tenant_id).await.unwrap(), Some(p.clone()));
    assert!(store.grow_shards(&p.tenant_id, 1, 10).await.is_err());
    let grown = store.grow_shards(&p.tenant_id, 8, 10).await.unwrap();
    assert_eq!(grown.shards.current(), 8);
    assert_eq!(grown.shards.epochs().len(), 2);
    assert_eq!(store.list_tenants().await.unwrap(), vec![p.tenant_id.clone()]);
}

#[tokio::test]
async fn items_written_under_an_older_shard_count_stay_readable() {
    let (aws, names, _) = fresh_stack().await;
    let store = DataStore::new(aws.dynamodb.clone(), names.table.clone());
    let p = profile("grower", 1);
    store.create_tenant(&p).await.unwrap();
    let mut old = Vec::new();
    for seed in 0..6 {
        old.push(put_submission(&store, &p, seed).await);
    }
    let grown = store.grow_shards(&p.tenant_id, 5, 1).await.unwrap();
    let new = put_submission(&store, &grown, 99).await;
    for id in old.iter().chain([&new]) {
        let got = store.get_submission(&grown, id).await.unwrap();
        assert_eq!(got.map(|s| s.submission_id), Some(*id));
    }
    assert_eq!(store.recent_submissions(&p.tenant_id, &grown, 100).await.unwrap().len(), 7);
}

#[tokio::test]
async fn one_tenants_reads_never_return_another_tenants_items() {
    let (aws, names, _) = fresh_stack().await;
    let store = DataStore::new(aws.dynamodb.clone(), names.table.clone());
    // "acme" is a string prefix of "acme-b": the classic way keys leak across tenants.
    let a = profile("acme", 2);
    let b = profile("acme-b", 2);
    for p in [&a, &b] {
        store.create_tenant(p).await.unwrap();
    }
    let a_id = put_submission(&store, &a, 1).await;
    let b_id = put_submission(&store, &b, 2).await;
    let a_list = store.recent_submissions(&a.tenant_id, &a, 100).await.unwrap();
    assert_eq!(a_list.iter().map(|s| s.submission_id).collect::<Vec<_>>(), vec![a_id]);
    assert!(a_list.iter().all(|s| s.tenant_id == a.tenant_id));
    assert!(store.get_submission(&a, &b_id).await.unwrap().is_none(), "tenant A read tenant B's submission");
    // The raw partition of A holds nothing of B.
    for shard in a.shards.read_shards() {
        let out = aws
            .dynamodb
            .query()
            .table_name(&names.table)
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(keys::submission_pk(&a.tenant_id, shard)))
            .send()
            .await
            .unwrap();
        assert!(out.items().iter().all(|i| !i["SK"].as_s().unwrap().contains(&b_id.to_string())));
    }
}
