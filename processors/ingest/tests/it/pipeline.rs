use std::time::Duration;

use formbridge_persister::Config as PersisterConfig;
use formbridge_shared::{SiteDomain, SubmissionId, TenantId};
use tokio_util::sync::CancellationToken;

use crate::helpers::{envelope, eventually, now, signed, Stack};

#[test]
fn the_standard_webhooks_test_vector_passes() {
    let w = standardwebhooks::Webhook::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
    let sig = w
        .sign("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, br#"{"email":"test@example.com","username":"test_user"}"#)
        .unwrap();
    assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
}

#[test]
fn a_retry_keeps_its_submission_id_and_sites_do_not_share_ids() {
    let a = SiteDomain::parse("a.example").unwrap();
    let b = SiteDomain::parse("b.example").unwrap();
    let id = formbridge_ingest::submission_id(&a, "msg_1", 1_795_593_600_000, b"{}");
    assert_eq!(id, formbridge_ingest::submission_id(&a, "msg_1", 1_795_593_600_000, b"{}"));
    assert_ne!(id, formbridge_ingest::submission_id(&b, "msg_1", 1_795_593_600_000, b"{}"));
    assert_ne!(id, formbridge_ingest::submission_id(&a, "msg_2", 1_795_593_600_000, b"{}"));
    assert_eq!(id.timestamp_ms(), 1_795_593_600_000);
    let other_body = formbridge_ingest::submission_id(&a, "msg_1", 1_795_593_600_000, br#"{"fields":{"x":1}}"#);
    assert_ne!(id, other_body, "a reused webhook-id with other content is another submission");
}

/// Runs a persister until the ingest queue is empty.
async fn persist_everything(stack: &Stack) {
    let token = CancellationToken::new();
    let mut pc = PersisterConfig::for_resources(stack.names.clone());
    pc.wait_seconds = 1;
    let persister = tokio::spawn(formbridge_persister::run(pc, stack.aws.clone(), token.clone()));
    eventually("the queue to drain", || async { stack.queued().await == 0 }).await;
    token.cancel();
    persister.await.unwrap().unwrap();
}

async fn stored_ids(stack: &Stack, tenant: &str) -> Vec<SubmissionId> {
    let t = TenantId::parse(tenant).unwrap();
    let p = stack.store.get_tenant(&t).await.unwrap().unwrap();
    stack.store.recent_submissions(&t, &p, 1000).await.unwrap().into_iter().map(|s| s.submission_id).collect()
}

#[tokio::test]
async fn a_signed_submission_reaches_dynamodb_once_even_when_retried() {
    let stack = Stack::new().await;
    let secret = stack.tenant_with_site("acme", "shop.example.com").await;
    let app = stack.start(stack.config()).await;

    // The site sends its domain as WordPress reports it: mixed case, with a port.
    let body = envelope("Shop.Example.com:443");
    let first = app.post_signed(&secret, "msg_001", &body).await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    assert_eq!(first.body["status"], "queued");
    let id = first.body["submission_id"].as_str().unwrap().to_owned();

    // The sender retries: same webhook-id and body, a new timestamp and signature.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let retry = app.post_signed(&secret, "msg_001", &body).await;
    assert_eq!(retry.status, 202);
    assert_eq!(retry.body["submission_id"].as_str().unwrap(), id, "a retry must keep its submission id");
    assert_eq!(retry.body["duplicate"], true, "{:?}", retry.body);
    assert!(first.body.get("duplicate").is_none(), "{:?}", first.body);

    // A sender that sends no submitted_at is deduplicated all the same.
    let mut undated = body.clone();
    undated.as_object_mut().unwrap().remove("submitted_at");
    let u1 = app.post_signed(&secret, "msg_002", &undated).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let u2 = app.post_signed(&secret, "msg_002", &undated).await;
    assert_eq!((u1.status, u2.status), (202, 202));
    assert_eq!(u1.body["submission_id"], u2.body["submission_id"], "an undated retry must keep its submission id");
    // The instance remembers what it queued: a retry adds no second SQS message.
    assert_eq!(stack.queued().await, 2);

    // Copies arriving together (a sender retrying while its first request still waits) share
    // one send: all are answered 202 with one id, one of them as the sender of the message.
    let copies = futures::future::join_all((0..4).map(|_| app.post_signed(&secret, "msg_003", &body))).await;
    assert!(copies.iter().all(|c| c.status == 202), "{:?}", copies.iter().map(|c| &c.body).collect::<Vec<_>>());
    assert!(copies.iter().all(|c| c.body["submission_id"] == copies[0].body["submission_id"]));
    assert_eq!(copies.iter().filter(|c| c.body.get("duplicate").is_none()).count(), 1);
    assert_eq!(stack.queued().await, 3);

    // Another instance (or this one restarted) does not know it: its copy is queued again, and
    // the persister stores it once all the same.
    let other = stack.start(stack.config()).await;
    let elsewhere = other.post_signed(&secret, "msg_001", &body).await;
    assert_eq!(elsewhere.status, 202);
    assert_eq!(elsewhere.body["submission_id"].as_str().unwrap(), id);
    assert_eq!(stack.queued().await, 4);
    other.token.cancel();

    persist_everything(&stack).await;

    let mut ids: Vec<String> = stored_ids(&stack, "acme").await.iter().map(ToString::to_string).collect();
    ids.sort();
    let mut want = vec![
        id.clone(),
        u1.body["submission_id"].as_str().unwrap().to_owned(),
        copies[0].body["submission_id"].as_str().unwrap().to_owned(),
    ];
    want.sort();
    assert_eq!(ids, want, "exactly one stored submission per webhook-id");
    let t = TenantId::parse("acme").unwrap();
    let p = stack.store.get_tenant(&t).await.unwrap().unwrap();
    let stored = stack.store.get_submission(&p, &SubmissionId::parse(&id).unwrap()).await.unwrap().unwrap();
    assert_eq!(stored.site, "shop.example.com");
    assert_eq!(stored.payload["fields"]["message"], "Hello there");
    app.token.cancel();
    formbridge_shared::testing::assert_role_allows("ingest", "IngestRole");
}

#[tokio::test]
async fn a_visitors_control_characters_are_accepted_and_stored_exactly() {
    let stack = Stack::new().await;
    let secret = stack.tenant_with_site("ctl", "ctl.example.com").await;
    let app = stack.start(stack.config()).await;
    // Pasted from a word processor or a terminal: backspaces, a vertical tab, NUL, an escape.
    let message = "call me\u{8}\u{8} back\u{b}soon\u{0}\u{1b}[0m";
    let mut body = envelope("ctl.example.com");
    body["fields"]["message"] = serde_json::json!(message);
    body["fields"]["tags"] = serde_json::json!(["a\u{7}", "\u{7f}"]);
    body["meta"] = serde_json::json!({ "user_agent": "UA\u{c}" });
    let a = app.post_signed(&secret, "msg_ctl", &body).await;
    assert_eq!(a.status, 202, "a visitor's text is never refused for its characters: {:?}", a.body);
    persist_everything(&stack).await;
    let t = TenantId::parse("ctl").unwrap();
    let p = stack.store.get_tenant(&t).await.unwrap().unwrap();
    let id = SubmissionId::parse(a.body["submission_id"].as_str().unwrap()).unwrap();
    let stored = stack.store.get_submission(&p, &id).await.unwrap().unwrap();
    assert_eq!(stored.payload["fields"]["message"], message);
    assert_eq!(stored.payload["fields"]["tags"], serde_json::json!(["a\u{7}", "\u{7f}"]));
    assert_eq!(stored.payload["meta"]["user_agent"], "UA\u{c}");
    app.token.cancel();
}

#[tokio::test]
async fn after_rotation_both_secrets_verify_until_the_grace_period_ends() {
    let stack = Stack::new().await;
    let old = stack.tenant_with_site("rot", "rot.example").await;
    let tenant = TenantId::parse("rot").unwrap();
    let domain = SiteDomain::parse("rot.example").unwrap();
    let new = stack
        .store
        .rotate_site_secret(&tenant, &domain, Duration::from_secs(3), &stack.keyring, time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_ne!(old, new);
    let app = stack.start(stack.config()).await;
    let body = envelope("rot.example");
    assert_eq!(app.post_signed(&old, "m1", &body).await.status, 202, "old secret inside the grace period");
    assert_eq!(app.post_signed(&new, "m2", &body).await.status, 202, "new secret");

    // Both secrets in one header (the way a sender rotates on its side) also verifies.
    let bytes = serde_json::to_vec(&body).unwrap();
    let mut h = signed(old.expose(), "m3", now(), &bytes);
    let other = standardwebhooks::Webhook::new(new.expose()).unwrap().sign("m3", now(), &bytes).unwrap();
    h[3].1 = format!("v1,AAAA {} {other}", h[3].1);
    assert_eq!(app.post(&h, bytes).await.status, 202);

    tokio::time::sleep(Duration::from_secs(4)).await;
    let late = app.post_signed(&old, "m4", &body).await;
    assert_eq!((late.status, late.code()), (401, "invalid_signature"), "old secret after the grace period");
    assert_eq!(app.post_signed(&new, "m5", &body).await.status, 202);
    app.token.cancel();
}

#[tokio::test]
async fn each_tenant_has_its_own_token_bucket() {
    let stack = Stack::new().await;
    let a = stack.tenant_with_site("busy", "busy.example").await;
    let b = stack.tenant_with_site("calm", "calm.example").await;
    let mut config = stack.config();
    config.tenant_rate = 1;
    config.tenant_burst = 2;
    let app = stack.start(config).await;
    assert_eq!(app.post_signed(&a, "1", &envelope("busy.example")).await.status, 202);
    assert_eq!(app.post_signed(&a, "2", &envelope("busy.example")).await.status, 202);
    let limited = app.post_signed(&a, "3", &envelope("busy.example")).await;
    assert_eq!((limited.status, limited.code()), (429, "rate_limited"));
    assert!(limited.retry_after.unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(app.post_signed(&b, "1", &envelope("calm.example")).await.status, 202, "another tenant is unaffected");
    assert_eq!(stack.queued().await, 3);
    app.token.cancel();
}

#[tokio::test]
async fn concurrent_submissions_share_send_batches() {
    let stack = Stack::new().await;
    let secret = stack.tenant_with_site("batch", "batch.example").await;
    let mut config = stack.config();
    config.batch_linger_ms = 200;
    let app = std::sync::Arc::new(stack.start(config).await);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (app, secret) = (app.clone(), secret.clone());
            tokio::spawn(async move {
                app.post_signed(&secret, &format!("msg{i}"), &envelope("batch.example")).await.status
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 202);
    }
    assert_eq!(stack.queued().await, 20);
    let batches = app.enqueue_stats.batches.load(std::sync::atomic::Ordering::Relaxed);
    let messages = app.enqueue_stats.messages.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(messages, 20);
    assert!(batches < messages, "no batching happened: {batches} SendMessageBatch calls for {messages} messages");
    app.token.cancel();
}

#[tokio::test]
async fn forged_requests_are_audited_once_per_site_and_minute() {
    let stack = Stack::new().await;
    let _ = stack.tenant_with_site("audited", "audited.example").await;
    let app = stack.start(stack.config()).await;
    let forger = formbridge_shared::secrets::SigningSecret::generate();
    for i in 0..7 {
        let a = app.post_signed(&forger, &format!("f{i}"), &envelope("audited.example")).await;
        assert_eq!(a.status, 401);
    }
    app.failures.flush(&stack.store).await;
    let month = time::OffsetDateTime::now_utc();
    let pk = format!("AUDIT#audited#{:04}-{:02}", month.year(), u8::from(month.month()));
    let out = stack
        .aws
        .dynamodb
        .query()
        .table_name(&stack.names.table)
        .key_condition_expression("PK = :pk AND begins_with(SK, :s)")
        .expression_attribute_values(":pk", aws_sdk_dynamodb::types::AttributeValue::S(pk))
        .expression_attribute_values(":s", aws_sdk_dynamodb::types::AttributeValue::S("AUTHFAIL#".into()))
        .send()
        .await
        .unwrap();
    let total: u64 = out.items().iter().map(|i| i["total"].as_n().unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(total, 7);
    assert!(out.items().len() <= 2, "7 failures in (at most) 2 minutes must be at most 2 items");
    assert!(out.items().iter().all(|i| i.contains_key("ttl") && i.contains_key("bad_signature")));
    app.token.cancel();
    formbridge_shared::testing::assert_role_allows("ingest", "IngestRole");
}

#[tokio::test]
async fn a_flood_of_forged_unknown_domains_costs_bounded_items_and_memory() {
    let stack = Stack::new().await;
    let app = stack.start(stack.config()).await;
    let forger = formbridge_shared::secrets::SigningSecret::generate();
    // A prefix of our own, so other tests' unknown sites in the same daily partition are not counted.
    let tag = ulid::Ulid::new().to_string().to_lowercase();
    let n = 150;
    let mut most_pending = 0;
    for i in 0..n {
        let a = app.post_signed(&forger, &format!("f{i}"), &envelope(&format!("x{i}-{tag}.example"))).await;
        assert_eq!(a.status, 401);
        most_pending = most_pending.max(app.failures.pending_buckets());
    }
    let limit = formbridge_ingest::failures::UNKNOWN_DOMAINS_PER_MINUTE + 1;
    // The flood may straddle a minute: two minutes' worth at most.
    assert!(most_pending <= 2 * limit, "{most_pending} buckets held for {n} domains");
    app.failures.flush(&stack.store).await;
    let day = time::OffsetDateTime::now_utc().date();
    let mut items = vec![];
    for d in [day.previous_day().unwrap(), day] {
        let out = stack
            .aws
            .dynamodb
            .query()
            .table_name(&stack.names.table)
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(":pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("SECURITY#{d}")))
            .send()
            .await
            .unwrap();
        items.extend(out.items().to_vec());
    }
    let ours: Vec<_> = items.iter().filter(|i| i["SK"].as_s().unwrap().contains(&tag)).collect();
    let unnamed: Vec<_> = items.iter().filter(|i| i["SK"].as_s().unwrap().ends_with("#-")).collect();
    assert!(ours.len() <= 2 * (limit - 1), "{} items named for {n} domains", ours.len());
    assert!(!unnamed.is_empty(), "the domains past the limit are counted together");
    let count = |v: &[&std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>]| -> u64 {
        v.iter().map(|i| i["unknown_site"].as_n().unwrap().parse::<u64>().unwrap()).sum()
    };
    // Other tests' unknown sites may share the "-" items; ours are all there.
    assert!(count(&ours) + count(&unnamed) >= n as u64);
    assert!(count(&ours) < n as u64);
    app.token.cancel();
}

#[tokio::test]
async fn a_retry_across_shard_growth_is_one_submission_and_a_reused_id_with_new_content_is_another() {
    let stack = Stack::new().await;
    let secret = stack.tenant_with_site("growing", "grow.example").await;
    let tenant = TenantId::parse("growing").unwrap();
    let app = stack.start(stack.config()).await;
    let body = envelope("grow.example");
    let first = app.post_signed(&secret, "w1", &body).await;
    assert_eq!(first.status, 202, "{:?}", first.body);

    // The tenant grows; the sender's retry reaches an ingest instance that has the new profile.
    let now_ms = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap() * 1000;
    stack.store.grow_shards(&tenant, 64, now_ms).await.unwrap();
    let fresh = stack.start(stack.config()).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let retry = fresh.post_signed(&secret, "w1", &body).await;
    assert_eq!(retry.status, 202);
    assert_eq!(retry.body["submission_id"], first.body["submission_id"]);

    // The same webhook-id reused for different content is a new submission, not an overwrite.
    let mut other = body.clone();
    other["fields"]["message"] = serde_json::json!("A different question");
    let reused = fresh.post_signed(&secret, "w1", &other).await;
    assert_eq!(reused.status, 202);
    assert_ne!(reused.body["submission_id"], first.body["submission_id"]);

    persist_everything(&stack).await;

    let stored = stored_ids(&stack, "growing").await;
    assert_eq!(stored.len(), 2, "one item for the retried submission, one for the new content: {stored:?}");
    let p = stack.store.get_tenant(&tenant).await.unwrap().unwrap();
    let id = SubmissionId::parse(first.body["submission_id"].as_str().unwrap()).unwrap();
    let kept = stack.store.get_submission(&p, &id).await.unwrap().unwrap();
    assert_eq!(kept.payload["fields"]["message"], "Hello there", "the first content is never overwritten");
    app.token.cancel();
    fresh.token.cancel();
}
