//! A persister started while its engine is unreachable waits for it instead of exiting (the chaos
//! run restarted killed processes during engine outages, and each one exited at once). The
//! persister reaches the local engine through a loopback forwarder that refuses connections
//! until the test lets them through.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use formbridge_persister::{run, Config};
use formbridge_shared::aws::AwsClients;
use formbridge_shared::queue::{Outgoing, Queue};
use formbridge_shared::testing::fresh_stack;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Forwards connections to `target`, or drops them at once while `down`.
async fn forwarder(target: String, down: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if down.load(Ordering::SeqCst) {
                continue;
            }
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn a_persister_started_while_its_engine_is_unreachable_waits_for_it() {
    let (aws, names, _) = fresh_stack().await;
    let engine =
        std::env::var("AWS_ENDPOINT_URL").unwrap().trim_start_matches("http://").trim_end_matches('/').to_owned();
    let down = Arc::new(AtomicBool::new(true));
    let port = forwarder(engine, down.clone()).await;
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .load()
        .await;
    let stop = CancellationToken::new();
    let persister = tokio::spawn(run(Config::for_resources(names.clone()), AwsClients::new(&conf), stop.clone()));

    // Every connection refused: the persister keeps trying instead of exiting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!persister.is_finished(), "the persister exited while its engine was unreachable: {:?}", persister.await);

    // The engine reachable again: the persister works (an unreadable message reaches the DLQ).
    down.store(false, Ordering::SeqCst);
    let queue = Queue::open(aws.sqs.clone(), &names.ingest_queue, "test").await.unwrap();
    queue.send_all(&[Outgoing::new("not a submission")]).await.unwrap();
    let dlq = Queue::open(aws.sqs.clone(), &names.ingest_dlq, "test").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while dlq.receive(1, Duration::from_secs(1)).await.unwrap().is_empty() {
        assert!(!persister.is_finished(), "the persister stopped: {:?}", persister.await);
        assert!(Instant::now() < deadline, "the persister never handled the message");
    }
    stop.cancel();
    persister.await.unwrap().unwrap();
}
