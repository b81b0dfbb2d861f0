//! A queue outage: the endpoint answers 503 with nothing acknowledged, and recovers on its own
//! when the queue is back. Uses an engine of its own, since it stops it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use formbridge_shared::aws::AwsClients;
use formbridge_shared::bootstrap::bootstrap;

use crate::helpers::{envelope, eventually, Stack};

struct Engine {
    port: u16,
    child: Child,
}

impl Engine {
    fn start(port: u16) -> Engine {
        let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server");
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {}: {e} (run ./deploy/local/test.sh, which installs it)", bin.display())
            });
        Engine { port, child }
    }

    async fn ready(&self) {
        let url = format!("http://127.0.0.1:{}/moto-api/", self.port);
        eventually("the engine to answer", || async { reqwest::get(&url).await.is_ok() }).await;
    }

    async fn clients(&self) -> AwsClients {
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(format!("http://127.0.0.1:{}", self.port))
            .load()
            .await;
        AwsClients::new(&conf)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn a_queue_outage_answers_503_and_recovers_without_a_restart() {
    let port = free_port();
    let engine = Engine::start(port);
    engine.ready().await;
    let aws = engine.clients().await;
    let names = formbridge_shared::testing::unique_names();
    let report = bootstrap(&aws, &names).await.unwrap();
    let stack = Stack::from_parts(aws.clone(), names.clone(), report.ingest_queue_url.clone());
    let secret = stack.tenant_with_site("outage", "outage.example").await;
    let mut config = stack.config();
    config.site_cache_seconds = 60;
    let app = stack.start(config).await;

    assert_eq!(app.post_signed(&secret, "before", &envelope("outage.example")).await.status, 202);

    drop(engine);
    let down = app.post_signed(&secret, "during", &envelope("outage.example")).await;
    assert_eq!((down.status, down.code()), (503, "queue_unavailable"), "{:?}", down.body);
    assert!(down.retry_after.is_some());

    // The engine comes back empty on the same port; recreate the resources, not the endpoint.
    let engine = Engine::start(port);
    engine.ready().await;
    let again = bootstrap(&aws, &names).await.unwrap();
    assert_eq!(again.ingest_queue_url, report.ingest_queue_url);
    assert_eq!(stack.queued().await, 0, "the 503 must not have queued anything");
    let mut status = 0;
    for _ in 0..10 {
        status = app.post_signed(&secret, "after", &envelope("outage.example")).await.status;
        if status == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(status, 202, "the endpoint did not recover");
    assert_eq!(stack.queued().await, 1);
    app.token.cancel();
    drop(engine);
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill -{sig} failed");
}

/// A hung engine (stopped, its connections open and silent): the request's deadline answers
/// 503 `deadline_exceeded` with Retry-After, sooner than the queue client's own bounds would,
/// and well within a sender's timeout. The send it abandoned may still land once the engine
/// resumes: the sender's retry makes the same submission id, stored once.
#[tokio::test]
async fn a_hung_queue_is_answered_at_the_request_deadline() {
    let port = free_port();
    let engine = Engine::start(port);
    engine.ready().await;
    let aws = engine.clients().await;
    let names = formbridge_shared::testing::unique_names();
    let report = bootstrap(&aws, &names).await.unwrap();
    let stack = Stack::from_parts(aws.clone(), names.clone(), report.ingest_queue_url.clone());
    let secret = stack.tenant_with_site("hung", "hung.example").await;
    let mut config = stack.config();
    config.site_cache_seconds = 60;
    config.request_deadline_ms = 1_000;
    let app = stack.start(config).await;
    assert_eq!(app.post_signed(&secret, "before", &envelope("hung.example")).await.status, 202);

    signal(&engine.child, "STOP");
    let hung = app.post_signed(&secret, "during", &envelope("hung.example")).await;
    signal(&engine.child, "CONT");
    assert_eq!((hung.status, hung.code()), (503, "deadline_exceeded"), "{:?}", hung.body);
    assert_eq!(hung.retry_after.as_deref(), Some("2"));

    let mut status = 0;
    for _ in 0..20 {
        status = app.post_signed(&secret, "during", &envelope("hung.example")).await.status;
        if status == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(status, 202, "the endpoint did not recover");
    app.token.cancel();
    drop(engine);
}
