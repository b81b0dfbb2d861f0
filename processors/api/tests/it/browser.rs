//! The dashboard in headless Chromium (Debian's, driven by playwright-core; installed by
//! `tests/browser/setup.sh`, which ./deploy/local/test.sh runs): sign in with a portal link, check
//! that the charts hold the numbers the API returns, replay a failed delivery from the page, check
//! the session cookie and CSRF, and save a screenshot to `target/browser/dashboard.png`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use formbridge_shared::buckets::Granularity;
use formbridge_shared::clock::now_ms;
use formbridge_shared::delivery::model::Status;
use formbridge_shared::destination::{DeliveryPolicy, DestinationKind, DestinationSpec};
use formbridge_shared::sharding::ShardHistory;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::helpers::start;

#[tokio::test]
async fn the_dashboard_signs_in_shows_the_api_numbers_and_replays_from_the_page() {
    let browser_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir() && PathBuf::from("/usr/bin/chromium").exists(),
        "run processors/api/tests/browser/setup.sh first (./deploy/local/test.sh does)"
    );
    let api = start(|_| {}).await;
    let t = api.tenant("dash-demo", ShardHistory::new(2, 0).unwrap()).await;
    let key = api.key(&[&t.tenant_id], "browser test").await;
    let stop = CancellationToken::new();
    let mut cfg = formbridge_aggregator::Config::for_resources(api.names.clone());
    cfg.linger_ms = 200;
    let agg = tokio::spawn(formbridge_aggregator::run(cfg, api.aws.clone(), stop.clone()));

    let now = OffsetDateTime::now_utc();
    let (dest, _) = api
        .store
        .create_destinations(
            std::slice::from_ref(&t.tenant_id),
            &DestinationSpec {
                name: "CRM".into(),
                url: "https://crm.example.com/hooks/forms".into(),
                kind: DestinationKind::Webhook,
                forms: vec![],
                timeout_ms: 5_000,
                auth: None,
                policy: DeliveryPolicy::default(),
            },
            &api.keyring,
            now,
        )
        .await
        .unwrap()
        .remove(0);
    // Submissions over the last hours and days, two forms.
    let mut subs = Vec::new();
    for i in 0..24i64 {
        let received = now - time::Duration::hours(i % 6) - time::Duration::days(i / 12);
        let form = if i % 4 == 0 { "quote" } else { "contact" };
        subs.push(api.submission(&t, form, now_ms() - i as u64, received).await);
    }
    for (i, s) in subs.iter().enumerate() {
        let (status, latency) = if i < 2 { (Status::Failed, 900) } else { (Status::Succeeded, 35 + i as u64) };
        api.delivery(&t, s, &dest.id, status, latency, now_ms()).await;
    }
    let began = Instant::now();
    loop {
        let b =
            api.store.metrics(&t.tenant_id, None, Granularity::Day, now - time::Duration::days(3), now).await.unwrap();
        let subs_seen: u64 = b.iter().map(|b| b.submission_count).sum();
        let attempts: u64 = b.iter().flat_map(|b| b.deliveries.values()).map(|d| d.attempts).sum();
        if subs_seen == 24 && attempts == 24 {
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(90), "the aggregator did not fold everything");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.cancel();
    agg.await.unwrap().unwrap();

    let (token, _) = api
        .store
        .create_portal_token(&t.tenant_id, Duration::from_secs(900), Duration::from_secs(3600), &api.keyring, now)
        .await
        .unwrap();
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/browser");
    std::fs::create_dir_all(&shots).unwrap();
    let base = api.base.clone();
    let link = format!("{base}/portal#{}", token.expose());
    let replay_sub = subs[0].to_string();
    let replay_dest = dest.id.to_string();
    let shot = shots.join("dashboard.png");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("dashboard.mjs")
            .current_dir(&browser_dir)
            .env("FB_PORTAL_LINK", link)
            .env("FB_API_BASE", base)
            .env("FB_API_KEY", key)
            .env("FB_SCREENSHOT", &shot)
            .env("FB_REPLAY_SUBMISSION", replay_sub)
            .env("FB_REPLAY_DESTINATION", replay_dest)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the browser test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("\"ok\":true"), "{stdout}");
    assert!(shots.join("dashboard.png").exists());
    // The replay the page asked for is on the record: pending again, in a new round.
    let rec =
        api.store.list_worklist(&t.tenant_id, Status::Pending, None, &Default::default(), None, 10).await.unwrap();
    assert!(rec.items.iter().any(|r| r.submission == subs[0]), "the page's replay reached the record");
}
