//! What each kind of answer does: success, 500s then success, 410, 429 with Retry-After, a
//! hang, a refused connection, an address the SSRF guard refuses.

use std::sync::Arc;
use std::time::Duration;

use formbridge_shared::delivery::{FailureReason, Status};
use formbridge_shared::destination::{replace_auth, DeliveryPolicy, DestinationAuth};

use crate::harness::*;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_healthy_destination_gets_each_submission_once_signed() {
    let stack = Stack::new("healthy").await;
    let (dest, secret) = stack.destination("http://placeholder.invalid/", DeliveryPolicy::default(), 5_000).await;
    let rx = Receiver::start(Some(&secret), always(200)).await;
    stack
        .store
        .update_destination(stack.tenant(), &dest.id, &stack.keyring, time::OffsetDateTime::now_utc(), "t", |d, k| {
            d.url = rx.url.clone();
            replace_auth(d, k, Some(DestinationAuth::Bearer { token: "t0ken".into() }));
        })
        .await
        .unwrap();
    // A destination limited to another site (and one to another form) gets none of them.
    let other = Receiver::start(None, always(200)).await;
    for (site, form) in [(Some("other.example.com"), None), (None, Some("quote"))] {
        let (d, _) = stack.destination(&other.url, DeliveryPolicy::default(), 5_000).await;
        stack
            .store
            .update_destination(stack.tenant(), &d.id, &stack.keyring, time::OffsetDateTime::now_utc(), "t", |d, _| {
                d.sites = site.map(|s| formbridge_shared::SiteDomain::parse(s).unwrap()).into_iter().collect();
                d.forms = form.map(|f| formbridge_shared::FormId::parse(f).unwrap()).into_iter().collect();
            })
            .await
            .unwrap();
    }
    let (stop, worker) = stack.start(stack.config());
    let ids = stack.submit(8).await;
    stack.wait_for(&ids, LIMIT, all_are(Status::Succeeded)).await;
    // A rewrite of a stored submission (persister retry) is not a new submission.
    stack.rewrite(&ids[0]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = stack.wait_for(&ids, LIMIT, all_are(Status::Succeeded)).await;

    let got = rx.received();
    assert_eq!(got.len(), 8, "each submission exactly once: {got:?}");
    assert!(other.received().is_empty(), "site and form filters apply");
    assert!(got.iter().all(|r| r.verified), "every signature verifies with the destination's secret");
    assert!(got.iter().all(|r| r.authorization.as_deref() == Some("Bearer t0ken")), "credentials are sent");
    for id in &ids {
        let h = &all[id];
        assert_eq!(h.len(), 1);
        let d = &h[0];
        assert_eq!(d.record.as_ref().unwrap().attempts, 1);
        assert_eq!(d.attempts.len(), 1);
        assert_eq!(d.attempts[0].status_code, 200);
        assert_eq!(d.attempts[0].response, "receiver says hi");
        assert!(got.iter().any(|r| r.webhook_id == d.webhook_id && r.submission_id == id.to_string()));
    }
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn two_500s_then_200_succeeds_on_the_third_attempt() {
    let stack = Stack::new("flaky").await;
    let script: Script = Arc::new(|n| (if n < 2 { 500 } else { 200 }, vec![], Duration::ZERO));
    let rx = Receiver::start(None, script).await;
    stack.destination(&rx.url, fast_policy(&[1, 1, 1]), 5_000).await;
    let (stop, worker) = stack.start(stack.config());
    let ids = stack.submit(1).await;
    let all = stack.wait_for(&ids, LIMIT, all_are(Status::Succeeded)).await;
    let d = &all[&ids[0]][0];
    assert_eq!(d.record.as_ref().unwrap().attempts, 3);
    let codes: Vec<u16> = d.attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, vec![500, 500, 200]);
    let got = rx.received();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|r| r.webhook_id == d.webhook_id), "one webhook-id across retries");
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_410_disables_the_destination_with_an_event_and_later_deliveries_wait_for_a_replay() {
    let stack = Stack::new("gone").await;
    let rx = Receiver::start(None, always(410)).await;
    let (dest, _) = stack.destination(&rx.url, fast_policy(&[1, 1]), 5_000).await;
    let (stop, worker) = stack.start(stack.config());
    let ids = stack.submit(1).await;
    let all = stack.wait_for(&ids, LIMIT, all_are(Status::Failed)).await;
    let d = &all[&ids[0]][0];
    assert_eq!(d.record.as_ref().unwrap().reason, Some(FailureReason::Gone));
    assert_eq!(d.attempts.len(), 1, "410 is not retried");
    assert!(!stack.destination_enabled(&dest).await, "410 disables the destination");

    // A later submission is not sent to the disabled destination, but its delivery is recorded
    // as failed (`destination_disabled`), on the worklist a replay reads once it is enabled.
    let later = stack.submit(1).await;
    let all = stack.wait_for(&later, LIMIT, all_are(Status::Failed)).await;
    let d = &all[&later[0]][0];
    assert_eq!(d.record.as_ref().unwrap().reason, Some(FailureReason::DestinationDisabled));
    assert!(d.attempts.is_empty(), "nothing is sent to a disabled destination");
    assert_eq!(rx.received().len(), 1);

    let events = stack.events().await;
    let disabled: Vec<_> = events.iter().filter(|(t, _)| t == "DestinationDisabled").collect();
    assert_eq!(disabled.len(), 1, "{events:?}");
    assert_eq!(disabled[0].1["destination_id"], dest.id.to_string());
    assert_schema("destination-disabled.schema.json", &disabled[0].1);
    let failed: Vec<_> = events.iter().filter(|(t, _)| t == "DeliveryFailed").collect();
    assert_eq!(failed.len(), 1);
    assert_schema("delivery-failed.schema.json", &failed[0].1);
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_429_with_retry_after_is_honoured() {
    let stack = Stack::new("throttled").await;
    let script: Script = Arc::new(|n| {
        if n == 0 {
            (429, vec![("retry-after", "4".into())], Duration::ZERO)
        } else {
            (200, vec![], Duration::ZERO)
        }
    });
    let rx = Receiver::start(None, script).await;
    stack.destination(&rx.url, fast_policy(&[1]), 5_000).await;
    let (stop, worker) = stack.start(stack.config());
    let ids = stack.submit(1).await;
    let all = stack.wait_for(&ids, LIMIT, all_are(Status::Succeeded)).await;
    let d = &all[&ids[0]][0];
    assert_eq!(d.attempts.iter().map(|a| a.status_code).collect::<Vec<_>>(), vec![429, 200]);
    // The schedule alone would retry after ~1 s; Retry-After asked for 4.
    let gap = d.attempts[1].at_ms - d.attempts[0].at_ms;
    assert!(gap >= 4_000, "second attempt came {gap} ms after the first");
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_hanging_destination_times_out_and_is_retried() {
    let stack = Stack::new("hang").await;
    let script: Script =
        Arc::new(|n| if n == 0 { (200, vec![], Duration::from_secs(60)) } else { (200, vec![], Duration::ZERO) });
    let rx = Receiver::start(None, script).await;
    stack.destination(&rx.url, fast_policy(&[1]), 1_000).await;
    let (stop, worker) = stack.start(stack.config());
    let ids = stack.submit(1).await;
    let all = stack.wait_for(&ids, LIMIT, all_are(Status::Succeeded)).await;
    let d = &all[&ids[0]][0];
    assert_eq!(d.attempts.len(), 2);
    assert_eq!(d.attempts[0].status_code, 0);
    assert_eq!(d.attempts[0].error_class, Some(formbridge_shared::delivery::ErrorClass::Timeout));
    assert_eq!(d.attempts[1].status_code, 200);
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_refused_connection_is_retried_until_the_receiver_is_up() {
    let stack = Stack::new("refused").await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/hook");
    stack.destination(&url, fast_policy(&[1, 1, 1, 1, 1, 1, 1, 1, 1, 1]), 5_000).await;
    let (stop, worker) = stack.start(stack.config());
    let ids = stack.submit(1).await;
    stack
        .wait_for(&ids, LIMIT, |h| {
            h.iter().any(|d| {
                d.attempts
                    .iter()
                    .any(|a| a.error_class == Some(formbridge_shared::delivery::ErrorClass::ConnectionRefused))
            })
        })
        .await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let rx = Receiver::on(listener, None, always(200)).await;
    let all = stack.wait_for(&ids, LIMIT, all_are(Status::Succeeded)).await;
    let d = &all[&ids[0]][0];
    assert!(d.attempts.len() >= 2);
    assert!(d.attempts[..d.attempts.len() - 1].iter().all(|a| a.status_code == 0));
    assert_eq!(rx.received().len(), 1);
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn the_ssrf_guard_refuses_private_addresses_when_loopback_is_not_allowed() {
    let stack = Stack::new("ssrf").await;
    let rx = Receiver::start(None, always(200)).await;
    let by_name = rx.url.replace("127.0.0.1", "localhost");
    let (a, _) = stack.destination(&rx.url, fast_policy(&[1]), 2_000).await;
    let (b, _) = stack.destination(&by_name, fast_policy(&[1]), 2_000).await;
    let (c, _) = stack.destination("http://10.1.2.3/hook", fast_policy(&[1]), 2_000).await;
    let (m, _) = stack.destination("http://169.254.169.254/latest/meta-data/", fast_policy(&[1]), 2_000).await;
    let mut config = stack.config();
    config.allow_loopback = false;
    let (stop, worker) = stack.start(config);
    let ids = stack.submit(1).await;
    let all = stack.wait_for(&ids, LIMIT, |h| h.len() == 4 && h.iter().all(|d| d.status == Status::Failed)).await;
    for d in &all[&ids[0]] {
        assert_eq!(d.record.as_ref().unwrap().reason, Some(FailureReason::BlockedAddress), "{d:?}");
        assert_eq!(d.attempts.len(), 1, "a refused address is not retried");
        assert_eq!(d.attempts[0].error_class, Some(formbridge_shared::delivery::ErrorClass::BlockedAddress));
        assert!([a.id, b.id, c.id, m.id].contains(&d.destination));
    }
    assert!(rx.received().is_empty(), "nothing reached the loopback receiver");
    stop.cancel();
    worker.await.unwrap();
}
