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

#[cfg(test)]
mod tests {
    #[test]
    fn the_backoff_is_bounded_and_jittered() {
        let delays: Vec<_> = super::unprocessed_backoff(8).collect();
        assert_eq!(delays.len(), 8);
        assert!(delays.iter().all(|d| *d <= std::time::Duration::from_secs(10)));
    }
}
