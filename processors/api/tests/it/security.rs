//! Every endpoint called with another tenant's key answers as for something missing; cursors
//! that were tampered with, come from another tenant or filter, or expired are refused; a portal
//! token works once; CSRF is enforced on sessions; the rate limit holds.

use std::time::Duration;

use formbridge_shared::clock::now_ms;
use formbridge_shared::delivery::model::Status;
use formbridge_shared::destination::{DeliveryPolicy, DestinationKind, DestinationSpec};
use formbridge_shared::sharding::ShardHistory;
use formbridge_shared::{cursor, DestinationId, SubmissionId};
use reqwest::Method;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::helpers::start;

fn spec(url: &str) -> DestinationSpec {
    DestinationSpec {
        name: "crm".into(),
        url: url.into(),
        kind: DestinationKind::Webhook,
        forms: vec![],
        timeout_ms: 5_000,
        auth: None,
        policy: DeliveryPolicy::default(),
    }
}

#[tokio::test]
async fn another_tenants_data_is_indistinguishable_from_missing_data() {
    let api = start(|_| {}).await;
    let a = api.tenant("sec-a", ShardHistory::new(2, 0).unwrap()).await;
    let b = api.tenant("sec-b", ShardHistory::new(2, 0).unwrap()).await;
    let key_a = api.key(&[&a.tenant_id], "a").await;
    let key_b = api.key(&[&b.tenant_id], "b").await;
    let now = OffsetDateTime::now_utc();
    let a_sub = api.submission(&a, "contact", now_ms(), now).await;
    let b_sub = api.submission(&b, "contact", now_ms(), now).await;
    let (b_dest, _) = api
        .store
        .create_destinations(std::slice::from_ref(&b.tenant_id), &spec("https://example.com/hook"), &api.keyring, now)
        .await
        .unwrap()
        .remove(0);
    api.delivery(&b, &b_sub, &b_dest.id, Status::Failed, 90, now_ms()).await;

    let missing_sub = SubmissionId::new();
    let missing_dest = DestinationId::new();
    let theirs_and_missing: Vec<(Method, String, String, Option<Value>)> = vec![
        (Method::GET, format!("/v1/submissions/{b_sub}"), format!("/v1/submissions/{missing_sub}"), None),
        (
            Method::POST,
            format!("/v1/submissions/{b_sub}/deliveries/{}/replay", b_dest.id),
            format!("/v1/submissions/{missing_sub}/deliveries/{missing_dest}/replay"),
            None,
        ),
        (Method::GET, format!("/v1/destinations/{}", b_dest.id), format!("/v1/destinations/{missing_dest}"), None),
        (
            Method::PATCH,
            format!("/v1/destinations/{}", b_dest.id),
            format!("/v1/destinations/{missing_dest}"),
            Some(json!({"name": "taken over"})),
        ),
        (
            Method::POST,
            format!("/v1/destinations/{}/disable", b_dest.id),
            format!("/v1/destinations/{missing_dest}/disable"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/destinations/{}/enable", b_dest.id),
            format!("/v1/destinations/{missing_dest}/enable"),
            None,
        ),
        (Method::DELETE, format!("/v1/destinations/{}", b_dest.id), format!("/v1/destinations/{missing_dest}"), None),
    ];
    for (method, theirs, missing, body) in &theirs_and_missing {
        let t = api.send(method.clone(), &key_a, theirs, body.clone()).await;
        let m = api.send(method.clone(), &key_a, missing, body.clone()).await;
        assert_eq!(t.0, 404, "{method} {theirs}: {t:?}");
        assert_eq!(t, m, "{method} {theirs} must answer exactly as a missing resource");
    }
    // B's destination is untouched by all that.
    let d = api.store.get_destination(&b.tenant_id, &b_dest.id).await.unwrap().unwrap();
    assert_eq!((d.name.as_str(), d.enabled, d.version), ("crm", true, 1));

    // Naming B in the header is the same as naming a tenant that does not exist, on every
    // endpoint that works on a tenant, and B's data is unchanged afterwards.
    let tenant_endpoints: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/v1/submissions".into(), None),
        (Method::GET, format!("/v1/submissions/{b_sub}"), None),
        (Method::GET, "/v1/metrics".into(), None),
        (Method::GET, "/v1/metrics/live".into(), None),
        (Method::GET, "/v1/destinations".into(), None),
        (Method::POST, "/v1/destinations".into(), Some(json!({"url": "https://example.com/x"}))),
        (Method::POST, format!("/v1/destinations/{}/test", b_dest.id), None),
        (Method::GET, "/v1/deliveries?status=failed".into(), None),
        (Method::POST, "/v1/replays".into(), Some(json!({"status": "failed", "dry_run": false}))),
        (Method::GET, "/v1/cost".into(), None),
        (Method::GET, "/v1/recommendations".into(), None),
        (Method::GET, "/v1/exports?format=jsonl".into(), None),
        (Method::POST, "/v1/erasure".into(), Some(json!({"email": "someone@example.com"}))),
        (Method::GET, "/v1/retention".into(), None),
        (Method::PUT, "/v1/forms/contact/retention".into(), Some(json!({"days": 1}))),
    ];
    for (method, path, body) in &tenant_endpoints {
        let r = |t: &'static str| {
            let mut req = api
                .http
                .request(method.clone(), format!("{}{path}", api.base))
                .bearer_auth(&key_a)
                .header("FormBridge-Tenant", t);
            if let Some(b) = body {
                req = req.json(b);
            }
            req.send()
        };
        let theirs = r("sec-b").await.unwrap();
        let none = r("sec-nobody").await.unwrap();
        assert_eq!(theirs.status(), 404, "{method} {path}");
        assert_eq!(theirs.text().await.unwrap(), none.text().await.unwrap(), "{method} {path}");
    }
    assert_eq!(api.store.list_destinations(&b.tenant_id).await.unwrap().len(), 1);
    assert!(api.store.get_tenant(&b.tenant_id).await.unwrap().unwrap().form_retention.is_empty());
    let (s, _) = api.get(&key_b, &format!("/v1/submissions/{b_sub}")).await;
    assert_eq!(s, 200, "B's submission is still there");
    // Listings hold only A's own.
    let (_, list) = api.get(&key_a, "/v1/submissions").await;
    let listed: Vec<&str> =
        list["submissions"].as_array().unwrap().iter().map(|s| s["submission_id"].as_str().unwrap()).collect();
    assert_eq!(listed, vec![a_sub.to_string()]);
    let (_, dl) = api.get(&key_a, "/v1/deliveries?status=failed").await;
    assert_eq!(dl["deliveries"].as_array().unwrap().len(), 0);
    let (_, ds) = api.get(&key_a, "/v1/destinations").await;
    assert_eq!(ds["destinations"].as_array().unwrap().len(), 0);
    // B sees its own.
    let (s, own) = api.get(&key_b, &format!("/v1/submissions/{b_sub}")).await;
    assert_eq!(s, 200, "{own}");

    // No credential, a malformed one, a revoked one.
    let none = api.http.get(format!("{}/v1/submissions", api.base)).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(api.get("fbk_nonsense", "/v1/submissions").await.1["error"]["code"], "invalid_api_key");
    formbridge_shared::testing::assert_role_allows("api", "ApiRole");
}

#[tokio::test]
async fn cursors_are_bound_to_tenant_filter_and_lifetime() {
    let api = start(|_| {}).await;
    let a = api.tenant("cur-a", ShardHistory::new(1, 0).unwrap()).await;
    let b = api.tenant("cur-b", ShardHistory::new(1, 0).unwrap()).await;
    let key_a = api.key(&[&a.tenant_id], "a").await;
    let key_b = api.key(&[&b.tenant_id], "b").await;
    let now = OffsetDateTime::now_utc();
    for i in 0..5 {
        api.submission(&a, "contact", now_ms() + i, now).await;
        api.submission(&b, "contact", now_ms() + i, now).await;
    }
    let (_, page) = api.get(&key_a, "/v1/submissions?limit=2").await;
    let c = page["next_cursor"].as_str().unwrap().to_owned();
    assert_eq!(api.get(&key_a, &format!("/v1/submissions?limit=2&cursor={c}")).await.0, 200);

    // Tampered: one character of the body changed.
    let mut t = c.clone().into_bytes();
    t[3] = if t[3] == b'A' { b'B' } else { b'A' };
    let t = String::from_utf8(t).unwrap();
    let (s, e) = api.get(&key_a, &format!("/v1/submissions?limit=2&cursor={t}")).await;
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("cursor_invalid")), "{e}");
    // Another tenant's.
    let (s, e) = api.get(&key_b, &format!("/v1/submissions?limit=2&cursor={c}")).await;
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("cursor_invalid")), "{e}");
    // Another filter.
    let (s, e) = api.get(&key_a, &format!("/v1/submissions?limit=2&form=quote&cursor={c}")).await;
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("cursor_invalid")), "{e}");
    // Expired: a cursor this server's key signed, for this tenant and filter, a second ago.
    let filter = formbridge_shared::listing::ListFilter::default().canonical();
    let old = cursor::issue(
        &api.keyring,
        &a.tenant_id,
        &format!("submissions;{filter}"),
        "01J00000000000000000000000",
        now_ms() - 1_000,
    );
    let (s, e) = api.get(&key_a, &format!("/v1/submissions?limit=2&cursor={old}")).await;
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("cursor_expired")), "{e}");
    // Garbage.
    let (s, e) = api.get(&key_a, "/v1/submissions?cursor=not-a-cursor").await;
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("cursor_malformed")), "{e}");
}

#[tokio::test]
async fn a_portal_token_signs_in_once_and_sessions_need_their_csrf_token() {
    let api = start(|_| {}).await;
    let t = api.tenant("portal-a", ShardHistory::new(1, 0).unwrap()).await;
    let now = OffsetDateTime::now_utc();
    let (token, _) = api
        .store
        .create_portal_token(&t.tenant_id, Duration::from_secs(900), Duration::from_secs(3600), &api.keyring, now)
        .await
        .unwrap();
    let exchange = |origin: Option<String>| {
        let mut r = api.http.post(format!("{}/v1/portal/exchange", api.base)).json(&json!({ "token": token.expose() }));
        if let Some(o) = origin {
            r = r.header("Origin", o);
        }
        r.send()
    };
    // From another site: refused, and the token is not spent.
    assert_eq!(exchange(Some("https://evil.example".into())).await.unwrap().status(), 403);
    let first = exchange(Some(api.base.clone())).await.unwrap();
    assert_eq!(first.status(), 200);
    let set_cookie = first.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let session: Value = first.json().await.unwrap();
    let csrf = session["csrf_token"].as_str().unwrap().to_owned();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    // Twice: refused.
    let second = exchange(None).await.unwrap();
    assert_eq!(second.status(), 401);
    assert_eq!(second.json::<Value>().await.unwrap()["error"]["code"], "portal_token_invalid");
    // Not JSON: refused.
    let form = api.http.post(format!("{}/v1/portal/exchange", api.base)).body("token=x").send().await.unwrap();
    assert_eq!(form.status(), 415);

    // The session reads; a change without (or with a wrong) CSRF token is refused before any lookup.
    let with_cookie =
        |m: Method, path: &str| api.http.request(m, format!("{}{path}", api.base)).header("Cookie", &cookie);
    let me: Value = with_cookie(Method::GET, "/v1/session").send().await.unwrap().json().await.unwrap();
    assert_eq!(me["tenant"], "portal-a");
    assert_eq!(me["csrf_token"], csrf.as_str());
    let path = format!("/v1/submissions/{}/deliveries/{}/replay", SubmissionId::new(), DestinationId::new());
    for header in [None, Some("bm90LXRoZS10b2tlbg")] {
        let mut r = with_cookie(Method::POST, &path);
        if let Some(h) = header {
            r = r.header("X-CSRF-Token", h);
        }
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "csrf_failed");
    }
    let ok = with_cookie(Method::POST, &path).header("X-CSRF-Token", &csrf).send().await.unwrap();
    assert_eq!(ok.status(), 404, "past CSRF, a missing delivery is missing");
    // Signing out ends the session at once on this instance.
    let out = with_cookie(Method::POST, "/v1/session/logout").header("X-CSRF-Token", &csrf).send().await.unwrap();
    assert_eq!(out.status(), 204);
    assert_eq!(with_cookie(Method::GET, "/v1/session").send().await.unwrap().status(), 401);
    formbridge_shared::testing::assert_role_allows("api", "ApiRole");
}

#[tokio::test]
async fn the_rate_limit_holds_per_key() {
    let api = start(|c| {
        c.key_rate = 1;
        c.key_burst = 3;
    })
    .await;
    let t = api.tenant("rate-a", ShardHistory::new(1, 0).unwrap()).await;
    let k1 = api.key(&[&t.tenant_id], "one").await;
    let k2 = api.key(&[&t.tenant_id], "two").await;
    // Ten calls at once: the burst of 3, plus at most one per second that passed meanwhile.
    let began = std::time::Instant::now();
    let mut codes = Vec::new();
    for _ in 0..10 {
        codes.push(api.get(&k1, "/v1/destinations").await.0);
    }
    let refilled = began.elapsed().as_secs() + 1;
    let ok = codes.iter().filter(|c| **c == 200).count() as u64;
    assert!(codes.iter().all(|c| *c == 200 || *c == 429), "{codes:?}");
    assert!(ok >= 3 && ok <= 3 + refilled, "{ok} answered within the limit: {codes:?}");
    let limited = api.http.get(format!("{}/v1/destinations", api.base)).bearer_auth(&k1).send().await.unwrap();
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(api.get(&k2, "/v1/destinations").await.0, 200, "another key has its own budget");
}

/// Everything the process logs, for the test below (a global subscriber, installed once).
fn captured_logs() -> &'static std::sync::Mutex<Vec<u8>> {
    static LOGS: std::sync::OnceLock<&'static std::sync::Mutex<Vec<u8>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buf: &'static std::sync::Mutex<Vec<u8>> = Box::leak(Box::default());
        struct W(&'static std::sync::Mutex<Vec<u8>>);
        impl std::io::Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let _ = tracing_subscriber::fmt().with_max_level(tracing::Level::DEBUG).with_writer(move || W(buf)).try_init();
        buf
    })
}

#[tokio::test]
async fn keys_tokens_cookies_and_cursors_never_reach_the_log() {
    let logs = captured_logs();
    let api = start(|_| {}).await;
    let t = api.tenant("log-a", ShardHistory::new(1, 0).unwrap()).await;
    let key = api.key(&[&t.tenant_id], "logged").await;
    for i in 0..3 {
        api.submission(&t, "contact", now_ms() + i, OffsetDateTime::now_utc()).await;
    }
    let (_, page) = api.get(&key, "/v1/submissions?limit=1").await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    api.get(&key, &format!("/v1/submissions?limit=1&cursor={cursor}")).await;
    api.get("fbk_01J00000000000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "/v1/submissions").await;
    let (token, _) = api
        .store
        .create_portal_token(
            &t.tenant_id,
            Duration::from_secs(60),
            Duration::from_secs(600),
            &api.keyring,
            OffsetDateTime::now_utc(),
        )
        .await
        .unwrap();
    let r = api
        .http
        .post(format!("{}/v1/portal/exchange", api.base))
        .json(&json!({"token": token.expose()}))
        .send()
        .await
        .unwrap();
    let cookie =
        r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
    api.http
        .get(format!("{}/v1/session", api.base))
        .header("Cookie", format!("fb_session={cookie}"))
        .send()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(text.contains("api request") && text.contains("/v1/submissions"), "requests are logged: {text}");
    let secret_part = key.rsplit('_').next().unwrap();
    for secret in [key.as_str(), secret_part, token.expose(), &cookie, &cursor] {
        assert!(!text.contains(secret), "a secret reached the log");
    }
}
