//! Hostile requests: each gets its documented status and error code, and nothing reaches the queue.

use serde_json::json;

use crate::helpers::{envelope, now, signed, Stack};

struct Case {
    name: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn without(mut h: Vec<(String, String)>, name: &str) -> Vec<(String, String)> {
    h.retain(|(k, _)| k != name);
    h
}

fn with(mut h: Vec<(String, String)>, name: &str, value: &str) -> Vec<(String, String)> {
    h.retain(|(k, _)| k != name);
    h.push((name.into(), value.into()));
    h
}

#[tokio::test]
async fn hostile_requests_get_clear_answers_and_queue_nothing() {
    let stack = Stack::new().await;
    let secret = stack.tenant_with_site("victim", "victim.example").await;
    let other = stack.tenant_with_site("attacker", "attacker.example").await;
    let mut config = stack.config();
    config.max_body_bytes = 8 * 1024;
    let app = stack.start(config).await;
    let s = secret.expose();

    let good = serde_json::to_vec(&envelope("victim.example")).unwrap();
    let sign = |body: &[u8]| signed(s, "msg_h", now(), body);
    let body_with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = envelope("victim.example");
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let case = |name, body: Vec<u8>, status, code| Case { name, headers: sign(&body), body, status, code };

    let deep = body_with(&|v| v["fields"]["address"] = json!({"geo": {"lat": 1}}));
    let many = body_with(&|v| {
        v["fields"] = json!((0..201).map(|i| (format!("f{i}"), json!("x"))).collect::<serde_json::Map<_, _>>())
    });
    let dup = br#"{"site":"victim.example","form_id":"a","form_id":"b","fields":{}}"#.to_vec();
    let dup_nested = br#"{"site":"victim.example","form_id":"a","fields":{"x":1,"x":2}}"#.to_vec();
    let bad_utf8 = b"{\"site\":\"victim.example\",\"form_id\":\"a\",\"fields\":{\"n\":\"\xff\xfe\"}}".to_vec();
    let nested_deep = format!("{}{}", "[".repeat(300), "]".repeat(300)).into_bytes();
    let oversize = body_with(&|v| v["fields"]["message"] = json!("x".repeat(9000)));
    let spoofed_site = body_with(&|v| v["site"] = json!("attacker.example"));
    let unknown_site = body_with(&|v| v["site"] = json!("nobody.example"));

    let cases = vec![
        Case {
            name: "forged signature",
            headers: with(sign(&good), "webhook-signature", "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            body: good.clone(),
            status: 401,
            code: "invalid_signature",
        },
        Case {
            name: "signed with another site's secret",
            headers: signed(other.expose(), "msg_h", now(), &good),
            body: good.clone(),
            status: 401,
            code: "invalid_signature",
        },
        Case {
            name: "body names a different site than the signer",
            headers: sign(&spoofed_site),
            body: spoofed_site.clone(),
            status: 401,
            code: "invalid_signature",
        },
        Case {
            name: "unknown site",
            headers: sign(&unknown_site),
            body: unknown_site.clone(),
            status: 401,
            code: "invalid_signature",
        },
        Case {
            name: "stale timestamp",
            headers: signed(s, "msg_h", now() - 301, &good),
            body: good.clone(),
            status: 401,
            code: "timestamp_out_of_tolerance",
        },
        Case {
            name: "future timestamp",
            // Past the tolerance by a minute: the cases are signed up front and sent one after
            // another, so by the time this one is checked the server's clock has moved on (a
            // margin of one second let it through on a loaded machine).
            headers: signed(s, "msg_h", now() + 360, &good),
            body: good.clone(),
            status: 401,
            code: "timestamp_out_of_tolerance",
        },
        Case {
            // Found by fuzzing: `now - ts` overflowed (a panic in debug; in release it wrapped
            // round into the tolerance).
            name: "timestamp at the i64 minimum",
            headers: with(sign(&good), "webhook-timestamp", &i64::MIN.to_string()),
            body: good.clone(),
            status: 401,
            code: "timestamp_out_of_tolerance",
        },
        Case {
            name: "timestamp at the i64 maximum",
            headers: with(sign(&good), "webhook-timestamp", &i64::MAX.to_string()),
            body: good.clone(),
            status: 401,
            code: "timestamp_out_of_tolerance",
        },
        Case {
            name: "non-numeric timestamp",
            headers: with(sign(&good), "webhook-timestamp", "yesterday"),
            body: good.clone(),
            status: 401,
            code: "missing_signature",
        },
        Case {
            name: "missing signature header",
            headers: without(sign(&good), "webhook-signature"),
            body: good.clone(),
            status: 401,
            code: "missing_signature",
        },
        Case {
            name: "missing id header",
            headers: without(sign(&good), "webhook-id"),
            body: good.clone(),
            status: 401,
            code: "missing_signature",
        },
        Case {
            name: "missing timestamp header",
            headers: without(sign(&good), "webhook-timestamp"),
            body: good.clone(),
            status: 401,
            code: "missing_signature",
        },
        Case {
            name: "unsupported signature version",
            headers: with(sign(&good), "webhook-signature", &sign(&good)[3].1.replace("v1,", "v2,")),
            body: good.clone(),
            status: 401,
            code: "invalid_signature",
        },
        Case {
            name: "body altered after signing",
            headers: sign(&good),
            body: body_with(&|v| v["fields"]["name"] = json!("Mallory")),
            status: 401,
            code: "invalid_signature",
        },
        Case {
            name: "oversize body",
            headers: sign(&oversize),
            body: oversize.clone(),
            status: 413,
            code: "payload_too_large",
        },
        Case {
            name: "wrong content type",
            headers: with(sign(&good), "content-type", "text/plain"),
            body: good.clone(),
            status: 415,
            code: "unsupported_media_type",
        },
        Case {
            name: "form-encoded body",
            headers: with(sign(&good), "content-type", "application/x-www-form-urlencoded"),
            body: good.clone(),
            status: 415,
            code: "unsupported_media_type",
        },
        case("invalid UTF-8", bad_utf8, 400, "malformed_json"),
        case("malformed JSON", b"{\"site\": \"victim.example\",".to_vec(), 400, "malformed_json"),
        case("duplicate top-level keys", dup, 400, "malformed_json"),
        case("duplicate nested keys", dup_nested, 400, "malformed_json"),
        case("nesting past the parser's limit", nested_deep, 400, "malformed_json"),
        case(
            "site missing",
            body_with(&|v| {
                v.as_object_mut().unwrap().remove("site");
            }),
            422,
            "invalid_submission",
        ),
        case("objects nested two levels", deep, 422, "invalid_submission"),
        case("too many fields", many, 422, "invalid_submission"),
        case(
            "control character in form_id",
            body_with(&|v| v["form_id"] = json!("contact\u{0007}")),
            422,
            "invalid_submission",
        ),
        case("separator in form_id", body_with(&|v| v["form_id"] = json!("contact#SUB#x")), 422, "invalid_submission"),
        case(
            "control character in a field name",
            body_with(&|v| v["fields"]["na\u{0008}me"] = json!("A")),
            422,
            "invalid_submission",
        ),
        case("fields not an object", body_with(&|v| v["fields"] = json!(["a"])), 422, "invalid_submission"),
        case("unknown top-level field", body_with(&|v| v["tenant_id"] = json!("attacker")), 422, "invalid_submission"),
        case(
            "submitted_at not a timestamp",
            body_with(&|v| v["submitted_at"] = json!("soon")),
            422,
            "invalid_submission",
        ),
    ];
    assert!(cases.len() >= 20);

    let mut unknown_body = None;
    let mut bad_sig_body = None;
    for c in cases {
        let a = app.post(&c.headers, c.body).await;
        assert_eq!((a.status, a.code()), (c.status, c.code), "{}: {:?}", c.name, a.body);
        assert!(a.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}: no message", c.name);
        assert_eq!(stack.queued().await, 0, "{}: something reached the queue", c.name);
        if c.name == "unknown site" {
            unknown_body = Some(a.body.clone());
        }
        if c.name == "forged signature" {
            bad_sig_body = Some(a.body.clone());
        }
    }
    assert_eq!(unknown_body, bad_sig_body, "an unknown site must look exactly like a bad signature");

    // And the same endpoint still accepts the genuine article.
    assert_eq!(app.post(&sign(&good), good).await.status, 202);
    assert_eq!(stack.queued().await, 1);
    app.token.cancel();
    formbridge_shared::testing::assert_role_allows("ingest", "IngestRole");
}

#[tokio::test]
async fn a_body_whose_item_cannot_fit_is_refused_with_413_and_nothing_is_queued() {
    let stack = Stack::new().await;
    let secret = stack.tenant_with_site("big", "big.example").await;
    let mut config = stack.config();
    config.max_body_bytes = 1_000_000;
    let app = stack.start(config).await;
    let mut v = envelope("big.example");
    v["fields"] = json!((0..150)
        .map(|i| (format!("f{i}"), json!(formbridge_shared::sample::incompressible_text(4000, i + 1))))
        .collect::<serde_json::Map<_, _>>());
    let body = serde_json::to_vec(&v).unwrap();
    assert!(body.len() > 500_000 && body.len() < 1_000_000);
    let r = app.post(&signed(secret.expose(), "msg_big", now(), &body), body).await;
    assert_eq!((r.status, r.code()), (413, "item_too_large"), "{:?}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("400"), "{:?}", r.body);
    // A body as large that compresses well still fits and is accepted.
    v["fields"] =
        json!((0..150).map(|i| (format!("f{i}"), json!("word ".repeat(800)))).collect::<serde_json::Map<_, _>>());
    let body = serde_json::to_vec(&v).unwrap();
    let ok = app.post(&signed(secret.expose(), "msg_ok", now(), &body), body).await;
    assert_eq!(ok.status, 202, "{:?}", ok.body);
    assert_eq!(stack.queued().await, 1);
    app.token.cancel();
}
