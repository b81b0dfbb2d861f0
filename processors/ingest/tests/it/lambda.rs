//! Lambda mode: the ingest function's router fed the requests a Function URL hands it (the
//! event parsed by lambda_http, as in the function), against the local engine.

use formbridge_shared::secrets::SigningSecret;
use lambda_http::tower::ServiceExt;

use crate::helpers::{envelope, now, signed, Stack};

/// A Function URL event (payload format 2.0) for a POST of `body` with `headers`.
fn function_url_event(headers: &[(String, String)], body: &[u8]) -> String {
    let headers: serde_json::Map<String, serde_json::Value> =
        headers.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
    serde_json::json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/v1/submissions",
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "fburl",
            "domainName": "fburl.lambda-url.us-east-1.on.aws",
            "domainPrefix": "fburl",
            "http": {"method": "POST", "path": "/v1/submissions", "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9", "userAgent": "WordPress"},
            "requestId": "req-1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "05/Dec/2026:01:00:00 +0000",
            "timeEpoch": 1_796_432_400_000_u64
        },
        "body": String::from_utf8(body.to_vec()).unwrap(),
        "isBase64Encoded": false
    })
    .to_string()
}

async fn invoke(app: &axum::Router, event: &str) -> (u16, serde_json::Value) {
    let request = lambda_http::request::from_str(event).expect("lambda_http parses a Function URL event");
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

#[tokio::test]
async fn the_lambda_function_queues_signed_submissions_and_audits_forgeries_per_request() {
    let stack = Stack::new().await;
    let secret = stack.tenant_with_site("lamingest", "lam.example").await;
    let app = formbridge_ingest::lambda_app(&stack.config(), &stack.aws).await.unwrap();

    let body = serde_json::to_vec(&envelope("lam.example")).unwrap();
    let (status, answer) =
        invoke(&app, &function_url_event(&signed(secret.expose(), "msg_l1", now(), &body), &body)).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "queued");
    assert_eq!(stack.queued().await, 1, "answered 2xx only once the queue holds it");

    // A forgery is refused, and counted in the audit log by the time the invocation ends: a
    // frozen function never runs a background flush.
    let forger = SigningSecret::generate();
    let (status, answer) =
        invoke(&app, &function_url_event(&signed(forger.expose(), "msg_l2", now(), &body), &body)).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_signature");
    let month = time::OffsetDateTime::now_utc();
    let pk = format!("AUDIT#lamingest#{:04}-{:02}", month.year(), u8::from(month.month()));
    let out = stack
        .aws
        .dynamodb
        .query()
        .table_name(&stack.names.table)
        .key_condition_expression("PK = :pk")
        .expression_attribute_values(":pk", aws_sdk_dynamodb::types::AttributeValue::S(pk))
        .send()
        .await
        .unwrap();
    let total: u64 = out.items().iter().filter_map(|i| i.get("total")?.as_n().ok()?.parse::<u64>().ok()).sum();
    assert_eq!(total, 1, "the forgery is in the audit log: {:?}", out.items());
    assert_eq!(stack.queued().await, 1);
    formbridge_shared::testing::assert_role_allows("ingest", "IngestRole");
}

/// The binary itself, run as Lambda runs it (a stand-in for the Runtime API hands it the
/// Function URL event): a signed post is queued and answered 202 through lambda_http.
#[tokio::test]
async fn the_lambda_binary_answers_a_function_url_event() {
    use formbridge_shared::testing::{FakeLambdaRuntime, LambdaProcess};
    let stack = Stack::new().await;
    let secret = stack.tenant_with_site("lambin", "lambin.example").await;
    let mut runtime = FakeLambdaRuntime::start().await;
    let binary = env!("CARGO_BIN_EXE_formbridge-ingest-lambda");
    let _function = LambdaProcess::spawn(
        binary,
        &runtime,
        "ingest",
        &stack.names,
        &[("FORMBRIDGE_MASTER_KEYS", stack.keys.clone())],
    );
    let body = serde_json::to_vec(&envelope("lambin.example")).unwrap();
    let event: serde_json::Value =
        serde_json::from_str(&function_url_event(&signed(secret.expose(), "msg_b1", now(), &body), &body)).unwrap();
    let answer = runtime.invoke(event, std::time::Duration::from_secs(60)).await.expect("an answer, not an error");
    assert_eq!(answer["statusCode"], 202, "{answer}");
    let reply: serde_json::Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(reply["status"], "queued");
    assert_eq!(stack.queued().await, 1);
}
