//! The read API against the engine's own Query: `formbridge-loadtest api-bench` seeds a tenant
//! (submissions of real-sized text, each with a delivery record, as the pipeline leaves them),
//! then times, alternately and in one run, `GET /v1/submissions?limit=50` through a running
//! `formbridge-api` and the raw Query a hand-written reader would make for the same page (one
//! Query of the same partition, newest first, `Limit` 50). Both go to the same engine; the
//! report gives each one's percentiles and the ratio of the p99s (goal: at most 2).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use aws_sdk_dynamodb::types::AttributeValue;
use formbridge_shared::codec::PayloadCodec;
use formbridge_shared::delivery::model::{DeliveryRecord, Status};
use formbridge_shared::keys;
use formbridge_shared::secrets::Keyring;
use formbridge_shared::sharding::ShardHistory;
use formbridge_shared::store::DataStore;
use formbridge_shared::submission::{QueueMessage, Submission};
use formbridge_shared::tenant::TenantProfile;
use formbridge_shared::{sample, DestinationId, FormId, SiteDomain, SubmissionId, TenantId};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

#[derive(Debug, Clone, clap::Args)]
pub struct ApiBenchArgs {
    /// The running API.
    #[arg(long, default_value = "http://127.0.0.1:8090")]
    pub api_url: String,
    /// The tenant to seed (created with one write shard, so the API's merge and the raw Query
    /// read the same single partition).
    #[arg(long, default_value = "apibench")]
    pub tenant: String,
    /// Write shards of the tenant (1 compares like with like; more shows the merge's cost).
    #[arg(long, default_value_t = 1)]
    pub shards: u16,
    /// Submissions to seed (skipped when the tenant already exists).
    #[arg(long, default_value_t = 400)]
    pub seed: u32,
    /// Timed requests of each kind.
    #[arg(long, default_value_t = 400)]
    pub requests: u32,
    /// Page size.
    #[arg(long, default_value_t = 50)]
    pub page: u32,
    /// Where to write the JSON report.
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct Side {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub items_per_page: u64,
}

#[derive(Debug, Serialize)]
pub struct ApiBenchReport {
    pub when: String,
    pub tenant: String,
    pub shards: u16,
    pub page: u32,
    pub requests: u32,
    pub api: Side,
    pub raw_query: Side,
    pub p99_ratio: f64,
    pub p50_ratio: f64,
    pub goal_p99_ratio: f64,
    pub met: bool,
}

fn side(h: &Histogram<u64>, items: u64) -> Side {
    let ms = |v: u64| v as f64 / 1000.0;
    Side {
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
        items_per_page: items,
    }
}

async fn seed(store: &DataStore, args: &ApiBenchArgs) -> anyhow::Result<TenantProfile> {
    let tenant = TenantId::parse(&args.tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
    if let Some(p) = store.get_tenant(&tenant).await? {
        return Ok(p);
    }
    let profile = TenantProfile {
        tenant_id: tenant.clone(),
        name: "API benchmark".into(),
        created_at: "2026-12-01T00:00:00Z".into(),
        retention_days: 30,
        form_retention: Default::default(),
        shards: ShardHistory::new(args.shards, 0)?,
    };
    store.create_tenant(&profile).await?;
    let dest = DestinationId::new();
    let now = OffsetDateTime::now_utc();
    let codec = PayloadCodec::default();
    for i in 0..args.seed {
        let id = SubmissionId::new();
        let Value::Object(payload) = sample::text_heavy_payload(1500 + (i as usize % 7) * 300, 4) else {
            bail!("the sample payload is an object")
        };
        let m = QueueMessage::new(
            &profile,
            SiteDomain::parse("bench.example.com")?,
            FormId::parse(if i % 3 == 0 { "quote" } else { "contact" })?,
            id,
            now,
            payload,
        );
        let sub = Submission::from_message(m)?;
        let item = sub.to_item(&codec);
        let rec = DeliveryRecord {
            tenant: tenant.clone(),
            shard: sub.shard,
            submission: id,
            destination: dest,
            status: Status::Succeeded,
            attempts: 1,
            round_start: 0,
            next_attempt_ms: 0,
            form_id: "contact".into(),
            created_ms: 0,
            updated_ms: 0,
            last_status: Some(200),
            last_error: None,
            last_latency_ms: Some(40),
            reason: None,
            claim: None,
            first_attempt: None,
            expires_at: sub.expires_at,
        };
        for it in [item, rec.to_item()] {
            store.client().put_item().table_name(store.table()).set_item(Some(it)).send().await?;
        }
    }
    Ok(profile)
}

pub async fn run(store: DataStore, keyring: Keyring, args: ApiBenchArgs) -> anyhow::Result<ApiBenchReport> {
    let profile = seed(&store, &args).await.context("seeding the benchmark tenant")?;
    let (key, _) = store
        .create_api_key(std::slice::from_ref(&profile.tenant_id), "api-bench", &keyring, OffsetDateTime::now_utc())
        .await?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let url = format!("{}/v1/submissions?limit={}", args.api_url.trim_end_matches('/'), args.page);
    let pk = keys::submission_pk(&profile.tenant_id, 0);
    let mut api = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut raw = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut api_items, mut raw_items) = (0, 0);
    // Warm-up (connections, caches), then alternate, so both see the same engine moments.
    for round in 0..(args.requests + 20) {
        let t = Instant::now();
        let r = http.get(&url).bearer_auth(key.expose()).send().await?;
        if !r.status().is_success() {
            bail!("the API answered {}: {}", r.status(), r.text().await.unwrap_or_default());
        }
        let body: Value = r.json().await?;
        let api_us = t.elapsed().as_micros() as u64;
        api_items = body["submissions"].as_array().map_or(0, |a| a.len() as u64);
        let t = Instant::now();
        let out = store
            .client()
            .query()
            .table_name(store.table())
            .key_condition_expression("PK = :pk AND begins_with(SK, :s)")
            .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
            .expression_attribute_values(":s", AttributeValue::S("SUB#".into()))
            .scan_index_forward(false)
            .limit(i32::try_from(args.page).unwrap_or(50))
            .send()
            .await?;
        let raw_us = t.elapsed().as_micros() as u64;
        raw_items = out.items().len() as u64;
        if round >= 20 {
            api.record(api_us.max(1))?;
            raw.record(raw_us.max(1))?;
        }
    }
    let (a, r) = (side(&api, api_items), side(&raw, raw_items));
    let p99_ratio = a.p99_ms / r.p99_ms.max(0.001);
    let p50_ratio = a.p50_ms / r.p50_ms.max(0.001);
    Ok(ApiBenchReport {
        when: OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?,
        tenant: args.tenant,
        shards: profile.shards.current(),
        page: args.page,
        requests: args.requests,
        api: a,
        raw_query: r,
        p99_ratio,
        p50_ratio,
        goal_p99_ratio: 2.0,
        met: p99_ratio <= 2.0,
    })
}
