//! Writing a group of items with BatchWriteItem and retrying `UnprocessedItems`.
//!
//! The SDK retries failed requests; this module retries only the partial successes the SDK
//! passes through, with `backon`'s jittered exponential policy. The port is a trait because the
//! local engine never returns UnprocessedItems, so the retry path is tested with a fake.

use std::time::Duration;

use aws_sdk_dynamodb::types::WriteRequest;

/// BatchWriteItem takes at most 25 requests.
pub const MAX_BATCH: usize = 25;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("BatchWriteItem failed: {0}")]
    Request(#[from] aws_sdk_dynamodb::Error),
    #[error("{0} items still unprocessed after every retry")]
    Exhausted(usize),
}

/// One BatchWriteItem call: returns the requests that were not processed.
pub trait BatchWrite {
    fn write(
        &self,
        requests: Vec<WriteRequest>,
    ) -> impl std::future::Future<Output = Result<Vec<WriteRequest>, aws_sdk_dynamodb::Error>> + Send;
}

/// The real table.
#[derive(Debug, Clone)]
pub struct DynamoBatchWrite {
    pub client: aws_sdk_dynamodb::Client,
    pub table: String,
}

impl BatchWrite for DynamoBatchWrite {
    async fn write(&self, requests: Vec<WriteRequest>) -> Result<Vec<WriteRequest>, aws_sdk_dynamodb::Error> {
        let out = self
            .client
            .batch_write_item()
            .request_items(&self.table, requests)
            .send()
            .await
            .map_err(aws_sdk_dynamodb::Error::from)?;
        Ok(out.unprocessed_items.and_then(|mut m| m.remove(&self.table)).unwrap_or_default())
    }
}

pub use formbridge_shared::retry::unprocessed_backoff;

/// Writes up to 25 requests, retrying unprocessed ones until all are written or the policy
/// gives up. Returns the number of BatchWriteItem calls made.
pub async fn write_all(
    port: &impl BatchWrite,
    requests: Vec<WriteRequest>,
    mut backoff: impl Iterator<Item = Duration>,
) -> Result<u32, WriteError> {
    debug_assert!(requests.len() <= MAX_BATCH);
    let mut pending = requests;
    let mut calls = 0;
    loop {
        calls += 1;
        pending = port.write(pending).await?;
        if pending.is_empty() {
            return Ok(calls);
        }
        match backoff.next() {
            Some(delay) => {
                tracing::debug!(unprocessed = pending.len(), ?delay, "retrying unprocessed items");
                tokio::time::sleep(delay).await;
            }
            None => return Err(WriteError::Exhausted(pending.len())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use aws_sdk_dynamodb::types::{AttributeValue, PutRequest};

    /// Processes `per_call` requests per call and hands the rest back, as a throttled table does.
    struct Throttled {
        per_call: usize,
        written: Mutex<Vec<WriteRequest>>,
    }

    impl BatchWrite for Throttled {
        async fn write(&self, mut requests: Vec<WriteRequest>) -> Result<Vec<WriteRequest>, aws_sdk_dynamodb::Error> {
            let n = self.per_call.min(requests.len());
            let rest = requests.split_off(n);
            self.written.lock().unwrap().extend(requests);
            Ok(rest)
        }
    }

    fn requests(n: usize) -> Vec<WriteRequest> {
        (0..n)
            .map(|i| {
                let put = PutRequest::builder().item("PK", AttributeValue::S(i.to_string())).build().unwrap();
                WriteRequest::builder().put_request(put).build()
            })
            .collect()
    }

    fn instant() -> impl Iterator<Item = Duration> {
        std::iter::repeat(Duration::ZERO)
    }

    #[tokio::test]
    async fn unprocessed_items_are_retried_until_written() {
        let port = Throttled { per_call: 7, written: Mutex::new(vec![]) };
        let calls = write_all(&port, requests(25), instant().take(10)).await.unwrap();
        assert_eq!(calls, 4);
        assert_eq!(port.written.lock().unwrap().len(), 25);
    }

    #[tokio::test]
    async fn the_policy_gives_up_and_reports_what_is_left() {
        let port = Throttled { per_call: 0, written: Mutex::new(vec![]) };
        let err = write_all(&port, requests(5), instant().take(3)).await.unwrap_err();
        assert!(matches!(err, WriteError::Exhausted(5)));
    }
}
