//! Destinations over HTTP: created with the secret shown once, read without it, changed,
//! disabled, deleted; a test send reaches a real receiver signed with that secret, and the
//! address guard refuses loopback unless allowed.

use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

use formbridge_shared::sharding::ShardHistory;

use crate::helpers::start;

/// A receiver on 127.0.0.1 that keeps every request's headers and body.
async fn receiver() -> (String, Arc<Mutex<Vec<(HeaderMap, String)>>>) {
    let seen: Arc<Mutex<Vec<(HeaderMap, String)>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |h: HeaderMap, body: String| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push((h, body));
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn destinations_are_managed_over_http_and_a_test_send_is_signed() {
    let api = start(|c| c.allow_loopback = true).await;
    let t = api.tenant("dst-a", ShardHistory::new(1, 0).unwrap()).await;
    let key = api.key(&[&t.tenant_id], "dest").await;
    let (url, seen) = receiver().await;

    let (s, created) = api
        .send(
            Method::POST,
            &key,
            "/v1/destinations",
            Some(json!({"name": "CRM", "url": url, "auth": {"type": "bearer", "token": "tok-123"}})),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let secret = created["signing_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    let id = created["destination_id"].as_str().unwrap().to_owned();
    assert_eq!(created["auth"], "bearer", "the kind of credentials, never the token");

    // Audited as the key that made it.
    let key_id = key.strip_prefix("fbk_").unwrap().split('_').next().unwrap().to_owned();
    let month = time::OffsetDateTime::now_utc().format(&time::macros::format_description!("[year]-[month]")).unwrap();
    let audit = api
        .store
        .client()
        .query()
        .table_name(api.store.table())
        .key_condition_expression("PK = :pk")
        .expression_attribute_values(":pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("AUDIT#dst-a#{month}")))
        .send()
        .await
        .unwrap();
    let created_by: Vec<&str> = audit
        .items()
        .iter()
        .filter(|i| i.get("kind").and_then(|v| v.as_s().ok()).map(String::as_str) == Some("destination.created"))
        .filter_map(|i| i.get("actor")?.as_s().ok().map(String::as_str))
        .collect();
    assert_eq!(created_by, vec![format!("api:{key_id}").as_str()]);

    let (_, one) = api.get(&key, &format!("/v1/destinations/{id}")).await;
    assert!(one.get("signing_secret").is_none() && !one.to_string().contains("tok-123"), "{one}");
    assert_eq!(one["health"]["state"], "healthy");

    // A test send: signed with the secret shown at creation, with the credentials.
    let (s, out) = api.send(Method::POST, &key, &format!("/v1/destinations/{id}/test"), None).await;
    assert_eq!(s, 200, "{out}");
    assert_eq!((out["delivered"].as_bool(), out["status_code"].as_u64()), (Some(true), Some(200)), "{out}");
    let (headers, body) = seen.lock().unwrap().pop().unwrap();
    assert_eq!(headers["authorization"], "Bearer tok-123");
    let wh = standardwebhooks::Webhook::new(&secret).unwrap();
    let mut h = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        h.insert(name, headers[name].to_str().unwrap().parse().unwrap());
    }
    wh.verify(body.as_bytes(), &h).expect("the test send verifies with the destination's secret");
    assert!(headers["webhook-id"].to_str().unwrap().starts_with("fb_test_"));
    let sent: Value = serde_json::from_str(&body).unwrap();
    assert!(sent.to_string().contains("test@example.com"), "{sent}");

    // Change, disable, delete.
    let (s, changed) = api
        .send(
            Method::PATCH,
            &key,
            &format!("/v1/destinations/{id}"),
            Some(json!({"name": "CRM 2", "forms": ["quote"]})),
        )
        .await;
    assert_eq!(s, 200, "{changed}");
    assert_eq!((changed["name"].as_str(), changed["forms"].clone()), (Some("CRM 2"), json!(["quote"])));
    let (_, off) = api.send(Method::POST, &key, &format!("/v1/destinations/{id}/disable"), None).await;
    assert_eq!(off["enabled"], false);
    let (_, list) = api.get(&key, "/v1/destinations").await;
    assert_eq!(list["destinations"][0]["health"]["state"], "disabled");
    let (s, e) =
        api.send(Method::PATCH, &key, &format!("/v1/destinations/{id}"), Some(json!({"url": "ftp://nope"}))).await;
    assert_eq!((s, e["error"]["code"].as_str()), (422, Some("invalid_url")));
    let (s, e) = api.send(Method::PATCH, &key, &format!("/v1/destinations/{id}"), Some(json!({"colour": "red"}))).await;
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("invalid_body")), "unknown fields are refused");
    assert_eq!(api.send(Method::DELETE, &key, &format!("/v1/destinations/{id}"), None).await.0, 204);
    assert_eq!(api.get(&key, &format!("/v1/destinations/{id}")).await.0, 404);
    formbridge_shared::testing::assert_role_allows("api", "ApiRole");
}

#[tokio::test]
async fn a_test_send_to_loopback_is_refused_unless_allowed() {
    let api = start(|_| {}).await;
    let t = api.tenant("dst-b", ShardHistory::new(1, 0).unwrap()).await;
    let key = api.key(&[&t.tenant_id], "dest").await;
    let (url, seen) = receiver().await;
    let (_, created) = api.send(Method::POST, &key, "/v1/destinations", Some(json!({"url": url}))).await;
    let id = created["destination_id"].as_str().unwrap();
    let (s, out) = api.send(Method::POST, &key, &format!("/v1/destinations/{id}/test"), None).await;
    assert_eq!(s, 200, "{out}");
    assert_eq!(
        (out["delivered"].as_bool(), out["error_class"].as_str()),
        (Some(false), Some("blocked_address")),
        "{out}"
    );
    assert!(seen.lock().unwrap().is_empty(), "nothing reached the receiver");
}
