//! Reading the `FormBridgeData` stream as a consumer group, KCL-style: typed records
//! (`record`), a narrow port over DynamoDB Streams (`shards`) with an in-memory fake for splits
//! and many shards (`fake`), leases and checkpoints in the control table (`lease`), and the
//! worker that ties them together (`consumer`).

pub mod args;
pub mod consumer;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
pub mod lease;
pub mod record;
pub mod shards;

pub use args::StreamArgs;
pub use consumer::{run, Alarms, BatchProcessor, ConsumerConfig, ProcessError};
pub use lease::{Checkpoint, CommitError, Committer, Lease, LeaseTable};
pub use record::{Change, ChangeKind};
pub use shards::{DynamoStreams, Position, ShardError, ShardInfo, StreamShards};
