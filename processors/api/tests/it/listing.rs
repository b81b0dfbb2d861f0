//! Paging through a tenant's submissions across its shards and its shard-count history.

use std::collections::BTreeSet;

use formbridge_shared::delivery::model::Status;
use formbridge_shared::sharding::ShardHistory;
use formbridge_shared::{DestinationId, SubmissionId};
use serde_json::Value;
use time::OffsetDateTime;

use crate::helpers::{ms, start, Api};

fn ids(v: &Value, field: &str) -> Vec<String> {
    v[field].as_array().unwrap().iter().map(|s| s["submission_id"].as_str().unwrap().to_owned()).collect()
}

/// Every page of `path` (which already has a `?`), following cursors.
async fn all_pages(api: &Api, key: &str, path: &str, field: &str) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_owned(),
        };
        let (status, body) = api.get(key, &url).await;
        assert_eq!(status, 200, "{url}: {body}");
        out.extend(ids(&body, field));
        pages += 1;
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return (out, pages),
        }
        assert!(pages < 100, "paging does not end");
    }
}

fn rfc(ms: u64) -> String {
    formbridge_shared::clock::rfc3339_ms(ms).replace('+', "%2B")
}

#[tokio::test]
async fn pages_merge_every_shard_and_shard_epoch_newest_first_with_filters() {
    let api = start(|_| {}).await;
    let base = 1_790_000_000_000u64;
    // Two shards at first, four from the 40th submission's time on.
    let mut history = ShardHistory::new(2, 0).unwrap();
    history.grow(4, base + 40_000).unwrap();
    let p = api.tenant("list-grown", history).await;
    let key = api.key(&[&p.tenant_id], "lister").await;
    let now = OffsetDateTime::now_utc();
    let mut made: Vec<(SubmissionId, &str, u64)> = Vec::new();
    for i in 0..90u64 {
        let form = if i % 3 == 0 { "quote" } else { "contact" };
        let at = base + i * 1_000;
        made.push((api.submission(&p, form, at, now).await, form, at));
    }
    let shards: BTreeSet<u16> = made.iter().map(|(id, _, _)| p.shards.candidate_shards(id)[0]).collect();
    assert_eq!(shards.len(), 4, "the data spans every shard of both epochs");
    let dest = DestinationId::new();
    let failed: Vec<SubmissionId> = made.iter().step_by(17).map(|m| m.0).collect();
    let succeeded: Vec<SubmissionId> = made.iter().skip(1).step_by(9).map(|m| m.0).collect();
    for (n, id) in failed.iter().enumerate() {
        api.delivery(&p, id, &dest, Status::Failed, 100, base + 200_000 + n as u64).await;
    }
    for id in &succeeded {
        api.delivery(&p, id, &dest, Status::Succeeded, 40, base + 100_000).await;
    }

    let mut expected: Vec<String> = made.iter().map(|m| m.0.to_string()).collect();
    expected.sort();
    expected.reverse();
    let (got, pages) = all_pages(&api, &key, "/v1/submissions?limit=17", "submissions").await;
    assert_eq!(got, expected, "every submission once, newest first");
    assert_eq!(pages, 6);

    // Form filter.
    let quote: Vec<String> =
        expected.iter().filter(|id| made.iter().any(|m| m.0.to_string() == **id && m.1 == "quote")).cloned().collect();
    let (got, _) = all_pages(&api, &key, "/v1/submissions?limit=7&form=quote", "submissions").await;
    assert_eq!(got, quote);

    // Time range: ids 20..=59 (inclusive bounds).
    let path = format!("/v1/submissions?limit=9&since={}&until={}", rfc(base + 20_000), rfc(base + 59_000));
    let (got, _) = all_pages(&api, &key, &path, "submissions").await;
    let window: Vec<String> = expected
        .iter()
        .filter(|id| made.iter().any(|m| m.0.to_string() == **id && (base + 20_000..=base + 59_000).contains(&m.2)))
        .cloned()
        .collect();
    assert_eq!(got.len(), 40);
    assert_eq!(got, window);

    // Status through the worklist (failed) and through the merge (succeeded).
    let (got, _) = all_pages(&api, &key, "/v1/submissions?limit=2&status=failed", "submissions").await;
    let mut want: Vec<String> = failed.iter().map(ToString::to_string).collect();
    want.reverse(); // newest failure time first: they failed in id order
    assert_eq!(got, want);
    let (got, _) = all_pages(&api, &key, "/v1/submissions?limit=4&status=succeeded", "submissions").await;
    let mut want: Vec<String> = succeeded.iter().map(ToString::to_string).collect();
    want.sort();
    want.reverse();
    assert_eq!(got, want);
    let (status, body) = api.get(&key, "/v1/submissions?limit=3&status=succeeded").await;
    assert_eq!(status, 200);
    assert_eq!(body["submissions"][0]["deliveries"][dest.to_string()], "succeeded", "{body}");

    // The worklist itself.
    let (status, body) = api.get(&key, &format!("/v1/deliveries?status=failed&destination={dest}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deliveries"].as_array().unwrap().len(), failed.len());
    assert_eq!(body["deliveries"][0]["reason"], "exhausted");

    // One submission with its history, payload decoded.
    let (status, body) = api.get(&key, &format!("/v1/submissions/{}", failed[0])).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["submission"]["payload"]["fields"].is_object(), "{body}");
    assert_eq!(body["deliveries"][0]["status"], "failed");

    // Bounds on the page size.
    assert_eq!(api.get(&key, "/v1/submissions?limit=101").await.0, 400);
    assert_eq!(api.get(&key, "/v1/submissions?limit=0").await.0, 400);
    assert_eq!(api.get(&key, "/v1/submissions?since=yesterday").await.1["error"]["code"], "invalid_parameter");
    let _ = ms(now);
}

/// The shard count grows (as the aggregator does for a hot tenant) while a client pages through
/// the submissions: the pages already started go on, every submission once, in order; the
/// submissions written under the new count, across the new shards, show in a fresh listing.
#[tokio::test]
async fn paging_goes_on_through_a_shard_growth() {
    let api = start(|c| c.auth_cache_seconds = 0).await;
    let p = api.tenant("list-growing", ShardHistory::new(2, 0).unwrap()).await;
    let key = api.key(&[&p.tenant_id], "lister").await;
    let now = OffsetDateTime::now_utc();
    let base = ms(now) - 3_600_000;
    let mut old: Vec<String> = Vec::new();
    for i in 0..50u64 {
        old.push(api.submission(&p, "contact", base + i * 1_000, now).await.to_string());
    }
    old.sort();
    old.reverse();

    let (status, first) = api.get(&key, "/v1/submissions?limit=15").await;
    assert_eq!(status, 200, "{first}");
    let mut got = ids(&first, "submissions");
    let mut cursor = first["next_cursor"].as_str().unwrap().to_owned();

    // Grown to 8 shards mid-listing; submissions after the effective time go to all 8.
    let grown = api.store.grow_shards(&p.tenant_id, 8, ms(now)).await.unwrap();
    let effective = grown.shards.epochs()[1].since_ms;
    let mut new: Vec<String> = Vec::new();
    for i in 0..40u64 {
        new.push(api.submission(&grown, "contact", effective + 1_000 + i * 10, now).await.to_string());
    }
    let shards: BTreeSet<u16> =
        new.iter().map(|id| grown.shards.candidate_shards(&SubmissionId::parse(id).unwrap())[0]).collect();
    assert!(shards.iter().any(|s| *s >= 2) && shards.len() >= 6, "the new submissions use the new shards: {shards:?}");

    loop {
        let (status, page) = api.get(&key, &format!("/v1/submissions?limit=15&cursor={cursor}")).await;
        assert_eq!(status, 200, "{page}");
        got.extend(ids(&page, "submissions"));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(got, old, "the listing begun before the growth: every older submission once, newest first");

    let mut all: Vec<String> = new.iter().chain(old.iter()).cloned().collect();
    all.sort();
    all.reverse();
    let (fresh, _) = all_pages(&api, &key, "/v1/submissions?limit=25", "submissions").await;
    assert_eq!(fresh, all);
    for id in new.iter().take(5) {
        let (status, one) = api.get(&key, &format!("/v1/submissions/{id}")).await;
        assert_eq!(status, 200, "{one}");
    }
}
