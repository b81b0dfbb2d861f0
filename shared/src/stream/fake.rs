//! An in-memory stream with as many shards as a test wants, and splits: a closed parent shard
//! and its children, as DynamoDB produces every few hours. Same trait as the real thing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::record::Change;
use super::shards::{Page, Position, ShardError, ShardInfo, StreamShards};

#[derive(Debug, Default)]
struct Shard {
    parent: Option<String>,
    records: Vec<Change>,
    closed: bool,
    /// Records before this index are trimmed away.
    trimmed_before: usize,
}

#[derive(Debug, Clone, Default)]
pub struct FakeStream {
    inner: Arc<Mutex<FakeState>>,
}

#[derive(Debug, Default)]
struct FakeState {
    order: Vec<String>,
    shards: HashMap<String, Shard>,
    next_seq: u64,
    /// Iterators of older generations are expired.
    generation: u64,
    /// GetRecords calls served, for tests of idle back-off and of who read what.
    pub calls: HashMap<String, u64>,
    /// The most records one GetRecords call returned, per shard.
    pub largest: HashMap<String, usize>,
}

impl FakeStream {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_shard(&self, id: &str, parent: Option<&str>) {
        let mut s = self.inner.lock().expect("fake lock");
        s.order.push(id.to_owned());
        s.shards.insert(id.to_owned(), Shard { parent: parent.map(str::to_owned), ..Shard::default() });
    }

    /// Appends a record to an open shard, giving it the next sequence number; returns it.
    pub fn push(&self, shard: &str, mut change: Change) -> String {
        let mut s = self.inner.lock().expect("fake lock");
        s.next_seq += 1;
        change.seq = format!("{:021}", s.next_seq);
        let seq = change.seq.clone();
        let sh = s.shards.get_mut(shard).expect("unknown fake shard");
        assert!(!sh.closed, "push into a closed shard");
        sh.records.push(change);
        seq
    }

    /// Closes `parent` and opens `children` descending from it.
    pub fn split(&self, parent: &str, children: &[&str]) {
        self.inner.lock().expect("fake lock").shards.get_mut(parent).expect("unknown fake shard").closed = true;
        for c in children {
            self.add_shard(c, Some(parent));
        }
    }

    /// Drops the first `n` records of a shard, as the 24-hour retention does.
    pub fn trim(&self, shard: &str, n: usize) {
        self.inner.lock().expect("fake lock").shards.get_mut(shard).expect("unknown fake shard").trimmed_before = n;
    }

    /// Expires every iterator handed out so far, as 15 minutes without a read would.
    pub fn expire_iterators(&self) {
        self.inner.lock().expect("fake lock").generation += 1;
    }

    /// The most records a single read of `shard` returned so far.
    pub fn largest_read(&self, shard: &str) -> usize {
        self.inner.lock().expect("fake lock").largest.get(shard).copied().unwrap_or(0)
    }

    pub fn calls(&self, shard: &str) -> u64 {
        self.inner.lock().expect("fake lock").calls.get(shard).copied().unwrap_or(0)
    }
}

fn parse(iterator: &str) -> Option<(&str, usize, u64)> {
    let (rest, generation) = iterator.rsplit_once('/')?;
    let (shard, idx) = rest.rsplit_once('@')?;
    Some((shard, idx.parse().ok()?, generation.parse().ok()?))
}

impl StreamShards for FakeStream {
    async fn shards(&self) -> Result<Vec<ShardInfo>, ShardError> {
        let s = self.inner.lock().expect("fake lock");
        Ok(s.order.iter().map(|id| ShardInfo { id: id.clone(), parent: s.shards[id].parent.clone() }).collect())
    }

    async fn iterator(&self, shard: &str, at: &Position) -> Result<String, ShardError> {
        let s = self.inner.lock().expect("fake lock");
        let sh = s.shards.get(shard).ok_or_else(|| ShardError::Other(format!("no shard {shard}")))?;
        let idx = match at {
            Position::TrimHorizon => sh.trimmed_before,
            Position::After(seq) => {
                let i = sh.records.iter().position(|r| &r.seq == seq).map(|i| i + 1).ok_or(ShardError::Trimmed)?;
                if i < sh.trimmed_before {
                    return Err(ShardError::Trimmed);
                }
                i
            }
        };
        Ok(format!("{shard}@{idx}/{}", s.generation))
    }

    async fn records(&self, iterator: &str, limit: i32) -> Result<Page, ShardError> {
        let (shard, idx, generation) = parse(iterator).ok_or_else(|| ShardError::Other("bad fake iterator".into()))?;
        let mut s = self.inner.lock().expect("fake lock");
        if generation != s.generation {
            return Err(ShardError::ExpiredIterator);
        }
        let current = s.generation;
        *s.calls.entry(shard.to_owned()).or_default() += 1;
        let sh = s.shards.get(shard).ok_or_else(|| ShardError::Other(format!("no shard {shard}")))?;
        if idx < sh.trimmed_before {
            return Err(ShardError::Trimmed);
        }
        let end = (idx + usize::try_from(limit).unwrap_or(1000)).min(sh.records.len());
        let records = sh.records[idx..end].to_vec();
        let next = if sh.closed && end == sh.records.len() { None } else { Some(format!("{shard}@{end}/{current}")) };
        let largest = s.largest.entry(shard.to_owned()).or_default();
        *largest = (*largest).max(records.len());
        Ok(Page { records, next })
    }
}
