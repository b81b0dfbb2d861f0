//! Clients that cost us by being slow or many: header and body timeouts, the connection limit,
//! and the per-tenant rate shared by several instances.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{envelope, Stack};

/// Reads until the server closes the connection (or 60 s pass, which fails the test).
async fn read_to_close(conn: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), conn.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server never closed the connection; it sent {:?}", String::from_utf8_lossy(&out));
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn slow_headers_and_bodies_are_cut_off() {
    let stack = Stack::new().await;
    let mut config = stack.config();
    config.header_timeout_seconds = 1;
    config.body_timeout_seconds = 1;
    let app = stack.start(config).await;

    // A client that connects and says nothing, and one that stops half-way through its headers.
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let mut half = TcpStream::connect(app.addr).await.unwrap();
    half.write_all(b"POST /v1/submissions HTTP/1.1\r\nHost: x\r\nContent-Type: appl").await.unwrap();
    assert_eq!(read_to_close(&mut silent).await, "", "nothing is answered to a silent client");
    let half_answer = read_to_close(&mut half).await;
    assert!(!half_answer.contains(" 2"), "no success for half a request: {half_answer:?}");

    // Headers in full, then a trickle of body: a 408 naming the problem, and the connection closed.
    let mut trickle = TcpStream::connect(app.addr).await.unwrap();
    trickle
        .write_all(
            b"POST /v1/submissions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"site\":",
        )
        .await
        .unwrap();
    let answer = read_to_close(&mut trickle).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("\"body_timeout\"") && answer.contains("INGEST_BODY_TIMEOUT_SECONDS"), "{answer:?}");

    // An idle keep-alive connection is closed after the header timeout too.
    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let answer = read_to_close(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");

    // A well-behaved client is served as before.
    let secret = stack.tenant_with_site("prompt", "prompt.example").await;
    assert_eq!(app.post_signed(&secret, "ok1", &envelope("prompt.example")).await.status, 202);
    app.token.cancel();
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let stack = Stack::new().await;
    let mut config = stack.config();
    config.max_connections = 2;
    config.header_timeout_seconds = 120;
    let app = stack.start(config).await;
    let url = format!("http://{}/healthz", app.addr);
    // Two clients hold both connections without sending anything.
    let a = TcpStream::connect(app.addr).await.unwrap();
    let b = TcpStream::connect(app.addr).await.unwrap();
    let third = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third.is_finished(), "a third connection was served while two held the limit");
    drop(a);
    let served = tokio::time::timeout(Duration::from_secs(60), third).await;
    assert_eq!(served.expect("served once a slot freed").unwrap().unwrap(), 200);
    drop(b);
    app.token.cancel();
}

/// 20 signed posts, alternating between two instances: (accepted by each, limited, time taken).
async fn send(
    apps: &(crate::helpers::App, crate::helpers::App),
    secret: &formbridge_shared::secrets::SigningSecret,
    tag: &str,
) -> ([u32; 2], u32, Duration) {
    let started = Instant::now();
    let mut accepted = [0u32; 2];
    let mut limited = 0;
    for i in 0..20 {
        let app = if i % 2 == 0 { &apps.0 } else { &apps.1 };
        let a = app.post_signed(secret, &format!("{tag}{i}"), &envelope("shared-rate.example")).await;
        match a.status {
            202 => accepted[i % 2] += 1,
            429 => {
                assert!(a.retry_after.is_some(), "a 429 says when to come back");
                limited += 1;
            }
            s => panic!("unexpected {s}: {:?}", a.body),
        }
    }
    (accepted, limited, started.elapsed())
}

#[tokio::test]
async fn the_tenant_rate_holds_across_instances() {
    let stack = Stack::new().await;
    let secret = stack.tenant_with_site("shared-rate", "shared-rate.example").await;
    // 1 a second, a burst of 10: configured once for two instances, and (the old way) per instance.
    let mut config = stack.config();
    config.tenant_rate = 1;
    config.tenant_burst = 10;
    let per_instance = (stack.start(config.clone()).await, stack.start(config.clone()).await);
    config.instances = 2;
    let shared = (stack.start(config.clone()).await, stack.start(config).await);

    // Each instance alone allows the whole burst: 20 in a row pass, twice the tenant's burst.
    let (accepted, limited, _) = send(&per_instance, &secret, "p").await;
    assert_eq!((accepted, limited), ([10, 10], 0));
    // Told there are two, each allows half: the pair allows the burst plus the refill over the time taken.
    // (The bucket of the first pair is separate: each instance has its own limiter.)
    let (accepted, limited, took) = send(&shared, &secret, "s").await;
    let allowed = 10 + took.as_secs_f64().ceil() as u32;
    let total = accepted[0] + accepted[1];
    assert!(total <= allowed, "{total} accepted, at most {allowed} allowed ({took:?})");
    assert!(accepted[0] >= 5 && accepted[1] >= 5, "each instance allows its share: {accepted:?}");
    assert_eq!(total + limited, 20);
    for app in [per_instance.0, per_instance.1, shared.0, shared.1] {
        app.token.cancel();
    }
}
