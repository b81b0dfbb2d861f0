//! The narrow port between the consumer and DynamoDB Streams: list shards, get an iterator, get
//! records. The AWS implementation pages through DescribeStream (100 shards a page; skipping
//! pagination stalls silently). `fake` implements the same trait with many shards and splits,
//! which the local engine cannot produce.

use std::future::Future;

use aws_sdk_dynamodbstreams::types::ShardIteratorType;

use super::record::Change;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub id: String,
    pub parent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    TrimHorizon,
    /// Just after the last handled record.
    After(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub records: Vec<Change>,
    /// `None` when the shard is closed and fully read (SHARD_END).
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("shard iterator expired")]
    ExpiredIterator,
    #[error("records were trimmed from the stream before they were read (data loss)")]
    Trimmed,
    /// The table is missing, or has no stream: waiting will not change it (a setting or a
    /// bootstrap will).
    #[error("{0}")]
    Missing(String),
    #[error("streams request failed: {0}")]
    Other(String),
}

pub trait StreamShards: Send + Sync + 'static {
    fn shards(&self) -> impl Future<Output = Result<Vec<ShardInfo>, ShardError>> + Send;
    fn iterator(&self, shard: &str, at: &Position) -> impl Future<Output = Result<String, ShardError>> + Send;
    fn records(&self, iterator: &str, limit: i32) -> impl Future<Output = Result<Page, ShardError>> + Send;
}

/// DynamoDB Streams.
#[derive(Debug, Clone)]
pub struct DynamoStreams {
    pub client: aws_sdk_dynamodbstreams::Client,
    pub stream_arn: String,
}

fn classify(e: aws_sdk_dynamodbstreams::Error) -> ShardError {
    use aws_sdk_dynamodbstreams::Error as E;
    match e {
        E::ExpiredIteratorException(_) => ShardError::ExpiredIterator,
        E::TrimmedDataAccessException(_) => ShardError::Trimmed,
        other => ShardError::Other(other.to_string()),
    }
}

impl DynamoStreams {
    /// The table's current stream.
    pub async fn for_table(
        dynamodb: &aws_sdk_dynamodb::Client,
        streams: aws_sdk_dynamodbstreams::Client,
        table: &str,
    ) -> Result<Self, ShardError> {
        let out =
            dynamodb.describe_table().table_name(table).send().await.map_err(
                |e| match aws_sdk_dynamodb::Error::from(e) {
                    aws_sdk_dynamodb::Error::ResourceNotFoundException(_) => {
                        ShardError::Missing(format!("table {table} does not exist"))
                    }
                    other => ShardError::Other(other.to_string()),
                },
            )?;
        let arn = out
            .table()
            .and_then(|t| t.latest_stream_arn())
            .ok_or_else(|| ShardError::Missing(format!("table {table} has no stream")))?;
        Ok(Self { client: streams, stream_arn: arn.to_owned() })
    }

    /// [`DynamoStreams::for_table`] for a long-running process: waits for an unreachable or
    /// failing engine ([`crate::retry::at_startup`]).
    pub async fn for_table_patiently(
        dynamodb: &aws_sdk_dynamodb::Client,
        streams: aws_sdk_dynamodbstreams::Client,
        table: &str,
    ) -> Result<Self, ShardError> {
        crate::retry::at_startup(
            &format!("the stream of table {table}"),
            |e: &ShardError| !matches!(e, ShardError::Missing(_)),
            || Self::for_table(dynamodb, streams.clone(), table),
        )
        .await
    }
}

impl StreamShards for DynamoStreams {
    async fn shards(&self) -> Result<Vec<ShardInfo>, ShardError> {
        let mut out = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let resp = self
                .client
                .describe_stream()
                .stream_arn(&self.stream_arn)
                .limit(100)
                .set_exclusive_start_shard_id(start.take())
                .send()
                .await
                .map_err(|e| classify(e.into()))?;
            let Some(desc) = resp.stream_description else { return Ok(out) };
            for s in desc.shards() {
                if let Some(id) = s.shard_id() {
                    out.push(ShardInfo { id: id.to_owned(), parent: s.parent_shard_id().map(str::to_owned) });
                }
            }
            match desc.last_evaluated_shard_id {
                Some(last) => start = Some(last),
                None => return Ok(out),
            }
        }
    }

    async fn iterator(&self, shard: &str, at: &Position) -> Result<String, ShardError> {
        let mut req = self.client.get_shard_iterator().stream_arn(&self.stream_arn).shard_id(shard);
        req = match at {
            Position::TrimHorizon => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Position::After(seq) => {
                req.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).sequence_number(seq)
            }
        };
        let out = req.send().await.map_err(|e| classify(e.into()))?;
        out.shard_iterator.ok_or_else(|| ShardError::Other("no shard iterator returned".into()))
    }

    async fn records(&self, iterator: &str, limit: i32) -> Result<Page, ShardError> {
        let out = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .send()
            .await
            .map_err(|e| classify(e.into()))?;
        metrics::counter!("stream_get_records_calls_total").increment(1);
        Ok(Page {
            records: out.records().iter().filter_map(Change::from_record).collect(),
            next: out.next_shard_iterator,
        })
    }
}
