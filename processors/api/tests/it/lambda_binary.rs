//! The API's Lambda binary run as Lambda runs it, behind a Function URL in RESPONSE_STREAM mode:
//! a stand-in for the Runtime API hands it a Function URL event and reads the streamed answer
//! (a JSON prelude with the status and headers, eight zero bytes, then the body).

use std::time::Duration;

use formbridge_shared::testing::{fresh_stack, FakeLambdaRuntime, LambdaProcess};

fn function_url_get(path: &str) -> serde_json::Value {
    serde_json::json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"accept": "application/json", "host": "fburl.lambda-url.us-east-1.on.aws"},
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "fburl",
            "domainName": "fburl.lambda-url.us-east-1.on.aws",
            "domainPrefix": "fburl",
            "http": {"method": "GET", "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9", "userAgent": "test"},
            "requestId": "req-1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "05/Dec/2026:01:00:00 +0000",
            "timeEpoch": 1_796_432_400_000_u64
        },
        "isBase64Encoded": false
    })
}

/// The prelude and the body of a streamed answer.
fn split(answer: &serde_json::Value) -> (serde_json::Value, String) {
    let text = answer.as_str().unwrap_or_else(|| panic!("a streamed answer is not JSON as a whole: {answer}"));
    let (prelude, body) = text.split_once("\0\0\0\0\0\0\0\0").unwrap_or_else(|| panic!("no prelude: {text:?}"));
    (serde_json::from_str(prelude).unwrap(), body.to_owned())
}

#[tokio::test]
async fn the_lambda_binary_streams_its_answers() {
    let (_aws, names, _) = fresh_stack().await;
    let mut runtime = FakeLambdaRuntime::start().await;
    let keys = formbridge_shared::secrets::Keyring::generate_spec("k1");
    let binary = env!("CARGO_BIN_EXE_formbridge-api-lambda");
    let _function = LambdaProcess::spawn(binary, &runtime, "api", &names, &[("FORMBRIDGE_MASTER_KEYS", keys)]);

    let answer = runtime.invoke(function_url_get("/healthz"), Duration::from_secs(60)).await.expect("an answer");
    let (prelude, body) = split(&answer);
    assert_eq!(prelude["statusCode"], 200, "{prelude}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap(), serde_json::json!({"status": "ok"}));

    // Without a credential: the API's own 401, as JSON.
    let answer = runtime.invoke(function_url_get("/v1/submissions"), Duration::from_secs(60)).await.expect("an answer");
    let (prelude, body) = split(&answer);
    assert_eq!(prelude["statusCode"], 401, "{prelude}");
    assert!(body.contains("\"error\""), "{body}");
}
