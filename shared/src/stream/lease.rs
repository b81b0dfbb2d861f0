//! Shard leases and checkpoints in the control table, one item per shard per consumer group,
//! KCL-style: taking or renewing a lease is a conditional write that expects the counter last
//! seen and bumps it; a checkpoint is a conditional write that expects this owner and the
//! previous checkpoint, so an instance that lost its lease can never move one.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};

use crate::keys;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoint {
    TrimHorizon,
    /// Every record up to and including this sequence number is handled.
    At(String),
    /// The shard is closed and fully handled: its children may start.
    ShardEnd,
}

impl Checkpoint {
    pub fn encode(&self) -> String {
        match self {
            Checkpoint::TrimHorizon => "TRIM_HORIZON".into(),
            Checkpoint::At(seq) => format!("SEQ#{seq}"),
            Checkpoint::ShardEnd => "SHARD_END".into(),
        }
    }

    pub fn decode(s: &str) -> Checkpoint {
        match s {
            "SHARD_END" => Checkpoint::ShardEnd,
            s => s.strip_prefix("SEQ#").map_or(Checkpoint::TrimHorizon, |q| Checkpoint::At(q.to_owned())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub shard: String,
    pub owner: Option<String>,
    pub counter: u64,
    pub checkpoint: Checkpoint,
    pub parent: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease on {0} is held by someone else now")]
    Lost(String),
    #[error("lease table request failed: {0}")]
    Dynamo(#[from] aws_sdk_dynamodb::Error),
}

/// The leases of one consumer group.
#[derive(Debug, Clone)]
pub struct LeaseTable {
    pub client: aws_sdk_dynamodb::Client,
    pub table: String,
    pub group: String,
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn lost_if_condition<T>(shard: &str, r: Result<T, aws_sdk_dynamodb::Error>) -> Result<T, LeaseError> {
    r.map_err(|e| match e {
        aws_sdk_dynamodb::Error::ConditionalCheckFailedException(_) => LeaseError::Lost(shard.to_owned()),
        other => LeaseError::Dynamo(other),
    })
}

impl LeaseTable {
    fn key(&self, shard: &str) -> HashMap<String, AttributeValue> {
        let k = keys::lease(&self.group, shard);
        HashMap::from([(keys::PK.to_owned(), s(&k.pk)), (keys::SK.to_owned(), s(&k.sk))])
    }

    pub async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        let items = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(":pk", s(&keys::lease(&self.group, "").pk))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(aws_sdk_dynamodb::Error::from)?;
        Ok(items
            .iter()
            .filter_map(|i| {
                let get = |k: &str| i.get(k).and_then(|v| v.as_s().ok()).cloned();
                Some(Lease {
                    shard: get("shard")?,
                    owner: get("owner"),
                    counter: i.get("counter")?.as_n().ok()?.parse().ok()?,
                    checkpoint: Checkpoint::decode(&get("checkpoint")?),
                    parent: get("parent"),
                })
            })
            .collect())
    }

    /// One lease, read consistently.
    pub async fn get(&self, shard: &str) -> Result<Option<Lease>, LeaseError> {
        Ok(self.list().await?.into_iter().find(|l| l.shard == shard))
    }

    /// Creates the lease of a newly discovered shard (at TRIM_HORIZON) unless it exists.
    pub async fn ensure(&self, shard: &str, parent: Option<&str>) -> Result<bool, LeaseError> {
        let mut item = self.key(shard);
        item.insert("shard".into(), s(shard));
        item.insert("counter".into(), AttributeValue::N("0".into()));
        item.insert("checkpoint".into(), s(&Checkpoint::TrimHorizon.encode()));
        if let Some(p) = parent {
            item.insert("parent".into(), s(p));
        }
        let r = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await
            .map_err(aws_sdk_dynamodb::Error::from);
        match r {
            Ok(_) => Ok(true),
            Err(aws_sdk_dynamodb::Error::ConditionalCheckFailedException(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes (or steals) a lease: expects the counter last seen, sets the owner, bumps the counter.
    pub async fn take(&self, lease: &Lease, me: &str) -> Result<Lease, LeaseError> {
        self.bump(lease, me, "#n = :c", "SET #o = :me, #n = :next").await
    }

    /// Renews a lease this instance holds.
    pub async fn renew(&self, lease: &Lease, me: &str) -> Result<Lease, LeaseError> {
        self.bump(lease, me, "#n = :c AND #o = :me", "SET #n = :next").await
    }

    async fn bump(&self, lease: &Lease, me: &str, condition: &str, update: &str) -> Result<Lease, LeaseError> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(&lease.shard)))
            .condition_expression(condition)
            .update_expression(update)
            .expression_attribute_names("#o", "owner")
            .expression_attribute_names("#n", "counter")
            .expression_attribute_values(":c", AttributeValue::N(lease.counter.to_string()))
            .expression_attribute_values(":next", AttributeValue::N((lease.counter + 1).to_string()))
            .expression_attribute_values(":me", s(me))
            .send()
            .await
            .map_err(aws_sdk_dynamodb::Error::from);
        lost_if_condition(&lease.shard, r)?;
        Ok(Lease { owner: Some(me.to_owned()), counter: lease.counter + 1, ..lease.clone() })
    }

    /// Gives a lease up (at shutdown), so another instance can take it at once.
    pub async fn release(&self, shard: &str, me: &str) -> Result<(), LeaseError> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(shard)))
            .condition_expression("#o = :me")
            .update_expression("REMOVE #o ADD #n :one")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_names("#n", "counter")
            .expression_attribute_values(":me", s(me))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .send()
            .await
            .map_err(aws_sdk_dynamodb::Error::from);
        lost_if_condition(shard, r).map(|_| ())
    }

    /// The transaction item that moves a checkpoint: only for this owner, only from `prev`.
    pub fn checkpoint_item(&self, shard: &str, me: &str, prev: &Checkpoint, next: &Checkpoint) -> TransactWriteItem {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(self.key(shard)))
            .condition_expression("#o = :me AND #cp = :prev")
            .update_expression("SET #cp = :next")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_names("#cp", "checkpoint")
            .expression_attribute_values(":me", s(me))
            .expression_attribute_values(":prev", s(&prev.encode()))
            .expression_attribute_values(":next", s(&next.encode()))
            .build()
            .expect("table, key and expression are set");
        TransactWriteItem::builder().update(update).build()
    }

    /// For tests and operators: forget a group's lease on a shard (its next lease starts at
    /// TRIM_HORIZON).
    pub async fn delete(&self, shard: &str) -> Result<(), LeaseError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(self.key(shard)))
            .send()
            .await
            .map_err(aws_sdk_dynamodb::Error::from)?;
        Ok(())
    }
}

/// Commits a shard's progress: the processor's side effects and the checkpoint, in one
/// TransactWriteItems. Handed to the processor for each batch.
#[derive(Debug)]
pub struct Committer<'a> {
    pub(crate) leases: &'a LeaseTable,
    pub(crate) shard: &'a str,
    pub(crate) owner: &'a str,
    pub(crate) checkpoint: Checkpoint,
    pub(crate) commits: u32,
    /// When this worker began reading the shard (epoch seconds, our clock), if it took the lease
    /// over from an owner (which may have handled records past the checkpoint); `None` for a
    /// lease that was free (new, or released after its deferred checkpoint was written).
    pub(crate) reading_since_s: Option<i64>,
}

/// Clock skew allowed between the stream's record timestamps (whole seconds) and ours, and their
/// rounding. A record this close to the start of reading is rechecked: one more read each.
const CREATED_MARGIN_S: i64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("lease on {0} lost: nothing was written")]
    LeaseLost(String),
    /// The processor's own conditions failed (indices into its items); nothing was written.
    #[error("conditions failed on items {0:?}; nothing was written")]
    Conflict(Vec<usize>),
    #[error("more than 99 items in one commit")]
    TooLarge,
    #[error("commit failed: {0}")]
    Dynamo(aws_sdk_dynamodb::Error),
}

impl<'a> Committer<'a> {
    /// Whether nothing has been committed since this worker took the shard's lease: the batch
    /// may have been handled before, by a worker that died before its checkpoint.
    pub fn is_first_batch(&self) -> bool {
        self.commits == 0
    }

    /// Whether `record` may have been handled before, by a worker that held this lease earlier
    /// and died (or stopped) past its last checkpoint. A consumer may defer its checkpoints
    /// (`ConsumerConfig::checkpoint_every`), so that can be more than the first batch: any
    /// record the stream had before this worker began reading a lease it took over from another
    /// owner (with a margin for clock skew). A free lease repeats nothing: it is new, or its
    /// owner wrote its deferred checkpoint before releasing it (one that could not keeps it).
    pub fn may_repeat(&self, record: &super::Change) -> bool {
        self.reading_since_s.is_some_and(|since| record.created_s.is_none_or(|s| s <= since + CREATED_MARGIN_S))
    }

    /// A committer outside a running consumer (tests and tools).
    pub fn for_tests(leases: &'a LeaseTable, shard: &'a str, owner: &'a str, checkpoint: Checkpoint) -> Self {
        Committer { leases, shard, owner, checkpoint, commits: 0, reading_since_s: None }
    }

    pub fn shard(&self) -> &str {
        self.shard
    }

    /// The worker this committer commits as.
    pub fn owner(&self) -> &str {
        self.owner
    }

    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// Writes `items` and moves the checkpoint to `next`, atomically.
    pub async fn commit(&mut self, next: Checkpoint, mut items: Vec<TransactWriteItem>) -> Result<(), CommitError> {
        if items.len() > 99 {
            return Err(CommitError::TooLarge);
        }
        if items.is_empty() {
            // Only the checkpoint moves: one conditional UpdateItem (1 write unit) instead of a
            // transaction of one item (2 units). Stream consumers checkpoint after every batch,
            // so at low traffic this is most of what they write.
            let u = self.leases.checkpoint_item(self.shard, self.owner, &self.checkpoint, &next);
            let u = u.update.expect("checkpoint_item builds an update");
            let r = self
                .leases
                .client
                .update_item()
                .table_name(u.table_name)
                .set_key(Some(u.key))
                .condition_expression(u.condition_expression.unwrap_or_default())
                .update_expression(u.update_expression)
                .set_expression_attribute_names(u.expression_attribute_names)
                .set_expression_attribute_values(u.expression_attribute_values)
                .send()
                .await;
            return match r.map_err(aws_sdk_dynamodb::Error::from) {
                Ok(_) => {
                    self.checkpoint = next;
                    self.commits += 1;
                    Ok(())
                }
                Err(aws_sdk_dynamodb::Error::ConditionalCheckFailedException(_)) => {
                    Err(CommitError::LeaseLost(self.shard.to_owned()))
                }
                Err(e) => Err(CommitError::Dynamo(e)),
            };
        }
        let n = items.len();
        items.push(self.leases.checkpoint_item(self.shard, self.owner, &self.checkpoint, &next));
        let r = self.leases.client.transact_write_items().set_transact_items(Some(items)).send().await;
        match r.map_err(aws_sdk_dynamodb::Error::from) {
            Ok(_) => {
                self.checkpoint = next;
                self.commits += 1;
                Ok(())
            }
            Err(aws_sdk_dynamodb::Error::TransactionCanceledException(t)) => {
                let failed: Vec<usize> = t
                    .cancellation_reasons()
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
                    .map(|(i, _)| i)
                    .collect();
                if failed.contains(&n) {
                    Err(CommitError::LeaseLost(self.shard.to_owned()))
                } else if failed.is_empty() {
                    Err(CommitError::Dynamo(aws_sdk_dynamodb::Error::TransactionCanceledException(t)))
                } else {
                    Err(CommitError::Conflict(failed))
                }
            }
            Err(e) => Err(CommitError::Dynamo(e)),
        }
    }
}
