//! Retry policies owned by our code (the SDK owns retries of failed requests; see `aws`).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// For the partial successes DynamoDB's batch calls hand back (`UnprocessedItems`,
/// `UnprocessedKeys`): jittered exponential, 50 ms doubling to at most 5 s, `retries` times.
pub fn unprocessed_backoff(retries: u16) -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(usize::from(retries))
        .with_jitter()
        .build()
}

/// For deleting a message whose work is done, through an engine outage: a delete that fails
/// makes the message come back and the work run again (a duplicate webhook, for a delivery), so
/// it is tried for about as long as an outage lasts (0.5 s doubling to 4 s, 6 times: ~16 s).
pub fn ack_backoff() -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(4))
        .with_max_times(6)
        .with_jitter()
        .build()
}

/// How long a long-running process waits, at start, for AWS (or the local engine) to answer
/// before it gives up and exits. A process restarted while its engine is down or hung must wait
/// for it rather than exit: the chaos run restarted killed processes during engine outages, and
/// every one of them exited at once, leaving the pipeline with nothing running. What cannot
/// change by waiting (a queue or table that does not exist) still fails at once.
pub const STARTUP_PATIENCE: Duration = Duration::from_secs(300);

/// Runs `op` until it succeeds, fails for good (`transient` says no), or [`STARTUP_PATIENCE`]
/// has passed: 0.5 s doubling to 10 s between tries, jittered, a warning naming `what` each time.
pub async fn at_startup<T, E, F, Fut>(what: &str, transient: impl Fn(&E) -> bool, op: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    use backon::Retryable;
    let policy = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(10))
        .without_max_times()
        .with_total_delay(Some(STARTUP_PATIENCE))
        .with_jitter();
    op.retry(policy)
        .when(transient)
        .notify(|e, wait| tracing::warn!(what, error = %e, retry_in = ?wait, "not reachable at start; waiting for it"))
        .await
}

#[cfg(test)]
mod tests {
    /// Transient failures are waited out; a permanent one is returned at once.
    #[tokio::test]
    async fn startup_waits_out_transient_failures_only() {
        let mut calls = 0;
        let r: Result<u32, String> = super::at_startup(
            "test",
            |e: &String| e == "down",
            || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Err("down".to_owned())
                    } else {
                        Ok(n)
                    }
                }
            },
        )
        .await;
        assert_eq!(r, Ok(3));
        let mut calls = 0;
        let r: Result<u32, String> = super::at_startup(
            "test",
            |e: &String| e == "down",
            || {
                calls += 1;
                async { Err("missing".to_owned()) }
            },
        )
        .await;
        assert_eq!((r, calls), (Err("missing".to_owned()), 1));
    }

    #[test]
    fn the_backoff_is_bounded_and_jittered() {
        let delays: Vec<_> = super::unprocessed_backoff(8).collect();
        assert_eq!(delays.len(), 8);
        assert!(delays.iter().all(|d| *d <= std::time::Duration::from_secs(10)));
    }
}
